// Screenshots of every page and state, on a desktop and a phone-sized viewport, for a person to
// look at (not a test):  node tests/browser/screenshots.mjs <server-url> [out-dir]
import { chromium } from 'playwright-core';

const base = (process.argv[2] || 'http://127.0.0.1:8080').replace(/\/$/, '');
const out = process.argv[3] || '.';
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream', '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns', '--autoplay-policy=no-user-gesture-required'];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium', args: FLAGS });
const waitState = (p, s) => p.waitForFunction((x) => document.body.dataset.state === x, s, { timeout: 20000 });
for (const [label, viewport, scheme] of [['desktop', { width: 1280, height: 800 }, 'light'], ['phone', { width: 390, height: 844 }, 'dark']]) {
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'], viewport, colorScheme: scheme, isMobile: label === 'phone', hasTouch: label === 'phone' });
  const shot = (p, name) => p.screenshot({ path: `${out}/${label}-${name}.png`, fullPage: true });
  const dir = await ctx.newPage();
  await dir.goto(`${base}/`);
  await waitState(dir, 'empty');
  await shot(dir, 'index-empty');
  const w = await ctx.newPage();
  await w.goto(`${base}/watch/shots-${label}`);
  await waitState(w, 'waiting');
  await shot(w, 'watch-waiting');
  const live = await ctx.newPage();
  await live.goto(`${base}/live`);
  await waitState(live, 'preview');
  await live.fill('#name', `shots-${label}`);
  await live.fill('#title', 'Sunday market, live from the square');
  await shot(live, 'live-preview');
  await live.click('#go');
  await waitState(live, 'live');
  await waitState(w, 'live');
  await new Promise((r) => setTimeout(r, 3000));
  await shot(live, 'live-onair');
  await shot(w, 'watch-live');
  await dir.goto(`${base}/`);
  await waitState(dir, 'live');
  await shot(dir, 'index-live');
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
  await new Promise((r) => setTimeout(r, 3000));
  await shot(w, 'watch-probe');
  await live.click('#end');
  await ctx.close();
}
await browser.close();
