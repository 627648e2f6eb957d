// What the golive pages share: the signalling socket, ICE gathering, names, formatting, and the
// receive statistics of the player. Protocol: /docs/protocol (docs/protocol.md).

/** Stream names: 1 to 64 of A-Z a-z 0-9 _ - (protocol "Limits"). */
export const STREAM_NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** Longest we wait for ICE gathering before sending what we have (loopback takes milliseconds). */
const ICE_GATHERING_TIMEOUT_MS = 2000;
/** Reconnect delays of the signalling socket: doubling from the first to the last. */
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 5000;

export function validStreamName(name) {
  return STREAM_NAME_RE.test(name);
}

/** The signalling WebSocket's URL on this page's server. */
export function signalUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/ws`;
}

/**
 * One signalling WebSocket that reconnects by itself.
 *
 * handlers.open()                     the socket is (again) open: (re)start the session
 * handlers.message(msg)               one parsed server message
 * handlers.down({ everOpened, retryInMs })  the socket closed or could not connect; a retry follows
 *
 * Closing the socket ends the server's session at once (protocol "Sessions"), so after `open`
 * following a `down`, the page must publish or watch again.
 */
export class Signal {
  constructor(handlers) {
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
      ws = new WebSocket(signalUrl());
    } catch (e) {
      this.#down();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.everOpened = true;
      this.delayMs = RECONNECT_FIRST_MS;
      this.handlers.open();
    };
    ws.onmessage = ({ data }) => {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        console.warn('golive: unparsable server message', data);
        return;
      }
      this.handlers.message(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.#down();
    };
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

  /** Drops the current socket as a lost connection would, then reconnects as usual (for tests
   * and for trying the reconnect path by hand: `golive.signal.drop()` in the console). */
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

/** Resolves once `pc` has gathered its candidates, or after a timeout with what it has. */
export function iceGathered(pc, timeoutMs = ICE_GATHERING_TIMEOUT_MS) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => pc.iceGatheringState === 'complete' && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** "0:07", "12:34", "1:02:03". */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export function formatViewers(n) {
  return n === 1 ? '1 watching' : `${n} watching`;
}

/** Sets an element's text and class for a page message; an empty text hides it. */
export function showMessage(el, text, kind = 'error') {
  el.textContent = text || '';
  el.className = `message ${kind}`;
  el.hidden = !text;
}

/** Percentile (0..100) of a list of numbers, nearest rank. */
export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))];
}

/**
 * Receive statistics of a viewer's peer connection, one call per interval.
 * Returns { bitrateKbps, width, height, fps, framesDecoded, latencyMs, rttMs, codec, ... };
 * `prev` is the previous result (for rates).
 *
 * Estimated latency = half the round trip (network) + the average time from a frame's first
 * packet to its decoded picture over the interval (jitter buffer, assembly, decode; the
 * `totalProcessingDelay` of the stats, or jitter buffer + decode time where that is missing):
 * what the receiver can see without a clock shared with the sender. It leaves out capture,
 * encode and display; probe mode measures the real glass-to-glass figure.
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

/** One line for people: "1,234 kbps · 640×480 · 20 fps · ~85 ms". */
export function statsLine(s) {
  const parts = [];
  if (s.bitrateKbps != null) parts.push(`${Math.round(s.bitrateKbps).toLocaleString('en-US')} kbps`);
  if (s.width) parts.push(`${s.width}×${s.height}`);
  if (s.fps) parts.push(`${Math.round(s.fps)} fps`);
  if (s.latencyMs != null) parts.push(`latency ≈ ${Math.round(s.latencyMs)} ms`);
  if (s.codec) parts.push(s.codec);
  return parts.join(' · ');
}
