// `/live`: camera and microphone preview, then Go Live (protocol `publish`), LIVE badge, elapsed
// time, viewer count and End. `/live?probe=1` sends a clock-stamped canvas instead of the
// camera (see probe.js). While live: the chat with Remove and Mute on every message, the
// broadcaster's own messages, and the viewers' hearts (chat.js).
import {
  Signal, formatDuration, formatViewers, iceGathered, showMessage, validStreamName,
} from './common.js';
import { probeSource } from './probe.js';
import {
  Chat, Hearts, cleanName, formatHearts, saveName, savedName,
} from './chat.js';

const params = new URLSearchParams(location.search);
const PROBE = params.has('probe') && params.get('probe') !== '0';
/** After a lost connection the server may still hold our old session (until it sees the socket
 * close, or at worst until its 30 s media-silence timeout), so a `stream_busy` on the way back
 * is retried for this long before it is believed. */
const RECONNECT_BUSY_GRACE_MS = 45_000;
const REPUBLISH_DELAY_MS = 1000;
const NAME_KEY = 'golive.stream';
const TITLE_KEY = 'golive.title';

const $ = (id) => document.getElementById(id);
const preview = $('preview');
const form = $('form');
const nameInput = $('name');
const titleInput = $('title');
const keyInput = $('key');
const cameraSelect = $('camera');
const micSelect = $('mic');
const goButton = $('go');
const endButton = $('end');
const message = $('message');
const chatNameInput = $('chat-name');

/** loading | preview | starting | live | reconnecting | nomedia */
let state = 'loading';
let media = null;
let probe = null;
let signal = null;
let pc = null;
let stream = '';
let title = '';
let viewers = 0;
let liveSince = null;
let lostAt = null;
let peer = null;
let republishTimer = null;
/** The name sent with `publish` ('' for the server's default). */
let chatName = '';
let heartsTotal = 0;

function setState(s) {
  state = s;
  render();
}

function render() {
  document.body.dataset.state = state;
  const onAir = state === 'starting' || state === 'live' || state === 'reconnecting';
  goButton.hidden = onAir;
  goButton.disabled = !media || state !== 'preview';
  endButton.hidden = !onAir;
  endButton.textContent = state === 'live' || state === 'reconnecting' ? 'End' : 'Cancel';
  nameInput.disabled = onAir;
  titleInput.disabled = onAir;
  keyInput.disabled = onAir;
  chatNameInput.disabled = onAir;

  const badge = $('badge');
  badge.hidden = !onAir;
  badge.className = state === 'live' ? 'badge live' : 'badge';
  badge.textContent = { starting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' }[state] || '';
  const elapsed = liveSince ? formatDuration(Date.now() - liveSince) : '0:00';
  $('elapsed').hidden = state !== 'live';
  $('elapsed').textContent = elapsed;
  $('fact-elapsed').textContent = elapsed;
  $('viewers').hidden = state !== 'live';
  $('viewers').textContent = formatViewers(viewers);
  $('fact-viewers').textContent = String(viewers);
  $('hearts-badge').hidden = state !== 'live';
  $('hearts-badge').textContent = `♥ ${heartsTotal.toLocaleString('en-US')}`;
  $('hearts-badge').title = formatHearts(heartsTotal);
  $('fact-hearts').textContent = heartsTotal.toLocaleString('en-US');
  $('chat').hidden = !(onAir || chat.items.size > 0);
  chat.setEnabled(state === 'live', state === 'reconnecting' ? 'Reconnecting…'
    : onAir ? 'Chat opens when you are live' : 'The broadcast has ended');

  $('share-box').hidden = !(state === 'live' || state === 'reconnecting');
  const name = nameInput.value.trim();
  $('name-preview').textContent = `/watch/${name || '…'}`;
  $('share').value = `${location.origin}/watch/${encodeURIComponent(stream || name)}`;
}

// ---- camera and microphone ----

function mediaErrorText(e) {
  switch (e && e.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Camera and microphone access was denied. Allow them for this site (the camera icon in '
        + 'the address bar, or your browser\'s site settings), then reload the page.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera was found. Connect a camera (or pick another one) and reload the page.';
    case 'NotReadableError':
    case 'AbortError':
      return 'The camera could not be started: another app may be using it. Close that app and '
        + 'reload the page.';
    default:
      return `The camera could not be started (${(e && (e.message || e.name)) || e}).`;
  }
}

/** A silent audio track for probe mode, so the broadcast has audio like a real one. */
function silentAudio() {
  try {
    const ac = new AudioContext();
    const gain = ac.createGain();
    gain.gain.value = 0;
    const osc = ac.createOscillator();
    const dst = ac.createMediaStreamDestination();
    osc.connect(gain).connect(dst);
    osc.start();
    return dst.stream.getAudioTracks();
  } catch {
    return [];
  }
}

/** The microphone's level under the preview, so a person sees it works (the preview is muted). */
let meter = null;
const METER_INTERVAL_MS = 100;

function startMeter() {
  stopMeter();
  const track = media && media.getAudioTracks()[0];
  if (!track || PROBE) return;
  try {
    const ac = new AudioContext();
    const analyser = ac.createAnalyser();
    analyser.fftSize = 512;
    ac.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const el = $('level');
    el.hidden = false;
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const v of samples) peak = Math.max(peak, Math.abs(v));
      const level = Math.min(1, peak * 1.5);
      el.style.setProperty('--level', level.toFixed(2));
      el.setAttribute('aria-valuenow', String(Math.round(level * 100)));
    }, METER_INTERVAL_MS);
    // Browsers start audio only after a gesture; the first tap or click wakes it.
    if (ac.state === 'suspended') document.addEventListener('pointerdown', () => ac.resume(), { once: true });
    meter = { stop() { clearInterval(timer); ac.close().catch(() => {}); el.hidden = true; } };
  } catch {
    /* no Web Audio: no meter */
  }
}

function stopMeter() {
  if (meter) meter.stop();
  meter = null;
}

function stopMedia() {
  stopMeter();
  if (probe) probe.stop();
  probe = null;
  if (media) media.getTracks().forEach((t) => t.stop());
  media = null;
}

async function startMedia() {
  stopMedia();
  if (PROBE) {
    probe = probeSource(30);
    media = new MediaStream([...probe.stream.getVideoTracks(), ...silentAudio()]);
    preview.srcObject = media;
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    const err = new Error('This page needs a secure connection (https:// or localhost) to use the camera.');
    err.name = 'InsecureContext';
    throw err;
  }
  const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  if (cameraSelect.value) video.deviceId = { exact: cameraSelect.value };
  const audio = micSelect.value ? { deviceId: { exact: micSelect.value } } : true;
  let noMic = false;
  try {
    media = await navigator.mediaDevices.getUserMedia({ video, audio });
  } catch (e) {
    if (e.name !== 'NotFoundError' && e.name !== 'OverconstrainedError') throw e;
    // Perhaps only the microphone is missing: go on without sound rather than not at all.
    media = await navigator.mediaDevices.getUserMedia({ video });
    noMic = true;
  }
  preview.srcObject = media;
  for (const track of media.getTracks()) {
    track.addEventListener('ended', () => {
      if (track.readyState === 'ended' && media && media.getTracks().includes(track)) {
        showMessage(message, `Your ${track.kind === 'video' ? 'camera' : 'microphone'} stopped. `
          + 'Pick another one, or reload the page.', 'error');
      }
    });
  }
  if (noMic) showMessage(message, 'No microphone was found: your broadcast will have no sound.', 'warn');
  startMeter();
  await listDevices();
}

/** Fills the camera and microphone choices; each shows only when there is more than one. */
async function listDevices() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  const fill = (select, field, kind, label) => {
    const list = devices.filter((d) => d.kind === kind && d.deviceId);
    const current = media?.getTracks().find((t) => t.kind === (kind === 'videoinput' ? 'video' : 'audio'));
    const currentId = current?.getSettings().deviceId || select.value;
    select.replaceChildren(...list.map((d, i) => {
      const o = document.createElement('option');
      o.value = d.deviceId;
      o.textContent = d.label || `${label} ${i + 1}`;
      o.selected = d.deviceId === currentId;
      return o;
    }));
    field.hidden = list.length < 2;
  };
  fill(cameraSelect, $('camera-field'), 'videoinput', 'Camera');
  fill(micSelect, $('mic-field'), 'audioinput', 'Microphone');
}

/** A new camera or microphone: restart the preview and, when live, swap the tracks in place. */
async function switchDevice() {
  try {
    await startMedia();
    if (pc) {
      for (const sender of pc.getSenders()) {
        const kind = sender.track?.kind;
        const track = media.getTracks().find((t) => t.kind === kind);
        if (track) await sender.replaceTrack(track);
      }
    }
  } catch (e) {
    showMessage(message, mediaErrorText(e), 'error');
  }
}

// ---- going live ----

function closePc() {
  clearTimeout(republishTimer);
  if (pc) pc.close();
  pc = null;
}

async function publish() {
  closePc();
  if (!signal || !signal.isOpen || !media) return;
  const mine = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  pc = mine;
  for (const track of media.getTracks()) {
    const { sender } = mine.addTransceiver(track, { direction: 'sendonly', streams: [media] });
    if (PROBE && track.kind === 'video') {
      // The stamp must stay readable: never scale the picture down under pressure.
      try {
        const p = sender.getParameters();
        p.degradationPreference = 'maintain-resolution';
        await sender.setParameters(p);
      } catch { /* optional */ }
    }
  }
  mine.addEventListener('connectionstatechange', () => {
    if (pc !== mine) return;
    if (mine.connectionState === 'failed') mediaLost();
  });
  await mine.setLocalDescription(await mine.createOffer());
  await iceGathered(mine);
  if (pc !== mine) return; // ended or restarted meanwhile
  const msg = { type: 'publish', stream, sdp: mine.localDescription.sdp };
  if (title) msg.title = title;
  if (chatName) msg.name = chatName;
  if (keyInput.value) msg.key = keyInput.value;
  signal.send(msg);
}

function republishSoon() {
  clearTimeout(republishTimer);
  republishTimer = setTimeout(() => {
    if (state === 'reconnecting' || state === 'starting') publish();
  }, REPUBLISH_DELAY_MS);
}

/** The media connection failed while the signalling socket is fine: start again. Dropping the
 * socket, rather than sending `leave`, tells the server the connection was lost, so it keeps
 * the viewers through its reconnect grace period while we publish again on a new socket. */
function mediaLost() {
  closePc();
  lostAt = lostAt || Date.now();
  setState('reconnecting');
  showMessage(message, 'The connection to the server was lost. Reconnecting…', 'warn');
  if (signal) signal.drop();
}

async function onMessage(msg) {
  if (chat.handle(msg) || hearts.handle(msg)) {
    render();
    return;
  }
  switch (msg.type) {
    case 'answer': {
      if (!pc) return;
      const mine = pc;
      try {
        await mine.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      } catch (e) {
        stopLive();
        showMessage(message, `The server's answer could not be used: ${e.message}`, 'error');
        return;
      }
      if (pc !== mine) return;
      peer = msg.peer;
      // Back after a lost connection: the stream went on (same chat) unless the grace ran out.
      if (lostAt) chat.expectRestart();
      lostAt = null;
      if (!liveSince) liveSince = Date.now();
      showMessage(message, '');
      setState('live');
      break;
    }
    case 'viewers':
      viewers = msg.count;
      render();
      break;
    case 'ended':
      // Our own session's media connection died, or the server is going down.
      closePc();
      lostAt = lostAt || Date.now();
      setState('reconnecting');
      showMessage(message, msg.reason === 'server_shutdown'
        ? 'The server is restarting. Reconnecting…'
        : 'The connection to the server was lost. Reconnecting…', 'warn');
      republishSoon();
      break;
    case 'error':
      onError(msg);
      break;
    default:
      break;
  }
}

/** Refusals that pass: while reconnecting they are retried rather than shown as final. */
const PASSING_ERRORS = new Set(['server_full', 'too_many_sessions', 'rate_limited', 'draining']);

function onError({ code, message: text }) {
  if (state === 'live') {
    // The broadcast is up: this answers a chat message, a remove or a mute.
    chat.refused(code, text);
    return;
  }
  const reconnecting = lostAt && Date.now() - lostAt < RECONNECT_BUSY_GRACE_MS;
  if (reconnecting && (code === 'stream_busy' || PASSING_ERRORS.has(code))) {
    republishSoon(); // stream_busy: most likely our own previous session, not yet gone
    return;
  }
  const wasStarting = state === 'starting';
  stopLive();
  switch (code) {
    case 'stream_busy':
      showMessage(message, `The name “${stream}” is taken: someone is already live on it. `
        + 'Pick another name and try again.', 'error');
      nameInput.focus();
      nameInput.select();
      break;
    case 'bad_stream_name':
      showMessage(message, 'That stream name is not allowed: use 1 to 64 letters, digits, - and _.', 'error');
      nameInput.focus();
      break;
    case 'unauthorized':
      $('key-field').hidden = false;
      showMessage(message, keyInput.value
        ? `That stream key is not the key of “${stream}”. Check it and go live again.`
        : `Going live on “${stream}” needs its stream key: enter it below and go live again.`, 'error');
      keyInput.focus();
      break;
    case 'server_full':
      showMessage(message, 'The server is full right now. Try again in a few minutes.', 'error');
      break;
    case 'too_many_sessions':
    case 'rate_limited':
      showMessage(message, 'Too many connections from your network right now. Try again in a moment.', 'error');
      break;
    case 'draining':
      showMessage(message, 'The server is restarting. Try again in a moment.', 'error');
      break;
    case 'bad_sdp':
      showMessage(message, `The server could not use this browser's camera or microphone: ${text}`, 'error');
      break;
    default:
      showMessage(message, `${wasStarting ? 'Could not go live' : 'The broadcast stopped'} (${code}): ${text}`, 'error');
  }
}

function onDown({ everOpened, retryInMs }) {
  closePc();
  const secs = Math.max(1, Math.round(retryInMs / 1000));
  if (state === 'live' || state === 'reconnecting') {
    lostAt = lostAt || Date.now();
    setState('reconnecting');
    showMessage(message, 'The connection to the server was lost. Reconnecting… (your viewers '
      + 'will see you again as soon as it is back)', 'warn');
  } else if (state === 'starting') {
    // A `publish` may have been accepted just before the drop: our own session may hold the name.
    if (everOpened) lostAt = lostAt || Date.now();
    showMessage(message, everOpened
      ? `The connection to the server was lost. Retrying in ${secs} s…`
      : `Can't reach the golive server. Check your connection; retrying in ${secs} s…`, 'error');
  }
}

function stopLive() {
  if (signal) signal.close();
  signal = null;
  closePc();
  liveSince = null;
  lostAt = null;
  viewers = 0;
  setState(media ? 'preview' : 'nomedia');
}

function goLive(ev) {
  ev.preventDefault();
  if (state !== 'preview') return;
  const name = nameInput.value.trim();
  if (!validStreamName(name)) {
    showMessage(message, 'Pick a stream name: 1 to 64 letters, digits, - and _ (no spaces).', 'error');
    nameInput.focus();
    return;
  }
  const rawName = chatNameInput.value.trim();
  chatName = cleanName(rawName);
  if (rawName && !chatName) {
    showMessage(message, 'Your name in chat is 1 to 32 characters, without control characters.', 'error');
    chatNameInput.focus();
    return;
  }
  chatNameInput.value = chatName;
  saveName(chatName);
  stream = name;
  title = titleInput.value.trim();
  try {
    localStorage.setItem(NAME_KEY, stream);
    localStorage.setItem(TITLE_KEY, title);
  } catch { /* private mode */ }
  showMessage(message, '');
  chat.reset();
  chat.showNote('');
  heartsTotal = 0;
  setState('starting');
  signal = new Signal({
    open: () => {
      if (state === 'starting' || state === 'reconnecting') publish();
    },
    message: onMessage,
    down: onDown,
  });
  signal.connect();
}

function end() {
  const was = state;
  const since = liveSince;
  if (signal) signal.send({ type: 'leave' });
  stopLive();
  if (was === 'live' || was === 'reconnecting') {
    showMessage(message, `You ended the broadcast${since ? ` after ${formatDuration(Date.now() - since)}` : ''}.`, 'ok');
  } else {
    showMessage(message, '');
  }
}

// ---- chat and hearts ----

const chat = new Chat($('chat'), {
  send: (msg) => Boolean(signal && state === 'live' && signal.send(msg)),
  moderator: true,
  myName: () => chatName || 'broadcaster',
});
const hearts = new Hearts($('hearts-layer'), (total) => {
  heartsTotal = total;
});

// ---- wiring ----

function defaultName() {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return `live-${[...bytes].map((b) => b.toString(36).padStart(2, '0')).join('').slice(0, 5)}`;
}

try {
  nameInput.value = params.get('stream') || localStorage.getItem(NAME_KEY) || defaultName();
  titleInput.value = params.get('title') ?? localStorage.getItem(TITLE_KEY) ?? '';
  chatNameInput.value = savedName();
} catch {
  nameInput.value = defaultName();
}
if (PROBE) titleInput.value = titleInput.value || 'Latency probe';

form.addEventListener('submit', goLive);
endButton.addEventListener('click', end);
nameInput.addEventListener('input', render);
cameraSelect.addEventListener('change', switchDevice);
micSelect.addEventListener('change', switchDevice);
$('copy').addEventListener('click', async () => {
  const link = $('share').value;
  try {
    await navigator.clipboard.writeText(link);
    $('copy').textContent = 'Copied';
  } catch {
    $('share').select();
    document.execCommand?.('copy');
    $('copy').textContent = 'Copied';
  }
  setTimeout(() => { $('copy').textContent = 'Copy'; }, 1500);
});
navigator.mediaDevices?.addEventListener?.('devicechange', () => listDevices().catch(() => {}));
window.addEventListener('pagehide', () => signal && signal.close());
// Back from the back/forward cache with a closed socket: start afresh.
window.addEventListener('pageshow', (ev) => ev.persisted && location.reload());
setInterval(() => state === 'live' && render(), 1000);

// For people debugging, and for the browser tests.
window.golive = {
  probe: PROBE,
  get state() { return state; },
  get pc() { return pc; },
  get signal() { return signal; },
  get viewers() { return viewers; },
  get peer() { return peer; },
  get heartsTotal() { return heartsTotal; },
  chat,
  hearts,
};

render();
startMedia().then(() => {
  $('overlay').hidden = true;
  setState('preview');
}, (e) => {
  console.warn('golive: camera', e);
  $('overlay-text').textContent = mediaErrorText(e);
  $('overlay').querySelector('.spinner').hidden = true;
  showMessage(message, e.name === 'InsecureContext' ? e.message : mediaErrorText(e), 'error');
  setState('nomedia');
});
