// `/watch/<stream>`: the player. Starts on its own (muted autoplay, with an unmute button), waits
// and retries while the stream is not live, says when the broadcast has ended (and picks it up
// again if it comes back), and shows viewers, a live indicator and receive statistics. Beside the
// picture: the chat (with a name remembered in localStorage) and a heart button (chat.js).
// `?probe=1` reads the broadcaster's clock stamps for the real glass-to-glass latency.
import {
  Signal, formatDuration, formatViewers, iceGathered, percentile, receiveStats, statsLine,
  validStreamName,
} from './common.js';
import { probeReader } from './probe.js';
import {
  Chat, Hearts, cleanName, formatHearts, saveName, savedName,
} from './chat.js';

const params = new URLSearchParams(location.search);
const PROBE = params.has('probe') && params.get('probe') !== '0';
const WAITING_RETRY_MS = 2000;
/** After `ended`, how often the directory is asked whether the stream is back: often at first
 * (a broadcaster whose connection dropped is usually back within seconds), then less. */
const ENDED_POLL_FAST_MS = 1000;
const ENDED_POLL_FAST_FOR_MS = 20_000;
const ENDED_POLL_MS = 5000;
const STATS_INTERVAL_MS = 1000;
/** Retry delay after a refusal that passes (full, rate limited, restarting). */
const BUSY_RETRY_MS = 5000;
const INFO_INTERVAL_MS = 10_000;
const PROBE_WINDOW = 300; // samples in the shown p50/p95 (10 s at 30 fps)
const PROBE_KEEP = 5000;
/** Hearts faster than this are not sent (the server drops those over 10 a second anyway). */
const HEART_MIN_GAP_MS = 100;

const $ = (id) => document.getElementById(id);
const video = $('video');
const statusText = $('status');
const unmute = $('unmute');
const heartButton = $('heart');
const nameInput = $('chat-name');

const stream = (() => {
  const raw = location.pathname.replace(/^\/watch\//, '').replace(/\/$/, '');
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw; // a malformed %-escape: shown as typed, and refused as a name
  }
})();

/** connecting | waiting | live | reconnecting | offline | ended | error */
let state = 'connecting';
let signal = null;
let pc = null;
let attempt = 0;
let viewers = null;
let info = null; // this stream's row of /api/streams, when live
let stats = null;
let retryTimer = null;
let pollTimer = null;
/** A session is up on the socket (the `watch` was answered): errors now answer chat or hearts. */
let answered = false;
/** The name sent with the last `watch` ('' for the server's default). */
let joinedName = '';
let lastHeartAt = 0;
const probeSamples = [];
const probeCounts = { frames: 0, unreadable: 0 };

const STATUS = {
  connecting: 'Connecting…',
  waiting: 'Waiting for the broadcast to start…',
  reconnecting: 'Connection lost. Reconnecting…',
  paused: 'The broadcaster lost their connection. Waiting for them to come back…',
  offline: "Can't reach the golive server. Retrying…",
  ended: 'The broadcast has ended.',
};

function setState(s, text) {
  state = s;
  document.body.dataset.state = s;
  const showVideo = s === 'live';
  $('overlay').hidden = showVideo;
  statusText.textContent = text || STATUS[s] || '';
  $('spinner').hidden = !['connecting', 'waiting', 'reconnecting', 'paused', 'offline'].includes(s);
  const badge = $('badge');
  badge.className = showVideo ? 'badge live' : 'badge';
  badge.textContent = showVideo ? 'Live' : s === 'ended' ? 'Ended' : 'Offline';
  unmute.hidden = !(showVideo && video.muted);
  heartButton.disabled = !answered;
  $('heart-box').hidden = !showVideo;
  chat.setEnabled(answered, s === 'ended' ? 'The broadcast has ended'
    : s === 'error' ? 'Chat is closed' : 'Chat opens when the broadcast is on');
  $('ended-more').hidden = s !== 'ended';
  if (!showVideo) $('stats').textContent = '';
  renderInfo();
  offerReplay(s);
}

/** Not live (ended, or not started): the stream's latest replay, if the server recorded one. */
let replayAsked = '';
async function offerReplay(s) {
  const off = s === 'ended' || s === 'waiting';
  if (!off) $('replay-more').hidden = true;
  if (!off || replayAsked === s) return;
  replayAsked = s;
  try {
    const res = await fetch(`/api/replays?stream=${encodeURIComponent(stream)}`);
    const list = res.ok ? await res.json() : [];
    const latest = list.find((r) => r.ended_unix_ms) || list[0];
    if (!latest || state !== s) return;
    $('replay-link').href = latest.url;
    $('replay-more').hidden = false;
  } catch { /* no replays: nothing to offer */ }
}

function renderInfo() {
  const v = $('viewers');
  v.hidden = viewers === null || state !== 'live';
  v.textContent = formatViewers(viewers ?? 0);
  const title = info && info.title ? info.title : stream;
  $('title').textContent = title;
  document.title = `${state === 'live' ? '● ' : ''}${title} · golive`;
  $('stream-name').textContent = stream;
  const since = info ? Date.parse(info.live_since) : NaN;
  $('since').textContent = state === 'live' && !Number.isNaN(since)
    ? `live for ${formatDuration(Date.now() - since)}` : '';
}

// ---- media ----

function closePc() {
  if (pc) pc.close();
  pc = null;
  video.srcObject = null;
  stats = null;
}

async function newOffer() {
  closePc();
  const mine = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  pc = mine;
  mine.addTransceiver('audio', { direction: 'recvonly' });
  mine.addTransceiver('video', { direction: 'recvonly' });
  const media = new MediaStream();
  mine.addEventListener('track', ({ track }) => {
    media.addTrack(track);
    video.srcObject = media;
    video.play().catch(() => {});
  });
  mine.addEventListener('connectionstatechange', () => {
    if (pc === mine && mine.connectionState === 'failed') mediaLost();
  });
  await mine.setLocalDescription(await mine.createOffer());
  await iceGathered(mine);
  return mine;
}

/** Sends `watch`; while waiting for the stream, the same offer is sent again. */
async function watch() {
  clearTimeout(retryTimer);
  if (!signal || !signal.isOpen) return;
  const mine = ++attempt;
  let offerPc = pc;
  if (!offerPc || offerPc.signalingState !== 'have-local-offer') offerPc = await newOffer();
  if (mine !== attempt || pc !== offerPc) return; // superseded meanwhile
  const msg = { type: 'watch', stream, sdp: offerPc.localDescription.sdp };
  joinedName = cleanName(nameInput.value);
  if (joinedName) msg.name = joinedName;
  answered = false;
  signal.send(msg);
}

function retryWatch(ms) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(watch, ms);
}

function mediaLost() {
  if (signal) signal.send({ type: 'leave' });
  answered = false;
  closePc();
  setState('reconnecting');
  retryWatch(1000);
}

let endedAt = 0;

/** After `ended`: poll the directory, and watch again if the stream comes back. */
function pollForReturn(first) {
  clearTimeout(pollTimer);
  const every = Date.now() - endedAt < ENDED_POLL_FAST_FOR_MS ? ENDED_POLL_FAST_MS : ENDED_POLL_MS;
  pollTimer = setTimeout(async () => {
    if (state !== 'ended' && state !== 'reconnecting') return;
    if (await refreshInfo()) {
      setState('connecting');
      watch();
    } else if (state === 'reconnecting') {
      setState('ended');
      pollForReturn();
    } else {
      pollForReturn();
    }
  }, first ?? every);
}

/** Updates `info` from /api/streams; true when the stream is live. */
async function refreshInfo() {
  try {
    const res = await fetch('/api/streams', { cache: 'no-store' });
    if (!res.ok) return false;
    const rows = await res.json();
    info = rows.find((r) => r.stream === stream) || null;
    renderInfo();
    return info !== null;
  } catch {
    return false;
  }
}

// ---- signalling ----

async function onMessage(msg) {
  if (chat.handle(msg) || hearts.handle(msg)) return;
  switch (msg.type) {
    case 'answer': {
      const mine = pc;
      if (!mine) return;
      // The stream's recent chat follows the answer.
      answered = true;
      chat.reset();
      chat.setEnabled(true);
      heartButton.disabled = false;
      try {
        await mine.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      } catch (e) {
        answered = false;
        setState('error', `The server's answer could not be used: ${e.message}`);
        return;
      }
      if (state !== 'live') setState('connecting');
      refreshInfo();
      break;
    }
    case 'viewers':
      viewers = msg.count;
      renderInfo();
      break;
    case 'reconnecting':
      // Our connection stays; the picture resumes when the broadcaster is back.
      setState('paused');
      break;
    case 'resumed':
      if (state === 'paused') setState(pc ? 'live' : 'connecting');
      break;
    case 'ended':
      answered = false;
      closePc();
      viewers = null;
      endedAt = Date.now();
      if (msg.reason === 'connection_lost') {
        // Either the broadcaster's connection or our own: the directory tells which.
        setState('reconnecting');
        pollForReturn(0);
      } else {
        info = null;
        setState('ended');
        pollForReturn();
      }
      break;
    case 'error':
      if (answered) {
        // Watching already: this refuses a chat message (or hearts sent too fast).
        chat.refused(msg.code, msg.message);
        break;
      }
      switch (msg.code) {
        case 'stream_not_found':
          info = null;
          if (state !== 'ended') setState('waiting');
          retryWatch(WAITING_RETRY_MS);
          break;
        case 'codec_unsupported':
          closePc();
          setState('error', "This browser can't play the video format of this broadcast.");
          break;
        case 'bad_stream_name':
          closePc();
          setState('error', `“${stream}” is not a valid stream name.`);
          break;
        case 'stream_full':
        case 'server_full':
          closePc();
          setState('waiting', 'This broadcast has as many viewers as it can take right now. Retrying…');
          retryWatch(BUSY_RETRY_MS);
          break;
        case 'too_many_sessions':
        case 'rate_limited':
        case 'draining':
          closePc();
          setState('waiting', msg.code === 'draining'
            ? 'The server is restarting. Retrying…'
            : 'Too many connections from your network right now. Retrying…');
          retryWatch(BUSY_RETRY_MS);
          break;
        default:
          closePc();
          setState('error', `Could not play the broadcast (${msg.code}): ${msg.message}. Retrying…`);
          retryWatch(BUSY_RETRY_MS);
      }
      break;
    default:
      break;
  }
}

function connect() {
  signal = new Signal({
    open: () => {
      if (state !== 'ended') {
        if (state !== 'waiting') setState('connecting');
        watch();
      }
    },
    message: onMessage,
    down: ({ everOpened }) => {
      answered = false;
      closePc();
      viewers = null;
      if (state === 'ended' || state === 'error') return;
      setState(everOpened ? 'reconnecting' : 'offline');
    },
  });
  signal.connect();
}

// ---- the picture ----

video.addEventListener('playing', () => {
  if (pc && (state === 'connecting' || state === 'reconnecting' || state === 'waiting')) setState('live');
});
video.addEventListener('volumechange', () => { unmute.hidden = !(state === 'live' && video.muted); });
unmute.addEventListener('click', () => {
  video.muted = false;
  video.play().catch(() => {});
});
// Autoplay is allowed muted; a browser that still refuses starts on the first tap.
$('stage').addEventListener('click', (ev) => {
  if (ev.target !== unmute && video.paused && video.srcObject) video.play().catch(() => {});
});

async function updateStats() {
  if (pc && state === 'live') {
    try {
      stats = await receiveStats(pc, stats);
      $('stats').textContent = statsLine(stats);
    } catch { /* closed meanwhile */ }
  } else {
    $('stats').textContent = '';
  }
  renderInfo();
}

function renderProbe() {
  const recent = probeSamples.slice(-PROBE_WINDOW);
  const el = $('probe');
  if (recent.length === 0) {
    el.textContent = 'Latency probe: no stamped frames yet (open /live?probe=1 to broadcast one).';
    return;
  }
  const last = recent[recent.length - 1];
  el.textContent = `Glass-to-glass ${Math.round(last)} ms · p50 ${Math.round(percentile(recent, 50))} ms`
    + ` · p95 ${Math.round(percentile(recent, 95))} ms (${recent.length} frames)`;
}

// ---- chat and hearts ----

const chat = new Chat($('chat'), {
  send: (msg) => Boolean(signal && answered && signal.send(msg)),
  myName: () => joinedName,
});
const hearts = new Hearts($('hearts-layer'), (total) => {
  const el = $('hearts-total');
  el.hidden = false;
  el.textContent = Number(total).toLocaleString('en-US');
  el.title = formatHearts(total);
  heartButton.setAttribute('aria-label', `Send a heart (${formatHearts(total)} so far)`);
});

heartButton.addEventListener('click', (ev) => {
  ev.stopPropagation();
  const now = performance.now();
  if (!answered || now - lastHeartAt < HEART_MIN_GAP_MS) return;
  lastHeartAt = now;
  if (!signal.send({ type: 'heart' })) return;
  // The heart floats when the server's batch comes back; the button answers the tap at once.
  heartButton.classList.remove('tapped');
  void heartButton.offsetWidth; // restart the animation
  heartButton.classList.add('tapped');
});

/** A new name takes effect by joining again (the server fixes a viewer's name at `watch`). */
function applyName() {
  const raw = nameInput.value.trim();
  const name = cleanName(raw);
  if (raw && !name) {
    chat.showNote('A name is 1 to 32 characters, without control characters.', 'warn');
    return;
  }
  nameInput.value = name;
  saveName(name);
  if (answered && name !== joinedName && signal) {
    signal.send({ type: 'leave' });
    answered = false;
    closePc();
    setState('connecting');
    watch();
    chat.showNote(name ? `You chat as ${name} now.` : 'You chat with a guest name now.', 'ok');
  }
}
nameInput.value = savedName();
nameInput.addEventListener('change', applyName);
nameInput.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter') {
    ev.preventDefault();
    nameInput.blur();
  }
});

// ---- start ----

window.golive = {
  stream,
  probe: PROBE,
  probeSamples,
  probeCounts,
  get state() { return state; },
  get pc() { return pc; },
  get signal() { return signal; },
  get viewers() { return viewers; },
  get stats() { return stats; },
  get answered() { return answered; },
  get name() { return joinedName; },
  chat,
  hearts,
};

renderInfo();
if (!validStreamName(stream)) {
  setState('error', `“${stream}” is not a valid stream name.`);
} else {
  setState('connecting');
  refreshInfo();
  connect();
  setInterval(updateStats, STATS_INTERVAL_MS);
  setInterval(() => state === 'live' && refreshInfo(), INFO_INTERVAL_MS);
  window.addEventListener('pagehide', () => signal && signal.close());
  // Back from the back/forward cache with a closed socket: start afresh.
  window.addEventListener('pageshow', (ev) => ev.persisted && location.reload());
  if (PROBE) {
    $('probe').hidden = false;
    probeReader(video, (ms) => {
      probeSamples.push(ms);
      if (probeSamples.length > PROBE_KEEP) probeSamples.splice(0, probeSamples.length - PROBE_KEEP);
    }, probeCounts);
    setInterval(renderProbe, 500);
    renderProbe();
  }
}
