// `/embed/<stream>`: the player for other sites' iframes. It is the SDK's <golive-player> (the
// picture, the live badge, the viewer count, hearts, and every state: waiting, live,
// reconnecting, ended) filling the frame, a link to the full page, and with `?chat=1` the chat
// beside it (below it in a tall frame). `<body data-state>` follows the player's state.
import { validStreamName } from '/sdk/golive.js';
import { Chat, savedName } from './chat.js';

const params = new URLSearchParams(location.search);
const CHAT = params.get('chat') === '1';

const stream = (() => {
  const raw = location.pathname.replace(/^\/embed\//, '').replace(/\/$/, '');
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
})();

const grid = document.getElementById('grid');
const player = document.createElement('golive-player');
player.id = 'player';
player.setAttribute('stream', stream);
const name = savedName();
if (name) player.setAttribute('name', name);
const link = document.createElement('a');
link.slot = 'corner';
link.className = 'embed-link';
link.href = `/watch/${encodeURIComponent(stream)}`;
link.target = '_blank';
link.rel = 'noopener';
link.textContent = 'golive ↗';
link.title = 'Watch on golive';
player.append(link);
// The socket and the offer the page's inline script started (see embed.html).
player.early = window.goliveEarly;
grid.prepend(player);

const chatPanel = document.getElementById('chat');
const chat = CHAT ? new Chat(chatPanel, {
  send: (msg) => Boolean(player.player && player.player.joined && player.player.signal.send(msg)),
  myName: () => (player.player ? player.player.name : ''),
}) : null;
if (chat) {
  chatPanel.hidden = false;
  document.body.classList.add('with-chat');
}

function render() {
  const p = player.player;
  const state = p ? p.state : 'error';
  document.body.dataset.state = state;
  document.title = `${state === 'live' ? '● ' : ''}${(p && p.info && p.info.title) || stream} · golive`;
  if (chat) {
    chat.setEnabled(Boolean(p && p.joined), state === 'ended' ? 'The broadcast has ended'
      : 'Chat opens when the broadcast is on');
  }
}

player.addEventListener('state', render);
player.addEventListener('info', render);
player.addEventListener('joined', () => {
  if (chat) chat.reset();
  render();
});
if (chat) {
  player.addEventListener('chat', (e) => chat.handle({ type: 'chat', ...e.detail }));
  player.addEventListener('removed', (e) => chat.handle({ type: 'removed', ...e.detail }));
  player.addEventListener('error', (e) => {
    if (!e.detail.fatal && player.player && player.player.joined) chat.refused(e.detail.code, e.detail.message);
  });
}
window.addEventListener('pagehide', () => player.player && player.player.close());
window.golive = {
  stream,
  element: player,
  get player() { return player.player; },
  get state() { return player.player ? player.player.state : 'error'; },
  get pc() { return player.player && player.player.pc; },
  chat,
};
if (!validStreamName(stream)) document.body.dataset.state = 'error';
render();
