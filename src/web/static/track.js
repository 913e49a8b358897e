// The customer's tracking page: the order's timeline, its ETA and a map
// with the driver moving toward the delivery address. State comes from the
// REST detail at load, then from the socket's snapshot, order_update and
// driver_location messages; a reconnect resubscribes and gets a fresh
// snapshot.

import { Client, LiveSocket, signIn, h, clock, money, lastPathId } from './common.js';
import { CanvasMap, COLORS, distanceKm } from './map.js';

const STEPS = [
  ['PLACED', 'Placed', 'placedAt'],
  ['CONFIRMED', 'Confirmed', 'confirmedAt'],
  ['PREPARING', 'Preparing', 'preparingAt'],
  ['READY_FOR_PICKUP', 'Ready', 'readyAt'],
  ['PICKED_UP', 'Picked up', 'pickedUpAt'],
  ['DELIVERED', 'Delivered', 'deliveredAt'],
];

const HEADLINE = {
  PLACED: 'Waiting for the restaurant to confirm',
  CONFIRMED: 'The restaurant has your order',
  PREPARING: 'Your food is being prepared',
  READY_FOR_PICKUP: 'Ready, waiting for the driver',
  PICKED_UP: 'On its way to you',
  DELIVERED: 'Delivered. Enjoy!',
  CANCELLED: 'This order was cancelled',
};

const VEHICLE = { car: 'by car', bike: 'by bike', scooter: 'by scooter', walk: 'on foot' };

const orderId = lastPathId();
const state = {
  client: null,
  map: null,
  order: null,
  restaurant: null,
  driver: null,
  location: null,
  /** Positions seen since the page opened, drawn as a trail. */
  trail: [],
  eta: null,
  etaReceivedAt: 0,
};

// For tests: what the page shows, in plain data.
window.__track = { status: null, driverDistanceM: null, driverLocation: null, etaSeconds: null };

signIn({ roles: ['customer', 'admin', 'restaurant', 'driver'], start });

async function start(session) {
  state.client = new Client(session);
  state.map = new CanvasMap(document.getElementById('map'), drawLayers);
  if (!orderId) {
    showError('This address has no order number in it.');
    return;
  }
  document.getElementById('order-title').textContent = `Order #${orderId}`;
  try {
    const detail = await state.client.get(`/api/orders/${orderId}`);
    applyDetail(detail);
    const { restaurant } = await state.client.get(`/api/restaurants/${detail.order.restaurantId}`);
    state.restaurant = restaurant;
    document.getElementById('restaurant-name').textContent = `from ${restaurant.name}`;
  } catch (error) {
    showError(error.status === 404 ? 'No such order on this account.' : error.message);
    if (!state.order) return;
  }
  fitMap();
  new LiveSocket({
    token: session.token,
    onOpen: (socket) => socket.send({ type: 'subscribe', orderId }),
    onMessage,
  });
  // The ETA counts down between pushes.
  setInterval(renderEta, 10_000);
}

/** @param {import('./types/dispatchd').ServerMessage} message */
function onMessage(message) {
  if ('orderId' in message && message.orderId !== orderId) return;
  switch (message.type) {
    case 'snapshot':
      applyOrder(message.order);
      if (message.driver) state.driver = message.driver;
      if (message.driverLocation) applyLocation(message.driverLocation);
      setEta(message.eta);
      break;
    case 'order_update':
      applyOrder(message.order);
      setEta(message.eta);
      break;
    case 'driver_location':
      applyLocation(message.location);
      setEta(message.eta);
      break;
    case 'driver_approaching':
    case 'driver_arrived': {
      // Arrival events (README "Arrival events"): say it in the driver's card.
      const here = message.type === 'driver_arrived';
      const line = message.stop === 'restaurant'
        ? (here ? 'Your driver is at the restaurant.' : 'Your driver is nearly at the restaurant.')
        : (here ? 'Your driver has arrived.' : 'Your driver is almost there.');
      const arrival = document.getElementById('arrival');
      arrival.textContent = line;
      arrival.hidden = false;
      break;
    }
    case 'error':
      if (message.code === 'NOT_FOUND') {
        state.order = null;
        showError('No such order on this account.');
      }
      break;
  }
  if (state.order) render();
}

function applyDetail({ order, items, driver, driverLocation, eta }) {
  applyOrder(order);
  state.driver = driver;
  if (driverLocation) applyLocation(driverLocation);
  setEta(eta);
  document.getElementById('items').replaceChildren(
    ...items.map((i) => h('li', {}, `${i.quantity} × ${i.name}`)),
  );
  document.getElementById('total').textContent = `Total ${money(order.totalCents)}`;
  render();
}

function applyOrder(order) {
  // Messages can cross a REST answer; never step back to an older version.
  if (state.order && order.version < state.order.version) return;
  const newDriver = order.driverId && order.driverId !== state.driver?.id;
  state.order = order;
  if (!order.driverId && state.driver) {
    // Unassigned (the driver dropped out): the search starts over.
    state.driver = null;
    state.location = null;
    state.trail = [];
  }
  if (newDriver) {
    // An assignment push carries the order, not the driver: fetch who it is.
    state.client
      .get(`/api/orders/${orderId}`)
      .then((detail) => {
        state.driver = detail.driver;
        if (detail.driverLocation) applyLocation(detail.driverLocation);
        render();
      })
      .catch(() => {});
  }
}

function applyLocation(location) {
  state.location = location;
  const last = state.trail.at(-1);
  if (!last || last.lat !== location.lat || last.lon !== location.lon) state.trail.push(location);
  if (state.trail.length > 300) state.trail.shift();
  if (!state.map.contains(location)) fitMap();
}

function setEta(eta) {
  state.eta = eta ?? null;
  state.etaReceivedAt = Date.now();
}

function fitMap() {
  const points = [state.order?.deliveryAddress, state.restaurant?.location, ...state.trail].filter(Boolean);
  state.map.fit(points, 0.4);
  state.map.draw();
}

/** Shows `text`; without an order to show, hides the order's parts too. */
function showError(text) {
  const error = document.getElementById('track-error');
  error.textContent = text;
  error.hidden = false;
  if (!state.order) {
    for (const part of document.querySelectorAll('[data-order-part], #driver')) {
      /** @type {HTMLElement} */ (part).hidden = true;
    }
  }
}

// ---- Rendering ----------------------------------------------------------------

function render() {
  const order = state.order;
  if (!order) return;
  const status = document.getElementById('status');
  status.textContent = HEADLINE[order.status] ?? order.status;
  status.dataset.status = order.status;
  renderTimeline(order);
  renderEta();
  renderDriver();
  window.__track.status = order.status;
  state.map.draw();
}

function renderTimeline(order) {
  const cancelled = order.status === 'CANCELLED';
  const steps = STEPS.map(([step, label, field]) => {
    const at = order[field];
    const stepState = !at ? 'pending' : step === order.status && step !== 'DELIVERED' ? 'current' : 'done';
    return { step, label, at, stepState };
  }).filter((s) => !(cancelled && s.stepState === 'pending'));
  if (cancelled) {
    steps.push({
      step: 'CANCELLED',
      label: order.cancelReason ? `Cancelled: ${order.cancelReason}` : 'Cancelled',
      at: order.cancelledAt,
      stepState: 'done',
    });
  }
  document.getElementById('timeline').replaceChildren(
    ...steps.map(({ step, label, at, stepState }) =>
      h(
        'li',
        { dataset: { step, state: stepState }, 'aria-current': stepState === 'current' ? 'step' : null },
        h('span', { class: 'step' }, label),
        h('time', { datetime: at ?? null }, at ? clock(at) : ''),
      ),
    ),
  );
}

function renderEta() {
  const order = state.order;
  if (!order) return;
  const eta = document.getElementById('eta');
  const label = document.getElementById('eta-label');
  const when = document.getElementById('eta-clock');
  let seconds = null;
  if (order.status === 'DELIVERED') {
    label.textContent = 'Delivered at';
    eta.textContent = clock(order.deliveredAt);
    when.textContent = '';
  } else if (order.status === 'CANCELLED') {
    label.textContent = 'Cancelled at';
    eta.textContent = clock(order.cancelledAt);
    when.textContent = '';
  } else {
    label.textContent = 'Estimated arrival';
    const at = state.eta?.estimatedDeliveryAt ?? order.estimatedDeliveryAt;
    if (state.eta) {
      // Counted from the server's figure, so a skewed client clock does not matter.
      seconds = Math.max(0, state.eta.secondsRemaining - (Date.now() - state.etaReceivedAt) / 1000);
    } else if (at) {
      seconds = Math.max(0, (Date.parse(at) - Date.now()) / 1000);
    }
    eta.textContent = seconds === null ? '–' : `${Math.max(1, Math.ceil(seconds / 60))} min`;
    when.textContent = at ? `around ${clock(at)}` : '';
  }
  eta.dataset.seconds = seconds === null ? '' : String(Math.round(seconds));
  window.__track.etaSeconds = seconds;
}

function renderDriver() {
  const card = document.getElementById('driver');
  const driver = state.driver;
  const order = state.order;
  card.hidden = !driver || order.status === 'DELIVERED' || order.status === 'CANCELLED';
  if (!driver) return;
  document.getElementById('driver-name').textContent = `${driver.name} is your driver`;
  document.getElementById('driver-vehicle').textContent =
    `${VEHICLE[driver.vehicleType] ?? driver.vehicleType}${driver.rating != null ? ` · rated ${driver.rating.toFixed(1)}` : ''}`;
  const distance = document.getElementById('driver-distance');
  if (!state.location) {
    distance.textContent = 'Waiting for the driver’s position…';
    distance.dataset.distanceM = '';
    return;
  }
  const metres = distanceKm(state.location, order.deliveryAddress) * 1000;
  const away = metres < 1000 ? `${Math.round(metres / 10) * 10} m` : `${(metres / 1000).toFixed(1)} km`;
  const leg = order.status === 'PICKED_UP' ? 'on the way to you' : 'heading to the restaurant';
  distance.textContent = `${away} from you, ${leg}`;
  distance.dataset.distanceM = String(Math.round(metres));
  window.__track.driverDistanceM = Math.round(metres);
  window.__track.driverLocation = { lat: state.location.lat, lon: state.location.lon };
}

function drawLayers(map) {
  const order = state.order;
  if (!order) return;
  const home = order.deliveryAddress;
  const restaurant = state.restaurant?.location;
  const driver = state.location;
  const showDriver = driver && order.status !== 'DELIVERED' && order.status !== 'CANCELLED';
  if (showDriver) {
    const ahead = order.status === 'PICKED_UP' || !restaurant ? [driver, home] : [driver, restaurant, home];
    map.path(ahead, COLORS.busy, { dashed: true, alpha: 0.7 });
    map.path(state.trail, COLORS.busy, { width: 4, alpha: 0.3 });
  } else if (restaurant) {
    map.path([restaurant, home], COLORS.home, { dashed: true, alpha: 0.6 });
  }
  if (restaurant) {
    map.restaurant(restaurant, { size: 14 });
    map.label(restaurant, state.restaurant.name, { dx: 11, bold: true });
  }
  map.home(home, 20);
  map.label(home, 'Delivery address', { dx: 13, bold: true });
  if (showDriver) {
    map.dot(driver, COLORS.busy, { radius: 8 });
    map.label(driver, state.driver ? state.driver.name : 'Driver', { dx: 12 });
  }
}
