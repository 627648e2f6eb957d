// `/`: what is live now, from GET /api/streams, refreshed while the page is open: a grid of
// live thumbnails (the broadcasters' pages send one every 20 s), ranked as the server ranks
// them (viewers and hearts per minute; the row's `rank`).
import { streams } from '/sdk/golive.js';
import { formatDuration, formatViewers, showMessage } from './common.js';

const REFRESH_MS = 2000;
const TICK_MS = 1000;

const list = document.getElementById('streams');
const empty = document.getElementById('empty');
const message = document.getElementById('message');

/** The latest rows: { stream, title, viewers, live_since, hearts_per_minute, rank, thumbnail }. */
let rows = [];
let failures = 0;

function hue(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}

function card(row) {
  const a = document.createElement('a');
  a.className = 'stream-card';
  a.href = `/watch/${encodeURIComponent(row.stream)}`;
  a.dataset.stream = row.stream;
  a.innerHTML = `
    <div class="thumb"><span class="initial" aria-hidden="true"></span>
      <img class="picture" alt="" decoding="async" hidden>
      <span class="badge live">Live</span><span class="badge viewers"></span>
      <span class="badge hearts-rate" hidden></span></div>
    <div class="meta"><div class="title"></div>
      <div class="sub"><span class="name mono"></span><span class="since"></span></div></div>`;
  a.querySelector('.thumb').style.setProperty('--hue', hue(row.stream));
  const li = document.createElement('li');
  li.append(a);
  return li;
}

function render() {
  const now = Date.now();
  const byName = new Map([...list.children].map((li) => [li.firstElementChild.dataset.stream, li]));
  const order = [...rows].sort((a, b) => (a.rank ?? 0) - (b.rank ?? 0)
    || b.viewers - a.viewers || a.stream.localeCompare(b.stream));
  order.forEach((row, i) => {
    let li = byName.get(row.stream);
    byName.delete(row.stream);
    if (!li) li = card(row);
    const title = row.title && row.title.trim() ? row.title : row.stream;
    li.querySelector('.title').textContent = title;
    li.querySelector('.initial').textContent = title.trim().charAt(0).toUpperCase();
    li.querySelector('.name').textContent = row.stream;
    li.querySelector('.viewers').textContent = formatViewers(row.viewers);
    const rate = li.querySelector('.hearts-rate');
    rate.hidden = !(row.hearts_per_minute > 0);
    rate.textContent = `♥ ${row.hearts_per_minute}/min`;
    li.firstElementChild.dataset.rank = String(row.rank ?? i + 1);
    const img = li.querySelector('.picture');
    if (row.thumbnail && img.dataset.src !== row.thumbnail) {
      // The new picture replaces the old one once it has loaded, never a blank in between.
      const next = new Image();
      next.onload = () => {
        img.src = next.src;
        img.hidden = false;
        li.firstElementChild.classList.add('has-picture');
      };
      next.src = row.thumbnail;
      img.dataset.src = row.thumbnail;
    }
    const since = Date.parse(row.live_since);
    li.querySelector('.since').textContent = Number.isNaN(since) ? 'live' : `live ${formatDuration(now - since)}`;
    li.firstElementChild.setAttribute('aria-label', `${title}, ${formatViewers(row.viewers)}`);
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  byName.forEach((li) => li.remove());
  empty.hidden = rows.length > 0;
  document.body.dataset.state = rows.length > 0 ? 'live' : 'empty';
  document.body.dataset.count = String(rows.length);
}

async function refresh() {
  try {
    rows = await streams();
    failures = 0;
    showMessage(message, '');
    render();
  } catch (e) {
    failures += 1;
    if (failures >= 2 || document.body.dataset.state === 'loading') {
      showMessage(message, "Can't reach the golive server. Retrying…", 'warn');
      document.body.dataset.state = 'offline';
    }
  } finally {
    setTimeout(refresh, document.hidden ? REFRESH_MS * 3 : REFRESH_MS);
  }
}

document.addEventListener('visibilitychange', () => !document.hidden && render());
setInterval(() => rows.length && render(), TICK_MS);
refresh();
