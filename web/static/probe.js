// Glass-to-glass latency probe.
//
// The broadcaster sends a canvas in place of the camera. Every frame stamps the sender's clock
// (milliseconds, performance.timeOrigin + performance.now(), modulo 2^32) into a row of black and
// white blocks across the top: 32 bits of time and 8 check bits, one block per bit, each block a
// multiple of the codec's 16-pixel macroblocks so that compression keeps it readable. The player
// reads the row back from each decoded frame just before it is shown
// (requestVideoFrameCallback) and subtracts the stamp from the frame's expected display time.
// Two pages in one browser share that clock, so the difference is the real capture-to-display
// latency: canvas capture, encode, network, SFU, jitter buffer, decode and render.

export const PROBE_WIDTH = 640;
export const PROBE_HEIGHT = 480;
const BITS = 40; // 32 time bits + 8 check bits
const BLOCK_W = PROBE_WIDTH / BITS; // 16 px
const ROW_H = 32;
const CHECK_SALT = 0xa5;
const TWO_POW_32 = 2 ** 32;

/** The shared clock, in milliseconds. */
export function clockMs() {
  return performance.timeOrigin + performance.now();
}

function checkByte(t) {
  return ((t & 0xff) ^ ((t >>> 8) & 0xff) ^ ((t >>> 16) & 0xff) ^ ((t >>> 24) & 0xff) ^ CHECK_SALT) & 0xff;
}

/**
 * A canvas video track stamped with the clock. Returns { stream, canvas, stop }.
 * The picture moves (a sweeping bar and a clock) so the encoder sends real frames.
 */
export function probeSource(frameRate = 30) {
  const canvas = document.createElement('canvas');
  canvas.width = PROBE_WIDTH;
  canvas.height = PROBE_HEIGHT;
  canvas.className = 'preview';
  const ctx = canvas.getContext('2d', { alpha: false });
  let running = true;
  let frame = 0;

  const draw = () => {
    if (!running) return;
    const t = Math.floor(clockMs()) % TWO_POW_32;
    frame += 1;
    ctx.fillStyle = '#203040';
    ctx.fillRect(0, 0, PROBE_WIDTH, PROBE_HEIGHT);
    // Something that moves, so every frame differs beyond the stamp.
    const x = (frame * 7) % PROBE_WIDTH;
    ctx.fillStyle = '#d7263d';
    ctx.fillRect(x, ROW_H + 40, 60, PROBE_HEIGHT - ROW_H - 80);
    ctx.fillStyle = '#ffffff';
    ctx.font = 'bold 44px system-ui, sans-serif';
    ctx.textAlign = 'center';
    ctx.fillText('golive latency probe', PROBE_WIDTH / 2, PROBE_HEIGHT / 2);
    ctx.font = '28px ui-monospace, monospace';
    ctx.fillText(`${t % 100000} ms`, PROBE_WIDTH / 2, PROBE_HEIGHT / 2 + 50);
    // The stamp: black is 1, white is 0.
    const word = [t, checkByte(t)];
    for (let i = 0; i < BITS; i++) {
      const bit = i < 32 ? (word[0] >>> (31 - i)) & 1 : (word[1] >>> (39 - i)) & 1;
      ctx.fillStyle = bit ? '#000000' : '#ffffff';
      ctx.fillRect(i * BLOCK_W, 0, BLOCK_W, ROW_H);
    }
  };

  // A timer, not requestAnimationFrame: it keeps going when the tab is in the background.
  const timer = setInterval(draw, 1000 / frameRate);
  draw();
  const stream = canvas.captureStream(frameRate);
  const [track] = stream.getVideoTracks();
  // Keep the blocks sharp: prefer lower frame rate to lower resolution under pressure.
  if ('contentHint' in track) track.contentHint = 'detail';
  return {
    stream,
    canvas,
    stop() {
      running = false;
      clearInterval(timer);
      stream.getTracks().forEach((t) => t.stop());
    },
  };
}

/**
 * Reads stamps from `video`'s frames as they are displayed. Calls onSample(latencyMs) for every
 * frame whose stamp reads back valid, and counts in `counts` the frames looked at (`frames`) and
 * those without a valid stamp (`unreadable`: not a probe broadcast, or a picture too degraded).
 * Returns a stop function.
 */
export function probeReader(video, onSample, counts = { frames: 0, unreadable: 0 }) {
  const canvas = document.createElement('canvas');
  canvas.width = PROBE_WIDTH;
  canvas.height = ROW_H;
  const ctx = canvas.getContext('2d', { willReadFrequently: true, alpha: false });
  let handle = null;
  let stopped = false;
  if (!('requestVideoFrameCallback' in HTMLVideoElement.prototype)) {
    console.warn('golive probe: requestVideoFrameCallback is not supported here');
    return () => {};
  }

  const onFrame = (_now, meta) => {
    if (stopped) return;
    handle = video.requestVideoFrameCallback(onFrame);
    const vw = video.videoWidth;
    const vh = video.videoHeight;
    if (!vw || !vh) return;
    counts.frames += 1;
    // The top ROW_H/PROBE_HEIGHT of the picture, whatever size it arrived in.
    ctx.drawImage(video, 0, 0, vw, (vh * ROW_H) / PROBE_HEIGHT, 0, 0, PROBE_WIDTH, ROW_H);
    const px = ctx.getImageData(0, 0, PROBE_WIDTH, ROW_H).data;
    let t = 0;
    let check = 0;
    for (let i = 0; i < BITS; i++) {
      // Mean luma of the middle of the block, away from blurred edges.
      let sum = 0;
      let n = 0;
      for (let y = 10; y < 22; y += 2) {
        for (let x = i * BLOCK_W + 5; x < (i + 1) * BLOCK_W - 5; x += 2) {
          const o = (y * PROBE_WIDTH + x) * 4;
          sum += 0.299 * px[o] + 0.587 * px[o + 1] + 0.114 * px[o + 2];
          n += 1;
        }
      }
      const bit = sum / n < 128 ? 1 : 0;
      if (i < 32) t = t * 2 + bit;
      else check = check * 2 + bit;
    }
    if (check !== checkByte(t >>> 0)) {
      counts.unreadable += 1;
      return;
    }
    const shownAt = performance.timeOrigin + meta.expectedDisplayTime;
    const latency = (((Math.floor(shownAt) - t) % TWO_POW_32) + TWO_POW_32) % TWO_POW_32;
    // A stamp from the far past or the future is a misread, not a latency.
    if (latency < 60_000) onSample(latency);
  };
  handle = video.requestVideoFrameCallback(onFrame);
  return () => {
    stopped = true;
    if (handle !== null) video.cancelVideoFrameCallback(handle);
  };
}
