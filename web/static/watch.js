// `/watch/<stream>`: the player page. The SDK's Player (/sdk/golive.js) does the watching: it
// starts on its own (muted autoplay, with an unmute button), waits and retries while the stream
// is not live, says when the broadcast has ended (and picks it up again if it comes back). This
// page shows it: the state, viewers, a live indicator and receive statistics, and beside the
// picture the chat (with a name remembered in localStorage) and a heart button (chat.js).
// A quality menu sets the viewer's ceiling on the broadcaster's simulcast layers; the stats line
// shows the layer the server last said the video is on.
// `?probe=1` reads the broadcaster's clock stamps for the real glass-to-glass latency.
import { watch, validStreamName } from '/sdk/golive.js';
import {
  formatDuration, formatViewers, percentile, statsLine,
} from './common.js';
import { probeReader } from './probe.js';
import {
  Chat, Hearts, cleanName, formatHearts, saveName, savedName,
} from './chat.js';

const params = new URLSearchParams(location.search);
const PROBE = params.has('probe') && params.get('probe') !== '0';
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
const qualityMenu = $('quality');

const stream = (() => {
  const raw = location.pathname.replace(/^\/watch\//, '').replace(/\/$/, '');
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw; // a malformed %-escape: shown as typed, and refused as a name
  }
})();

const STATUS = {
  connecting: 'Connecting…',
  waiting: 'Waiting for the broadcast to start…',
  reconnecting: 'Connection lost. Reconnecting…',
  paused: 'The broadcaster lost their connection. Waiting for them to come back…',
  offline: "Can't reach the golive server. Retrying…",
  ended: 'The broadcast has ended.',
};

/** What a refusal means to a person (the state follows from the Player). */
function refusalText(code, message) {
  switch (code) {
    case 'stream_not_found': return STATUS.waiting;
    case 'codec_unsupported': return "This browser can't play the video format of this broadcast.";
    case 'bad_stream_name': return `“${stream}” is not a valid stream name.`;
    case 'stream_full':
    case 'server_full': return 'This broadcast has as many viewers as it can take right now. Retrying…';
    case 'draining': return 'The server is restarting. Retrying…';
    case 'too_many_sessions':
    case 'rate_limited': return 'Too many connections from your network right now. Retrying…';
    case 'bad_answer': return `The server's answer could not be used: ${message}`;
    default: return `Could not play the broadcast (${code}): ${message}. Retrying…`;
  }
}

// Nothing waits for the rest of the page: the socket and the offer start first.
const player = validStreamName(stream)
  ? watch(video, { stream, name: cleanName(savedName()), early: window.goliveEarly })
  : null;
let lastRefusal = null;
let lastHeartAt = 0;
const probeSamples = [];
const probeCounts = { frames: 0, unreadable: 0 };

function state() {
  return player ? player.state : 'error';
}

function render() {
  const s = state();
  document.body.dataset.state = s;
  const showVideo = s === 'live';
  const joined = Boolean(player && player.joined);
  $('overlay').hidden = showVideo;
  statusText.textContent = !player ? `“${stream}” is not a valid stream name.`
    : (s === 'error' || (s === 'waiting' && lastRefusal && lastRefusal.code !== 'stream_not_found'))
      && lastRefusal ? refusalText(lastRefusal.code, lastRefusal.message)
      : STATUS[s] || '';
  $('spinner').hidden = !['connecting', 'waiting', 'reconnecting', 'paused', 'offline'].includes(s);
  const badge = $('badge');
  badge.className = showVideo ? 'badge live' : 'badge';
  badge.textContent = showVideo ? 'Live' : s === 'ended' ? 'Ended' : 'Offline';
  unmute.hidden = !(showVideo && video.muted);
  heartButton.disabled = !joined;
  $('heart-box').hidden = !showVideo;
  chat.setEnabled(joined, s === 'ended' ? 'The broadcast has ended'
    : s === 'error' ? 'Chat is closed' : 'Chat opens when the broadcast is on');
  $('ended-more').hidden = s !== 'ended';
  if (!showVideo) $('stats').textContent = '';
  qualityMenu.disabled = !player;
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
    if (!latest || state() !== s) return;
    $('replay-link').href = latest.url;
    $('replay-more').hidden = false;
  } catch { /* no replays: nothing to offer */ }
}

function renderInfo() {
  const s = state();
  const info = player && player.info;
  const viewers = player ? player.viewers : null;
  const v = $('viewers');
  v.hidden = viewers === null || s !== 'live';
  v.textContent = formatViewers(viewers ?? 0);
  const title = info && info.title ? info.title : stream;
  $('title').textContent = title;
  document.title = `${s === 'live' ? '● ' : ''}${title} · golive`;
  $('stream-name').textContent = stream;
  const since = info ? Date.parse(info.live_since) : NaN;
  $('since').textContent = s === 'live' && !Number.isNaN(since)
    ? `live for ${formatDuration(Date.now() - since)}` : '';
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
  send: (msg) => Boolean(player && player.joined && player.signal.send(msg)),
  myName: () => (player ? player.name : ''),
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
  if (!player || !player.joined || now - lastHeartAt < HEART_MIN_GAP_MS) return;
  lastHeartAt = now;
  if (!player.heart()) return;
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
  if (!player || name === player.name) return;
  const wasJoined = player.joined;
  player.rejoin({ name });
  if (wasJoined) chat.showNote(name ? `You chat as ${name} now.` : 'You chat with a guest name now.', 'ok');
}
nameInput.value = savedName();
nameInput.addEventListener('change', applyName);
nameInput.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter') {
    ev.preventDefault();
    nameInput.blur();
  }
});

// ---- quality ----

/** The receive statistics, and the simulcast layer once the server has named one. */
function renderStats() {
  if (!player || state() !== 'live' || !player.stats) return;
  const line = statsLine(player.stats);
  const layer = player.layer === 'audio' ? 'audio only (link too slow for video)' : `${player.layer} layer`;
  $('stats').textContent = player.layer ? `${line} · ${layer}` : line;
}

qualityMenu.addEventListener('change', () => {
  if (player) player.setQuality(qualityMenu.value);
});

// ---- the picture ----

video.addEventListener('volumechange', () => { unmute.hidden = !(state() === 'live' && video.muted); });
unmute.addEventListener('click', () => player && player.unmute());
// Autoplay is allowed muted; a browser that still refuses starts on the first tap.
$('stage').addEventListener('click', (ev) => {
  if (ev.target !== unmute && video.paused && video.srcObject) video.play().catch(() => {});
});

// ---- start ----

window.golive = {
  stream,
  probe: PROBE,
  probeSamples,
  probeCounts,
  player,
  get state() { return state(); },
  get pc() { return player && player.pc; },
  get signal() { return player && player.signal; },
  get viewers() { return player && player.viewers; },
  get stats() { return player && player.stats; },
  get answered() { return Boolean(player && player.joined); },
  get name() { return player ? player.name : ''; },
  chat,
  hearts,
};

if (player) {
  player
    .on('state', ({ state: s }) => {
      if (s === 'live' || s === 'connecting') lastRefusal = null;
      render();
    })
    .on('joined', () => {
      // The stream's recent chat follows.
      chat.reset();
      render();
    })
    .on('error', (e) => {
      if (e.fatal || !player.joined) {
        lastRefusal = e;
        render();
      } else {
        chat.refused(e.code, e.message); // a chat message or hearts refused
      }
    })
    .on('chat', (m) => chat.handle({ type: 'chat', ...m }))
    .on('removed', (m) => chat.handle({ type: 'removed', ...m }))
    .on('hearts', (m) => hearts.handle({ type: 'hearts', ...m }))
    .on('viewers', renderInfo)
    .on('info', renderInfo)
    .on('quality', renderStats)
    .on('layer', renderStats);
  setInterval(renderInfo, 1000);
  window.addEventListener('pagehide', () => player.close());
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
render();
