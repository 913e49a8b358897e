// What every dispatchd page shares: the REST client, sign-in (the token is
// kept in sessionStorage, so it ends with the tab), a WebSocket that
// reconnects by itself, and formatting helpers.

const SESSION_KEY = 'dispatchd.session';

export const STATUS_LABEL = {
  PLACED: 'Placed',
  CONFIRMED: 'Confirmed',
  PREPARING: 'Preparing',
  READY_FOR_PICKUP: 'Ready for pickup',
  PICKED_UP: 'Picked up',
  DELIVERED: 'Delivered',
  CANCELLED: 'Cancelled',
};

export const TERMINAL = new Set(['DELIVERED', 'CANCELLED']);

/** An error answer of the API (CONTRACT.md "Errors"). */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.code ?? 'HTTP_ERROR';
    this.details = body?.details ?? [];
  }
}

/** @typedef {import('./types/dispatchd').TokenResponse} TokenResponse */

/**
 * Calls the API; resolves to the parsed body or throws an ApiError.
 * @param {string} path
 * @param {{ token?: string, method?: string, body?: unknown }} [options]
 * @returns {Promise<any>}
 */
export async function request(path, { token, method = 'GET', body } = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, { error: 'The server cannot be reached.', code: 'NETWORK' });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** A signed-in user's API client. A 401 means the token expired: sign out. */
export class Client {
  constructor(session) {
    this.session = session;
    this.token = session.token;
  }

  /**
   * @param {string} path
   * @param {{ method?: string, body?: unknown }} [options]
   */
  async call(path, options = {}) {
    try {
      return await request(path, { ...options, token: this.token });
    } catch (error) {
      if (error.status === 401) signOut();
      throw error;
    }
  }

  get(path) {
    return this.call(path);
  }

  patch(path, body) {
    return this.call(path, { method: 'PATCH', body });
  }

  post(path, body = {}) {
    return this.call(path, { method: 'POST', body });
  }
}

function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    return session?.token && session?.user ? session : null;
  } catch {
    return null;
  }
}

export function signOut() {
  sessionStorage.removeItem(SESSION_KEY);
  location.reload();
}

/**
 * Shows the page's sign-in form (`#login-view`) until someone with one of
 * `roles` signs in, then hides it, shows `#app-view` and calls
 * `start(session)`. A token already in sessionStorage skips the form.
 */
export function signIn({ roles, start }) {
  const loginView = document.getElementById('login-view');
  const appView = document.getElementById('app-view');
  const form = /** @type {HTMLFormElement} */ (document.getElementById('login'));
  const error = document.getElementById('login-error');
  const who = document.getElementById('who');
  const signOutButton = document.getElementById('sign-out');

  const open = (session) => {
    loginView.hidden = true;
    appView.hidden = false;
    who.textContent = `${session.user.name} (${session.user.role})`;
    signOutButton.hidden = false;
    signOutButton.addEventListener('click', signOut);
    start(session);
  };

  const stored = loadSession();
  if (stored && roles.includes(stored.user.role)) {
    open(stored);
    return;
  }
  loginView.hidden = false;
  appView.hidden = true;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const button = /** @type {HTMLButtonElement} */ (form.querySelector('button[type="submit"]'));
    button.disabled = true;
    try {
      /** @type {TokenResponse} */
      const body = await request('/api/auth/login', {
        method: 'POST',
        body: { email: form.email.value.trim(), password: form.password.value },
      });
      if (!roles.includes(body.user.role)) {
        error.textContent = `This page is for ${roles.join(' or ')} accounts; ${body.user.email} is a ${body.user.role}.`;
        return;
      }
      const session = { token: body.token, user: body.user };
      sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
      form.password.value = '';
      open(session);
    } catch (e) {
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
}

/**
 * A WebSocket to `/ws` that reconnects with exponential backoff (0.5 s to
 * 15 s, with jitter) and calls `onOpen` after every (re)connection, so the
 * page can resubscribe. Close code 4001 (token refused) signs out instead.
 */
export class LiveSocket {
  constructor({ token, onOpen, onMessage }) {
    this.token = token;
    this.onOpen = onOpen;
    this.onMessage = onMessage;
    this.failures = 0;
    this.timer = null;
    this.ws = null;
    this.badge = document.getElementById('connection');
    window.addEventListener('online', () => this.reconnectNow());
    // Keeps idle proxies from closing a quiet socket.
    setInterval(() => this.send({ type: 'ping' }), 25_000);
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.setState('connecting');
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(this.token)}`);
    this.ws = ws;
    let openedAt = 0;
    ws.addEventListener('open', () => {
      openedAt = Date.now();
      this.setState('live');
      this.onOpen(this);
    });
    ws.addEventListener('message', (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(message);
    });
    ws.addEventListener('close', (event) => {
      if (this.ws !== ws) return;
      if (event.code === 4001) {
        signOut();
        return;
      }
      // A connection that lived a while starts the backoff afresh; one
      // that keeps dropping at once backs off further each time.
      this.failures = openedAt && Date.now() - openedAt > 10_000 ? 0 : this.failures + 1;
      const delay = Math.min(15_000, 500 * 2 ** Math.min(this.failures, 5));
      this.setState('reconnecting');
      this.timer = setTimeout(() => this.connect(), delay * (0.75 + Math.random() / 2));
    });
  }

  reconnectNow() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    this.connect();
  }

  send(message) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  setState(state) {
    if (!this.badge) return;
    this.badge.dataset.state = state;
    this.badge.textContent = { live: 'live', connecting: 'connecting…', reconnecting: 'reconnecting…' }[state];
  }
}

/** Builds an element. Text goes in as text, never as HTML. */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') element.className = value;
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function statusBadge(status) {
  return h('span', { class: 'status-badge', dataset: { status } }, STATUS_LABEL[status] ?? status);
}

/** `12:04` in the viewer's time zone. */
export function clock(iso) {
  if (!iso) return '';
  return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** `45 s`, `3 min 05 s`, `1 h 02 min`. */
export function duration(secs) {
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** Time since an RFC 3339 instant, as `duration`. */
export function age(iso) {
  return duration((Date.now() - Date.parse(iso)) / 1000);
}

const dollars = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
export function money(cents) {
  return dollars.format(cents / 100);
}

/** The order id in a path like `/track/42`, or null. */
export function lastPathId() {
  const id = Number(location.pathname.split('/').filter(Boolean).pop());
  return Number.isInteger(id) && id > 0 ? id : null;
}
