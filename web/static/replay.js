// The replay page: a recorded broadcast with its chat and hearts, in step with the playback.
//
// The server gives the replay's metadata (`/api/replays/<id>`), its media (WebM, or MP4 for
// H.264, served with range requests, so the <video> element seeks) and its timeline
// (`/timeline`: chat messages and heart batches with `t_ms`, their offset from the start of the
// media; removed messages are not in it). While the video plays, every event whose offset the playback passes
// is shown as it was live; after a seek, the chat is rebuilt up to the new position.

import { Chat, Hearts, formatHearts } from './chat.js';
import { formatDuration } from './common.js';

const $ = (id) => document.getElementById(id);
const video = $('video');
const status = $('status');
const id = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() || '');

const chat = new Chat($('chat'), { send: () => false });
chat.setEnabled(false, 'This is a replay');
const hearts = new Hearts($('hearts-layer'), (total) => {
  const el = $('hearts-total');
  el.hidden = false;
  el.textContent = Number(total).toLocaleString('en-US');
  el.title = formatHearts(total);
});

/** Timeline events, by offset. */
let events = [];
/** Events before this index have been shown. */
let shown = 0;
/** The playback position (ms) the page last caught up to. */
let lastMs = 0;

/** Index of the first event after `ms`. */
function indexAfter(ms) {
  let lo = 0;
  let hi = events.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (events[mid].t_ms <= ms) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Rebuilds the chat as it stood at `ms` (after a seek): no hearts float for the past. */
function rebuild(ms) {
  chat.reset();
  shown = indexAfter(ms);
  let total = null;
  for (const e of events.slice(0, shown)) {
    if (e.event.type === 'hearts') total = e.event.total;
    else chat.handle(e.event);
  }
  if (total !== null) hearts.onTotal(total);
  lastMs = ms;
}

/** Plays forward to `ms`: what happened meanwhile shows as it did live. */
function advance(ms) {
  if (ms < lastMs || ms - lastMs > 2000) {
    rebuild(ms);
    return;
  }
  const until = indexAfter(ms);
  for (; shown < until; shown++) {
    const e = events[shown].event;
    if (!chat.handle(e)) hearts.handle(e);
  }
  lastMs = ms;
}

video.addEventListener('timeupdate', () => advance(video.currentTime * 1000));
video.addEventListener('seeked', () => rebuild(video.currentTime * 1000));
video.addEventListener('error', () => {
  status.textContent = 'This replay cannot be played here.';
});

async function load() {
  if (!/^[A-Za-z0-9_-]{1,96}$/.test(id)) {
    status.textContent = 'That is not a replay address.';
    return;
  }
  const metaRes = await fetch(`/api/replays/${id}`);
  if (!metaRes.ok) {
    status.textContent = 'No such replay: it may have expired.';
    document.body.dataset.state = 'missing';
    return;
  }
  const meta = await metaRes.json();
  document.title = `golive · replay · ${meta.title || meta.stream}`;
  $('title').textContent = meta.title || meta.stream;
  $('stream-name').textContent = meta.stream;
  const started = new Date(meta.started_unix_ms);
  $('since').textContent = ` · live ${started.toLocaleString()}`
    + (meta.duration_ms ? ` · ${formatDuration(meta.duration_ms)}` : '');
  if (!meta.ended_unix_ms) $('badge').textContent = 'Recording';
  const tl = await fetch(`/api/replays/${id}/timeline`);
  events = tl.ok ? await tl.json() : [];
  events.sort((a, b) => a.t_ms - b.t_ms);
  video.src = `/api/replays/${id}/media`;
  document.body.dataset.state = 'ready';
  rebuild(0);
}

load().catch((e) => {
  status.textContent = `Cannot load the replay: ${e.message}`;
});

// For tests and the curious: the page's state.
window.golive = { video, chat, events: () => events };
