// Adaptive quality over capped links, in real Chromium: one broadcaster on /live sends three
// simulcast layers (q/h/f, a quarter, a half and the whole camera picture); two /watch players,
// each in its own browser behind a link capped by the caller (a slow one and a fast one), must
// each decode steady video and settle on the layer their link carries: the slow one on the
// lowest (a quarter of the camera's size), the fast one on the top.
//
//   node tests/browser/tbf.mjs <server-url> <publisher-chromium> <slow-chromium> <fast-chromium> [narrow-command]
//
// Each Chromium path is an executable that starts Chromium where its traffic takes the right
// link (tests/tests/browser.rs makes wrappers that run it inside a network namespace). The
// script samples each player's inbound-rtp video statistics every SAMPLE_MS and records the
// SDK's `layer` events; a player has settled when its picture has held the expected layer's
// size for SETTLE_HOLD_MS. It prints, per player, the convergence time (first frame → the
// frame size it ended on, for good), the layers seen over time, and the freeze counts, then
// asserts that:
//   - the broadcaster sends three layers, the lowest a quarter of the camera's size;
//   - each player settles within SETTLE_DEADLINE_MS of its first frame on the expected size;
//   - after the first FREEZE_GRACE_MS on the settled layer, freezeCount does not grow;
//   - each decodes at least MIN_SETTLED_FPS frames a second while settled.
// Then, given a narrow-command (a `tc` command, run as written, that narrows the fast player's
// link below the top layer), a second phase: the command runs, the fast player is watched for
// NARROW_WATCH_MS, and must keep decoding without a freeze after NARROW_GRACE_MS. How it
// adapted is printed and checked against the server's /metrics: where it kept the whole
// picture (the top layer), its frame rate must have fallen (the server dropped its upper
// temporal layers, golive_temporal_dropped_total grew); otherwise it moved to the middle layer.
// Exit status 0 when every check passed. Environment: SETTLE_HOLD_MS, SETTLE_DEADLINE_MS.
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { FLAGS, assert, log, newPage as openPage, sleep, waitState as pageState } from './chromium.mjs';

const [rawBase, publisherExe, slowExe, fastExe, narrowCmd] = process.argv.slice(2);
const base = (rawBase || '').replace(/\/$/, '');
if (!/^https?:\/\//.test(base) || !publisherExe || !slowExe || !fastExe) {
  console.error('usage: node tests/browser/tbf.mjs <server-url> <publisher-chromium> <slow-chromium> <fast-chromium>');
  process.exit(2);
}

const STREAM = 'tbf-cam';
const WAIT_MS = 30_000;
const SAMPLE_MS = 500;
/** The broadcaster's own bandwidth estimate must grow before its encoder turns every layer on. */
const LAYERS_WAIT_MS = 30_000;
/** How long a player must hold its expected picture size to count as settled. */
const SETTLE_HOLD_MS = Number(process.env.SETTLE_HOLD_MS || 20_000);
/** From the first frame: the layer choice climbs one layer per few seconds of holding. */
const SETTLE_DEADLINE_MS = Number(process.env.SETTLE_DEADLINE_MS || 60_000);
/** Freezes while the picture changes size or the first keyframe of a layer is awaited are
 * expected; after this long on the settled layer, none. */
const FREEZE_GRACE_MS = 5_000;
/** The fake camera gives 20 to 30 frames a second; a steady picture keeps most of them. */
const MIN_SETTLED_FPS = 5;
/** Under the Rust side's last-resort kill (240 s), so a hang is reported by this script. */
const OVERALL_TIMEOUT_MS = 230_000;
/** The second phase: how long the fast player is watched after its link narrows, and how long
 * it may take to adapt (a freeze while its estimate falls is expected). */
const NARROW_WATCH_MS = 35_000;
const NARROW_GRACE_MS = 12_000;

/**
 * The fake camera's size: 640x480 by default (its three layers are 160x120, 320x240 and
 * 640x480), `TBF_CAMERA=1280x720` for another, `TBF_CAMERA=page` for what /live asks for (up
 * to 1280x720). Encoding three layers of 720p and decoding one take most of a small machine's
 * two cores, and a starved decoder freezes for reasons that are not the link's.
 */
const CAMERA = (() => {
  const v = process.env.TBF_CAMERA || '960x540';
  if (v === 'page') return null;
  const m = /^(\d+)x(\d+)$/.exec(v);
  if (!m) {
    console.error(`TBF_CAMERA=${v}: expected WIDTHxHEIGHT or page`);
    process.exit(2);
  }
  return { width: Number(m[1]), height: Number(m[2]) };
})();

/** In the broadcaster's page: its camera request asks for exactly this size. */
function cameraSize(size) {
  const md = navigator.mediaDevices;
  const get = md.getUserMedia.bind(md);
  md.getUserMedia = (c) => get(c && c.video
    ? { ...c, video: { ...(typeof c.video === 'object' ? c.video : {}), width: { exact: size.width }, height: { exact: size.height } } }
    : c);
}

const pageErrors = [];

async function launchAt(executablePath) {
  // The server's address is not loopback, so its pages would not be a secure context and the
  // camera (and the SDK's crypto) would be refused: the test's own server is trusted by name.
  const args = [...FLAGS, `--unsafely-treat-insecure-origin-as-secure=${base}`];
  return chromium.launch({ executablePath, headless: !process.env.HEADFUL, args });
}

function newPage(ctx, label) {
  return openPage(ctx, label, pageErrors);
}

function waitState(page, state, timeout = WAIT_MS) {
  return pageState(page, state, timeout);
}

/** The broadcaster's video outbound-rtp per rid: { rid: { width, height, frames, kbps } }. */
function sentLayers(page) {
  return page.evaluate(async () => {
    const out = {};
    (await window.golive.pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        out[r.rid || '-'] = {
          width: r.frameWidth || 0,
          height: r.frameHeight || 0,
          frames: r.framesEncoded || 0,
          bytes: r.bytesSent || 0,
          limit: r.qualityLimitationReason || '',
          keyframes: r.keyFramesEncoded || 0,
          plis: r.pliCount || 0,
          fps: r.framesPerSecond || 0,
          // Temporal layers per encoding, e.g. L1T3 (what the server may lower a frame rate by).
          mode: r.scalabilityMode || '',
        };
      }
    });
    return out;
  });
}

// Installed in every player page before its scripts run: records the SDK's `layer` events as
// soon as the page's player exists (the first one can follow the answer closely), and samples
// the video inbound-rtp every interval, with the times taken from one clock (Date.now()).
function recorder(sampleMs) {
  window.tbf = { layers: [], samples: [], firstFrameAt: null };
  const hook = setInterval(() => {
    const player = window.golive && window.golive.player;
    if (!player) return;
    clearInterval(hook);
    player.on('layer', (d) => window.tbf.layers.push({ at: Date.now(), layer: d.layer, reason: d.reason }));
    setInterval(async () => {
      const pc = player.pc;
      if (!pc) return;
      let v = null;
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') v = r;
      });
      if (!v) return;
      const s = {
        at: Date.now(),
        width: v.frameWidth || 0,
        height: v.frameHeight || 0,
        frames: v.framesDecoded || 0,
        // Frames that arrived whole, and PLIs the player sent: a freeze with frames arriving is
        // the decoder's or renderer's; one without, and no loss, is the sender's pause.
        received: v.framesReceived || 0,
        plis: v.pliCount || 0,
        freezes: v.freezeCount || 0,
        frozenS: v.totalFreezesDuration || 0,
        bytes: v.bytesReceived || 0,
        lost: v.packetsLost || 0,
        nacks: v.nackCount || 0,
        // Repairs and the server's probe padding (RTX copies) both count here.
        rtxBytes: v.retransmittedBytesReceived || 0,
        layer: player.layer,
      };
      if (s.frames > 0 && window.tbf.firstFrameAt === null) window.tbf.firstFrameAt = s.at;
      window.tbf.samples.push(s);
    }, sampleMs);
  }, 10);
}

/**
 * Whether `samples` (oldest first) end with at least `holdMs` at `size`; returns the time the
 * final run at that size began, or null.
 */
function settledSince(samples, size, holdMs) {
  let since = null;
  for (const s of samples) {
    if (s.width === size.width && s.height === size.height) {
      if (since === null) since = s.at;
    } else {
      since = null;
    }
  }
  const last = samples[samples.length - 1];
  return since !== null && last && last.at - since >= holdMs ? since : null;
}

/**
 * What a player and the broadcaster did in the 4 s before a freeze was counted (`atS` seconds
 * after the first frame): per half second the player's frames received/decoded and PLIs sent,
 * per second the frames the broadcaster encoded on each layer and why its encoder was limited.
 */
function aroundFreeze(samples, encoded, first, atS) {
  const end = first + atS * 1000;
  const from = end - 4000;
  const mine = samples.filter((s) => s.at >= from - 500 && s.at <= end);
  const player = mine.slice(1).map((s, i) => `${s.received - mine[i].received}/${s.frames - mine[i].frames}`
    + `${s.plis > mine[i].plis ? ` pli+${s.plis - mine[i].plis}` : ''}`).join(' ');
  const theirs = encoded.filter((e) => e.at >= from - 1000 && e.at <= end + 1000);
  const pub = theirs.slice(1).map((e, i) => ['q', 'h', 'f'].map((r) => {
    const now = e.sent[r] || {};
    const was = theirs[i].sent[r] || {};
    return `${r}${(now.frames || 0) - (was.frames || 0)}${now.limit && now.limit !== 'none' ? `(${now.limit})` : ''}`;
  }).join(',')).join(' ');
  return `player received/decoded per 0.5 s: ${player}; broadcaster encoded per 1 s: ${pub}`;
}

/** The picture sizes a player showed over time, as "WxH from t s" runs. */
function sizeRuns(samples, t0) {
  const runs = [];
  for (const s of samples) {
    if (!s.width) continue;
    const size = `${s.width}x${s.height}`;
    if (!runs.length || runs[runs.length - 1].size !== size) {
      runs.push({ size, from: ((s.at - t0) / 1000).toFixed(1) });
    }
  }
  return runs.map((r) => `${r.size}@${r.from}s`).join(' → ');
}

async function main() {
  const browsers = [];
  try {
    const pubBrowser = await launchAt(publisherExe);
    browsers.push(pubBrowser);
    const pubCtx = await pubBrowser.newContext({ permissions: ['camera', 'microphone'] });
    if (CAMERA) await pubCtx.addInitScript(cameraSize, CAMERA);
    const live = await newPage(pubCtx, 'broadcaster');
    await live.goto(`${base}/live`);
    await waitState(live, 'preview');
    const camera = await live.waitForFunction(() => {
      const v = document.getElementById('preview');
      return v.videoWidth > 0 && { width: v.videoWidth, height: v.videoHeight };
    }, null, { timeout: WAIT_MS }).then((h) => h.jsonValue());
    log(`camera ${camera.width}x${camera.height}`);
    assert(camera.width >= 640 && camera.height >= 360, `the fake camera is at least 640x360 (${camera.width}x${camera.height})`);
    await live.fill('#name', STREAM);
    await live.fill('#title', 'Capped links');
    await live.click('#go');
    await waitState(live, 'live');

    // The three layers are encoded and sent before any player comes.
    const low = { width: camera.width / 4, height: camera.height / 4 };
    let sent = {};
    const liveAt = Date.now();
    const deadline = liveAt + LAYERS_WAIT_MS;
    let shown = liveAt;
    for (;;) {
      sent = await sentLayers(live);
      const ok = ['q', 'h', 'f'].every((rid) => sent[rid] && sent[rid].frames > 0 && sent[rid].width > 0);
      if (ok) {
        log(`broadcaster's encodings: ${['q', 'h', 'f'].map((rid) => `${rid} ${sent[rid].mode || 'no scalabilityMode'}`).join(', ')}`);
        break;
      }
      if (Date.now() > deadline) throw new Error(`the broadcaster does not send layers q, h and f: ${JSON.stringify(sent)}`);
      if (Date.now() - shown >= 5000) {
        shown = Date.now();
        log(`broadcaster sends ${JSON.stringify(sent)}`);
      }
      await sleep(250);
    }
    log(`all three layers sent ${((Date.now() - liveAt) / 1000).toFixed(1)} s after going live`);
    log(`broadcaster sends ${['q', 'h', 'f'].map((r) => `${r} ${sent[r].width}x${sent[r].height}`).join(', ')}`);
    assert(sent.q.width === low.width && sent.q.height === low.height,
      `layer q is a quarter of the camera (${low.width}x${low.height}): ${sent.q.width}x${sent.q.height}`);

    const players = [
      { label: 'slow', exe: slowExe, expect: 'low' },
      { label: 'fast', exe: fastExe, expect: 'high' },
    ];
    for (const p of players) {
      p.browser = await launchAt(p.exe);
      browsers.push(p.browser);
      const ctx = await p.browser.newContext({ viewport: { width: 1280, height: 800 } });
      await ctx.addInitScript(recorder, SAMPLE_MS);
      p.page = await newPage(ctx, `player-${p.label}`);
    }
    const t0 = Date.now();
    await Promise.all(players.map((p) => p.page.goto(`${base}/watch/${STREAM}`)));
    await Promise.all(players.map((p) => waitState(p.page, 'live')));
    log('both players are live');

    // Wait for both to settle on the expected picture size, or the deadline.
    const state = async (p) => p.page.evaluate(() => ({ ...window.tbf, samples: [...window.tbf.samples] }));
    let last = Date.now();
    // The broadcaster's encodings once a second, to lay beside a player's freezes.
    const encoded = [];
    for (;;) {
      await sleep(1000);
      const sentNow = await sentLayers(live);
      encoded.push({ at: Date.now(), sent: sentNow });
      for (const p of players) {
        p.rec = await state(p);
        p.size = p.expect === 'low' ? { width: sentNow.q.width, height: sentNow.q.height }
          : { width: sentNow.f.width, height: sentNow.f.height };
        p.since = settledSince(p.rec.samples, p.size, SETTLE_HOLD_MS);
      }
      if (Date.now() - last >= 5000) {
        last = Date.now();
        // Each layer's send rate over the last 5 s.
        const older = encoded.find((e) => e.at >= last - 5500) || encoded[0];
        const kbps = (r) => (older.sent[r] && last > older.at
          ? (((sentNow[r].bytes - older.sent[r].bytes) * 8) / (last - older.at)).toFixed(0) : '?');
        log(players.map((p) => {
          const s = p.rec.samples[p.rec.samples.length - 1] || {};
          return `${p.label}: ${s.width}x${s.height} layer ${s.layer} frames ${s.frames} freezes ${s.freezes} lost ${s.lost}`;
        }).join(' | ') + ` | sent ${['q', 'h', 'f'].map((r) => `${r} ${sentNow[r].width}x${sentNow[r].height} ${sentNow[r].fps}fps ${kbps(r)}kbit/s kf ${sentNow[r].keyframes} pli ${sentNow[r].plis}${sentNow[r].limit && sentNow[r].limit !== 'none' ? ` (${sentNow[r].limit})` : ''}`).join(', ')}`);
      }
      if (players.every((p) => p.since !== null)) break;
      const tooLate = players.find((p) => p.since === null && p.rec.firstFrameAt !== null
        && Date.now() - p.rec.firstFrameAt > SETTLE_DEADLINE_MS + SETTLE_HOLD_MS);
      if (tooLate || Date.now() - t0 > SETTLE_DEADLINE_MS + SETTLE_HOLD_MS + WAIT_MS) break;
    }

    let failed = [];
    for (const p of players) {
      const { samples, layers, firstFrameAt } = p.rec;
      const first = firstFrameAt ?? t0;
      const lastSample = samples[samples.length - 1];
      // A player starts on the lowest layer; the server says so only when it moves.
      const events = ['low(start)', ...layers.map((e) => `${e.layer}(${e.reason})@${((e.at - first) / 1000).toFixed(1)}s`)].join(' → ');
      log(`${p.label} player: first frame ${((first - t0) / 1000).toFixed(1)} s after opening /watch`);
      log(`${p.label} player: layer events ${events}`);
      log(`${p.label} player: picture sizes ${sizeRuns(samples, first)}`);
      // When it froze and when RTX arrived (repairs, probe padding), to tell the causes apart.
      const marks = (pick) => samples.slice(1)
        .map((s, i) => [s, pick(s, samples[i])])
        .filter(([, d]) => d > 0)
        .map(([s, d]) => `${((s.at - first) / 1000).toFixed(1)}s(+${d})`);
      log(`${p.label} player: freezes at ${marks((s, prev) => s.freezes - prev.freezes).join(' ') || 'none'}`);
      log(`${p.label} player: RTX bytes at ${marks((s, prev) => s.rtxBytes - prev.rtxBytes).join(' ') || 'none'}`);
      for (const f of marks((s, prev) => s.freezes - prev.freezes)) {
        log(`${p.label} player: around its freeze at ${f}: ${aroundFreeze(samples, encoded, first, Number(f.split('s')[0]))}`);
      }
      if (p.since === null) {
        failed.push(`the ${p.label} player did not hold ${p.size.width}x${p.size.height} (layer ${p.expect}) for ${SETTLE_HOLD_MS / 1000} s within ${SETTLE_DEADLINE_MS / 1000} s of its first frame; last ${JSON.stringify(lastSample)}`);
        continue;
      }
      const lastLayer = layers.length ? layers[layers.length - 1].layer : 'low';
      const converged = (p.since - first) / 1000;
      const graceEnd = p.since + FREEZE_GRACE_MS;
      const atGrace = samples.find((s) => s.at >= graceEnd);
      const settled = samples.filter((s) => s.at >= p.since);
      const fps = (lastSample.frames - settled[0].frames) / ((lastSample.at - settled[0].at) / 1000);
      const kbps = ((lastSample.bytes - settled[0].bytes) * 8) / (lastSample.at - settled[0].at);
      const freezesGrew = lastSample.freezes - atGrace.freezes;
      console.log(`TBF ${p.label}: converged to ${p.size.width}x${p.size.height} (layer ${lastLayer}) `
        + `${converged.toFixed(1)} s after the first frame; freezes ${lastSample.freezes} in all `
        + `(${lastSample.frozenS.toFixed(2)} s frozen), ${atGrace.freezes} by ${FREEZE_GRACE_MS / 1000} s on the settled layer, `
        + `+${freezesGrew} after; settled ${fps.toFixed(1)} fps, ${kbps.toFixed(0)} kbit/s video, `
        + `${lastSample.lost} packets lost, ${lastSample.nacks} NACKs; layers ${events}`);
      if (lastLayer !== p.expect) {
        failed.push(`the ${p.label} player ended on layer ${lastLayer}, not ${p.expect}`);
      }
      // Moves for `publisher` (the broadcaster paused or resumed a layer: its own uplink or CPU
      // was short) are shown in the events, not failed: they are the broadcaster's doing.
      if (freezesGrew > 0) {
        failed.push(`the ${p.label} player froze ${freezesGrew} more times after ${FREEZE_GRACE_MS / 1000} s on its settled layer`);
      }
      if (!(fps >= MIN_SETTLED_FPS)) {
        failed.push(`the ${p.label} player decoded ${fps.toFixed(1)} fps on its settled layer (at least ${MIN_SETTLED_FPS} expected)`);
      }
    }
    log(`server: ${await serverSummary(live)}`);
    if (failed.length) throw new Error(failed.join('\n  '));
    if (narrowCmd) await narrowPhase(live, players.find((p) => p.label === 'fast'), state);
  } finally {
    await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  }
}

/** The server's counters, read through the broadcaster's page (the server's own network). */
function metricsText(live) {
  return live.evaluate(async () => (await fetch('/metrics')).text());
}

async function serverCounters(live) {
  const text = await metricsText(live);
  const value = (name) => Number((text.match(new RegExp(`^${name} (\\S+)$`, 'm')) || [])[1] || 0);
  return { dropped: value('golive_temporal_dropped_total'), switches: value('golive_temporal_switches_total') };
}

/** The server's counters that tell why a viewer got no video for a while: drops by reason
 * (a slow viewer skips to a keyframe), layer and frame-rate moves, probes, keyframe requests. */
async function serverSummary(live) {
  const text = await metricsText(live);
  const wanted = /^golive_(packets_dropped_total|layer_switches_total|temporal_switches_total|temporal_dropped_total|bandwidth_probes_total|keyframe_requests_sent_total|keyframe_cache_hits_total|rtx_sent_total|nacks_total)\b/;
  return text.split('\n').filter((l) => wanted.test(l)).map((l) => l.replace(/^golive_/, '')).join(', ');
}

/** Frames decoded per second between two samples. */
const fpsBetween = (a, b) => (b.frames - a.frames) / ((b.at - a.at) / 1000);

async function narrowPhase(live, fast, state) {
  const before = await serverCounters(live);
  const rec0 = await state(fast);
  const s0 = rec0.samples[rec0.samples.length - 1];
  const prior = rec0.samples.filter((s) => s.at >= s0.at - 5000);
  const fpsBefore = fpsBetween(prior[0], s0);
  const [cmd, ...args] = narrowCmd.split(' ');
  execFileSync(cmd, args);
  const narrowedAt = Date.now();
  log(`fast link narrowed (${narrowCmd}); the player decoded ${fpsBefore.toFixed(1)} fps at ${s0.width}x${s0.height} before`);
  await sleep(NARROW_WATCH_MS);
  const rec = await state(fast);
  const after = await serverCounters(live);
  const samples = rec.samples.filter((s) => s.at >= narrowedAt);
  const graceAt = samples.find((s) => s.at >= narrowedAt + NARROW_GRACE_MS);
  const last = samples[samples.length - 1];
  const tail = samples.filter((s) => s.at >= last.at - 10_000);
  const fpsTail = fpsBetween(tail[0], last);
  const kbpsTail = ((last.bytes - tail[0].bytes) * 8) / (last.at - tail[0].at);
  const events = rec.layers.filter((e) => e.at >= narrowedAt).map((e) => `${e.layer}(${e.reason})@${((e.at - narrowedAt) / 1000).toFixed(1)}s`).join(' → ') || 'none';
  const kept = last.width === s0.width && last.height === s0.height;
  // Frame rate and picture height every 2 s from the narrowing on.
  const trace = [];
  for (let i = 0; i + 4 < samples.length; i += 4) {
    const [a, b] = [samples[i], samples[i + 4]];
    trace.push(`${fpsBetween(a, b).toFixed(0)}/${b.height}(rx ${b.received - a.received} lost ${b.lost - a.lost} `
      + `nack ${b.nacks - a.nacks} pli ${b.plis - a.plis} kbps ${(((b.bytes - a.bytes) * 8) / (b.at - a.at)).toFixed(0)})`);
  }
  log(`fast player after the narrowing, every 2 s: fps/height(frames received, packets lost, NACKs, PLIs, kbit/s): ${trace.join(' ')}`);
  console.log(`TBF narrowed: ${kept ? 'kept' : 'left'} ${s0.width}x${s0.height}, now ${last.width}x${last.height} `
    + `at ${fpsTail.toFixed(1)} fps (${fpsBefore.toFixed(1)} before), ${kbpsTail.toFixed(0)} kbit/s video over the last 10 s; `
    + `sizes ${sizeRuns(samples, narrowedAt)}; layer events ${events}; freezes +${last.freezes - s0.freezes} `
    + `(+${last.freezes - graceAt.freezes} after ${NARROW_GRACE_MS / 1000} s); server: temporal drops +${after.dropped - before.dropped}, `
    + `temporal switches +${after.switches - before.switches}`);
  const failed = [];
  if (last.freezes > graceAt.freezes) failed.push(`the fast player froze ${last.freezes - graceAt.freezes} times after its link narrowed and ${NARROW_GRACE_MS / 1000} s to adapt`);
  if (!(fpsTail >= MIN_SETTLED_FPS)) failed.push(`the fast player decoded ${fpsTail.toFixed(1)} fps once its link narrowed`);
  if (kept) {
    if (!(fpsTail <= 0.75 * fpsBefore)) failed.push(`the fast player kept ${last.width}x${last.height} at ${fpsTail.toFixed(1)} fps (${fpsBefore.toFixed(1)} before) on a link narrower than that layer`);
    if (!(after.dropped > before.dropped)) failed.push('the server dropped no temporal layer, yet the player kept the top layer on a narrower link');
  } else if (last.height >= s0.height) {
    failed.push(`the fast player's picture went from ${s0.width}x${s0.height} to ${last.width}x${last.height}`);
  }
  if (failed.length) throw new Error(failed.join('\n  '));
}

const watchdog = setTimeout(() => {
  log(`FAILED: the capped-links test did not finish within ${OVERALL_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

let ok = true;
try {
  await main();
} catch (e) {
  ok = false;
  log(`FAILED: ${e && e.stack ? e.stack : e}`);
}
clearTimeout(watchdog);
if (pageErrors.length) {
  ok = false;
  log(`FAILED: uncaught errors in the pages:\n  ${pageErrors.join('\n  ')}`);
}
if (!ok) process.exit(1);
log('PASS: over capped links each player settles on the layer its link carries, steady');
