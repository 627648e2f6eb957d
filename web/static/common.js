// What the golive pages share besides the SDK (/sdk/golive.js, which does all the talking to
// the server): formatting for people.

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
