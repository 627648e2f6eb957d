// Time to first frame, measured in a real Chromium: how long a person waits for the picture.
//
//   node tests/browser/ttff.mjs http://127.0.0.1:8080 [http://127.0.0.1:8081]
//
// Goes live from /live with the fake camera (several times, for "Go Live to on air": the click
// on Go Live to the broadcaster's peer connection `connected`), lets the broadcast run 4 s, then
// opens the player 8 times, one late joiner after the other, each in a fresh browser context (a
// cold cache, as a person following a link), and measures navigation start → the first video
// frame presented (`requestVideoFrameCallback`'s `presentationTime`, on the page's own clock,
// whose zero is the navigation start). Prints p50 and p95 of both, and the timeline of the
// median joiner (when the scripts, the socket, the offer and the answer came).
//
// The player is `/watch/<stream>` by default; `TTFF_PAGE=embed` measures `/embed/<stream>`.
// Environment: CHROMIUM_PATH, TTFF_JOINERS (8), TTFF_GOLIVES (5), TTFF_RUN_MS (4000),
// TTFF_PHONE=1 (the joiners get a phone-sized viewport).
// With a second server (A/B: say an old build and a new one), both broadcast and the go-lives
// and joiners alternate between them, so both see the same load on a shared machine.
// A benchmark, not a test: it asserts only that every joiner saw a frame.
import { launch, sleep } from './chromium.mjs';

const bases = process.argv.slice(2, 4).map((u) => u.replace(/\/$/, ''));
if (bases.length === 0 || !bases.every((u) => /^https?:\/\//.test(u))) {
  console.error('usage: node tests/browser/ttff.mjs <server-url> [<second-server-url>]');
  process.exit(2);
}
const JOINERS = Number(process.env.TTFF_JOINERS || 8);
const GOLIVES = Number(process.env.TTFF_GOLIVES || 5);
const RUN_MS = Number(process.env.TTFF_RUN_MS || 4000);
const PAGE = process.env.TTFF_PAGE || 'watch';
const PHONE = process.env.TTFF_PHONE === '1';
const WAIT_MS = 20_000;
const STREAM = `ttff-${process.pid}`;


/** Runs in every page before its own scripts: marks (ms since navigation start) of the socket,
 * the peer connection and the first presented frame, whatever the page's code looks like. */
function hooks() {
  const T = { marks: {}, goAt: null, onAirAt: null, goMarks: {} };
  window.__ttff = T;
  const now = () => Math.round(performance.now());
  const mark = (k, at = now()) => {
    if (!(k in T.marks)) T.marks[k] = Math.round(at);
    // Since the last click on Go Live, for its own timeline.
    if (T.goAt !== null && !(k in T.goMarks)) T.goMarks[k] = Math.round(at - T.goAt);
  };
  const label = (data) => {
    try {
      return JSON.parse(data).type;
    } catch {
      return '?';
    }
  };
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...args) {
      super(...args);
      mark('socket created');
      this.addEventListener('open', () => mark('socket open'));
      this.addEventListener('message', (e) => mark(`got ${label(e.data)}`));
    }

    send(data) {
      mark(`sent ${label(data)}`);
      return super.send(data);
    }
  };
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PC {
    constructor(...args) {
      super(...args);
      mark('pc created');
      this.addEventListener('icegatheringstatechange', () => {
        if (this.iceGatheringState === 'complete') mark('ice gathered');
      });
      this.addEventListener('connectionstatechange', () => {
        if (this.connectionState !== 'connected') return;
        mark('connected');
        if (T.goAt !== null && T.onAirAt === null) T.onAirAt = performance.now();
      });
    }

    async createOffer(...args) {
      const o = await super.createOffer(...args);
      mark('offer created');
      return o;
    }

    async setLocalDescription(...args) {
      const r = await super.setLocalDescription(...args);
      mark('local description set');
      return r;
    }

    async setRemoteDescription(...args) {
      const r = await super.setRemoteDescription(...args);
      mark('remote description set');
      return r;
    }
  };
  // Every <video> that gets a stream, wherever it is (a player's shadow DOM included).
  const srcObject = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, 'srcObject');
  const seen = new WeakSet();
  Object.defineProperty(HTMLMediaElement.prototype, 'srcObject', {
    configurable: true,
    get() {
      return srcObject.get.call(this);
    },
    set(v) {
      srcObject.set.call(this, v);
      if (v && this instanceof HTMLVideoElement && !seen.has(this)) {
        seen.add(this);
        this.requestVideoFrameCallback((_now, meta) => {
          mark('first frame', meta.presentationTime);
          if (T.firstFrame === undefined) T.firstFrame = meta.presentationTime;
        });
      }
    },
  });
  document.addEventListener('DOMContentLoaded', () => mark('DOMContentLoaded'));
  document.addEventListener('click', (e) => {
    if (e.target && e.target.closest && e.target.closest('#go')) {
      T.goAt = performance.now();
      T.onAirAt = null;
      T.goMarks = {};
    }
  }, true);
}

function pct(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

const waitState = (page, s) => page.waitForFunction((x) => document.body.dataset.state === x, s, { timeout: WAIT_MS });

const browser = await launch();
const watchdog = setTimeout(() => {
  console.error('FAIL: ttff did not finish within 150 s');
  process.exit(1);
}, 150_000);
let failed = false;
try {
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'] });
  await ctx.addInitScript(hooks);
  const lives = [];
  for (const base of bases) {
    const live = await ctx.newPage();
    await live.goto(`${base}/live`);
    await waitState(live, 'preview');
    await live.fill('#name', STREAM);
    await live.fill('#title', 'TTFF');
    lives.push(live);
  }
  // Every go-live is measured the same way; the last one stays on the air.
  const onAir = bases.map(() => []);
  for (let i = 0; i < GOLIVES; i++) {
    for (const [k, live] of lives.entries()) {
      await live.click('#go');
      await waitState(live, 'live');
      await live.waitForFunction(() => window.__ttff.onAirAt !== null, null, { timeout: WAIT_MS });
      onAir[k].push(await live.evaluate(() => window.__ttff.onAirAt - window.__ttff.goAt));
      if (i < GOLIVES - 1) {
        await live.click('#end');
        await waitState(live, 'preview');
        await sleep(300);
      }
    }
  }
  for (const [k, live] of lives.entries()) {
    console.log(`${bases[k]}: go live → on air: ${onAir[k].map((v) => Math.round(v)).join(', ')} ms; the last one (ms from the click):`);
    const goMarks = await live.evaluate(() => window.__ttff.goMarks);
    for (const [m, v] of Object.entries(goMarks).sort((x, y) => x[1] - y[1])) console.log(`  ${String(v).padStart(5)} ${m}`);
  }
  await sleep(RUN_MS);

  const results = bases.map(() => []);
  for (let i = 0; i < JOINERS * bases.length; i++) {
    const k = i % bases.length;
    const c = await browser.newContext(PHONE
      ? { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true }
      : { viewport: { width: 1280, height: 800 } });
    await c.addInitScript(hooks);
    const p = await c.newPage();
    p.on('pageerror', (e) => console.log(`joiner ${i + 1} page error: ${e.message}`));
    await p.goto(`${bases[k]}/${PAGE}/${STREAM}`);
    try {
      await p.waitForFunction(() => window.__ttff.firstFrame !== undefined, null, { timeout: WAIT_MS });
    } catch {
      failed = true;
      console.log(`joiner ${i + 1}: no frame within ${WAIT_MS} ms; marks ${JSON.stringify(await p.evaluate(() => window.__ttff.marks))}`);
      await c.close();
      continue;
    }
    const r = await p.evaluate(() => ({
      ttff: window.__ttff.firstFrame,
      marks: window.__ttff.marks,
      resources: performance.getEntriesByType('resource')
        .map((e) => [new URL(e.name).pathname, Math.round(e.startTime), Math.round(e.responseEnd)]),
      html: Math.round(performance.getEntriesByType('navigation')[0]?.responseEnd || 0),
    }));
    results[k].push(r);
    console.log(`joiner ${i + 1} (${bases[k]}): first frame at ${Math.round(r.ttff)} ms`);
    await c.close();
  }
  for (const [k, base] of bases.entries()) {
    const mine = results[k];
    const who = bases.length > 1 ? ` ${base}` : '';
    if (mine.length) {
      const t = mine.map((r) => r.ttff);
      const median = [...mine].sort((a, b) => a.ttff - b.ttff)[Math.floor((mine.length - 1) / 2)];
      console.log(`timeline of the median joiner${who} (ms from navigation start): HTML in ${median.html}`);
      for (const [path, start, end] of median.resources) console.log(`  ${String(start).padStart(5)}–${end} ${path}`);
      for (const [m, v] of Object.entries(median.marks).sort((a, b) => a[1] - b[1])) {
        console.log(`  ${String(v).padStart(5)} ${m}`);
      }
      console.log(`TTFF /${PAGE}:${who} p50 ${Math.round(pct(t, 50))} ms, p95 ${Math.round(pct(t, 95))} ms `
        + `(${mine.length} late joiners${PHONE ? ' on a phone viewport' : ''}, broadcast running ${RUN_MS / 1000} s, `
        + 'navigation start → first frame presented, Chromium on 127.0.0.1)');
    }
    console.log(`TTFF go live → on air:${who} p50 ${Math.round(pct(onAir[k], 50))} ms, p95 ${Math.round(pct(onAir[k], 95))} ms `
      + `(${onAir[k].length} go-lives, click on Go Live → broadcaster connected)`);
    if (mine.length < JOINERS) failed = true;
  }
} finally {
  clearTimeout(watchdog);
  await browser.close();
}
process.exit(failed ? 1 : 0);
