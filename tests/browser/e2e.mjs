// golive's browser end-to-end test: the real pages in Debian's Chromium, driven by playwright-core.
//
//   node tests/browser/e2e.mjs http://127.0.0.1:8080
//
// Goes live from /live with Chromium's fake camera, finds the broadcast on /, watches it from three
// /watch pages (one phone-sized; each must decode a growing number of frames), chats (a named
// player's message reaches the broadcaster and the other players, markup stays text, the
// broadcaster removes it everywhere, sending too fast and being muted are explained), sends a heart
// from the phone to the broadcaster's total, picks the low quality on a player (the broadcast is
// simulcast: the server moves the player to the low layer and says so), drops the broadcaster's and a player's signalling socket and checks both come back, checks a second
// broadcaster on the same name is told the name is taken, ends the broadcast and checks every
// player says so; then measures glass-to-glass latency in probe mode (/live?probe=1 →
// /watch/…?probe=1) and prints its p50 and p95; last, the failures a person can meet: server
// unreachable, camera permission denied, no camera, camera busy.
//
// Exit status 0 when every check passed. Environment: CHROMIUM_PATH (default /usr/bin/chromium),
// PROBE_SECONDS (default 10), HEADFUL=1 to watch it run.
import { CHROMIUM, assert, launch, log, newPage as openPage, sleep, waitState as pageState } from './chromium.mjs';
import { existsSync } from 'node:fs';

const base = (process.argv[2] || '').replace(/\/$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node tests/browser/e2e.mjs <server-url>   e.g. http://127.0.0.1:8080');
  process.exit(2);
}
const PROBE_SECONDS = Number(process.env.PROBE_SECONDS || 10);
const WAIT_MS = 20_000;
const OVERALL_TIMEOUT_MS = 180_000;


if (!existsSync(CHROMIUM)) {
  console.error(`Chromium is missing at ${CHROMIUM}: install it with \`sudo apt-get install -y chromium\` `
    + '(or set CHROMIUM_PATH).');
  process.exit(3);
}

let failures = 0;
const pageErrors = [];

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    log(`ok     ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failures += 1;
    log(`FAILED ${name}: ${e && e.stack ? e.stack : e}`);
    throw e;
  }
}


function newPage(ctx, label) {
  return openPage(ctx, label, pageErrors);
}

function waitState(page, state, timeout = WAIT_MS) {
  return pageState(page, state, timeout);
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent()) || '';
}

/** framesDecoded of the page's video inbound-rtp (0 when none). */
function framesDecoded(page) {
  return page.evaluate(async () => {
    const pc = window.golive && window.golive.pc;
    if (!pc) return 0;
    let frames = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') frames = r.framesDecoded || 0;
    });
    return frames;
  });
}

async function goLive(page, { name, title, probe = false, chatName = null }) {
  await page.goto(`${base}/live${probe ? '?probe=1' : ''}`);
  await waitState(page, 'preview');
  await page.fill('#name', name);
  await page.fill('#title', title);
  if (chatName !== null) await page.fill('#chat-name', chatName);
  await page.click('#go');
}

/** Types `text` into the page's chat and sends it with Enter. */
async function sendChat(page, text) {
  await page.fill('#chat-input', text);
  await page.press('#chat-input', 'Enter');
}

/** Waits until a chat message with exactly this text shows; returns what the page shows of it. */
async function waitChat(page, text, timeout = WAIT_MS) {
  try {
    const handle = await page.waitForFunction((t) => {
      const li = [...document.querySelectorAll('#chat-list li.chat-msg')]
        .find((m) => m.querySelector('.text').textContent === t);
      return li && {
        id: Number(li.dataset.id),
        from: li.querySelector('.from').textContent,
        text: li.querySelector('.text').textContent,
        elements: li.querySelector('.text').children.length,
        visible: li.getBoundingClientRect().height > 0,
      };
    }, text, { timeout });
    return handle.jsonValue();
  } catch {
    throw new Error(`${page.url()}: no chat message ${JSON.stringify(text)} within ${timeout} ms`);
  }
}

/** Waits until no chat message with id `id` is on the page. */
async function waitChatGone(page, id) {
  await page.waitForFunction((i) => !document.querySelector(`#chat-list li[data-id="${i}"]`), id, { timeout: WAIT_MS });
}

function pct(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

async function main() {
  const browser = await launch();
  try {
    const ctx = await browser.newContext({
      permissions: ['camera', 'microphone'],
      viewport: { width: 1280, height: 800 },
    });
    const STREAM = 'e2e-cam';
    const TITLE = 'Browser e2e broadcast';
    // Markup in a chat message must show as these characters and make no element.
    const MARKUP = '<b>x</b><img src=x onerror="window.pwned=1">';

    const directory = await newPage(ctx, 'directory');
    await step('/ shows the empty state when nobody is live', async () => {
      await directory.goto(`${base}/`);
      await waitState(directory, 'empty');
      assert((await text(directory, '#empty')).includes('Nobody is live'), 'empty state text');
    });

    // A viewer that arrives before the broadcast.
    const early = await newPage(ctx, 'viewer-1');
    await step('/watch waits for a broadcast that has not started', async () => {
      await early.goto(`${base}/watch/${STREAM}`);
      await waitState(early, 'waiting');
      assert((await text(early, '#status')).includes('Waiting for the broadcast to start'), 'waiting text');
    });

    const live = await newPage(ctx, 'broadcaster');
    await step('/live previews the camera and the microphone, and goes live', async () => {
      await live.goto(`${base}/live`);
      await waitState(live, 'preview');
      await live.waitForFunction(() => {
        const v = document.getElementById('preview');
        return v.videoWidth > 0 && !v.paused;
      }, null, { timeout: WAIT_MS });
      // Chromium's fake microphone beeps: the level meter must move.
      await live.waitForFunction(() => Number(document.getElementById('level').getAttribute('aria-valuenow')) > 0, null, { timeout: WAIT_MS });
      await goLive(live, { name: STREAM, title: TITLE, chatName: 'Host' });
      await waitState(live, 'live');
      assert((await text(live, '#badge')) === 'Live', 'LIVE badge');
      const share = await live.inputValue('#share');
      assert(share.endsWith(`/watch/${STREAM}`), `share link ${share}`);
    });

    await step('/ lists the broadcast with its title, and a click opens the player', async () => {
      const card = directory.locator(`a.stream-card[data-stream="${STREAM}"]`);
      await card.waitFor({ timeout: WAIT_MS });
      assert((await card.locator('.title').textContent()) === TITLE, 'title on the card');
      assert((await card.locator('.since').textContent()).startsWith('live '), 'live duration');
      await card.click();
      await directory.waitForURL(`${base}/watch/${STREAM}`);
    });
    const viewers = [early, directory];
    // The third player is a phone.
    const phone = await browser.newContext({
      viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    });
    const third = await newPage(phone, 'viewer-3-phone');
    await third.goto(`${base}/watch/${STREAM}`);
    viewers.push(third);

    await step('three players decode a growing number of frames', async () => {
      await Promise.all(viewers.map((v) => waitState(v, 'live')));
      const before = await Promise.all(viewers.map(framesDecoded));
      await sleep(2000);
      const after = await Promise.all(viewers.map(framesDecoded));
      log(`framesDecoded before ${JSON.stringify(before)}, 2 s later ${JSON.stringify(after)}`);
      viewers.forEach((_, i) => {
        assert(before[i] > 0, `viewer ${i + 1} decoded frames`);
        assert(after[i] > before[i], `viewer ${i + 1} keeps decoding`);
      });
      for (const v of viewers) {
        const size = await v.evaluate(() => [document.getElementById('video').videoWidth, document.getElementById('video').videoHeight]);
        assert(size[0] > 0 && size[1] > 0, `picture size ${size}`);
      }
      const fit = await third.evaluate(() => {
        const r = document.getElementById('video').getBoundingClientRect();
        return { scroll: document.documentElement.scrollWidth, width: innerWidth, left: r.left, right: r.right, unmute: !document.getElementById('unmute').hidden };
      });
      assert(fit.scroll <= fit.width && fit.left >= 0 && fit.right <= fit.width, `the player fits a phone screen ${JSON.stringify(fit)}`);
      assert(fit.unmute, 'muted autoplay shows the unmute button');
    });

    await step('viewer counts reach the broadcaster and the players', async () => {
      await live.waitForFunction(() => window.golive.viewers === 3, null, { timeout: WAIT_MS });
      assert((await text(live, '#viewers')) === '3 watching', 'broadcaster shows 3 watching');
      for (const v of viewers) {
        await v.waitForFunction(() => document.getElementById('viewers').textContent === '3 watching', null, { timeout: WAIT_MS });
      }
      const stats = await text(third, '#stats');
      log(`player stats line: ${stats}`);
      assert(/kbps/.test(stats) && /\d+×\d+/.test(stats) && /fps/.test(stats) && /latency/.test(stats), `stats line "${stats}"`);
      const rows = await (await fetch(`${base}/api/streams`)).json();
      assert(rows.length === 1 && rows[0].stream === STREAM && rows[0].viewers === 3, `/api/streams ${JSON.stringify(rows)}`);
    });

    await step('quality: the broadcast is simulcast, the menu sends the preference, the server moves the player to low', async () => {
      const p = directory;
      const options = await p.evaluate(() => [...document.querySelectorAll('#quality option')].map((o) => o.value));
      assert(JSON.stringify(options) === '["auto","high","medium","low"]', `quality menu options ${JSON.stringify(options)}`);
      assert(await p.inputValue('#quality') === 'auto', 'the menu starts on auto');
      // What the page sends, and the layers the server names, from here on.
      await p.evaluate(() => {
        const signal = window.golive.signal;
        const send = signal.send.bind(signal);
        window.sentMessages = [];
        signal.send = (m) => { window.sentMessages.push(m); return send(m); };
        window.layerEvents = [];
        window.golive.player.on('layer', (d) => window.layerEvents.push(d));
      });
      // On auto over loopback, the bandwidth estimate takes the player above the lowest layer
      // (if it is not there already): proof that the broadcast page sends more than one layer.
      try {
        await p.waitForFunction(() => window.golive.player.layer && window.golive.player.layer !== 'low', null, { timeout: WAIT_MS });
      } catch {
        const layer = await p.evaluate(() => window.golive.player.layer);
        throw new Error(`the player never left the lowest layer (layer ${layer}): is the broadcast simulcast?`);
      }
      const up = await p.evaluate(() => window.golive.player.layer);
      log(`player on layer ${up} before the preference`);
      await p.selectOption('#quality', 'low');
      const sent = await p.evaluate(() => window.sentMessages.filter((m) => m.type === 'quality'));
      assert(JSON.stringify(sent) === '[{"type":"quality","prefer":"low"}]', `sent ${JSON.stringify(sent)}`);
      const moved = await p.waitForFunction(() => window.layerEvents.find((e) => e.layer === 'low'), null, { timeout: WAIT_MS })
        .then((h) => h.jsonValue())
        .catch(async () => { throw new Error(`no move to low: layer events ${JSON.stringify(await p.evaluate(() => window.layerEvents))}`); });
      assert(moved.reason === 'preference', `moved to low for ${moved.reason}`);
      await p.waitForFunction(() => / · low layer$/.test(document.getElementById('stats').textContent), null, { timeout: WAIT_MS });
      log(`player stats line on low: ${await text(p, '#stats')}`);
      await p.selectOption('#quality', 'auto');
    });

    await step('chat: a named player\'s message reaches the broadcaster and the other players, as text', async () => {
      // A new name takes effect by joining again; it is remembered for the next visit.
      await early.fill('#chat-name', 'Ann');
      await early.press('#chat-name', 'Enter');
      await early.waitForFunction(() => window.golive.name === 'Ann' && window.golive.answered, null, { timeout: WAIT_MS });
      await waitState(early, 'live');
      assert(await early.evaluate(() => localStorage.getItem('golive.chatName')) === 'Ann', 'the name is remembered');
      await sendChat(early, 'hello from Ann');
      for (const p of [live, third, directory, early]) {
        const m = await waitChat(p, 'hello from Ann');
        assert(m.from === 'Ann' && m.visible, `${p.url()}: shown as ${JSON.stringify(m)}`);
      }
      await sendChat(early, MARKUP);
      for (const p of [live, third]) {
        const m = await waitChat(p, MARKUP);
        assert(m.text === MARKUP && m.elements === 0, `${p.url()}: markup shown as text ${JSON.stringify(m)}`);
        const made = await p.evaluate(() => ({
          b: document.querySelectorAll('#chat b, #chat img').length, pwned: Boolean(window.pwned),
        }));
        assert(made.b === 0 && !made.pwned, `${p.url()}: no element was made from a message ${JSON.stringify(made)}`);
      }
      await sendChat(live, 'welcome, everyone');
      const fromHost = await waitChat(third, 'welcome, everyone');
      assert(fromHost.from === 'Host', `the broadcaster chats under its name (${fromHost.from})`);
      const phoneFit = await third.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: innerWidth }));
      assert(phoneFit.scroll <= phoneFit.width, `the chat fits a phone screen ${JSON.stringify(phoneFit)}`);
    });

    await step('chat: the broadcaster removes a message and it disappears everywhere', async () => {
      const { id } = await waitChat(live, 'hello from Ann');
      await live.click(`#chat-list li[data-id="${id}"] button.remove`);
      for (const p of [live, early, directory, third]) await waitChatGone(p, id);
      await waitChat(third, 'welcome, everyone'); // the others stay
    });

    await step("hearts: a heart tapped on a phone reaches the broadcaster's total and floats", async () => {
      const before = await live.evaluate(() => window.golive.heartsTotal);
      // Count the floating hearts the broadcaster's page makes.
      await live.evaluate(() => {
        window.floated = 0;
        new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach((n) => {
          if (n.classList && n.classList.contains('float-heart')) window.floated += 1;
        }))).observe(document.getElementById('hearts-layer'), { childList: true });
      });
      await third.tap('#heart');
      await live.waitForFunction((b) => window.golive.heartsTotal === b + 1, before, { timeout: WAIT_MS });
      await live.waitForFunction(() => window.floated >= 1, null, { timeout: WAIT_MS });
      const badge = await text(live, '#hearts-badge');
      assert(badge === `♥ ${before + 1}`, `hearts badge "${badge}"`);
      for (const p of [third, early]) {
        await p.waitForFunction((n) => document.getElementById('hearts-total').textContent === String(n), before + 1, { timeout: WAIT_MS });
      }
    });

    await step('chat: sending too fast is refused with a clear note', async () => {
      // A burst of 5, then one a second: of 8 sent at once through the form, 3 are refused.
      await third.evaluate(() => {
        const form = document.getElementById('chat-form');
        for (let i = 1; i <= 8; i++) {
          document.getElementById('chat-input').value = `quick ${i}`;
          form.requestSubmit();
        }
      });
      await third.waitForFunction(() => document.getElementById('chat').dataset.refused === 'rate_limited', null, { timeout: WAIT_MS });
      const note = await text(third, '#chat .chat-note');
      assert(note.includes('too fast'), `rate limit note "${note}"`);
      assert(await third.locator('#chat .chat-note').isVisible(), 'the note shows');
      assert(await third.evaluate(() => window.golive.state) === 'live', 'the player keeps playing');
      await waitChat(live, 'quick 5');
    });

    await step('chat: a muted player is told so, and its messages reach nobody', async () => {
      const { id } = await waitChat(live, MARKUP);
      await live.click(`#chat-list li[data-id="${id}"] button.mute`);
      await live.waitForFunction((i) => document.querySelector(`#chat-list li[data-id="${i}"]`).classList.contains('muted'), id, { timeout: WAIT_MS });
      await sleep(500); // the mute (no acknowledgement on the wire) is on the server before Ann speaks
      await sendChat(early, 'can anyone hear me');
      await early.waitForFunction(() => document.getElementById('chat').dataset.refused === 'muted', null, { timeout: WAIT_MS });
      const note = await text(early, '#chat .chat-note');
      assert(note.includes('muted you'), `muted note "${note}"`);
      assert(await early.locator('#chat-input').isDisabled(), 'the input is closed for a muted player');
      assert(await early.evaluate(() => window.golive.state) === 'live', 'a muted player keeps watching');
      await sleep(500);
      const heard = await live.evaluate(() => [...document.querySelectorAll('#chat-list .text')].some((t) => t.textContent === 'can anyone hear me'));
      assert(!heard, 'the muted message did not reach the broadcaster');
    });

    await step("the broadcaster's signalling socket drops: it reconnects and the players come back", async () => {
      const peerBefore = await live.evaluate(() => window.golive.peer);
      await live.evaluate(() => window.golive.signal.drop());
      await live.waitForFunction((p) => window.golive.state === 'live' && window.golive.peer !== p, peerBefore, { timeout: WAIT_MS });
      // Viewers were told the broadcast ended; they watch again once it is back.
      for (const v of viewers) await waitState(v, 'live', 30_000);
      const before = await Promise.all(viewers.map(framesDecoded));
      await sleep(1500);
      const after = await Promise.all(viewers.map(framesDecoded));
      log(`after the reconnect: framesDecoded ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
      viewers.forEach((_, i) => assert(after[i] > before[i], `viewer ${i + 1} decodes again`));
      await live.waitForFunction(() => window.golive.viewers === 3, null, { timeout: WAIT_MS });
    });

    await step("a player's signalling socket drops: it reconnects and plays again", async () => {
      const v = viewers[2];
      const pcBefore = await v.evaluateHandle(() => window.golive.pc);
      await v.evaluate(() => window.golive.signal.drop());
      await v.waitForFunction((old) => window.golive.state === 'live' && window.golive.pc !== old, pcBefore, { timeout: WAIT_MS });
      const before = await framesDecoded(v);
      await sleep(1000);
      assert((await framesDecoded(v)) > before, 'the player decodes again');
      // The chat was rebuilt from the history that follows the answer: once each, not the removed one.
      await waitChat(v, 'welcome, everyone');
      const shown = await v.evaluate(() => [...document.querySelectorAll('#chat-list .text')].map((t) => t.textContent));
      assert(shown.filter((t) => t === 'welcome, everyone').length === 1, `history shown once: ${JSON.stringify(shown)}`);
      assert(!shown.includes('hello from Ann'), 'a removed message stays removed');
    });

    await step('a second broadcaster on the same name is told the name is taken', async () => {
      const busy = await newPage(ctx, 'busy');
      await goLive(busy, { name: STREAM, title: 'impostor' });
      await busy.waitForFunction(() => document.getElementById('message').textContent.includes('is taken'), null, { timeout: WAIT_MS });
      await waitState(busy, 'preview');
      await busy.close();
    });

    await step('End: every player says the broadcast has ended, / is empty again', async () => {
      await live.click('#end');
      await waitState(live, 'preview');
      for (const v of viewers) {
        await waitState(v, 'ended');
        assert((await text(v, '#status')).includes('The broadcast has ended'), 'ended text');
      }
      await directory.goto(`${base}/`);
      await waitState(directory, 'empty');
    });

    // Glass-to-glass latency, measured: the broadcaster stamps its clock into every frame, the
    // players read it back from the decoded frame just before display.
    const PROBE = 'e2e-probe';
    let samples = [];
    await step(`probe mode: glass-to-glass latency over ${PROBE_SECONDS} s from 3 players`, async () => {
      await goLive(live, { name: PROBE, title: 'Latency probe', probe: true });
      await waitState(live, 'live');
      await Promise.all(viewers.map((v) => v.goto(`${base}/watch/${PROBE}?probe=1`)));
      await Promise.all(viewers.map((v) => waitState(v, 'live')));
      // Let the sender's bandwidth estimate ramp up and the first keyframe settle.
      await sleep(2000);
      await Promise.all(viewers.map((v) => v.evaluate(() => {
        window.golive.probeSamples.length = 0;
        Object.assign(window.golive.probeCounts, { frames: 0, unreadable: 0 });
      })));
      await sleep(PROBE_SECONDS * 1000);
      const per = await Promise.all(viewers.map((v) => v.evaluate(() => ({
        samples: [...window.golive.probeSamples], ...window.golive.probeCounts,
      }))));
      per.forEach(({ samples: s, frames, unreadable }, i) => {
        log(`viewer ${i + 1}: ${frames} frames shown, ${s.length} stamps read (${unreadable} unreadable), `
          + `p50 ${pct(s, 50)} ms, p95 ${pct(s, 95)} ms, max ${Math.max(...s)} ms`);
        // Behaviour, not speed: stamps arrive and read back. (A loaded machine makes the
        // encoder drop frames, so the count is only required to be more than one a second.)
        assert(s.length >= PROBE_SECONDS, `viewer ${i + 1} read at least one stamp a second (got ${s.length})`);
        assert(unreadable <= frames * 0.1, `viewer ${i + 1} read nearly every stamp (${unreadable} of ${frames} unreadable)`);
      });
      samples = per.flatMap((p) => p.samples);
      log(`player stats line in probe mode: ${await text(third, '#stats')}`);
      const shown = await text(third, '#probe');
      assert(shown.startsWith('Glass-to-glass'), `probe line "${shown}"`);
    });
    if (samples.length) {
      console.log(`glass-to-glass latency: p50 ${pct(samples, 50)} ms, p95 ${pct(samples, 95)} ms `
        + `(${samples.length} frames, ${viewers.length} players, ${PROBE_SECONDS} s, Chromium fake devices on 127.0.0.1)`);
    }
    await step('probe broadcast ends on every player', async () => {
      await live.click('#end');
      for (const v of viewers) await waitState(v, 'ended');
    });
    await ctx.close();
    await phone.close();

    await step("an unreachable server is explained on every page", async () => {
      const c = await browser.newContext({ permissions: ['camera', 'microphone'] });
      // A WebSocket that never connects, as when the server is down.
      await c.addInitScript(() => {
        window.WebSocket = class extends EventTarget {
          static OPEN = 1;
          constructor() {
            super();
            this.readyState = 3;
            setTimeout(() => {
              if (this.onerror) this.onerror(new Event('error'));
              if (this.onclose) this.onclose(new CloseEvent('close', { code: 1006 }));
            }, 20);
          }
          send() { throw new Error('not connected'); }
          close() {}
        };
      });
      await c.route('**/api/streams', (route) => route.abort('connectionrefused'));
      const p = await newPage(c, 'offline');
      await goLive(p, { name: 'offline-test', title: 'nobody hears' });
      await p.waitForFunction(() => document.getElementById('message').textContent.includes("Can't reach the golive server"), null, { timeout: WAIT_MS });
      assert((await text(p, '#end')) === 'Cancel', 'going live can be cancelled');
      await p.click('#end');
      await waitState(p, 'preview');
      await p.goto(`${base}/watch/anything`);
      await waitState(p, 'offline');
      assert((await text(p, '#status')).includes("Can't reach the golive server"), 'player says so');
      await p.goto(`${base}/`);
      await waitState(p, 'offline');
      assert((await text(p, '#message')).includes("Can't reach the golive server"), 'directory says so');
      await c.close();
    });

    // The camera failures a person can meet, forced by replacing getUserMedia.
    for (const [errorName, expected] of [
      ['NotAllowedError', 'access was denied'],
      ['NotFoundError', 'No camera was found'],
      ['NotReadableError', 'could not be started'],
    ]) {
      await step(`/live explains ${errorName}`, async () => {
        const c = await browser.newContext();
        await c.addInitScript((name) => {
          navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('forced by the test', name));
        }, errorName);
        const p = await newPage(c, `camera-${errorName}`);
        await p.goto(`${base}/live`);
        await waitState(p, 'nomedia');
        const msg = await text(p, '#message');
        assert(msg.includes(expected), `message "${msg}"`);
        assert(await p.locator('#go').isDisabled(), 'Go Live is disabled');
        await c.close();
      });
    }
  } finally {
    await browser.close();
  }
}

const watchdog = setTimeout(() => {
  log(`FAILED: the browser test did not finish within ${OVERALL_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

try {
  await main();
} catch {
  // The failing step was logged.
}
clearTimeout(watchdog);
if (pageErrors.length) {
  failures += 1;
  log(`FAILED: uncaught errors in the pages:\n  ${pageErrors.join('\n  ')}`);
}
if (failures) {
  log(`browser e2e: FAILED (${failures})`);
  process.exit(1);
}
log('browser e2e: all checks passed');
