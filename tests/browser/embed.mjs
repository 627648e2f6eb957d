// golive from other sites, in Chromium: pages served by a second origin (a small HTTP server in
// this script, on another host name and port than the golive server) use the SDK and the embed
// the way a site that is not golive would.
//
//   node tests/browser/embed.mjs http://127.0.0.1:8080
//
// Checks, in order:
// - an <iframe> of /embed/<stream> on the other site waits for the broadcast (state `waiting`);
// - a page there goes live with the SDK's goLive() (imported cross-origin, fake camera);
// - the iframe plays (frames decoded, growing), and a page there watches with the SDK's watch();
// - a second broadcaster goes live from golive's own /live page;
// - the directory shows both as a grid of live thumbnails, the watched stream ranked first, and
//   /api/streams lists the thumbnail and the rank's inputs;
// - the oEmbed JSON of the watch URL validates (oEmbed 1.0, type video), and its html, pasted into
//   a phone-sized page of the other site with ?chat=1, plays and chats;
// - the embed follows the broadcaster's reconnect (paused, then live) and its own (reconnecting,
//   then live), and says when the broadcast has ended;
// - /live refuses to be framed by the other site.
//
// Exit status 0 when every check passed ("PASS: …" last). Environment: CHROMIUM_PATH, HEADFUL=1.
import { assert, fail, launch, log, sleep, step } from './chromium.mjs';
import http from 'node:http';

const api = (process.argv[2] || '').replace(/\/$/, '');
if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(api)) {
  console.error('usage: node tests/browser/embed.mjs http://127.0.0.1:<port>');
  process.exit(2);
}
const WAIT_MS = 20_000;
const STREAM = 'embed-sdk';
const SECOND = 'embed-page';


// ---- the other site ----

const pages = new Map();
const site = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  const body = pages.get(path);
  res.writeHead(body ? 200 : 404, { 'content-type': 'text/html; charset=utf-8' });
  res.end(body || 'not found');
});
await new Promise((r) => site.listen(0, '127.0.0.1', r));
// Another host name and another port: another origin, as far as the browser is concerned.
const origin = `http://localhost:${site.address().port}`;

const page = (title, body) => `<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>${title}</title>
<style>body { font: 16px system-ui, sans-serif; margin: 0; padding: 12px; } iframe { border: 0; display: block; }
video { width: 100%; max-width: 640px; background: #000; }</style></head><body>${body}</body></html>`;

pages.set('/embed.html', page('A site that embeds a broadcast', `<h1>Our site</h1>
<iframe id="frame" src="${api}/embed/${STREAM}" width="640" height="360"
  allow="autoplay; fullscreen; picture-in-picture" allowfullscreen></iframe>`));
pages.set('/go-live.html', page('A site that goes live', `<video id="preview" muted playsinline autoplay></video>
<p id="status">idle</p>
<script type="module">
  import { goLive } from '${api}/sdk/golive.js';
  const broadcast = goLive({ stream: '${STREAM}', title: 'Live from another site', name: 'Host', preview: document.getElementById('preview') });
  window.broadcast = broadcast;
  window.chats = [];
  broadcast.on('state', ({ state }) => { document.getElementById('status').textContent = state; })
    .on('chat', (m) => window.chats.push(m));
</script>`));
pages.set('/watch.html', page('A site that watches', `<video id="video" controls></video>
<p id="status">connecting</p>
<script type="module">
  import { watch } from '${api}/sdk/golive.js';
  const player = watch(document.getElementById('video'), { stream: '${STREAM}' });
  window.player = player;
  player.on('state', ({ state }) => { document.getElementById('status').textContent = state; });
</script>`));
pages.set('/frame-live.html', page('A site that frames Go Live', `<iframe id="frame" src="${api}/live" width="800" height="600"></iframe>`));

// ---- helpers ----

/** framesDecoded of a page's or frame's video, found through its `pc` (0 when none). */
function framesDecoded(target, pcExpr) {
  return target.evaluate(async (expr) => {
    // eslint-disable-next-line no-new-func
    const pc = new Function(`return ${expr}`)();
    if (!pc) return 0;
    let frames = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') frames = r.framesDecoded || 0;
    });
    return frames;
  }, pcExpr);
}

async function decodes(target, pcExpr, label) {
  const before = await framesDecoded(target, pcExpr);
  await sleep(1500);
  const after = await framesDecoded(target, pcExpr);
  log(`${label}: framesDecoded ${before} -> ${after}`);
  assert(before > 0 && after > before, `${label} decodes a growing number of frames (${before} -> ${after})`);
}

/** The frame of `page` whose URL starts with `prefix`, once it has loaded. */
async function frameOf(page, prefix) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const f = page.frames().find((fr) => fr.url().startsWith(prefix));
    if (f) return f;
    if (Date.now() > deadline) throw new Error(`no frame at ${prefix}`);
    await sleep(100);
  }
}

const waitFor = (target, fn, arg, timeout = WAIT_MS) => target.waitForFunction(fn, arg, { timeout });
const embedState = (frame, states) => waitFor(frame, (s) => s.includes(document.body.dataset.state), states);

const watchdog = setTimeout(() => fail('timed out'), 170_000);
const browser = await launch();
const pageErrors = [];
try {
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: { width: 1100, height: 800 } });
  const newPage = async (c, label) => {
    const p = await c.newPage();
    p.on('pageerror', (e) => {
      pageErrors.push(`${label}: ${e.message}`);
      log(`${label} page error: ${e.message}`);
    });
    return p;
  };

  const embedder = await newPage(ctx, 'embedder');
  let embed;
  await step('an iframe of /embed/<stream> on another site waits for the broadcast', async () => {
    await embedder.goto(`${origin}/embed.html`);
    embed = await frameOf(embedder, `${api}/embed/`);
    await embedState(embed, ['waiting']);
    const text = await embed.evaluate(() => document.querySelector('golive-player').shadowRoot.querySelector('.status').textContent);
    assert(text.includes('Waiting for the broadcast'), `the embed says so: "${text}"`);
  });

  const broadcaster = await newPage(ctx, 'sdk-go-live');
  await step("a page on another site goes live with the SDK's goLive()", async () => {
    await broadcaster.goto(`${origin}/go-live.html`);
    await waitFor(broadcaster, () => window.broadcast && window.broadcast.state === 'live');
    await waitFor(broadcaster, () => document.getElementById('preview').videoWidth > 0);
  });

  await step('the embed plays, with its live badge and viewer count', async () => {
    await embedState(embed, ['live']);
    await decodes(embed, 'window.golive.pc', 'embed');
    const shown = await embed.evaluate(() => {
      const root = document.querySelector('golive-player').shadowRoot;
      return { badge: root.querySelector('.state').textContent, viewers: root.querySelector('.viewers').textContent };
    });
    assert(shown.badge === 'Live', `badge "${shown.badge}"`);
    await waitFor(embed, () => /^1 watching$/.test(document.querySelector('golive-player').shadowRoot.querySelector('.viewers').textContent));
  });

  const watcher = await newPage(ctx, 'sdk-watch');
  await step("a page on another site watches with the SDK's watch()", async () => {
    await watcher.goto(`${origin}/watch.html`);
    await waitFor(watcher, () => window.player && window.player.state === 'live');
    await decodes(watcher, 'window.player.pc', 'sdk watch()');
    await waitFor(broadcaster, () => window.broadcast.viewers === 2);
  });

  const live = await newPage(ctx, 'golive-live');
  await step("a second broadcaster goes live from golive's own /live page", async () => {
    await live.goto(`${api}/live`);
    await waitFor(live, () => document.body.dataset.state === 'preview');
    await live.fill('#name', SECOND);
    await live.fill('#title', 'The page broadcast');
    await live.click('#go');
    await waitFor(live, () => document.body.dataset.state === 'live');
  });

  await step('the directory shows live thumbnails, ranked by viewers and hearts', async () => {
    const dir = await newPage(ctx, 'directory');
    await dir.goto(`${api}/`);
    for (const name of [STREAM, SECOND]) {
      await waitFor(dir, (n) => {
        const card = document.querySelector(`a.stream-card[data-stream="${n}"]`);
        const img = card && card.querySelector('img.picture');
        return card && card.classList.contains('has-picture') && img.naturalWidth > 0 && !img.hidden;
      }, name);
    }
    const order = await dir.evaluate(() => [...document.querySelectorAll('a.stream-card')].map((a) => [a.dataset.stream, a.dataset.rank]));
    log(`directory order: ${JSON.stringify(order)}`);
    assert(order[0][0] === STREAM && order[0][1] === '1', 'the watched stream is first');
    const rows = await (await fetch(`${api}/api/streams`)).json();
    for (const r of rows) {
      assert(typeof r.thumbnail === 'string' && r.thumbnail.startsWith(`/api/streams/${r.stream}/thumbnail.jpg?v=`), `thumbnail of ${r.stream}: ${r.thumbnail}`);
      assert(Number.isInteger(r.hearts_per_minute) && typeof r.score === 'number' && Number.isInteger(r.rank), `rank inputs of ${r.stream}: ${JSON.stringify(r)}`);
      const jpeg = await fetch(`${api}${r.thumbnail}`);
      const bytes = new Uint8Array(await jpeg.arrayBuffer());
      assert(jpeg.status === 200 && jpeg.headers.get('content-type') === 'image/jpeg', `GET ${r.thumbnail}: ${jpeg.status}`);
      assert(bytes[0] === 0xff && bytes[1] === 0xd8 && bytes.at(-2) === 0xff && bytes.at(-1) === 0xd9, 'a JPEG');
      log(`${r.stream}: rank ${r.rank}, ${r.viewers} viewers, ${r.hearts_per_minute} hearts/min, thumbnail ${bytes.length} bytes`);
    }
    await dir.setViewportSize({ width: 390, height: 844 });
    const fit = await dir.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: innerWidth }));
    assert(fit.scroll <= fit.width, `the grid fits a phone screen ${JSON.stringify(fit)}`);
    await dir.close();
  });

  let oembed;
  await step('the oEmbed JSON of the watch URL validates', async () => {
    const url = `${api}/watch/${STREAM}`;
    const res = await fetch(`${api}/oembed?url=${encodeURIComponent(url)}&maxwidth=320`);
    assert(res.status === 200, `status ${res.status}`);
    assert(res.headers.get('content-type').startsWith('application/json'), 'JSON');
    oembed = await res.json();
    log(`oEmbed: ${JSON.stringify(oembed)}`);
    // oEmbed 1.0, sections 2.3.4 (every response) and 2.3.4.3 (video).
    assert(oembed.version === '1.0', 'version 1.0');
    assert(oembed.type === 'video', 'type video');
    for (const k of ['html', 'title', 'provider_name', 'provider_url']) assert(typeof oembed[k] === 'string' && oembed[k], `${k} is a string`);
    for (const k of ['width', 'height']) assert(Number.isInteger(oembed[k]) && oembed[k] > 0, `${k} is a positive integer`);
    assert(oembed.width <= 320 && Math.abs(oembed.width * 9 - oembed.height * 16) < 16, `16:9 within maxwidth (${oembed.width}×${oembed.height})`);
    const thumbs = ['thumbnail_url', 'thumbnail_width', 'thumbnail_height'].filter((k) => k in oembed);
    assert(thumbs.length === 3, `a thumbnail, with its width and height (${thumbs})`);
    assert(oembed.title === 'Live from another site', `title "${oembed.title}"`);
    const m = /^<iframe src="([^"]+)" width="(\d+)" height="(\d+)"[^>]*><\/iframe>$/.exec(oembed.html);
    assert(m && m[1] === `${api}/embed/${STREAM}` && Number(m[2]) === oembed.width, `html is the embed's iframe: ${oembed.html}`);
    const bad = await fetch(`${api}/oembed?url=${encodeURIComponent('https://elsewhere.example/watch/x')}`);
    assert(bad.status === 400 && (await bad.text()).includes('not on this server'), 'another site\'s URL is a 400');
    const xml = await fetch(`${api}/oembed?url=${encodeURIComponent(url)}&format=xml`);
    assert(xml.status === 501, 'format=xml is a 501');
  });

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const phonePage = await newPage(phone, 'phone-embedder');
  let phoneEmbed;
  await step("oEmbed's html, pasted into a phone-sized page with ?chat=1, plays and chats", async () => {
    const html = oembed.html.replace(/src="([^"]+)"/, 'src="$1?chat=1"')
      .replace(/width="\d+" height="\d+"/, 'width="100%" height="560"');
    pages.set('/phone.html', page('Unfurled on a phone', `<p>Someone shared a link:</p>${html}`));
    await phonePage.goto(`${origin}/phone.html`);
    phoneEmbed = await frameOf(phonePage, `${api}/embed/`);
    await embedState(phoneEmbed, ['live']);
    await decodes(phoneEmbed, 'window.golive.pc', 'phone embed');
    const layout = await phoneEmbed.evaluate(() => {
      const v = document.querySelector('golive-player').getBoundingClientRect();
      const c = document.getElementById('chat').getBoundingClientRect();
      return { player: [v.top, v.bottom, v.width], chat: [c.top, c.height], scroll: document.documentElement.scrollWidth, width: innerWidth };
    });
    log(`phone embed layout: ${JSON.stringify(layout)}`);
    assert(layout.chat[0] >= layout.player[1] - 1 && layout.chat[1] > 100, 'the chat is below the picture in a tall frame');
    assert(layout.scroll <= layout.width, 'nothing overflows sideways');
    await phoneEmbed.waitForFunction(() => !document.getElementById('chat-input').disabled, null, { timeout: WAIT_MS });
    await phoneEmbed.fill('#chat-input', 'hello from an embed');
    await phoneEmbed.press('#chat-input', 'Enter');
    await waitFor(broadcaster, () => window.chats.some((m) => m.text === 'hello from an embed'));
    await phoneEmbed.waitForFunction(() => [...document.querySelectorAll('#chat-list .text')].some((t) => t.textContent === 'hello from an embed'), null, { timeout: WAIT_MS });
    await phoneEmbed.locator('golive-player').locator('.heart').click();
    await waitFor(broadcaster, () => window.broadcast.heartsTotal >= 1);
  });
  await phone.close();

  await step('the embed follows the broadcaster reconnecting, and its own connection', async () => {
    // Watch the embed's states as they happen.
    await embed.evaluate(() => {
      window.seen = [];
      document.querySelector('golive-player').addEventListener('state', (e) => window.seen.push(e.detail.state));
    });
    await broadcaster.evaluate(() => window.broadcast.signal.drop());
    await waitFor(embed, () => window.seen.some((s) => s === 'paused' || s === 'reconnecting'));
    await embedState(embed, ['live']);
    await waitFor(broadcaster, () => window.broadcast.state === 'live');
    log(`embed states while the broadcaster reconnected: ${await embed.evaluate(() => window.seen.join(' → '))}`);
    await embed.evaluate(() => { window.seen = []; window.golive.player.signal.drop(); });
    await waitFor(embed, () => window.seen.includes('reconnecting'));
    await embedState(embed, ['live']);
    await decodes(embed, 'window.golive.pc', 'embed after reconnecting');
    log(`embed states while it reconnected: ${await embed.evaluate(() => window.seen.join(' → '))}`);
  });

  await step('the embed and the SDK player say when the broadcast has ended', async () => {
    await broadcaster.evaluate(() => window.broadcast.end());
    await embedState(embed, ['ended']);
    const text = await embed.evaluate(() => document.querySelector('golive-player').shadowRoot.querySelector('.status').textContent);
    assert(text.includes('has ended'), `the embed says "${text}"`);
    await waitFor(watcher, () => window.player.state === 'ended');
  });

  await step('another site cannot frame /live', async () => {
    const p = await newPage(ctx, 'framer');
    const refused = [];
    p.on('console', (m) => { if (/Refused to display|frame-ancestors|X-Frame-Options/i.test(m.text())) refused.push(m.text()); });
    await p.goto(`${origin}/frame-live.html`);
    await sleep(1500);
    const framed = await Promise.all(p.frames().filter((f) => f !== p.mainFrame()).map(async (f) => ({
      url: f.url(),
      hasGoLive: await f.evaluate(() => Boolean(document.getElementById('go'))).catch(() => false),
    })));
    log(`frames of the framing page: ${JSON.stringify(framed)}; console: ${refused.join(' | ')}`);
    assert(framed.every((f) => !f.hasGoLive), 'the Go Live page did not render in the frame');
    assert(refused.length > 0, 'the browser says why');
    await p.close();
  });
  await live.click('#end');
} finally {
  clearTimeout(watchdog);
  await browser.close();
  site.close();
}
if (pageErrors.length) fail(`uncaught errors in the pages:\n  ${pageErrors.join('\n  ')}`);
log('PASS: the embed, the SDK from another origin, oEmbed, thumbnails in the directory, framing');
