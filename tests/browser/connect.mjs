// Connect time and time to first frame of late-joining Chromium WHEP players, side by side on
// several servers: golive with `--viewer-leg rtc`, golive with `--viewer-leg lean`, and pion's
// relay (bench/pion-relay) when given.
//
//   node tests/browser/connect.mjs rtc=http://127.0.0.1:8080 lean=http://127.0.0.1:8081 \
//        [pion=http://127.0.0.1:8090]
//
// Every server gets the same publisher: a Chromium page that publishes the fake camera and
// microphone with WHIP (one such page per server, all in one browser). After the broadcasts
// have run a while, players join one after the other, taking the servers in turn so every
// server sees the same load on a shared machine. Each player is a fresh browser context with
// a page that does nothing but WHEP: it creates its RTCPeerConnection, sends its offer at once
// (no waiting for ICE gathering: both golive and pion learn the player's address from its STUN
// checks), applies the answer and waits for the first frame presented. Per player it records,
// on the page's clock:
//   - answer → ICE connected, answer → DTLS connected (the RTCIceTransport's and
//     RTCDtlsTransport's statechange events) and answer → connected (connectionState), where
//     "answer" is setRemoteDescription resolved; the transport's getStats entry (iceState,
//     dtlsState) is checked to agree once connected. ICE may connect before the promise
//     resolves (the checks start on Chromium's network thread as soon as the answer is parsed,
//     the promise resolves on the page's busy main thread), so ICE figures can be negative;
//     answer received (the fetch's body read) → connected is printed too;
//   - time to first frame: RTCPeerConnection created → the first frame presented
//     (requestVideoFrameCallback's presentationTime).
// Prints p50/p95 of each figure, the servers side by side. A benchmark, not a test: it fails
// only when a player saw no frame (or a server refused a publisher or a player).
// Environment: CHROMIUM_PATH, CONNECT_JOINERS (players per server, 10), CONNECT_RUN_MS (how
// long the broadcasts run before the first player, 3000), CONNECT_RAW=1 (a `raw {...}` line
// per player: its events in wall-clock ms and its UDP port, for bench/handshake_timeline.py).
import http from 'node:http';
import { launch, sleep } from './chromium.mjs';

const servers = process.argv.slice(2).map((arg) => {
  const m = /^([\w-]+)=(https?:\/\/[^/]+)\/?$/.exec(arg);
  if (!m) {
    console.error('usage: node tests/browser/connect.mjs <label>=<server-url> [<label>=<server-url> ...]');
    process.exit(2);
  }
  return { label: m[1], base: m[2] };
});
if (servers.length === 0) {
  console.error('usage: node tests/browser/connect.mjs <label>=<server-url> [<label>=<server-url> ...]');
  process.exit(2);
}
const JOINERS = Number(process.env.CONNECT_JOINERS || 10);
const RUN_MS = Number(process.env.CONNECT_RUN_MS || 3000);
const WAIT_MS = 15_000;
const STREAM = `connect-${process.pid}`;

// The pages live on an origin of their own (a blank page from the script's own HTTP server), so
// every server is called cross-origin the same way; localhost is a secure context. (A page
// answered by Playwright's request routing has no address, and Chromium then refuses its
// fetches to 127.0.0.1 as a public page's requests into the local network.)
const site = http.createServer((_req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/html' });
  res.end('<!doctype html><title>connect bench</title><body></body>');
});
await new Promise((r) => site.listen(0, '127.0.0.1', r));
const PAGE_URL = `http://localhost:${site.address().port}/`;

function pct(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

async function blankPage(ctx) {
  const page = await ctx.newPage();
  await page.goto(PAGE_URL);
  return page;
}

/** In the publisher page: WHIP the fake camera and microphone; resolves once connected. */
async function publish([base, stream]) {
  const media = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  for (const t of media.getTracks()) pc.addTransceiver(t, { direction: 'sendonly' });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((r) => {
    if (pc.iceGatheringState === 'complete') r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
    setTimeout(r, 2000);
  });
  const res = await fetch(`${base}/whip/${stream}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp' },
    body: pc.localDescription.sdp,
  });
  const body = await res.text();
  if (res.status !== 201) return `WHIP answered ${res.status}: ${body}`;
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  window.publisher = pc;
  for (let i = 0; i < 100 && pc.connectionState !== 'connected'; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  return pc.connectionState;
}

/** In a player page: one WHEP play, timed. */
async function play([base, stream, waitMs]) {
  const now = () => performance.now();
  const t = {};
  const video = document.createElement('video');
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  document.body.appendChild(video);
  const ms = new MediaStream();
  video.srcObject = ms;
  const firstFrame = new Promise((resolve) => {
    video.requestVideoFrameCallback((_n, meta) => resolve(meta.presentationTime));
  });

  t.created = now();
  const pc = new RTCPeerConnection();
  window.player = pc;
  pc.ontrack = (e) => ms.addTrack(e.track);
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.addEventListener('connectionstatechange', () => {
    if (pc.connectionState === 'connected' && t.connected === undefined) t.connected = now();
    if (pc.connectionState === 'failed') t.failed = now();
  });
  await pc.setLocalDescription(await pc.createOffer());
  // The transports exist once the offer is applied; with max-bundle (the default) every
  // transceiver shares one DTLS and one ICE transport. Neither can change state before the
  // answer is applied.
  const dtls = pc.getTransceivers()[0].receiver.transport;
  dtls.addEventListener('statechange', () => {
    if (dtls.state === 'connected' && t.dtls === undefined) t.dtls = now();
  });
  dtls.iceTransport.addEventListener('statechange', () => {
    const s = dtls.iceTransport.state;
    if ((s === 'connected' || s === 'completed') && t.ice === undefined) t.ice = now();
  });
  t.offered = now();
  const res = await fetch(`${base}/whep/${stream}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp' },
    body: pc.localDescription.sdp,
  });
  const body = await res.text();
  if (res.status !== 201) return { error: `WHEP answered ${res.status}: ${body}` };
  t.answered = now();
  const location = res.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  t.applied = now();
  const timeout = new Promise((r) => setTimeout(() => r(null), waitMs));
  const frameAt = await Promise.race([firstFrame, timeout]);
  if (frameAt === null) {
    return { error: `no frame within ${waitMs} ms (connection ${pc.connectionState}, ice ${pc.iceConnectionState})`, t };
  }
  t.frame = frameAt;
  // The same moments as getStats sees them: the transport must say connected on both layers.
  let transport = null;
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type === 'transport') {
      const pair = stats.get(s.selectedCandidatePairId);
      const local = pair && stats.get(pair.localCandidateId);
      transport = { iceState: s.iceState, dtlsState: s.dtlsState, srtpCipher: s.srtpCipher, localPort: local && local.port };
    }
  });
  let frames = 0;
  for (let i = 0; i < 30 && frames < 5; i++) {
    await new Promise((r) => setTimeout(r, 100));
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded || 0;
    });
  }
  pc.close();
  if (location) await fetch(new URL(location, base), { method: 'DELETE' }).catch(() => {});
  return { t, transport, frames, timeOrigin: performance.timeOrigin };
}

const browser = await launch();
const watchdog = setTimeout(() => {
  console.error('FAIL: connect.mjs did not finish within 200 s');
  process.exit(1);
}, 200_000);
let failed = false;
try {
  const ctx = await browser.newContext({ permissions: ['camera', 'microphone'] });
  for (const s of servers) {
    const page = await blankPage(ctx);
    const state = await page.evaluate(publish, [s.base, STREAM]);
    console.log(`${s.label} (${s.base}): WHIP publisher ${state}`);
    if (state !== 'connected') throw new Error(`${s.label}: the publisher did not connect: ${state}`);
  }
  await sleep(RUN_MS);

  for (const s of servers) s.results = [];
  for (let i = 0; i < JOINERS * servers.length; i++) {
    const s = servers[i % servers.length];
    const c = await browser.newContext();
    const p = await blankPage(c);
    const r = await p.evaluate(play, [s.base, STREAM, WAIT_MS]);
    await c.close();
    if (r.error) {
      failed = true;
      console.log(`player ${i + 1} (${s.label}): ${r.error} ${JSON.stringify(r.t || {})}`);
      continue;
    }
    const { t } = r;
    const row = {
      ice: t.ice - t.applied,
      dtls: t.dtls - t.applied,
      connected: t.connected - t.applied,
      received: t.connected - t.answered,
      answer: t.answered - t.offered,
      ttff: t.frame - t.created,
    };
    s.results.push(row);
    const stats = r.transport || {};
    if (stats.iceState !== 'connected' || stats.dtlsState !== 'connected') {
      console.log(`player ${i + 1} (${s.label}): getStats transport says ice ${stats.iceState}, dtls ${stats.dtlsState}`);
    }
    if (r.frames < 1) {
      failed = true;
      console.log(`player ${i + 1} (${s.label}): a frame was presented but getStats counts no decoded frame`);
    }
    if (process.env.CONNECT_RAW === '1') {
      // Wall-clock times (ms since the epoch) and the player's UDP port, to line the page's
      // events up with a packet capture (bench/handshake_timeline.py).
      const wall = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, r.timeOrigin + v]));
      console.log(`raw ${JSON.stringify({ label: s.label, port: stats.localPort, wall })}`);
    }
    console.log(`player ${i + 1} (${s.label}): answer → ICE ${row.ice.toFixed(1)} ms, DTLS ${row.dtls.toFixed(1)} ms, `
      + `connected ${row.connected.toFixed(1)} ms; POST → answer ${row.answer.toFixed(1)} ms; `
      + `first frame ${row.ttff.toFixed(1)} ms (${r.frames} frames decoded, ${stats.srtpCipher || '?'})`);
  }

  const figures = [
    ['answer → ICE connected', 'ice'],
    ['answer → DTLS connected', 'dtls'],
    ['answer → connected', 'connected'],
    ['answer received → connected', 'received'],
    ['POST → answer', 'answer'],
    ['pc created → first frame', 'ttff'],
  ];
  const width = 30;
  console.log(`\nconnect and first frame, p50 / p95 ms (${JOINERS} late WHEP players per server, `
    + `broadcasts running ${RUN_MS / 1000} s, Chromium on 127.0.0.1):`);
  console.log(`${''.padEnd(width)}${servers.map((s) => s.label.padStart(16)).join('')}`);
  for (const [name, key] of figures) {
    const cells = servers.map((s) => {
      const v = s.results.map((r) => r[key]).filter((x) => Number.isFinite(x));
      return (v.length ? `${pct(v, 50).toFixed(1)} / ${pct(v, 95).toFixed(1)}` : '-').padStart(16);
    });
    console.log(`${name.padEnd(width)}${cells.join('')}`);
  }
  for (const s of servers) {
    const c = s.results.map((r) => r.connected);
    const f = s.results.map((r) => r.ttff);
    if (c.length) {
      console.log(`CONNECT ${s.label}: answer → connected p50 ${pct(c, 50).toFixed(1)} ms, p95 ${pct(c, 95).toFixed(1)} ms; `
        + `pc created → first frame p50 ${pct(f, 50).toFixed(1)} ms, p95 ${pct(f, 95).toFixed(1)} ms `
        + `(${s.results.length} players decoded frames)`);
    }
    if (s.results.length < JOINERS) failed = true;
  }
} catch (e) {
  failed = true;
  console.log(`FAIL: ${e && e.stack ? e.stack : e}`);
} finally {
  clearTimeout(watchdog);
  await browser.close();
  site.close();
}
if (!failed) console.log('PASS: every player on every server decoded frames');
process.exit(failed ? 1 : 0);
