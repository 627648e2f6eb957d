// `/live`: camera and microphone preview, then Go Live (the SDK's goLive, /sdk/golive.js), LIVE
// badge, elapsed time, viewer count and End. The SDK also sends the directory a snapshot of the
// preview every 20 s. `/live?probe=1` sends a clock-stamped canvas instead of the camera (see
// probe.js). While live: the chat with Remove and Mute on every message, the
// broadcaster's own messages, and the viewers' hearts (chat.js).
import {
  goLive, prepareLive, simulcastEncodings, validStreamName,
} from '/sdk/golive.js';
import { formatDuration, formatViewers, showMessage } from './common.js';
import { probeSource } from './probe.js';
import {
  Chat, Hearts, cleanName, formatHearts, saveName, savedName,
} from './chat.js';

const params = new URLSearchParams(location.search);
const PROBE = params.has('probe') && params.get('probe') !== '0';
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
let stream = '';
let title = '';
let viewers = 0;
let liveSince = null;
let peer = null;
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
    if (broadcast) await broadcast.replaceMedia(media);
    else prepare();
  } catch (e) {
    showMessage(message, mediaErrorText(e), 'error');
  }
}

// ---- going live ----

/** The broadcast (the SDK's Broadcast) while one runs. */
let broadcast = null;

function stopLive() {
  if (broadcast) broadcast.end();
  broadcast = null;
  liveSince = null;
  viewers = 0;
  prepare();
  setState(media ? 'preview' : 'nomedia');
}

/** A refusal that ended the attempt, in words, and where to look next. */
function refused(code, text, wasStarting) {
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
    case 'bad_answer':
      showMessage(message, `The server's answer could not be used: ${text}`, 'error');
      break;
    default:
      showMessage(message, `${wasStarting ? 'Could not go live' : 'The broadcast stopped'} (${code}): ${text}`, 'error');
  }
}

/** The peer connection and offer of the next broadcast, made while the preview shows, so that
 * Go Live sends its offer at once. Made again when the camera or microphone changes. */
let prepared = null;

/**
 * The camera's encodings: three simulcast layers (a quarter, a half and the full picture) when
 * it gives at least 640x360, so that every viewer gets what its link carries; one otherwise.
 * The latency probe sends one full-size layer: its stamp must stay readable, and a viewer
 * starts on the smallest layer.
 */
function encodings() {
  if (PROBE || !media) return null;
  return simulcastEncodings(media.getVideoTracks()[0]);
}

function prepare() {
  if (prepared) prepared.close();
  prepared = media ? prepareLive({
    video: media.getVideoTracks()[0] || null,
    audio: media.getAudioTracks()[0] || null,
    // The probe's stamp must stay readable: never scale the picture down under pressure.
    degradationPreference: PROBE ? 'maintain-resolution' : null,
    sendEncodings: encodings(),
  }) : null;
}

function startBroadcast() {
  const mine = goLive({
    stream,
    title,
    name: chatName,
    key: keyInput.value,
    early: prepared,
    preview,
    degradationPreference: PROBE ? 'maintain-resolution' : null,
    sendEncodings: encodings(),
  });
  prepared = null;
  broadcast = mine;
  let wasStarting = true;
  mine
    .on('state', ({ state: s }) => {
      if (broadcast !== mine) return;
      if (s === 'reconnecting') {
        setState('reconnecting');
      } else if (s === 'live') {
        setState('live');
      }
    })
    .on('live', ({ peer: p }) => {
      if (broadcast !== mine) return;
      // Back after a lost connection: the stream went on (same chat) unless the grace ran out.
      if (!wasStarting) chat.expectRestart();
      wasStarting = false;
      peer = p;
      if (!liveSince) liveSince = Date.now();
      showMessage(message, '');
      render();
    })
    .on('ended', ({ reason }) => {
      if (broadcast !== mine) return;
      // Our own session's media connection died, or the server is going down.
      showMessage(message, reason === 'server_shutdown'
        ? 'The server is restarting. Reconnecting…'
        : 'The connection to the server was lost. Reconnecting…', 'warn');
    })
    .on('connection', ({ everOpened, retryInMs }) => {
      if (broadcast !== mine) return;
      const secs = Math.max(1, Math.round(retryInMs / 1000));
      if (state === 'live' || state === 'reconnecting') {
        showMessage(message, 'The connection to the server was lost. Reconnecting… (your viewers '
          + 'will see you again as soon as it is back)', 'warn');
      } else if (state === 'starting') {
        showMessage(message, everOpened
          ? `The connection to the server was lost. Retrying in ${secs} s…`
          : `Can't reach the golive server. Check your connection; retrying in ${secs} s…`, 'error');
      }
    })
    .on('error', ({ code, message: text, fatal }) => {
      if (broadcast !== mine) return;
      if (!fatal) {
        // The broadcast is up: this answers a chat message, a remove or a mute.
        chat.refused(code, text);
        return;
      }
      broadcast = null;
      liveSince = null;
      viewers = 0;
      prepare();
      setState(media ? 'preview' : 'nomedia');
      refused(code, text, wasStarting);
    })
    .on('viewers', ({ count }) => {
      viewers = count;
      render();
    })
    .on('chat', (m) => chat.handle({ type: 'chat', ...m }))
    .on('removed', (m) => chat.handle({ type: 'removed', ...m }))
    .on('hearts', (m) => {
      hearts.handle({ type: 'hearts', ...m });
      render();
    });
}

function goLiveClicked(ev) {
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
  startBroadcast();
}

function end() {
  const was = state;
  const since = liveSince;
  stopLive();
  if (was === 'live' || was === 'reconnecting') {
    showMessage(message, `You ended the broadcast${since ? ` after ${formatDuration(Date.now() - since)}` : ''}.`, 'ok');
  } else {
    showMessage(message, '');
  }
}

// ---- chat and hearts ----

const chat = new Chat($('chat'), {
  send: (msg) => Boolean(broadcast && state === 'live' && broadcast.signal.send(msg)),
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

form.addEventListener('submit', goLiveClicked);
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
window.addEventListener('pagehide', () => broadcast && broadcast.signal && broadcast.signal.close());
// Back from the back/forward cache with a closed socket: start afresh.
window.addEventListener('pageshow', (ev) => ev.persisted && location.reload());
setInterval(() => state === 'live' && render(), 1000);

// For people debugging, and for the browser tests.
window.golive = {
  probe: PROBE,
  get state() { return state; },
  get broadcast() { return broadcast; },
  get pc() { return broadcast && broadcast.pc; },
  get signal() { return broadcast && broadcast.signal; },
  get viewers() { return viewers; },
  get peer() { return peer; },
  get heartsTotal() { return heartsTotal; },
  chat,
  hearts,
};

render();
startMedia().then(() => {
  prepare();
  $('overlay').hidden = true;
  setState('preview');
}, (e) => {
  console.warn('golive: camera', e);
  $('overlay-text').textContent = mediaErrorText(e);
  $('overlay').querySelector('.spinner').hidden = true;
  showMessage(message, e.name === 'InsecureContext' ? e.message : mediaErrorText(e), 'error');
  setState('nomedia');
});
