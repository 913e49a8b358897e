// The operator console: the city on a map from the `ops` stream (drivers
// glide between the once-a-second frames), orders by status, orders waiting
// for a driver, and p99 latencies computed from /metrics histograms.

import { Client, LiveSocket, signIn, h, statusBadge, STATUS_LABEL, TERMINAL, clock, duration, age, money } from './common.js';
import { CanvasMap, COLORS } from './map.js';

const ORDERS_EVERY_MS = 4000;
const METRICS_EVERY_MS = 5000;
/** How long a driver dot takes to glide to its new position: one ops period. */
const GLIDE_MS = 1000;
/** How close (CSS pixels) a click must be to pick a dot or a restaurant. */
const PICK_PX = 12;

const state = {
  client: null,
  map: null,
  restaurants: new Map(),
  /** id → { id, state, activeOrders, from, to, at } */
  drivers: new Map(),
  ops: null,
  orders: [],
  /** { kind: 'driver' | 'order' | 'restaurant', id } */
  selected: null,
  /** The selected order's detail, drawn on the map. */
  selectedOrder: null,
  lastDraw: 0,
};

// For tests and curious operators: what the map shows, in plain data.
window.__console = { opsFrames: 0, drivers: [], figures: {} };

signIn({ roles: ['admin'], start });

async function start(session) {
  state.client = new Client(session);
  const canvas = document.getElementById('map');
  state.map = new CanvasMap(canvas, drawLayers);
  canvas.addEventListener('click', (event) => select(pick(event)));
  canvas.addEventListener('mousemove', (event) => {
    const hit = pick(event);
    canvas.style.cursor = hit ? 'pointer' : '';
    canvas.title = !hit ? '' : hit.kind === 'driver' ? `Driver #${hit.id}` : state.restaurants.get(hit.id).name;
  });
  // Where a driver's dot is on the canvas now, in CSS pixels (or null).
  window.__console.locate = (id) => {
    const d = state.drivers.get(id);
    return d ? state.map.project(positionOf(d, performance.now())) : null;
  };
  await loadRestaurants();
  new LiveSocket({
    token: session.token,
    onOpen: (socket) => socket.send({ type: 'subscribe_ops' }),
    onMessage: (/** @type {import('./types/dispatchd').ServerMessage} */ message) => {
      if (message.type === 'ops') onOps(message);
    },
  });
  refreshOrders();
  setInterval(refreshOrders, ORDERS_EVERY_MS);
  refreshPendingDrivers();
  setInterval(refreshPendingDrivers, ORDERS_EVERY_MS);
  refreshCluster();
  setInterval(refreshCluster, ORDERS_EVERY_MS);
  refreshMetrics();
  setInterval(refreshMetrics, METRICS_EVERY_MS);
  requestAnimationFrame(animate);
}

async function loadRestaurants() {
  try {
    const { restaurants } = await state.client.get('/api/restaurants?limit=100');
    for (const r of restaurants) state.restaurants.set(r.id, r);
    state.map.fit(restaurants.map((r) => r.location), 1.5);
  } catch (error) {
    console.warn('Restaurants unavailable', error);
  }
  try {
    // Service zones (README "Service zones"): polygons of [lon, lat] rings.
    const { zones } = await state.client.get('/api/zones');
    state.zones = zones.flatMap((z) => {
      const polygons = z.geometry.type === 'MultiPolygon' ? z.geometry.coordinates : [z.geometry.coordinates];
      return polygons.map((rings) => ({
        name: z.name,
        rings: rings.map((ring) => ring.map(([lon, lat]) => ({ lat, lon }))),
      }));
    });
  } catch (error) {
    console.warn('Zones unavailable', error);
  }
  state.map.draw();
}

// ---- The ops stream -------------------------------------------------------

/** @param {Extract<import('./types/dispatchd').ServerMessage, { type: 'ops' }>} frame */
function onOps(frame) {
  const now = performance.now();
  const seen = new Set();
  for (const d of frame.drivers) {
    seen.add(d.id);
    const known = state.drivers.get(d.id);
    const to = { lat: d.lat, lon: d.lon };
    state.drivers.set(d.id, {
      id: d.id,
      state: d.state,
      activeOrders: d.activeOrders,
      from: known ? positionOf(known, now) : to,
      to,
      at: now,
    });
  }
  for (const id of state.drivers.keys()) if (!seen.has(id)) state.drivers.delete(id);
  // A city without restaurants is fitted to its drivers instead.
  if (state.restaurants.size === 0 && frame.drivers.length > 0 && !state.ops) {
    state.map.fit(frame.drivers, 1);
  }
  state.ops = frame;

  const plain = frame.drivers.map(({ id, lat, lon, state: s }) => ({ id, lat, lon, state: s }));
  document.getElementById('map').dataset.drivers = JSON.stringify(plain);
  window.__console.opsFrames += 1;
  window.__console.drivers = plain;
  renderFigures();
  renderWaiting();
  if (state.selected?.kind === 'driver') renderDriver(state.selected.id);
}

function positionOf(driver, now) {
  const t = Math.min(1, (now - driver.at) / GLIDE_MS);
  return {
    lat: driver.from.lat + (driver.to.lat - driver.from.lat) * t,
    lon: driver.from.lon + (driver.to.lon - driver.from.lon) * t,
  };
}

/** Repaints while dots glide, and at least every few seconds otherwise. */
function animate(now) {
  let gliding = false;
  for (const d of state.drivers.values()) if (now - d.at < GLIDE_MS + 50) gliding = true;
  if (gliding || now - state.lastDraw > 2000) {
    state.map.draw();
    state.lastDraw = now;
  }
  requestAnimationFrame(animate);
}

function drawLayers(map) {
  const now = performance.now();
  const selected = state.selected;
  for (const zone of state.zones ?? []) {
    map.area(zone.rings, COLORS.zone);
    map.label(zone.rings[0][0], zone.name);
  }
  for (const r of state.restaurants.values()) {
    map.restaurant(r.location, { ring: selected?.kind === 'restaurant' && selected.id === r.id });
  }
  const order = state.selectedOrder;
  if (order) {
    const from = state.restaurants.get(order.restaurantId)?.location;
    const to = order.deliveryAddress;
    if (from) map.path([from, to], COLORS.home, { dashed: true });
    map.home(to);
  }
  // Stale and paused first, so the dots that matter are drawn on top.
  const rank = { stale: 0, paused: 1, available: 2, busy: 3, offered: 4 };
  const drivers = [...state.drivers.values()].sort((a, b) => (rank[a.state] ?? 0) - (rank[b.state] ?? 0));
  for (const d of drivers) {
    const isSelected = (selected?.kind === 'driver' && selected.id === d.id) || order?.driverId === d.id;
    map.dot(positionOf(d, now), COLORS[d.state] ?? COLORS.paused, {
      hollow: d.state === 'stale',
      ring: isSelected,
    });
  }
  if (selected?.kind === 'restaurant') {
    const r = state.restaurants.get(selected.id);
    if (r) map.label(r.location, r.name, { bold: true });
  }
  if (selected?.kind === 'driver' && state.drivers.has(selected.id)) {
    map.label(positionOf(state.drivers.get(selected.id), now), `Driver #${selected.id}`, { dx: 12, bold: true });
  }
}

/** The driver dot (first) or restaurant under the pointer, or null. */
function pick(event) {
  const map = state.map;
  const now = performance.now();
  const near = (p) => {
    const { x, y } = map.project(p);
    return Math.hypot(x - event.offsetX, y - event.offsetY);
  };
  let best = null;
  for (const d of state.drivers.values()) {
    const distance = near(positionOf(d, now));
    if (distance <= PICK_PX && (!best || distance < best.distance)) best = { kind: 'driver', id: d.id, distance };
  }
  if (!best) {
    for (const r of state.restaurants.values()) {
      const distance = near(r.location);
      if (distance <= PICK_PX && (!best || distance < best.distance)) best = { kind: 'restaurant', id: r.id, distance };
    }
  }
  return best;
}

// ---- Selection and details ------------------------------------------------

function select(selection) {
  state.selected = selection ? { kind: selection.kind, id: selection.id } : null;
  state.selectedOrder = null;
  const panel = document.getElementById('details');
  panel.hidden = !selection;
  if (selection?.kind === 'driver') renderDriver(selection.id);
  if (selection?.kind === 'restaurant') renderRestaurant(selection.id);
  if (selection?.kind === 'order') loadOrder(selection.id);
  state.map.draw();
}

function showDetails(title, ...content) {
  document.getElementById('details-title').textContent = title;
  document.getElementById('details-body').replaceChildren(...content);
}

function facts(rows) {
  return h('dl', {}, rows.filter(Boolean).flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

function orderLink(order) {
  const restaurant = state.restaurants.get(order.restaurantId);
  return h(
    'li',
    { dataset: { orderId: order.id } },
    h(
      'button',
      { type: 'button', class: 'link', onclick: () => select({ kind: 'order', id: order.id }) },
      `#${order.id} ${restaurant?.name ?? `restaurant #${order.restaurantId}`}`,
    ),
    statusBadge(order.status),
  );
}

function renderDriver(id) {
  const d = state.drivers.get(id);
  if (!d) {
    showDetails(`Driver #${id}`, h('p', { class: 'muted' }, 'Not online any more.'));
    return;
  }
  const offered = state.ops?.waiting.find((w) => w.offeredTo === id);
  const carrying = state.orders.filter((o) => o.driverId === id && !TERMINAL.has(o.status));
  showDetails(
    `Driver #${id}`,
    facts([
      ['State', d.state],
      ['Active orders', String(d.activeOrders)],
      ['Position', `${d.to.lat.toFixed(5)}, ${d.to.lon.toFixed(5)}`],
      offered && ['Offered', `order #${offered.orderId}`],
    ]),
    carrying.length ? h('ul', { class: 'list' }, carrying.map(orderLink)) : null,
  );
}

function renderRestaurant(id) {
  const r = state.restaurants.get(id);
  const open = state.orders.filter((o) => o.restaurantId === id && !TERMINAL.has(o.status));
  showDetails(
    r.name,
    facts([
      ['Address', r.address],
      ['Cuisine', r.cuisineType],
      ['Open', r.isOpen ? 'yes' : 'no'],
      ['Prep time', `${r.prepTimeMinutes} min`],
      ['Active orders', String(open.length)],
    ]),
    open.length ? h('ul', { class: 'list' }, open.map(orderLink)) : null,
  );
}

async function loadOrder(id) {
  showDetails(`Order #${id}`, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const [detail, { events }] = await Promise.all([
      state.client.get(`/api/orders/${id}`),
      state.client.get(`/api/orders/${id}/events`),
    ]);
    if (state.selected?.kind !== 'order' || state.selected.id !== id) return;
    state.selectedOrder = detail.order;
    // The list may be a few seconds older than this answer: bring it level.
    const listed = state.orders.findIndex((o) => o.id === id);
    if (listed >= 0 && state.orders[listed].version < detail.order.version) {
      state.orders[listed] = detail.order;
      renderOrders();
    }
    renderOrder(detail, events);
    state.map.draw();
  } catch (error) {
    showDetails(`Order #${id}`, h('p', { class: 'error' }, error.message));
  }
}

function renderOrder({ order, items, driver, eta }, events) {
  const restaurant = state.restaurants.get(order.restaurantId);
  const address = order.deliveryAddress;
  showDetails(
    `Order #${order.id}`,
    h('p', {}, statusBadge(order.status)),
    facts([
      ['Restaurant', restaurant?.name ?? `#${order.restaurantId}`],
      ['Customer', `#${order.customerId}`],
      [
        'Driver',
        driver
          ? h('button', { type: 'button', class: 'link', onclick: () => select({ kind: 'driver', id: driver.id }) }, `#${driver.id} ${driver.name}`)
          : 'not assigned',
      ],
      ['Total', money(order.totalCents)],
      ['Deliver to', `${address.street}, ${address.city}`],
      eta && ['ETA', `${clock(eta.estimatedDeliveryAt)} (in ${duration(eta.secondsRemaining)})`],
      ['Items', items.map((i) => `${i.quantity} × ${i.name}`).join(', ')],
    ]),
    h('h3', { class: 'history-title' }, 'History'),
    h('ol', { class: 'history', 'data-testid': 'history' }, events.map(eventLine)),
  );
}

function eventLine(event) {
  // An assignment's actor is the driver who accepted: saying so twice adds nothing.
  const byDriverItself = event.type === 'DRIVER_ASSIGNED' && event.actorId === event.data?.driverId;
  const who = event.actorRole && !byDriverItself ? ` by ${event.actorRole}${event.actorId ? ` #${event.actorId}` : ''}` : '';
  const what = {
    ORDER_PLACED: 'Placed',
    STATUS_CHANGED: `${STATUS_LABEL[event.toStatus] ?? event.toStatus}${event.data?.reason ? ` (${event.data.reason})` : ''}`,
    DRIVER_ASSIGNED: `Driver #${event.data?.driverId} assigned`,
    DRIVER_UNASSIGNED: `Driver #${event.data?.driverId} unassigned`,
  }[event.type] ?? event.type;
  const at = new Date(event.at).toLocaleTimeString();
  return h('li', { dataset: { type: event.type } }, h('time', { datetime: event.at }, at), `${what}${who}`);
}

// ---- Panels -----------------------------------------------------------------

function setFigure(id, text) {
  document.getElementById(id).textContent = text;
  window.__console.figures[id] = text;
}

function renderFigures() {
  const ops = state.ops;
  const online = ops.drivers.filter((d) => d.state !== 'stale').length;
  setFigure('drivers-online', String(online));
  setFigure('positions-per-sec', ops.positionsPerSec.toFixed(1));
  setFigure('offers-in-flight', String(ops.offersInFlight));
  setFigure('waiting-count', String(ops.waiting.length));
}

function renderWaiting() {
  const waiting = [...state.ops.waiting].sort((a, b) => b.waitingSecs - a.waitingSecs);
  document.getElementById('waiting-empty').hidden = waiting.length > 0;
  document.getElementById('waiting').replaceChildren(
    ...waiting.map((w) =>
      h(
        'li',
        { dataset: { orderId: w.orderId } },
        h(
          'button',
          { type: 'button', class: 'link', onclick: () => select({ kind: 'order', id: w.orderId }) },
          `#${w.orderId} ${state.restaurants.get(w.restaurantId)?.name ?? `restaurant #${w.restaurantId}`}`,
        ),
        h(
          'span',
          { class: 'muted num' },
          `${duration(w.waitingSecs)} · ${w.radiusKm} km${w.offeredTo ? ` · offered to #${w.offeredTo}` : ''}`,
        ),
      ),
    ),
  );
}

// Self-registered drivers get no orders until an admin approves them here.
async function refreshPendingDrivers() {
  let drivers;
  try {
    ({ drivers } = await state.client.get('/api/drivers/pending'));
  } catch (error) {
    console.warn('Pending drivers unavailable', error);
    return;
  }
  document.getElementById('pending-empty').hidden = drivers.length > 0;
  document.getElementById('pending-drivers').replaceChildren(
    ...drivers.map((d) =>
      h(
        'li',
        { dataset: { driverId: d.id } },
        h('span', {}, `#${d.id} ${d.name} (${d.vehicleType})`),
        h(
          'button',
          {
            type: 'button',
            'data-testid': `approve-${d.id}`,
            onclick: async (event) => {
              event.target.disabled = true;
              try {
                await state.client.post(`/api/drivers/${d.id}/approve`);
              } catch (error) {
                console.warn('Approval failed', error);
              }
              refreshPendingDrivers();
            },
          },
          'Approve',
        ),
      ),
    ),
  );
}

/** Which node holds which region (README "Cluster mode"), as this node sees it. */
async function refreshCluster() {
  /** @type {import('./types/dispatchd').ClusterView} */
  let view;
  try {
    view = await state.client.get('/api/admin/cluster');
  } catch (error) {
    console.warn('Cluster view unavailable', error);
    return;
  }
  const note = document.getElementById('cluster-note');
  const list = document.getElementById('regions');
  if (!view.enabled) {
    note.textContent = 'one node (cluster mode off)';
    list.replaceChildren();
    return;
  }
  const regions = view.regions ?? [];
  const nodes = view.nodes ?? [];
  const held = regions.filter((r) => r.node).length;
  note.textContent = `${held} of ${regions.length} held · ${nodes.length} node${nodes.length === 1 ? '' : 's'} · this is ${view.nodeId}`;
  list.replaceChildren(
    ...regions.map((r) =>
      h(
        'li',
        { dataset: { region: r.region, node: r.node ?? '' } },
        h('span', {}, r.region),
        h(
          'span',
          { class: r.node ? 'muted' : 'error' },
          !r.node ? 'free' : r.node === view.nodeId ? `${r.node} (this node, epoch ${r.epoch ?? '?'})` : r.node,
        ),
      ),
    ),
  );
}

async function refreshOrders() {
  try {
    const { orders } = await state.client.get('/api/orders?limit=100');
    state.orders = orders;
  } catch (error) {
    console.warn('Orders unavailable', error);
    return;
  }
  renderOrders();
}

function renderOrders() {
  const counts = {};
  for (const o of state.orders) counts[o.status] = (counts[o.status] ?? 0) + 1;
  document.getElementById('orders-note').textContent = state.orders.length === 100 ? '(newest 100)' : '';
  document.getElementById('status-counts').replaceChildren(
    ...Object.keys(STATUS_LABEL).map((status) =>
      h('span', { class: 'chip', 'data-testid': `count-${status}` }, `${STATUS_LABEL[status]} ${counts[status] ?? 0}`),
    ),
  );
  const active = state.orders.filter((o) => !TERMINAL.has(o.status));
  document.getElementById('orders-empty').hidden = active.length > 0;
  document.getElementById('orders').replaceChildren(
    ...active.map((o) => {
      const line = orderLink(o);
      line.append(h('span', { class: 'muted num' }, age(o.placedAt)));
      return line;
    }),
  );
  if (state.selected?.kind === 'restaurant') renderRestaurant(state.selected.id);
}

// ---- Latencies from /metrics ------------------------------------------------

async function refreshMetrics() {
  let text;
  try {
    const response = await fetch('/metrics', { headers: { Authorization: `Bearer ${state.client.token}` } });
    if (!response.ok) return;
    text = await response.text();
  } catch {
    return;
  }
  setFigure('fanout-p99', formatSeconds(quantile(0.99, buckets(text, 'dispatch_fanout_latency_seconds'))));
  setFigure('assign-p99', formatSeconds(quantile(0.99, buckets(text, 'dispatch_assign_seconds'))));
}

/** A histogram's cumulative buckets `[[le, count]]`, summed over label sets, by `le`. */
export function buckets(text, name) {
  const byBound = new Map();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}_bucket{`)) continue;
    const le = /le="([^"]+)"/.exec(line)?.[1];
    const count = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (le === undefined || !Number.isFinite(count)) continue;
    const bound = le === '+Inf' ? Infinity : Number(le);
    byBound.set(bound, (byBound.get(bound) ?? 0) + count);
  }
  return [...byBound].sort((a, b) => a[0] - b[0]);
}

/**
 * The q-quantile of cumulative buckets, interpolated linearly inside its
 * bucket as Prometheus's histogram_quantile does. Null without samples; the
 * highest finite bound (as a lower limit) when it falls in the +Inf bucket.
 */
export function quantile(q, cumulative) {
  const total = cumulative.at(-1)?.[1] ?? 0;
  if (total === 0) return null;
  const rank = q * total;
  let [lowerBound, lowerCount] = [0, 0];
  for (const [bound, count] of cumulative) {
    if (count >= rank) {
      if (bound === Infinity) return { value: lowerBound, above: true };
      const inBucket = count - lowerCount;
      const fraction = inBucket > 0 ? (rank - lowerCount) / inBucket : 1;
      return { value: lowerBound + (bound - lowerBound) * fraction, above: false };
    }
    [lowerBound, lowerCount] = [bound, count];
  }
  return null;
}

function formatSeconds(result) {
  if (!result) return '–';
  const { value, above } = result;
  const text = value < 0.01 ? `${(value * 1000).toFixed(1)} ms` : value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(1)} s`;
  return above ? `> ${text}` : text;
}
