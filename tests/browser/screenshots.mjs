// Screenshots of every page and state, on a desktop and a phone-sized viewport, for a person to
// look at (not a test):  node tests/browser/screenshots.mjs <server-url> [out-dir]
//
// Besides the pages (/, /live, /watch/<stream>) it shows the directory's grid of live thumbnails
// (two broadcasts, ranked) and the embeddable player (/embed/<stream>) as a site's iframe shows
// it: alone at 640×360 on the desktop, with its chat (?chat=1) in a tall frame on the phone.
import { launch, sleep } from './chromium.mjs';

const base = (process.argv[2] || 'http://127.0.0.1:8080').replace(/\/$/, '');
const out = process.argv[3] || '.';
const browser = await launch();
const waitState = (p, s) => p.waitForFunction((x) => document.body.dataset.state === x, s, { timeout: 20000 });

async function goLive(page, name, title, probe = false) {
  await page.goto(`${base}/live${probe ? '?probe=1' : ''}`);
  await waitState(page, 'preview');
  await page.fill('#name', name);
  await page.fill('#title', title);
  await page.click('#go');
  await waitState(page, 'live');
}

for (const [label, viewport, scheme] of [['desktop', { width: 1280, height: 800 }, 'light'], ['phone', { width: 390, height: 844 }, 'dark']]) {
  const phone = label === 'phone';
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'], viewport, colorScheme: scheme, isMobile: phone, hasTouch: phone, deviceScaleFactor: phone ? 2 : 1 });
  const shot = (p, name, fullPage = true) => p.screenshot({ path: `${out}/${label}-${name}.png`, fullPage });
  const stream = `shots-${label}`;
  const dir = await ctx.newPage();
  await dir.goto(`${base}/`);
  await waitState(dir, 'empty');
  await shot(dir, 'index-empty');
  const w = await ctx.newPage();
  await w.goto(`${base}/watch/${stream}`);
  await waitState(w, 'waiting');
  await shot(w, 'watch-waiting');
  const live = await ctx.newPage();
  await live.goto(`${base}/live`);
  await waitState(live, 'preview');
  await live.fill('#name', stream);
  await live.fill('#title', 'Sunday market, live from the square');
  await shot(live, 'live-preview');
  await live.click('#go');
  await waitState(live, 'live');
  await waitState(w, 'live');
  await sleep(3000);
  await shot(live, 'live-onair');
  await shot(w, 'watch-live');

  // The embed, as a site's iframe shows it.
  const embed = await ctx.newPage();
  if (phone) {
    await embed.setViewportSize({ width: 390, height: 640 });
    await embed.goto(`${base}/embed/${stream}?chat=1`);
  } else {
    await embed.setViewportSize({ width: 640, height: 360 });
    await embed.goto(`${base}/embed/${stream}`);
  }
  await waitState(embed, 'live');
  if (phone) {
    await embed.waitForFunction(() => !document.getElementById('chat-input').disabled, null, { timeout: 20000 });
    await embed.fill('#chat-input', 'Watching from a link in the group chat!');
    await embed.press('#chat-input', 'Enter');
  }
  await embed.locator('golive-player').locator('.heart').click();
  await sleep(1500);
  await shot(embed, phone ? 'embed-chat' : 'embed-live', false);

  // A second broadcast, so the directory shows a grid of thumbnails, ranked (the first one has
  // two viewers).
  const live2 = await ctx.newPage();
  await goLive(live2, `probe-${label}`, 'Latency probe, all day', true);
  await dir.goto(`${base}/`);
  await dir.waitForFunction(() => document.querySelectorAll('a.stream-card.has-picture').length === 2, null, { timeout: 20000 });
  await shot(dir, 'index-live');
  await live2.click('#end');
  await live2.close();
  await embed.close();

  await live.click('#end');
  await waitState(w, 'ended');
  await shot(w, 'watch-ended');
  await shot(live, 'live-ended');
  await live.goto(`${base}/live?probe=1`);
  await waitState(live, 'preview');
  await live.fill('#name', `probe-${label}`);
  await live.click('#go');
  await waitState(live, 'live');
  await w.goto(`${base}/watch/probe-${label}?probe=1`);
  await waitState(w, 'live');
  await sleep(3000);
  await shot(w, 'watch-probe');
  await live.click('#end');
  await ctx.close();
}
await browser.close();
