// A replay in Chromium: a broadcast recorded by a server started with --record-dir, played back on
// /replay/<id> with its chat in step with the playback.
//
//   node tests/browser/replay.mjs http://127.0.0.1:8080
//
// Checks, in order:
// - a page goes live from /live (Chromium's fake camera: real VP8) and chats "early", "middle"
//   and "late" about 4 s apart, then ends the broadcast;
// - /api/replays lists the replay, ended and complete, and its timeline holds the three messages
//   in order;
// - /replay/<id> plays the file (the picture has a size, the playback position advances);
// - seeked to "middle" + 0.5 s, the chat shows "early" and "middle" and not yet "late";
// - played on, "late" shows when the playback passes it; seeked back before "middle", the chat
//   holds "early" only.
//
// Exit status 0 when every check passed ("PASS: …" last). Environment: CHROMIUM_PATH, HEADFUL=1.
import { assert, fail, launch, log, sleep, step } from './chromium.mjs';

const base = (process.argv[2] || '').replace(/\/$/, '');
if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(base)) {
  console.error('usage: node tests/browser/replay.mjs http://127.0.0.1:<port>');
  process.exit(2);
}
const WAIT_MS = 20_000;
const STREAM = 'replay-cam';
const TITLE = 'A broadcast to replay';
/** The chat messages, and when (after going live) the broadcaster sends each. */
const SCRIPT = [
  { text: 'early', at_ms: 2_000 },
  { text: 'middle', at_ms: 6_000 },
  { text: 'late', at_ms: 10_000 },
];
/** How long the broadcast lasts after going live. */
const BROADCAST_MS = 12_000;


const waitFor = (page, fn, arg, timeout = WAIT_MS) => page.waitForFunction(fn, arg, { timeout });

async function waitState(page, state, timeout = WAIT_MS) {
  try {
    await waitFor(page, (s) => document.body.dataset.state === s, state, timeout);
  } catch {
    const now = await page.evaluate(() => document.body.dataset.state).catch(() => '?');
    throw new Error(`${page.url()}: state is "${now}", waited ${timeout} ms for "${state}"`);
  }
}

/** The texts of the chat messages the page shows, in order. */
const chatTexts = (page) => page.evaluate(() => [...document.querySelectorAll('#chat-list li.chat-msg .text')]
  .filter((t) => t.getBoundingClientRect().height > 0)
  .map((t) => t.textContent));

/** Waits until the page's chat shows exactly `texts`, in order. */
async function waitChatIs(page, texts, timeout = WAIT_MS) {
  try {
    await waitFor(page, (want) => {
      const got = [...document.querySelectorAll('#chat-list li.chat-msg .text')]
        .filter((t) => t.getBoundingClientRect().height > 0)
        .map((t) => t.textContent);
      return JSON.stringify(got) === JSON.stringify(want);
    }, texts, timeout);
  } catch {
    throw new Error(`the chat shows ${JSON.stringify(await chatTexts(page))}, waited ${timeout} ms for ${JSON.stringify(texts)}`);
  }
}

/** Pauses the replay's video, seeks it to `s` seconds and waits until the seek is done. */
async function seek(page, s) {
  await page.evaluate((to) => new Promise((resolve) => {
    const v = window.golive.video;
    v.pause();
    v.addEventListener('seeked', () => resolve(), { once: true });
    v.currentTime = to;
  }), s);
  // The page rebuilds its chat on `seeked`: let that listener (registered first) run too.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
}

const watchdog = setTimeout(() => fail('timed out'), 170_000);
const browser = await launch();
const pageErrors = [];
try {
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: { width: 1100, height: 800 } });
  const newPage = async (label) => {
    const p = await ctx.newPage();
    p.on('pageerror', (e) => {
      pageErrors.push(`${label}: ${e.message}`);
      log(`${label} page error: ${e.message}`);
    });
    p.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') log(`${label} console.${m.type()}: ${m.text()}`);
    });
    return p;
  };

  const live = await newPage('broadcaster');
  await step('/live goes live with the fake camera, chats at known moments, and ends', async () => {
    await live.goto(`${base}/live`);
    await waitState(live, 'preview');
    await live.fill('#name', STREAM);
    await live.fill('#title', TITLE);
    await live.fill('#chat-name', 'Host');
    await live.click('#go');
    await waitState(live, 'live');
    const onAir = Date.now();
    for (const { text, at_ms: at } of SCRIPT) {
      await sleep(Math.max(0, onAir + at - Date.now()));
      await live.fill('#chat-input', text);
      await live.press('#chat-input', 'Enter');
      await waitFor(live, (t) => [...document.querySelectorAll('#chat-list li.chat-msg .text')]
        .some((m) => m.textContent === t), text);
      log(`sent "${text}" ${((Date.now() - onAir) / 1000).toFixed(1)} s after going live`);
    }
    await sleep(Math.max(0, onAir + BROADCAST_MS - Date.now()));
    await live.click('#end');
    await waitState(live, 'preview');
  });

  let replay = null;
  await step('/api/replays lists the ended replay, and its timeline holds the chat in order', async () => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const rows = await (await fetch(`${base}/api/replays?stream=${STREAM}`)).json();
      replay = rows.find((r) => r.stream === STREAM && r.ended_unix_ms && r.complete) || null;
      if (replay) break;
      if (Date.now() > deadline) throw new Error(`no ended, complete replay of ${STREAM}: ${JSON.stringify(rows)}`);
      await sleep(250);
    }
    log(`replay ${replay.id}: ${replay.duration_ms} ms, ${replay.bytes} bytes, ${replay.video} + ${replay.audio}`);
    assert(replay.url === `/replay/${replay.id}`, `the replay's url (${replay.url})`);
    assert(replay.video && /vp8/i.test(replay.video), `the video is VP8 (${replay.video})`);
    const timeline = await (await fetch(`${base}/api/replays/${replay.id}/timeline`)).json();
    const chats = timeline.filter((e) => e.event.type === 'chat');
    assert(JSON.stringify(chats.map((e) => e.event.text)) === JSON.stringify(SCRIPT.map((m) => m.text)),
      `the timeline's chat is ${JSON.stringify(chats.map((e) => e.event.text))}`);
    for (const e of chats) SCRIPT.find((m) => m.text === e.event.text).t_ms = e.t_ms;
    log(`timeline offsets: ${SCRIPT.map((m) => `${m.text} ${m.t_ms} ms`).join(', ')}`);
    assert(SCRIPT[0].t_ms < SCRIPT[1].t_ms && SCRIPT[1].t_ms < SCRIPT[2].t_ms, 'the offsets grow');
    assert(SCRIPT[2].t_ms < replay.duration_ms, `"late" (${SCRIPT[2].t_ms} ms) is within the replay (${replay.duration_ms} ms)`);
  });

  const viewer = await newPage('replay');
  await step('/replay/<id> plays the recording: a picture with a size, a position that advances', async () => {
    await viewer.goto(`${base}${replay.url}`);
    await waitState(viewer, 'ready');
    assert((await viewer.locator('#title').textContent()) === TITLE, 'the title');
    await waitChatIs(viewer, []);
    await viewer.evaluate(() => {
      const v = window.golive.video;
      v.muted = true;
      return v.play();
    });
    await waitFor(viewer, () => window.golive.video.videoWidth > 0);
    const t0 = await viewer.evaluate(() => window.golive.video.currentTime);
    await waitFor(viewer, (t) => window.golive.video.currentTime > t + 0.5, t0);
    const { w, h, t } = await viewer.evaluate(() => {
      const v = window.golive.video;
      return { w: v.videoWidth, h: v.videoHeight, t: v.currentTime };
    });
    log(`playing ${w}x${h}, position ${t0.toFixed(2)} s -> ${t.toFixed(2)} s`);
    assert(!(await viewer.evaluate(() => window.golive.video.error)), 'no media error');
  });

  await step('seeked to "middle" + 0.5 s, the chat shows "early" and "middle", not yet "late"', async () => {
    const to = SCRIPT[1].t_ms / 1000 + 0.5;
    await seek(viewer, to);
    const at = await viewer.evaluate(() => window.golive.video.currentTime);
    log(`seeked to ${at.toFixed(2)} s`);
    await waitChatIs(viewer, ['early', 'middle']);
    const shown = await chatTexts(viewer);
    assert(!shown.includes('late'), `"late" is not shown yet (${JSON.stringify(shown)})`);
    assert(await viewer.locator('.chat-empty').isHidden(), 'the empty note is hidden');
  });

  await step('played on, "late" shows when the playback passes it', async () => {
    await viewer.evaluate(() => window.golive.video.play());
    await waitChatIs(viewer, ['early', 'middle', 'late']);
    const at = await viewer.evaluate(() => window.golive.video.currentTime);
    assert(at * 1000 >= SCRIPT[2].t_ms, `"late" shows once the playback passed it (at ${at.toFixed(2)} s)`);
  });

  await step('seeked back between "early" and "middle", the chat holds "early" only', async () => {
    await seek(viewer, (SCRIPT[0].t_ms + SCRIPT[1].t_ms) / 2000);
    await waitChatIs(viewer, ['early']);
  });

  assert(pageErrors.length === 0, `no page errors: ${pageErrors.join('; ')}`);
  clearTimeout(watchdog);
  log('PASS: the replay plays, seeks, and shows the chat of the moment');
} catch (e) {
  fail(e && e.stack ? e.stack : e);
} finally {
  await browser.close().catch(() => {});
}
process.exit(0);
