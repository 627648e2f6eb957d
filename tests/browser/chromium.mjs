// What every browser script here shares: Debian's Chromium with the flags that let it run
// headless on a machine with no camera, no GPU and no network but loopback, and the small
// helpers of a script that stops at its first failure.
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export const FLAGS = [
  // Running as root in a container, without a GPU; QUIC would only try the network.
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  // Chromium's own background connections are refused by a closed network, many at a time.
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // A synthetic camera and microphone (640x480 at 20 fps), granted without a prompt.
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  // Without it Chromium offers no 127.0.0.1 candidate and nothing connects.
  '--allow-loopback-in-peer-connection',
  // Host candidates as addresses, not mDNS names the server cannot resolve.
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
  // Tabs in the background must keep decoding and drawing at full rate.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/** Starts Chromium headless (`HEADFUL=1` shows the windows). */
export function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: !process.env.HEADFUL, args: FLAGS });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

const started = Date.now();

/** A line with the seconds since the script started. */
export function log(line) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${line}`);
}

/** Says why and ends the script with status 1. */
export function fail(msg) {
  log(`FAIL: ${msg}`);
  process.exit(1);
}

/** Runs one named step; the first that throws ends the script. */
export async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    log(`ok     ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    fail(`${name}: ${e && e.stack ? e.stack : e}`);
  }
}

/** A new page of `ctx`: its uncaught errors go into `errors` and the log, its console errors
 * and warnings into the log, each line under `label`. */
export async function newPage(ctx, label, errors) {
  const page = await ctx.newPage();
  page.on('pageerror', (e) => {
    errors.push(`${label}: ${e.message}`);
    log(`${label} page error: ${e.message}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') log(`${label} console.${m.type()}: ${m.text()}`);
  });
  return page;
}

/** Waits until the page's <body data-state> is `state`. */
export async function waitState(page, state, timeout) {
  try {
    await page.waitForFunction((s) => document.body.dataset.state === s, state, { timeout });
  } catch {
    const now = await page.evaluate(() => document.body.dataset.state).catch(() => '?');
    throw new Error(`${page.url()}: state is "${now}", waited ${timeout} ms for "${state}"`);
  }
}
