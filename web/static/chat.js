// Live together: the chat panel and the hearts, shared by the player and the Go Live page.
//
// Everything a person typed (names, messages) goes into the page with `textContent`, never as
// markup: `<b>x</b>` in a message shows those characters, it makes no element.
//
// The server sends `chat {id, from, text, at}` to everyone on the stream (and the last 50 to a
// viewer right after its answer), `removed {id}` when the broadcaster takes one down, and
// `hearts {count, total}` in batches (about every 250 ms). Chat has no acknowledgement: a message
// shows when the server sends it back to everyone; a refusal comes back as an `error`
// (`rate_limited`, `muted`, ...), which the page hands to `Chat.refused`.

import { MAX_CHAT_CHARS, cleanName } from '/sdk/golive.js';

export { cleanName };
/** Messages kept on screen; the oldest go first. */
const MAX_SHOWN = 200;
/** A batch of hearts animates at most this many (the total says the rest). */
const MAX_FLOATING_PER_BATCH = 12;
/** Hearts of one batch are spread over about this long, as the batch gathers them. */
const BATCH_SPREAD_MS = 250;
const FLOAT_MS = 2600;
/** How near the bottom (px) still counts as "reading the newest" for auto-scroll. */
const STICKY_PX = 48;
const NOTE_MS = 6000;

const NAME_KEY = 'golive.chatName';

export function savedName() {
  try {
    return localStorage.getItem(NAME_KEY) || '';
  } catch {
    return '';
  }
}

export function saveName(name) {
  try {
    if (name) localStorage.setItem(NAME_KEY, name);
    else localStorage.removeItem(NAME_KEY);
  } catch { /* private mode */ }
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function clockTime(at) {
  const t = new Date(at);
  if (Number.isNaN(t.getTime())) return '';
  return t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** "1 heart", "1,234 hearts". */
export function formatHearts(n) {
  return `${Number(n).toLocaleString('en-US')} ${n === 1 ? 'heart' : 'hearts'}`;
}

/**
 * The chat panel. `root` holds `.chat-list`, `.chat-empty`, `.chat-note` and a `form.chat-form`
 * with `input.chat-input`. Options:
 *   send(msg)         sends one client message; false when not connected
 *   moderator         true on the broadcaster's page: each message gets Remove and Mute
 *   myName()          this person's chat name, to mark their own messages
 */
export class Chat {
  constructor(root, { send, moderator = false, myName = () => '' }) {
    this.root = root;
    this.send = send;
    this.moderator = moderator;
    this.myName = myName;
    this.list = root.querySelector('.chat-list');
    this.empty = root.querySelector('.chat-empty');
    this.note = root.querySelector('.chat-note');
    this.form = root.querySelector('.chat-form');
    this.input = root.querySelector('.chat-input');
    this.button = this.form.querySelector('button[type="submit"]');
    this.items = new Map(); // id -> <li>
    this.maxId = 0;
    this.fresh = false;
    this.enabled = false;
    this.mutedMe = false;
    this.mutedNames = new Set();
    this.lastSent = '';
    this.noteTimer = null;
    this.input.maxLength = MAX_CHAT_CHARS;
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.#submit();
    });
    this.setEnabled(false);
    this.#renderEmpty();
  }

  /** Forgets every message (a new broadcast, or a join: the history follows). */
  reset() {
    this.list.replaceChildren();
    this.items.clear();
    this.maxId = 0;
    this.fresh = false;
    this.mutedMe = false;
    this.mutedNames.clear();
    this.#renderEmpty();
  }

  /** After the broadcaster reconnects: if ids start over, the stream started over. */
  expectRestart() {
    this.fresh = true;
  }

  /** Chat is possible (a session on the stream) or not; `why` is the placeholder when not. */
  setEnabled(on, why = 'Chat opens when the broadcast is on') {
    this.enabled = on;
    // Moderation needs the session too: the controls go while chat is closed.
    this.root.classList.toggle('closed', !on);
    const usable = on && !this.mutedMe;
    this.input.disabled = !usable;
    this.button.disabled = !usable;
    this.input.placeholder = !on ? why
      : this.mutedMe ? 'The broadcaster muted you' : 'Say something…';
  }

  /** Handles a server message; true when it was about chat or hearts. */
  handle(msg) {
    switch (msg.type) {
      case 'chat':
        this.#add(msg);
        return true;
      case 'removed':
        this.#remove(msg.id);
        return true;
      default:
        return false;
    }
  }

  /** An error while a session is up: the answer to a chat, remove or mute. */
  refused(code, text) {
    switch (code) {
      case 'rate_limited':
        this.#restoreDraft();
        this.showNote('You are sending messages too fast. Wait a few seconds, then send again.', 'warn');
        break;
      case 'muted':
        // Clear the box, so its placeholder says why it is closed.
        this.input.value = '';
        this.lastSent = '';
        this.mutedMe = true;
        this.setEnabled(this.enabled);
        this.showNote('The broadcaster muted you: your messages are not shown to anyone for the rest of this broadcast.', 'error', 0);
        break;
      case 'forbidden':
        this.showNote('Only the broadcaster can remove messages or mute people.', 'error');
        break;
      case 'bad_request':
        this.#restoreDraft();
        this.showNote(`That did not go through: ${text}`, 'warn');
        break;
      default:
        this.showNote(`That did not go through (${code}): ${text}`, 'warn');
    }
    this.root.dataset.refused = code;
  }

  /** A short line under the messages; `ms` 0 keeps it. */
  showNote(text, kind = 'warn', ms = NOTE_MS) {
    clearTimeout(this.noteTimer);
    this.note.textContent = text;
    this.note.className = `chat-note ${kind}`;
    this.note.hidden = !text;
    if (text && ms) this.noteTimer = setTimeout(() => { this.note.hidden = true; }, ms);
  }

  #restoreDraft() {
    if (this.lastSent && !this.input.value) this.input.value = this.lastSent;
    this.lastSent = '';
  }

  #submit() {
    // A pasted tab or other control character would be refused by the server.
    // eslint-disable-next-line no-control-regex
    const text = this.input.value.replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/g, ' ');
    if (!text.trim()) return;
    if (!this.enabled || this.mutedMe) return;
    if (!this.send({ type: 'chat', text })) {
      this.showNote('Not connected right now; your message was not sent.', 'warn');
      return;
    }
    this.lastSent = text;
    this.input.value = '';
    this.input.focus();
  }

  #nearBottom() {
    const l = this.list;
    return l.scrollHeight - l.scrollTop - l.clientHeight < STICKY_PX;
  }

  #renderEmpty() {
    const empty = this.items.size === 0;
    this.empty.hidden = !empty;
    this.list.hidden = empty;
  }

  #add({ id, from, text, at }) {
    if (typeof id !== 'number') return;
    if (this.fresh) {
      this.fresh = false;
      if (id <= this.maxId && !this.items.has(id)) this.reset();
    }
    const stick = this.#nearBottom();
    const li = el('li', 'chat-msg');
    li.dataset.id = String(id);
    li.dataset.from = from;
    const mine = Boolean(from) && from === this.myName();
    if (mine) li.classList.add('mine');
    if (this.mutedNames.has(String(from).toLowerCase())) li.classList.add('muted');
    // The time stays out of the way: a tooltip, not a column taken from the text on a phone.
    const time = clockTime(at);
    if (time) li.title = time;
    // The controls float right, so the text flows beside and under them.
    if (this.moderator) li.append(this.#controls(id, from, mine));
    li.append(el('span', 'from', from), el('span', 'text', text));

    const old = this.items.get(id);
    if (old) {
      old.replaceWith(li);
    } else {
      // Keep id order: a live message can overtake the history that follows a join.
      let next = null;
      if (id < this.maxId) {
        for (const [other, node] of this.items) {
          if (other > id && (!next || other < Number(next.dataset.id))) next = node;
        }
      }
      this.list.insertBefore(li, next);
    }
    this.items.set(id, li);
    this.maxId = Math.max(this.maxId, id);
    while (this.items.size > MAX_SHOWN) {
      const oldest = Math.min(...this.items.keys());
      this.items.get(oldest).remove();
      this.items.delete(oldest);
    }
    this.#renderEmpty();
    if (stick || li.classList.contains('mine')) this.list.scrollTop = this.list.scrollHeight;
  }

  #controls(id, from, mine) {
    const box = el('span', 'mod');
    const remove = el('button', 'mod-btn remove', 'Remove');
    remove.type = 'button';
    remove.title = 'Remove this message for everyone';
    remove.addEventListener('click', () => {
      if (this.send({ type: 'remove', id })) this.items.get(id)?.classList.add('removing');
    });
    const mute = el('button', 'mod-btn mute', 'Mute');
    mute.type = 'button';
    mute.title = `Mute ${from} for the rest of this broadcast`;
    mute.addEventListener('click', () => {
      if (!this.send({ type: 'mute', name: from })) return;
      // No acknowledgement on the wire: a refusal would come back as an error.
      this.mutedNames.add(from.toLowerCase());
      for (const li of this.items.values()) {
        if (li.dataset.from.toLowerCase() === from.toLowerCase()) li.classList.add('muted');
      }
      this.showNote(`${from} is muted for the rest of this broadcast. Their messages so far stay until you remove them.`, 'ok');
    });
    // The broadcaster's own messages can be removed; muting oneself means nothing.
    box.append(...(mine ? [remove] : [remove, mute]));
    return box;
  }

  #remove(id) {
    const li = this.items.get(id);
    if (!li) return;
    li.remove();
    this.items.delete(id);
    this.#renderEmpty();
  }
}

/**
 * Floating hearts over `layer` (an absolutely placed box over the video) and a running total.
 * `onTotal(total)` is called with each batch's total.
 */
export class Hearts {
  constructor(layer, onTotal = () => {}) {
    this.layer = layer;
    this.onTotal = onTotal;
    this.total = null;
    this.reduced = window.matchMedia?.('(prefers-reduced-motion: reduce)').matches;
  }

  /** Handles `hearts {count, total}`; true when it was one. */
  handle(msg) {
    if (msg.type !== 'hearts') return false;
    this.total = msg.total;
    this.onTotal(msg.total);
    const n = Math.min(Number(msg.count) || 0, MAX_FLOATING_PER_BATCH);
    for (let i = 0; i < n; i++) {
      setTimeout(() => this.float(), n > 1 ? Math.random() * BATCH_SPREAD_MS : 0);
    }
    return true;
  }

  /** One heart rising from the bottom right, drifting a little. */
  float() {
    if (document.hidden) return; // nobody sees it; do not pile them up
    const h = el('span', 'float-heart');
    h.setAttribute('aria-hidden', 'true');
    h.textContent = '♥';
    const drift = (Math.random() - 0.5) * 70;
    h.style.setProperty('--drift', `${drift.toFixed(0)}px`);
    h.style.setProperty('--hue', String(Math.floor(330 + Math.random() * 40) % 360));
    h.style.setProperty('--size', `${(1.4 + Math.random() * 0.9).toFixed(2)}rem`);
    h.style.right = `${(8 + Math.random() * 40).toFixed(0)}px`;
    const ms = this.reduced ? 900 : FLOAT_MS;
    h.style.animationDuration = `${ms}ms`;
    h.addEventListener('animationend', () => h.remove());
    // A fallback in case the animation never runs (a hidden layer).
    setTimeout(() => h.remove(), ms + 500);
    this.layer.append(h);
  }
}
