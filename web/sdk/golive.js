// golive SDK: watch a broadcast or go live from any web page, in one ES module with no
// dependencies. Served by every golive server at /sdk/golive.js (with CORS, so a page on any
// site can import it). Guide: docs/sdk.md. Protocol: /docs/protocol.
//
//   import { watch } from 'https://live.example.com/sdk/golive.js';
//   const player = watch(document.querySelector('video'), { stream: 'demo' });
//   player.on('viewers', ({ count }) => console.log(count, 'watching'));
//
//   <script type="module" src="https://live.example.com/sdk/golive.js"></script>
//   <golive-player stream="demo"></golive-player>
//
// The first picture comes fast because nothing waits on anything it does not need: the
// signalling socket opens while the offer is built, and the offer goes out as soon as it is made,
// without waiting for ICE gathering (the server is ICE-lite: it learns the viewer's address from
// the viewer's connectivity checks, and its answer carries its own candidate). The viewer's
// candidates follow the answer as `candidate` messages.

/** Stream names: 1 to 64 of A-Z a-z 0-9 _ - (protocol "Limits"). */
export const STREAM_NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** Protocol limits (golive-proto). */
export const MAX_CHAT_CHARS = 280;
export const MAX_NAME_CHARS = 32;
export const MAX_THUMBNAIL_BYTES = 32 * 1024;
/**
 * A viewer's ceiling on its video quality (`player.setQuality`): `auto` lets the server choose
 * from the viewer's bandwidth alone; the others cap the broadcaster's simulcast layer.
 */
export const QUALITY_PREFERENCES = ['auto', 'high', 'medium', 'low'];

/** Reconnect delays of the signalling socket: doubling from the first to the last. */
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 5000;
/** While a stream is not live yet, a viewer asks again this often. */
const WAITING_RETRY_MS = 2000;
/** Retry delay after a refusal that passes (full, rate limited, restarting). */
const BUSY_RETRY_MS = 5000;
/** After `ended`, how often the directory is asked whether the stream is back: often at first
 * (a broadcaster whose connection dropped is usually back within seconds), then less. */
const ENDED_POLL_FAST_MS = 1000;
const ENDED_POLL_FAST_FOR_MS = 20_000;
const ENDED_POLL_MS = 5000;
const MEDIA_RETRY_MS = 1000;
// A cluster node past its capacity answers `watch` with `redirect`; a player follows this many
// in a row at most, so nodes that disagree cannot bounce it for ever.
const MAX_REDIRECTS = 3;
const STATS_INTERVAL_MS = 1000;
const INFO_INTERVAL_MS = 10_000;
/** After a lost connection the server may still hold a broadcaster's old session (until it sees
 * the socket close, or at worst its 30 s media-silence timeout), so a `stream_busy` on the way
 * back is retried for this long before it is believed. */
const RECONNECT_BUSY_GRACE_MS = 45_000;
const REPUBLISH_DELAY_MS = 1000;
/** Thumbnails of a broadcast: the first soon after going live, then this often. */
const THUMBNAIL_FIRST_MS = 1500;
const THUMBNAIL_EVERY_MS = 20_000;
const THUMBNAIL_WIDTHS = [320, 240, 160];

/** Refusals of `publish` that pass by themselves. */
const PASSING_ERRORS = new Set(['server_full', 'too_many_sessions', 'rate_limited', 'draining']);

/**
 * The audience's messages, which a player and a broadcaster keep and pass on alike: true when
 * `msg` was one of them.
 */
function audienceMessage(session, msg) {
  switch (msg.type) {
    case 'viewers':
      session.viewers = msg.count;
      session.emit('viewers', { count: msg.count });
      return true;
    case 'chat':
      session.emit('chat', { id: msg.id, from: msg.from, text: msg.text, at: msg.at });
      return true;
    case 'removed':
      session.emit('removed', { id: msg.id });
      return true;
    case 'hearts':
      session.heartsTotal = msg.total;
      session.emit('hearts', { count: msg.count, total: msg.total });
      return true;
    default:
      return false;
  }
}

export function validStreamName(name) {
  return STREAM_NAME_RE.test(String(name));
}

/** The name a person gave, checked as the server checks it; '' when unusable or empty. */
export function cleanName(raw) {
  const name = String(raw || '').trim();
  const chars = [...name];
  // eslint-disable-next-line no-control-regex
  if (chars.length === 0 || chars.length > MAX_NAME_CHARS || /[\u0000-\u001f\u007f-\u009f]/.test(name)) return '';
  return name;
}

/** The server's base URL: the `server` option, or the server this module came from. */
export function serverUrl(server) {
  const base = server ? new URL(String(server), location.href) : new URL('/', import.meta.url);
  return base.origin;
}

function socketUrl(server) {
  const u = new URL('/ws', server);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

/** What is live on a server: the rows of `GET /api/streams` (protocol "What is live"). */
export async function streams({ server } = {}) {
  const res = await fetch(new URL('/api/streams', serverUrl(server)), { cache: 'no-store' });
  if (!res.ok) throw new Error(`GET /api/streams: HTTP ${res.status}`);
  return res.json();
}

/** A thin EventTarget: `on(type, fn)` calls `fn(detail)`, and chains. */
class Emitter extends EventTarget {
  on(type, fn) {
    this.addEventListener(type, (e) => fn(e.detail));
    return this;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * One signalling WebSocket that reconnects by itself.
 *
 * handlers.open()                           the socket is (again) open: (re)start the session
 * handlers.message(msg)                     one parsed server message
 * handlers.down({ everOpened, retryInMs })  the socket closed or could not connect; a retry follows
 *
 * Closing the socket ends the server's session at once (protocol "Sessions"), so after `open`
 * following a `down`, the client must publish or watch again.
 */
export class Signal {
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.stopped = false;
    this.everOpened = false;
    this.delayMs = RECONNECT_FIRST_MS;
    this.timer = null;
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.#down();
      return;
    }
    this.#wire(ws);
  }

  /** Takes over a socket opened earlier (see `early` in {@link watch}), with the messages it
   * received before (`messages`, raw text). */
  adopt(ws, messages = []) {
    this.#wire(ws);
    const replay = () => messages.splice(0).forEach((data) => this.#deliver(data));
    if (ws.readyState === WebSocket.OPEN) {
      queueMicrotask(() => {
        if (this.ws !== ws) return;
        this.#opened();
        replay();
      });
    } else if (ws.readyState !== WebSocket.CONNECTING) {
      replay();
      this.ws = null;
      this.#down();
    }
  }

  #wire(ws) {
    this.ws = ws;
    ws.onopen = () => this.#opened();
    ws.onmessage = ({ data }) => this.#deliver(data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.#down();
    };
  }

  #opened() {
    this.everOpened = true;
    this.delayMs = RECONNECT_FIRST_MS;
    this.handlers.open();
  }

  #deliver(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('golive: unparsable server message', data);
      return;
    }
    this.handlers.message(msg);
  }

  #down() {
    if (this.stopped) return;
    const retryInMs = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, RECONNECT_MAX_MS);
    this.handlers.down({ everOpened: this.everOpened, retryInMs });
    this.timer = setTimeout(() => this.connect(), retryInMs);
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends one message; false when the socket is not open (the `open` handler resends). */
  send(msg) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Drops the current socket as a lost connection would, then reconnects as usual (for tests,
   * and for trying the reconnect path by hand). */
  drop() {
    if (this.ws) this.ws.close(4000, 'dropped by the page');
  }

  /** Closes for good: no more reconnects. */
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
  }
}

/**
 * An offer made at once and sent at once. `sdp` resolves as soon as `createOffer` did; `local`
 * when the local description is set too (the answer must wait for that). The peer connection's
 * candidates are held until the answer has come (before it, the server has no session to give
 * them to), then sent as `candidate` messages.
 */
class Offer {
  constructor(pc, made = pc.createOffer(), local = null) {
    this.pc = pc;
    this.answered = false;
    this.held = [];
    this.send = null;
    this.sdp = made.then((o) => o.sdp);
    this.local = local || made.then((o) => pc.setLocalDescription(o));
    // An offer that fails is reported by whoever awaits it.
    this.local.catch(() => {});
    pc.addEventListener('icecandidate', ({ candidate: c }) => {
      const msg = c && c.candidate
        ? { type: 'candidate', candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
        : { type: 'candidate', candidate: '' };
      if (this.send) this.send(msg);
      else this.held.push(msg);
    });
  }

  /** The answer came: the held candidates go, and those still to come follow. */
  trickle(send) {
    this.send = send;
    for (const m of this.held.splice(0)) send(m);
  }
}

/**
 * Receive statistics of a viewer's peer connection, one call per interval; `prev` is the
 * previous result (for rates). Returns { bitrateKbps, width, height, fps, framesDecoded,
 * latencyMs, rttMs, packetsLost, codec, ... }.
 *
 * Estimated latency = half the round trip (network) + the average time from a frame's first
 * packet to its decoded picture over the interval (jitter buffer, assembly, decode; the
 * `totalProcessingDelay` of the stats, or jitter buffer + decode time where that is missing):
 * what the receiver can see without a clock shared with the sender. It leaves out capture,
 * encode and display.
 */
export async function receiveStats(pc, prev) {
  const report = await pc.getStats();
  const now = performance.now();
  let video = null;
  let bytes = 0;
  let pair = null;
  let selectedPairId = null;
  const codecs = new Map();
  report.forEach((r) => {
    if (r.type === 'inbound-rtp') {
      bytes += r.bytesReceived || 0;
      if (r.kind === 'video') video = r;
    } else if (r.type === 'transport' && r.selectedCandidatePairId) {
      selectedPairId = r.selectedCandidatePairId;
    } else if (r.type === 'codec') {
      codecs.set(r.id, r.mimeType);
    }
  });
  if (selectedPairId) pair = report.get(selectedPairId);
  if (!pair) {
    report.forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
    });
  }
  const out = {
    at: now,
    bytes,
    framesDecoded: video?.framesDecoded ?? 0,
    width: video?.frameWidth ?? 0,
    height: video?.frameHeight ?? 0,
    fps: video?.framesPerSecond ?? 0,
    jitterBufferDelay: video?.jitterBufferDelay ?? 0,
    jitterBufferEmittedCount: video?.jitterBufferEmittedCount ?? 0,
    totalDecodeTime: video?.totalDecodeTime ?? 0,
    totalProcessingDelay: video?.totalProcessingDelay ?? 0,
    packetsLost: video?.packetsLost ?? 0,
    rttMs: pair?.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null,
    codec: video?.codecId ? (codecs.get(video.codecId) || '').replace(/^video\//, '') : '',
    bitrateKbps: null,
    latencyMs: null,
  };
  if (prev && now > prev.at) {
    out.bitrateKbps = ((out.bytes - prev.bytes) * 8) / (now - prev.at);
    const emitted = out.jitterBufferEmittedCount - prev.jitterBufferEmittedCount;
    const decoded = out.framesDecoded - prev.framesDecoded;
    let receiverMs = null;
    if (decoded > 0 && out.totalProcessingDelay > 0) {
      receiverMs = ((out.totalProcessingDelay - prev.totalProcessingDelay) / decoded) * 1000;
    } else if (emitted > 0) {
      const jitterMs = ((out.jitterBufferDelay - prev.jitterBufferDelay) / emitted) * 1000;
      const decodeMs = decoded > 0 ? ((out.totalDecodeTime - prev.totalDecodeTime) / decoded) * 1000 : 0;
      receiverMs = jitterMs + decodeMs;
    }
    out.latencyMs = receiverMs === null ? prev.latencyMs : receiverMs + (out.rttMs ?? 0) / 2;
  }
  return out;
}

/** Send statistics of a broadcaster's peer connection: { bitrateKbps, width, height, fps }. */
async function sendStats(pc, prev) {
  const report = await pc.getStats();
  const now = performance.now();
  let bytes = 0;
  let video = null;
  report.forEach((r) => {
    if (r.type === 'outbound-rtp') {
      bytes += r.bytesSent || 0;
      if (r.kind === 'video') video = r;
    }
  });
  return {
    at: now,
    bytes,
    width: video?.frameWidth ?? 0,
    height: video?.frameHeight ?? 0,
    fps: video?.framesPerSecond ?? 0,
    framesEncoded: video?.framesEncoded ?? 0,
    qualityLimitationReason: video?.qualityLimitationReason ?? 'none',
    bitrateKbps: prev && now > prev.at ? ((bytes - prev.bytes) * 8) / (now - prev.at) : null,
  };
}

// ---------------------------------------------------------------------------------------------
// Watching

/**
 * Plays `stream` in `video` until `close()`; see {@link Player}.
 *
 * options: server (default: the server this module came from), stream, name (in chat; the
 * server picks `viewer-…` otherwise), muted (default true: browsers autoplay only muted video),
 * rtcConfiguration (extra RTCPeerConnection settings, e.g. iceServers), early (see below).
 *
 * Early start: a page can open the socket, make the offer and even send `watch` before this
 * module has arrived, in a classic inline script, and hand it all over as `early`:
 *   { stream, name, ws: new WebSocket(…/ws), messages: [] (the text of every message received
 *     so far), pc: a new RTCPeerConnection({ bundlePolicy: 'max-bundle' }) with a recvonly audio
 *     and a recvonly video transceiver, offer: pc.createOffer() (the promise), local (optional:
 *     the promise of setLocalDescription with that offer), sent: true once it sent `watch` with
 *     that offer (and `name`), cancel: false }
 * The player sets `cancel` when it takes over a start that has not sent its `watch` yet (the
 * script must then not send it), and answers the one that has. golive's own player pages do this
 * (see /watch/…): their first picture no longer waits for the modules to load. What does not fit
 * (another stream or server, a used connection) is closed and ignored.
 */
export function watch(video, options) {
  return new Player(video, options);
}

/**
 * A viewer. Follows the broadcast through every state and reconnects by itself.
 *
 * `state`: connecting | waiting (not live yet) | live (the picture plays) | paused (the
 * broadcaster's connection was lost; it may come back) | reconnecting (our own connection was
 * lost) | offline (the server cannot be reached) | ended | error.
 *
 * Events (`player.on(type, detail => …)`, or addEventListener with `event.detail`):
 *   state    { state, previous, code }  `code`: the error code behind `waiting` or `error`
 *   joined   { peer }                   the server accepted the watch; chat history follows
 *   viewers  { count }
 *   chat     { id, from, text, at }
 *   removed  { id }                     the broadcaster removed a chat message
 *   hearts   { count, total }
 *   quality  receive statistics, every second while live (see receiveStats)
 *   layer    { layer, reason }          the video moved to another simulcast layer: `layer`
 *                                       high | medium | low, `reason` bandwidth | preference |
 *                                       publisher (the broadcaster stopped or started a layer);
 *                                       `audio`: the link cannot carry even the lowest layer, so
 *                                       the video stops until a later `layer` event names one
 *   info     the stream's row of /api/streams (title, live_since, …), or null
 *   ended    { reason }
 *   error    { code, message, fatal }   a refusal; `fatal` when the player gave up
 */
export class Player extends Emitter {
  #pc = null;
  #offer = null;
  #attempt = 0;
  #pending = false;
  #fatal = false;
  #closed = false;
  #endedAt = 0;
  #redirects = 0;
  #entryUrl = '';
  #timers = { retry: null, poll: null, stats: null, info: null };
  #onPlaying;

  constructor(video, {
    server, stream, name = '', muted = true, rtcConfiguration = {}, early = null,
  } = {}) {
    super();
    if (!(video instanceof HTMLVideoElement)) throw new TypeError('watch(video, …): video must be a <video> element');
    this.video = video;
    this.server = serverUrl(server);
    this.stream = String(stream ?? '');
    this.name = cleanName(name);
    this.rtcConfiguration = rtcConfiguration;
    this.state = 'connecting';
    this.viewers = null;
    this.heartsTotal = null;
    this.joined = false;
    this.peer = null;
    this.info = null;
    this.stats = null;
    this.signal = null;
    /** The viewer's quality preference (see setQuality); every new watch starts with it. */
    this.quality = 'auto';
    /** The simulcast layer the server last said the video moved to; null until it says. */
    this.layer = null;
    video.autoplay = true;
    video.playsInline = true;
    if (muted) video.muted = true;
    this.#onPlaying = () => {
      if (this.#pc && ['connecting', 'reconnecting', 'waiting'].includes(this.state)) this.#setState('live');
    };
    video.addEventListener('playing', this.#onPlaying);
    const url = socketUrl(this.server);
    const head = adoptable(early, this.stream, url);
    if (!validStreamName(this.stream)) {
      this.#fatal = true;
      queueMicrotask(() => this.#refused({ code: 'bad_stream_name', message: `“${this.stream}” is not a valid stream name` }));
      return;
    }
    // The socket and the offer, in parallel (or already under way: `early`).
    this.#newOffer(head);
    if (head && head.sent) {
      // Its `watch` is out: the answer (or refusal) that comes is ours.
      this.#pending = true;
      this.name = cleanName(head.name);
    } else if (head) {
      head.cancel = true;
    }
    this.#entryUrl = url;
    this.signal = this.#newSignal(url);
    if (head) this.signal.adopt(head.ws, head.messages);
    else this.signal.connect();
    this.#timers.stats = setInterval(() => this.#updateStats(), STATS_INTERVAL_MS);
    this.#timers.info = setInterval(() => this.state === 'live' && this.refreshInfo(), INFO_INTERVAL_MS);
  }

  get pc() {
    return this.#pc;
  }

  #newSignal(url) {
    return new Signal(url, {
      open: () => this.#onOpen(),
      message: (m) => this.#onMessage(m),
      down: (d) => this.#onDown(d),
    });
  }

  /** Leaves the current node's socket for one to `url` (a redirect, or back to the entry). */
  #moveTo(url) {
    if (this.signal) this.signal.close();
    this.signal = this.#newSignal(url);
    this.signal.connect();
  }

  /** Sends a chat message; false when not watching (nothing was sent). */
  chat(text) {
    return Boolean(this.joined && this.signal && this.signal.send({ type: 'chat', text: String(text) }));
  }

  /** Sends a heart; false when not watching. */
  heart() {
    return Boolean(this.joined && this.signal && this.signal.send({ type: 'heart' }));
  }

  /**
   * Sets the viewer's ceiling on video quality, one of QUALITY_PREFERENCES; it holds for later
   * watches (after a reconnect) too. The video moves at the layer's next keyframe, with a
   * `layer` event. True when it was sent now, false when it waits for the next watch.
   */
  setQuality(prefer) {
    if (!QUALITY_PREFERENCES.includes(prefer)) {
      throw new TypeError(`setQuality: ${JSON.stringify(prefer)} is not one of ${QUALITY_PREFERENCES.join(', ')}`);
    }
    this.quality = prefer;
    return Boolean(this.joined && this.signal && this.signal.send({ type: 'quality', prefer }));
  }

  /** Joins again under another chat name (the server fixes a viewer's name when it joins). */
  rejoin({ name } = {}) {
    if (name !== undefined) this.name = cleanName(name);
    if (!this.joined || !this.signal) return;
    this.signal.send({ type: 'leave' });
    this.joined = false;
    this.#closePc();
    this.#setState('connecting');
    this.#watch();
  }

  unmute() {
    this.video.muted = false;
    return this.video.play().catch(() => {});
  }

  /** Stops watching, for good. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    Object.values(this.#timers).forEach((t) => { clearTimeout(t); clearInterval(t); });
    if (this.signal) this.signal.close();
    this.#closePc();
    this.video.removeEventListener('playing', this.#onPlaying);
    this.joined = false;
  }

  /** Updates `info` from /api/streams; true when the stream is live. */
  async refreshInfo() {
    try {
      const rows = await streams({ server: this.server });
      this.info = rows.find((r) => r.stream === this.stream) || null;
      this.emit('info', this.info);
      return this.info !== null;
    } catch {
      return false;
    }
  }

  #setState(state, code) {
    const previous = this.state;
    this.state = state;
    this.emit('state', { state, previous, code });
  }

  #closePc() {
    if (this.#pc) this.#pc.close();
    this.#pc = null;
    this.#offer = null;
    this.video.srcObject = null;
    this.stats = null;
  }

  #newOffer(early = null) {
    this.#closePc();
    const pc = early ? early.pc : new RTCPeerConnection({ bundlePolicy: 'max-bundle', ...this.rtcConfiguration });
    this.#pc = pc;
    if (!early) {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
    const media = new MediaStream();
    pc.addEventListener('track', ({ track }) => {
      media.addTrack(track);
      this.video.srcObject = media;
      this.video.play().catch(() => {});
    });
    pc.addEventListener('connectionstatechange', () => {
      if (this.#pc === pc && pc.connectionState === 'failed') this.#mediaLost();
    });
    this.#offer = early ? new Offer(pc, early.offer, early.local) : new Offer(pc);
    return this.#offer;
  }

  /** Sends `watch`; while waiting for the stream, the same offer is sent again. */
  async #watch() {
    clearTimeout(this.#timers.retry);
    if (this.#closed || this.#fatal || this.#pending || !this.signal || !this.signal.isOpen) return;
    const mine = ++this.#attempt;
    const offer = this.#offer && !this.#offer.answered ? this.#offer : this.#newOffer();
    let sdp;
    try {
      sdp = await offer.sdp;
    } catch (e) {
      this.#refused({ code: 'internal', message: `this browser could not make an offer: ${e.message}` });
      return;
    }
    if (mine !== this.#attempt || this.#offer !== offer) return; // superseded meanwhile
    const msg = { type: 'watch', stream: this.stream, sdp };
    if (this.name) msg.name = this.name;
    this.joined = false;
    this.#pending = true;
    this.signal.send(msg);
  }

  #retry(ms) {
    clearTimeout(this.#timers.retry);
    this.#timers.retry = setTimeout(() => this.#watch(), ms);
  }

  #mediaLost() {
    if (this.signal) this.signal.send({ type: 'leave' });
    this.joined = false;
    this.#pending = false;
    this.#closePc();
    this.#setState('reconnecting');
    this.#retry(MEDIA_RETRY_MS);
  }

  /** After `ended`: polls the directory, and watches again if the stream comes back. */
  #pollForReturn(first) {
    clearTimeout(this.#timers.poll);
    const every = Date.now() - this.#endedAt < ENDED_POLL_FAST_FOR_MS ? ENDED_POLL_FAST_MS : ENDED_POLL_MS;
    this.#timers.poll = setTimeout(async () => {
      if (this.state !== 'ended' && this.state !== 'reconnecting') return;
      if (await this.refreshInfo()) {
        this.#setState('connecting');
        this.#watch();
      } else if (this.state === 'reconnecting') {
        this.#setState('ended');
        this.#pollForReturn();
      } else {
        this.#pollForReturn();
      }
    }, first ?? every);
  }

  #onOpen() {
    if (this.state === 'ended' || this.#fatal) return;
    if (this.state !== 'waiting') this.#setState('connecting');
    this.#watch();
  }

  #onDown({ everOpened }) {
    this.joined = false;
    this.#pending = false;
    this.#closePc();
    this.viewers = null;
    if (this.state === 'ended' || this.#fatal) return;
    this.#setState(everOpened ? 'reconnecting' : 'offline');
    this.#newOffer(); // ready for when the socket is back
    // A node we were redirected to is gone: come back through the entry point, which leads
    // to a node that is up.
    if (this.signal && this.signal.url !== this.#entryUrl) {
      this.#moveTo(this.#entryUrl);
    }
  }

  async #onMessage(msg) {
    if (audienceMessage(this, msg)) return;
    switch (msg.type) {
      case 'answer': {
        const offer = this.#offer;
        if (!offer || !this.#pending) return;
        this.#pending = false;
        this.#redirects = 0;
        this.joined = true;
        this.peer = msg.peer;
        offer.answered = true;
        // A new viewer session starts on auto and on the lowest layer.
        this.layer = null;
        if (this.quality !== 'auto') this.signal.send({ type: 'quality', prefer: this.quality });
        // Before any await: the stream's recent chat follows the answer.
        this.emit('joined', { peer: msg.peer });
        try {
          await offer.local;
          await offer.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
        } catch (e) {
          if (this.#offer !== offer) return;
          this.joined = false;
          this.#refused({ code: 'bad_answer', message: `the server's answer could not be used: ${e.message}` });
          return;
        }
        if (this.#offer !== offer) return;
        offer.trickle((m) => this.#offer === offer && this.joined && this.signal.send(m));
        if (this.state !== 'live') this.#setState('connecting');
        this.refreshInfo();
        break;
      }
      case 'redirect': {
        // This node is full: watch on the node it names, with the same (unanswered) offer.
        if (!this.#pending) return;
        this.#pending = false;
        const to = String(msg.url || '');
        if (!/^wss?:\/\//.test(to) || ++this.#redirects > MAX_REDIRECTS) {
          this.#redirects = 0;
          this.#refused({ code: 'server_full', message: `too many redirects (last to ${to})` });
          return;
        }
        this.#moveTo(to);
        break;
      }
      case 'quality':
        this.layer = msg.layer;
        this.emit('layer', { layer: msg.layer, reason: msg.reason });
        break;
      case 'reconnecting':
        // Our connection stays; the picture resumes when the broadcaster is back.
        this.#setState('paused');
        break;
      case 'resumed':
        if (this.state === 'paused') this.#setState(this.#pc ? 'live' : 'connecting');
        break;
      case 'ended':
        this.joined = false;
        this.#pending = false;
        this.#closePc();
        this.viewers = null;
        this.layer = null;
        this.#endedAt = Date.now();
        this.emit('ended', { reason: msg.reason });
        if (msg.reason === 'connection_lost') {
          // Either the broadcaster's connection or our own: the directory tells which.
          this.#setState('reconnecting');
          this.#pollForReturn(0);
        } else {
          this.info = null;
          this.#setState('ended');
          this.#pollForReturn();
        }
        break;
      case 'error':
        if (this.#pending) {
          this.#pending = false;
          this.#refused(msg);
        } else if (this.joined) {
          // Watching already: this refuses a chat message (or hearts sent too fast).
          this.emit('error', { code: msg.code, message: msg.message, fatal: false });
        }
        // Otherwise it answers a message of a session that is over: nothing to do.
        break;
      default:
        break;
    }
  }

  /** The server (or the browser) refused to start watching. */
  #refused({ code, message }) {
    let fatal = false;
    switch (code) {
      case 'stream_not_found':
        this.info = null;
        if (this.state !== 'ended') this.#setState('waiting', code);
        this.#retry(WAITING_RETRY_MS);
        break;
      case 'codec_unsupported':
      case 'bad_stream_name':
        fatal = true;
        this.#fatal = true;
        this.#closePc();
        this.#setState('error', code);
        break;
      case 'stream_full':
      case 'server_full':
      case 'too_many_sessions':
      case 'rate_limited':
      case 'draining':
        this.#closePc();
        this.#setState('waiting', code);
        this.#retry(BUSY_RETRY_MS);
        break;
      default:
        this.#closePc();
        this.#setState('error', code);
        this.#retry(BUSY_RETRY_MS);
    }
    this.emit('error', { code, message, fatal });
  }

  async #updateStats() {
    const pc = this.#pc;
    if (!pc || this.state !== 'live') return;
    try {
      this.stats = await receiveStats(pc, this.stats);
      if (pc === this.#pc) this.emit('quality', this.stats);
    } catch { /* closed meanwhile */ }
  }
}

/** The early start if it fits this player (see {@link watch}); else it is closed, and null. */
function adoptable(early, stream, url) {
  if (!early || early.taken) return null;
  early.taken = true;
  const fits = early.stream === stream && early.ws && early.ws.url === url && early.pc
    && early.offer && !early.pc.remoteDescription && early.pc.signalingState !== 'closed'
    && early.ws.readyState <= WebSocket.OPEN;
  if (fits) return early;
  try {
    early.ws.close();
    early.pc.close();
  } catch { /* half made */ }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Broadcasting

/**
 * Goes live on `stream`; see {@link Broadcast}.
 *
 * options: server, stream, key (the stream key, when the server asks for one), title, name (in
 * chat; `broadcaster` otherwise), video and audio (each: true for the default camera or
 * microphone, getUserMedia constraints, a MediaStreamTrack, a MediaStream, or false), preview
 * (a <video> to show the camera in; thumbnails are drawn from it), thumbnails (default true: a
 * snapshot for the directory every 20 s), degradationPreference (e.g. 'maintain-resolution'),
 * sendEncodings (the video's RTCRtpEncodingParameters, e.g. {@link simulcastEncodings}: several
 * with rids send simulcast layers, lowest first), rtcConfiguration, early (from {@link prepareLive}: its tracks are sent, `video` and `audio` are
 * then ignored).
 */
export function goLive(options) {
  return new Broadcast(options);
}

/**
 * Makes a broadcast's peer connection and offer ahead of time, from tracks already open (the
 * camera of a preview, say), so that `goLive({ …, early })` sends its offer the moment it is
 * called: creating an offer with tracks takes a browser 50 to 100 ms. Options: video, audio
 * (MediaStreamTracks, or false), degradationPreference, sendEncodings, rtcConfiguration. The result goes
 * unused until `goLive` takes it; `close()` it when the tracks change instead.
 */
export function prepareLive({
  video = null, audio = null, degradationPreference = null, sendEncodings = null, rtcConfiguration = {},
} = {}) {
  const media = new MediaStream([video, audio].filter(Boolean));
  const pc = sendingPc(media, { degradationPreference, sendEncodings, rtcConfiguration });
  const early = {
    media,
    pc,
    offer: pc.createOffer(),
    taken: false,
    close() {
      if (!early.taken) pc.close();
      early.taken = true;
    },
  };
  early.offer.catch(() => {});
  return early;
}

/**
 * The smallest camera picture sent as simulcast: a quarter of it (160x90) is about the least
 * a player can still show as video.
 */
const SIMULCAST_MIN_WIDTH = 640;
const SIMULCAST_MIN_HEIGHT = 360;
/**
 * The simulcast layers, lowest first, with the rids the server orders by (q < h < f): a quarter,
 * a half and the full picture. The bitrates follow common practice for a 720p camera at 30 fps:
 * 320x180 at 150 kbit/s, 640x360 at 500 kbit/s, 1280x720 at 2.5 Mbit/s.
 */
const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 2_500_000 },
];

/**
 * The `sendEncodings` for a camera `track`: three simulcast layers (rids q, h, f) when its
 * picture is at least 640x360, so each viewer gets the layer its link carries; null (one
 * encoding) for a smaller picture, whose quarter would be too small to watch.
 */
export function simulcastEncodings(track) {
  const { width = 0, height = 0 } = (track && track.getSettings) ? track.getSettings() : {};
  // A portrait camera counts by its long and short sides alike.
  const long = Math.max(width, height);
  const short = Math.min(width, height);
  if (long < SIMULCAST_MIN_WIDTH || short < SIMULCAST_MIN_HEIGHT) return null;
  return SIMULCAST_LAYERS.map((l) => ({ ...l }));
}

/** A peer connection that sends `media`'s tracks (one transceiver each). */
function sendingPc(media, { degradationPreference, sendEncodings = null, rtcConfiguration }) {
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', ...rtcConfiguration });
  for (const track of media.getTracks()) {
    const init = { direction: 'sendonly', streams: [media] };
    if (track.kind === 'video' && sendEncodings && sendEncodings.length) init.sendEncodings = sendEncodings;
    const { sender } = pc.addTransceiver(track, init);
    if (degradationPreference && track.kind === 'video') {
      try {
        const p = sender.getParameters();
        p.degradationPreference = degradationPreference;
        sender.setParameters(p).catch(() => {});
      } catch { /* optional */ }
    }
  }
  return pc;
}

/**
 * A broadcast. Reconnects by itself when the connection is lost (the server keeps the viewers for
 * its grace period meanwhile).
 *
 * `state`: connecting | live | reconnecting | ended (by `end()`) | error (refused; see the event).
 *
 * Events: state { state, previous, code }, live { peer }, viewers { count }, chat, removed,
 * hearts, quality (send statistics every second while live), connection { up, everOpened,
 * retryInMs } (the signalling socket went down; a retry follows), ended, error { code, message,
 * fatal }. A `media` error (code `media`, with `name` the DOMException's name) means the camera or
 * microphone could not be opened.
 */
export class Broadcast extends Emitter {
  #pc = null;
  #offer = null;
  #pending = false;
  #lostAt = null;
  #timers = { republish: null, stats: null, thumb: null };
  #ownsMedia = false;
  #thumbVideo = null;
  #early = null;

  constructor({
    server, stream, key, title, name, video = true, audio = true, preview = null, thumbnails = true,
    degradationPreference = null, sendEncodings = null, rtcConfiguration = {}, early = null,
  } = {}) {
    super();
    if (early && !early.taken && early.pc.signalingState === 'stable'
      && early.media.getTracks().every((t) => t.readyState === 'live')) {
      early.taken = true;
      this.#early = early;
    } else if (early) {
      early.close();
    }
    this.server = serverUrl(server);
    this.stream = String(stream ?? '');
    this.key = key || '';
    this.title = (title || '').trim();
    this.name = cleanName(name);
    this.preview = preview;
    this.thumbnails = thumbnails;
    this.degradationPreference = degradationPreference;
    this.sendEncodings = sendEncodings;
    this.rtcConfiguration = rtcConfiguration;
    this.state = 'connecting';
    this.viewers = 0;
    this.heartsTotal = 0;
    this.peer = null;
    this.liveSince = null;
    this.media = null;
    this.stats = null;
    this.signal = null;
    if (!validStreamName(this.stream)) {
      if (this.#early) this.#early.pc.close();
      queueMicrotask(() => this.#stop('error', { code: 'bad_stream_name', message: 'a stream name is 1 to 64 letters, digits, - and _' }));
      return;
    }
    // The camera (when asked for), the socket and the offer, each as early as it can go.
    this.ready = this.#openMedia(video, audio).then(() => {
      if (this.state !== 'connecting') return;
      this.#newOffer(this.#early);
      this.#publish();
    }, (e) => {
      this.#stop('error', { code: 'media', name: e.name, message: e.message || String(e) });
    });
    this.signal = new Signal(socketUrl(this.server), {
      open: () => (this.state === 'connecting' || this.state === 'reconnecting') && this.#publish(),
      message: (m) => this.#onMessage(m),
      down: (d) => this.#onDown(d),
    });
    this.signal.connect();
    this.#timers.stats = setInterval(() => this.#updateStats(), STATS_INTERVAL_MS);
  }

  get pc() {
    return this.#pc;
  }

  /** Sends a chat message as the broadcaster; false when not live. */
  chat(text) {
    return this.#send({ type: 'chat', text: String(text) });
  }

  /** Removes chat message `id` for everyone. */
  remove(id) {
    return this.#send({ type: 'remove', id });
  }

  /** Mutes the viewers named `name` for the rest of the broadcast. */
  mute(name) {
    return this.#send({ type: 'mute', name: String(name) });
  }

  /** Ends the broadcast on purpose: viewers are told at once. Keeps the camera of a caller's
   * own tracks running; stops the ones the broadcast opened itself. */
  end() {
    if (this.state === 'ended') return;
    if (this.signal) this.signal.send({ type: 'leave' });
    this.#stop('ended');
  }

  /** Sends other tracks (another camera or microphone) without going off the air. */
  async replaceMedia(stream) {
    if (this.#ownsMedia && this.media && this.media !== stream) this.media.getTracks().forEach((t) => t.stop());
    this.#ownsMedia = false;
    this.media = stream;
    if (this.#thumbVideo) this.#thumbVideo.srcObject = stream;
    if (!this.#pc) return;
    for (const sender of this.#pc.getSenders()) {
      const kind = sender.track?.kind;
      const track = stream.getTracks().find((t) => t.kind === kind);
      if (track) await sender.replaceTrack(track);
    }
  }

  /** Sends a snapshot of the picture for the directory now (it is sent every 20 s anyway).
   * Resolves to the JPEG's size in bytes, or 0 when there was no picture to take. */
  async sendThumbnail() {
    const jpeg = await this.#snapshot();
    if (!jpeg || this.state !== 'live') return 0;
    this.#send({ type: 'thumbnail', jpeg: await base64(jpeg) });
    return jpeg.size;
  }

  #send(msg) {
    return Boolean(this.signal && this.state === 'live' && this.signal.send(msg));
  }

  #setState(state, code) {
    const previous = this.state;
    this.state = state;
    this.emit('state', { state, previous, code });
  }

  async #openMedia(video, audio) {
    if (this.#early) {
      this.media = this.#early.media;
      this.#showPreview();
      return;
    }
    const tracks = [];
    const want = {};
    for (const [kind, v] of [['video', video], ['audio', audio]]) {
      if (!v) continue;
      if (v instanceof MediaStreamTrack) tracks.push(v);
      else if (v instanceof MediaStream) tracks.push(...v.getTracks().filter((t) => t.kind === kind));
      else want[kind] = v;
    }
    if (Object.keys(want).length) {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        const err = new Error('the camera needs a secure page (https:// or localhost)');
        err.name = 'InsecureContext';
        throw err;
      }
      const got = await navigator.mediaDevices.getUserMedia(want);
      tracks.push(...got.getTracks());
      this.#ownsMedia = true;
    }
    if (this.state !== 'connecting') {
      if (this.#ownsMedia) tracks.forEach((t) => t.stop());
      return;
    }
    this.media = new MediaStream(tracks);
    this.#showPreview();
  }

  #showPreview() {
    if (this.preview && !this.preview.srcObject) {
      this.preview.muted = true;
      this.preview.srcObject = this.media;
    }
  }

  #closePc() {
    clearTimeout(this.#timers.republish);
    if (this.#pc) this.#pc.close();
    this.#pc = null;
    this.#offer = null;
  }

  #newOffer(early = null) {
    this.#closePc();
    const pc = early ? early.pc : sendingPc(this.media, this);
    this.#pc = pc;
    pc.addEventListener('connectionstatechange', () => {
      if (this.#pc === pc && pc.connectionState === 'failed') this.#mediaLost();
    });
    this.#offer = new Offer(pc, early ? early.offer : undefined);
    return this.#offer;
  }

  async #publish() {
    if (!this.signal || !this.signal.isOpen || !this.media) return;
    const offer = this.#offer && !this.#offer.answered ? this.#offer : this.#newOffer();
    let sdp;
    try {
      sdp = await offer.sdp;
    } catch (e) {
      this.#stop('error', { code: 'internal', message: `this browser could not make an offer: ${e.message}` });
      return;
    }
    if (this.#offer !== offer || this.#pending) return; // superseded, or sent already
    const msg = { type: 'publish', stream: this.stream, sdp };
    if (this.title) msg.title = this.title;
    if (this.name) msg.name = this.name;
    if (this.key) msg.key = this.key;
    this.#pending = true;
    this.signal.send(msg);
  }

  #republishSoon() {
    clearTimeout(this.#timers.republish);
    this.#timers.republish = setTimeout(() => {
      if (this.state === 'reconnecting' || this.state === 'connecting') this.#publish();
    }, REPUBLISH_DELAY_MS);
  }

  /** The media connection failed while the socket is fine: start again. Dropping the socket,
   * rather than sending `leave`, tells the server the connection was lost, so it keeps the
   * viewers through its reconnect grace period while we publish again on a new socket. */
  #mediaLost() {
    this.#closePc();
    this.#pending = false;
    this.#lostAt = this.#lostAt || Date.now();
    this.#setState('reconnecting');
    if (this.signal) this.signal.drop();
  }

  #onDown({ everOpened, retryInMs }) {
    this.#closePc();
    this.#pending = false;
    if (this.state === 'ended' || this.state === 'error') return;
    if (this.state === 'live' || this.state === 'reconnecting') {
      this.#lostAt = this.#lostAt || Date.now();
      if (this.state !== 'reconnecting') this.#setState('reconnecting');
    } else if (everOpened) {
      // A `publish` may have been accepted just before the drop: our own session may hold the name.
      this.#lostAt = this.#lostAt || Date.now();
    }
    this.emit('connection', { up: false, everOpened, retryInMs });
    if (this.media) this.#newOffer(); // ready for when the socket is back
  }

  async #onMessage(msg) {
    if (audienceMessage(this, msg)) return;
    switch (msg.type) {
      case 'answer': {
        const offer = this.#offer;
        if (!offer || !this.#pending) return;
        this.#pending = false;
        offer.answered = true;
        try {
          await offer.local;
          await offer.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
        } catch (e) {
          if (this.#offer === offer) this.#stop('error', { code: 'bad_answer', message: `the server's answer could not be used: ${e.message}` });
          return;
        }
        if (this.#offer !== offer) return;
        offer.trickle((m) => this.#offer === offer && this.signal.send(m));
        this.peer = msg.peer;
        this.#lostAt = null;
        if (!this.liveSince) this.liveSince = Date.now();
        this.#setState('live');
        this.emit('live', { peer: msg.peer });
        this.#scheduleThumbnail(THUMBNAIL_FIRST_MS);
        break;
      }
      case 'ended':
        // Our own session's media connection died, or the server is going down.
        this.#closePc();
        this.#pending = false;
        this.#lostAt = this.#lostAt || Date.now();
        this.emit('ended', { reason: msg.reason });
        this.#setState('reconnecting', msg.reason);
        this.#republishSoon();
        break;
      case 'error':
        this.#onError(msg);
        break;
      default:
        break;
    }
  }

  #onError({ code, message }) {
    if (!this.#pending) {
      // Live already: this refuses a chat message, a remove, a mute or a thumbnail.
      if (this.state === 'live') this.emit('error', { code, message, fatal: false });
      return;
    }
    this.#pending = false;
    const reconnecting = this.#lostAt && Date.now() - this.#lostAt < RECONNECT_BUSY_GRACE_MS;
    if (reconnecting && (code === 'stream_busy' || PASSING_ERRORS.has(code))) {
      this.#republishSoon(); // stream_busy: most likely our own previous session, not yet gone
      return;
    }
    this.#stop('error', { code, message });
  }

  /** Ends the broadcast locally: `ended` on purpose, or `error` with why. */
  #stop(state, error) {
    if (this.signal) this.signal.close();
    this.#closePc();
    Object.values(this.#timers).forEach((t) => { clearTimeout(t); clearInterval(t); });
    if (this.#ownsMedia && this.media) this.media.getTracks().forEach((t) => t.stop());
    if (this.#thumbVideo) this.#thumbVideo.srcObject = null;
    this.#setState(state, error && error.code);
    if (error) this.emit('error', { ...error, fatal: true });
  }

  async #updateStats() {
    const pc = this.#pc;
    if (!pc || this.state !== 'live') return;
    try {
      this.stats = await sendStats(pc, this.stats);
      if (pc === this.#pc) this.emit('quality', this.stats);
    } catch { /* closed meanwhile */ }
  }

  #scheduleThumbnail(ms) {
    if (!this.thumbnails) return;
    clearTimeout(this.#timers.thumb);
    this.#timers.thumb = setTimeout(async () => {
      if (this.state === 'live') {
        try {
          await this.sendThumbnail();
        } catch (e) {
          console.warn('golive: thumbnail', e);
        }
      }
      if (this.state === 'live' || this.state === 'reconnecting') this.#scheduleThumbnail(THUMBNAIL_EVERY_MS);
    }, ms);
  }

  /** A JPEG of the current picture under the size limit, or null when there is no picture. */
  async #snapshot() {
    let source = this.preview && this.preview.videoWidth ? this.preview : null;
    if (!source) {
      const track = this.media && this.media.getVideoTracks()[0];
      if (!track) return null;
      if (!this.#thumbVideo) {
        this.#thumbVideo = document.createElement('video');
        this.#thumbVideo.muted = true;
        this.#thumbVideo.playsInline = true;
      }
      if (!this.#thumbVideo.srcObject) this.#thumbVideo.srcObject = new MediaStream([track]);
      await this.#thumbVideo.play().catch(() => {});
      if (!this.#thumbVideo.videoWidth) return null;
      source = this.#thumbVideo;
    }
    const canvas = document.createElement('canvas');
    for (const width of THUMBNAIL_WIDTHS) {
      canvas.width = width;
      canvas.height = Math.round((width * source.videoHeight) / source.videoWidth);
      canvas.getContext('2d').drawImage(source, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((r) => canvas.toBlob(r, 'image/jpeg', 0.7));
      if (blob && blob.size <= MAX_THUMBNAIL_BYTES) return blob;
    }
    return null;
  }
}

async function base64(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

// ---------------------------------------------------------------------------------------------
// <golive-player stream="…">

const PLAYER_STYLE = `
:host { display: block; position: relative; aspect-ratio: 16 / 9; background: #000; color: #fff;
  font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; overflow: hidden;
  contain: content; }
[hidden] { display: none !important; }
video { width: 100%; height: 100%; object-fit: contain; display: block; background: #000; }
.corner { position: absolute; display: flex; gap: .4em; align-items: center; }
.tl { top: .6em; left: .6em; } .tr { top: .6em; right: .6em; } .bl { bottom: .6em; left: .6em; }
.br { bottom: .6em; right: .6em; flex-direction: column-reverse; }
.badge { padding: .12em .5em; border-radius: 6px; font-size: .8em; font-weight: 700; letter-spacing: .04em;
  text-transform: uppercase; background: rgb(0 0 0 / 55%); display: inline-flex; align-items: center; gap: .35em;
  font-variant-numeric: tabular-nums; }
.badge.live { background: #d7263d; }
.badge.live::before { content: ""; width: .5em; height: .5em; border-radius: 50%; background: #fff;
  animation: pulse 1.6s ease-in-out infinite; }
@keyframes pulse { 50% { opacity: .35; } }
.overlay { position: absolute; inset: 0; display: grid; place-items: center; padding: 1em; text-align: center;
  background: rgb(0 0 0 / 62%); font-size: 1.05em; }
.spinner { width: 1.8em; height: 1.8em; margin: 0 auto .7em; border: 3px solid rgb(255 255 255 / 30%);
  border-top-color: #fff; border-radius: 50%; animation: spin .9s linear infinite; }
@keyframes spin { to { transform: rotate(360deg); } }
button { font: inherit; cursor: pointer; touch-action: manipulation; -webkit-tap-highlight-color: transparent; }
.unmute { border: 0; border-radius: 999px; padding: .45em .9em; font-weight: 650; color: #111;
  background: rgb(255 255 255 / 92%); }
.heart { width: 2.8em; height: 2.8em; border: 0; border-radius: 50%; color: #fff; background: #d7263d;
  box-shadow: 0 2px 10px rgb(0 0 0 / 30%); display: grid; place-items: center; }
.heart svg { width: 1.4em; height: 1.4em; }
.heart:disabled { opacity: .5; cursor: default; }
.hearts { position: absolute; inset: 0; overflow: hidden; pointer-events: none; }
.float { position: absolute; bottom: 3.4em; line-height: 1; text-shadow: 0 1px 4px rgb(0 0 0 / 35%); }
@media (prefers-reduced-motion: reduce) { .badge.live::before, .spinner { animation: none; } }
`;

const HEART_SVG = '<svg viewBox="0 0 24 24" aria-hidden="true"><path fill="currentColor" d="M12 21.3 10.6 20C5.4 15.4 2 12.3 2 8.5 2 5.4 4.4 3 7.5 3c1.7 0 3.4.8 4.5 2.1C13.1 3.8 14.8 3 16.5 3 19.6 3 22 5.4 22 8.5c0 3.8-3.4 6.9-8.6 11.5L12 21.3z"/></svg>';

/** What each state says over the picture. */
const PLAYER_STATUS = {
  connecting: 'Connecting…',
  waiting: 'Waiting for the broadcast to start…',
  paused: 'The broadcaster lost their connection. Waiting for them to come back…',
  reconnecting: 'Connection lost. Reconnecting…',
  offline: "Can't reach the server. Retrying…",
  ended: 'The broadcast has ended.',
  error: 'This broadcast cannot be played here.',
};
const PLAYER_EVENTS = ['state', 'joined', 'viewers', 'chat', 'removed', 'hearts', 'quality', 'layer', 'info', 'ended', 'error'];
/** A batch of hearts floats at most this many (the total says the rest). */
const MAX_FLOATING = 12;

/**
 * `<golive-player stream="demo" server="https://live.example.com">`: a complete player (the
 * picture, a live badge, the viewer count, hearts, and what is going on when there is no picture).
 * Attributes: stream (required), server, name, unmuted (start with sound; browsers may refuse),
 * nohearts. Children with `slot="corner"` show beside the live badge. Reflects the player's state in its `state` attribute; `element.player` is the
 * {@link Player}, and the player's events are dispatched on the element too.
 */
export class GolivePlayerElement extends HTMLElement {
  static observedAttributes = ['stream', 'server', 'name'];

  #player = null;
  #root = null;
  #lastHeart = 0;
  /** An early start for the first player (see {@link watch}), set before the element connects. */
  early = null;

  get player() {
    return this.#player;
  }

  connectedCallback() {
    if (!this.#root) this.#build();
    this.#start();
  }

  disconnectedCallback() {
    this.#stop();
  }

  attributeChangedCallback(name, before, after) {
    if (before === after || !this.isConnected || !this.#root) return;
    if (name === 'name' && this.#player) {
      this.#player.rejoin({ name: after || '' });
      return;
    }
    this.#start();
  }

  #build() {
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = `<style>${PLAYER_STYLE}</style>
      <video part="video" playsinline muted autoplay></video>
      <div class="hearts" aria-hidden="true"></div>
      <div class="corner tl"><span class="badge state" part="badge">Offline</span><slot name="corner"></slot></div>
      <div class="corner tr"><span class="badge viewers" part="viewers" hidden></span></div>
      <div class="corner bl"><button type="button" class="unmute" part="unmute" hidden>Tap to unmute</button></div>
      <div class="corner br" hidden><button type="button" class="heart" part="heart" aria-label="Send a heart" disabled>${HEART_SVG}</button><span class="badge total" part="hearts" hidden></span></div>
      <div class="overlay" part="overlay" role="status" aria-live="polite"><div><div class="spinner"></div><span class="status">Connecting…</span></div></div>`;
    this.#root = root;
    const $ = (s) => root.querySelector(s);
    $('.unmute').addEventListener('click', () => this.#player && this.#player.unmute());
    $('.heart').addEventListener('click', (ev) => {
      ev.stopPropagation();
      const now = performance.now();
      if (now - this.#lastHeart < 100 || !this.#player) return;
      this.#lastHeart = now;
      this.#player.heart();
    });
    $('video').addEventListener('volumechange', () => this.#render());
    // Autoplay is allowed muted; a browser that still refuses starts on the first tap.
    this.addEventListener('click', () => {
      const v = $('video');
      if (v.paused && v.srcObject) v.play().catch(() => {});
    });
  }

  #start() {
    this.#stop();
    const stream = this.getAttribute('stream') || '';
    const video = this.#root.querySelector('video');
    const player = watch(video, {
      server: this.getAttribute('server') || undefined,
      stream,
      name: this.getAttribute('name') || '',
      muted: !this.hasAttribute('unmuted'),
      early: this.early,
    });
    this.early = null;
    this.#player = player;
    for (const type of PLAYER_EVENTS) {
      player.addEventListener(type, (e) => {
        if (this.#player !== player) return;
        if (type === 'hearts') this.#float(e.detail.count);
        this.#render();
        this.dispatchEvent(new CustomEvent(type, { detail: e.detail }));
      });
    }
    this.#render();
  }

  #stop() {
    if (this.#player) this.#player.close();
    this.#player = null;
  }

  #render() {
    const p = this.#player;
    if (!p || !this.#root) return;
    const $ = (s) => this.#root.querySelector(s);
    const live = p.state === 'live';
    this.setAttribute('state', p.state);
    $('.overlay').hidden = live;
    $('.status').textContent = p.state === 'error' && p.stream && !validStreamName(p.stream)
      ? `“${p.stream}” is not a valid stream name.` : PLAYER_STATUS[p.state] || '';
    $('.spinner').hidden = !['connecting', 'waiting', 'reconnecting', 'paused', 'offline'].includes(p.state);
    const badge = $('.state');
    badge.className = live ? 'badge state live' : 'badge state';
    badge.textContent = live ? 'Live' : p.state === 'ended' ? 'Ended' : 'Offline';
    const viewers = $('.viewers');
    viewers.hidden = !live || p.viewers === null;
    viewers.textContent = p.viewers === 1 ? '1 watching' : `${p.viewers ?? 0} watching`;
    $('.unmute').hidden = !(live && $('video').muted);
    $('.br').hidden = !live || this.hasAttribute('nohearts');
    $('.heart').disabled = !p.joined;
    const total = $('.total');
    total.hidden = p.heartsTotal === null;
    total.textContent = `♥ ${Number(p.heartsTotal || 0).toLocaleString('en-US')}`;
  }

  #float(count) {
    if (document.hidden) return;
    const layer = this.#root.querySelector('.hearts');
    const reduced = window.matchMedia?.('(prefers-reduced-motion: reduce)').matches;
    for (let i = 0; i < Math.min(Number(count) || 0, MAX_FLOATING); i++) {
      setTimeout(() => {
        const h = document.createElement('span');
        h.className = 'float';
        h.textContent = '♥';
        h.style.right = `${8 + Math.random() * 40}px`;
        h.style.fontSize = `${1.4 + Math.random() * 0.9}em`;
        h.style.color = `hsl(${Math.floor(330 + Math.random() * 40) % 360} 90% 60%)`;
        layer.append(h);
        const drift = (Math.random() - 0.5) * 70;
        const frames = reduced
          ? [{ opacity: 0 }, { opacity: 1, offset: 0.3 }, { transform: 'translateY(-3em)', opacity: 0 }]
          : [
            { transform: 'translate(0, 0) scale(.4)', opacity: 0 },
            { transform: `translate(${drift * 0.2}px, -1.2em) scale(1.1)`, opacity: 1, offset: 0.12 },
            { transform: `translate(${drift}px, -7em) scale(1)`, opacity: 0.95, offset: 0.55 },
            { transform: `translate(${drift * -0.4}px, -14em) scale(.9)`, opacity: 0 },
          ];
        h.animate(frames, { duration: reduced ? 900 : 2600, easing: 'ease-out' }).finished
          .finally(() => h.remove());
      }, count > 1 ? Math.random() * 250 : 0);
    }
  }
}

if (typeof customElements !== 'undefined' && !customElements.get('golive-player')) {
  customElements.define('golive-player', GolivePlayerElement);
}
