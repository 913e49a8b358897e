// The restaurant tablet: the kitchen's orders as cards in three columns,
// new ones arriving live. Each card's buttons move its order along with
// PATCH /api/orders/{id}/status and the version the card shows, so two
// tablets cannot both act on the same state.

import { Client, LiveSocket, signIn, h, statusBadge, TERMINAL, clock } from './common.js';

/** The one action each status allows in the kitchen. */
const NEXT_ACTION = { PLACED: 'confirm', CONFIRMED: 'start_preparing', PREPARING: 'mark_ready' };
const ACTIONS = [
  ['confirm', 'Confirm'],
  ['start_preparing', 'Start preparing'],
  ['mark_ready', 'Ready'],
];
const COLUMN = { PLACED: 'new', CONFIRMED: 'kitchen', PREPARING: 'kitchen', READY_FOR_PICKUP: 'ready' };
const DONE_SHOWN = 10;

const state = {
  client: null,
  socket: null,
  restaurantId: null,
  /** id → { order, items, card, busy, error } */
  orders: new Map(),
  subscribed: new Set(),
};

signIn({ roles: ['restaurant'], start });

async function start(session) {
  state.client = new Client(session);
  try {
    const me = await state.client.get('/api/me');
    state.restaurantId = me.restaurantId;
    if (!state.restaurantId) throw new Error('This account is not staff of a restaurant.');
    const { restaurant } = await state.client.get(`/api/restaurants/${state.restaurantId}`);
    document.getElementById('restaurant-name').textContent = restaurant.name;
    document.title = `${restaurant.name} · kitchen`;
  } catch (error) {
    showPageError(error.message);
    return;
  }
  await loadOrders();
  state.socket = new LiveSocket({ token: session.token, onOpen, onMessage });
  setInterval(() => state.orders.forEach(renderCard), 20_000);
}

function onOpen(socket) {
  state.subscribed.clear();
  socket.send({ type: 'subscribe_restaurant', restaurantId: state.restaurantId });
  for (const { order } of state.orders.values()) subscribe(order);
  // Orders placed while the socket was down arrive here.
  loadOrders();
}

/** @param {import('./types/dispatchd').ServerMessage} message */
function onMessage(message) {
  if ((message.type === 'order_update' || message.type === 'snapshot') && message.order?.restaurantId === state.restaurantId) {
    applyOrder(message.order);
  }
  // Arrival events of this restaurant's stop (README "Arrival events").
  if ((message.type === 'driver_approaching' || message.type === 'driver_arrived') && message.stop === 'restaurant') {
    const entry = state.orders.get(message.orderId);
    if (entry) {
      entry.arrival = message.type === 'driver_arrived' ? 'driver is here' : 'driver arriving soon';
      renderCard(entry);
    }
  }
}

async function loadOrders() {
  try {
    const { orders } = await state.client.get('/api/orders?limit=50');
    // Oldest first, so the columns read in arrival order.
    for (const order of orders.reverse()) applyOrder(order, { quiet: true });
    showPageError('');
  } catch (error) {
    showPageError(`Orders could not be loaded: ${error.message}`);
  }
}

function subscribe(order) {
  if (TERMINAL.has(order.status) || state.subscribed.has(order.id)) return;
  if (state.socket?.send({ type: 'subscribe', orderId: order.id })) state.subscribed.add(order.id);
}

/** Takes in an order from any source; stale versions are ignored. */
function applyOrder(order, { quiet = false } = {}) {
  let entry = state.orders.get(order.id);
  if (entry && order.version < entry.order.version) return;
  if (!entry) {
    entry = { order, items: null, card: null, busy: false, error: '' };
    state.orders.set(order.id, entry);
    if (!TERMINAL.has(order.status)) {
      loadItems(entry);
      if (!quiet) announce(`New order #${order.id}`);
    }
  }
  entry.order = order;
  subscribe(order);
  if (TERMINAL.has(order.status) && state.subscribed.delete(order.id)) {
    state.socket?.send({ type: 'unsubscribe', orderId: order.id });
  }
  renderCard(entry, { fresh: !quiet && !entry.card });
  renderDone();
}

async function loadItems(entry) {
  try {
    const detail = await state.client.get(`/api/orders/${entry.order.id}`);
    entry.items = detail.items;
    applyOrder(detail.order, { quiet: true });
    renderCard(entry);
  } catch {
    // The card works without its items; the next reload tries again.
  }
}

async function act(id, action) {
  const entry = state.orders.get(id);
  entry.busy = true;
  entry.error = '';
  renderCard(entry);
  try {
    const { order } = await state.client.patch(`/api/orders/${id}/status`, {
      action,
      expectedVersion: entry.order.version,
    });
    applyOrder(order);
  } catch (error) {
    if (error.code === 'VERSION_CONFLICT' || error.code === 'INVALID_TRANSITION') {
      entry.error = 'This order changed on another screen; showing its current state.';
      try {
        applyOrder((await state.client.get(`/api/orders/${id}`)).order);
      } catch {
        // Keep the message; the socket will bring the new state.
      }
    } else {
      entry.error = error.message;
    }
  } finally {
    entry.busy = false;
    renderCard(entry);
  }
}

// ---- Rendering ------------------------------------------------------------------

function renderCard(entry, { fresh = false } = {}) {
  const { order } = entry;
  const column = COLUMN[order.status];
  if (!column) {
    entry.card?.remove();
    entry.card = null;
    updateCounts();
    return;
  }
  if (!entry.card) entry.card = buildCard(order.id);
  const card = entry.card;
  card.dataset.status = order.status;
  card.dataset.version = String(order.version);
  if (fresh) {
    card.dataset.fresh = 'true';
    // Once only: moving the card to another column would replay it.
    card.addEventListener('animationend', () => delete card.dataset.fresh, { once: true });
  }
  const badge = statusBadge(order.status);
  badge.dataset.testid = 'order-status';
  card.querySelector('[data-testid="order-status"]').replaceWith(badge);
  const driver = order.driverId ? `driver #${order.driverId} assigned` : order.status === 'PLACED' ? '' : 'looking for a driver';
  const minutes = Math.floor((Date.now() - Date.parse(order.placedAt)) / 60_000);
  const waited = minutes < 1 ? 'just now' : `${minutes} min ago`;
  const arrival = order.driverId ? entry.arrival : null;
  card.querySelector('.meta').textContent = [`placed ${clock(order.placedAt)} (${waited})`, driver, arrival]
    .filter(Boolean)
    .join(' · ');
  card.querySelector('.items').replaceChildren(
    ...(entry.items ?? []).map((item) =>
      h(
        'li',
        {},
        `${item.quantity} × ${item.name}`,
        item.specialInstructions ? h('div', { class: 'note' }, item.specialInstructions) : null,
      ),
    ),
  );
  for (const button of card.querySelectorAll('button[data-action]')) {
    button.disabled = entry.busy || NEXT_ACTION[order.status] !== button.dataset.action;
  }
  const error = card.querySelector('.error');
  error.textContent = entry.error;
  error.hidden = !entry.error;

  const target = document.getElementById(`column-${column}`);
  if (card.parentElement !== target) {
    // Keep each column in arrival order.
    const after = [...target.children].find(
      (c) => Number(/** @type {HTMLElement} */ (c).dataset.orderId) > order.id,
    );
    target.insertBefore(card, after ?? null);
  }
  updateCounts();
}

function buildCard(id) {
  return h(
    'article',
    { class: 'order-card', 'data-testid': 'order-card', dataset: { orderId: id }, 'aria-label': `Order ${id}` },
    h('header', {}, h('h3', {}, `#${id}`), h('span', { 'data-testid': 'order-status' })),
    h('div', { class: 'meta muted' }),
    h('ul', { class: 'items' }),
    h(
      'div',
      { class: 'actions' },
      ACTIONS.map(([action, label]) =>
        h('button', { type: 'button', dataset: { action }, onclick: () => act(id, action) }, label),
      ),
    ),
    h('p', { class: 'error', role: 'alert', 'data-testid': 'card-error', hidden: true }),
  );
}

function updateCounts() {
  for (const column of ['new', 'kitchen', 'ready']) {
    document.getElementById(`count-${column}`).textContent = String(
      document.getElementById(`column-${column}`).children.length,
    );
  }
}

function renderDone() {
  const done = [...state.orders.values()]
    .filter(({ order }) => !COLUMN[order.status])
    .sort((a, b) => b.order.id - a.order.id)
    .slice(0, DONE_SHOWN);
  document.getElementById('done-empty').hidden = done.length > 0;
  document.getElementById('done').replaceChildren(
    ...done.map(({ order }) =>
      h(
        'li',
        { dataset: { orderId: order.id } },
        h('strong', {}, `#${order.id}`),
        statusBadge(order.status),
        h('span', { class: 'muted' }, clock(order.pickedUpAt ?? order.cancelledAt ?? order.deliveredAt)),
      ),
    ),
  );
}

function announce(text) {
  document.getElementById('announcer').textContent = text;
}

function showPageError(text) {
  const error = document.getElementById('page-error');
  error.textContent = text;
  error.hidden = !text;
}
