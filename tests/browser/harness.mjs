// Shared by the browser tests: the real dispatchd server on a free port with
// a fresh SQLite file, the simulator (or a small fleet of drivers driven
// from here when `dispatchd sim` is not there), API helpers, and Chromium.
//
// Every process started here is stopped by the test's `finally`, and killed
// when this Node process exits, whatever happened.

import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.DISPATCHD_BIN ?? path.resolve(here, '../../target/debug/dispatchd');
export const SCREENSHOTS = path.join(here, 'screenshots');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Demo restaurant 1 (Congress Avenue Tacos) and a customer address near the Capitol. */
export const RESTAURANT_1 = { lat: 30.2686, lon: -97.7425 };
export const ADDRESS = { street: '1100 Congress Ave', city: 'Austin', state: 'TX', zip: '78701', lat: 30.2747, lon: -97.7404 };

const children = new Set();
const killAll = () => {
  for (const child of children) child.kill('SIGKILL');
};
process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killAll();
    process.exit(1);
  });
}

function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function stopProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const result = await Promise.race([exited, sleep(5000, 'timeout')]);
  if (result === 'timeout') {
    child.kill('SIGKILL');
    await exited;
  }
}

/** Polls `probe` until it returns something truthy; that value is the result. */
export async function waitFor(probe, { timeout = 10_000, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    await sleep(interval);
  }
}

/**
 * Starts `dispatchd serve` on 127.0.0.1:0: by default `--demo` with its own
 * SQLite file; `databaseUrl` (a shared Postgres database, for cluster mode)
 * and `env` override that, and `demo: false` starts a node without the demo
 * city (a second node of a cluster).
 */
export async function startServer({ demo = true, databaseUrl, env = {} } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'dispatchd-browser-'));
  const args = ['serve', '--listen', '127.0.0.1:0', '--database-url', databaseUrl ?? `sqlite:${path.join(dir, 'dispatchd.db')}`];
  if (demo) args.push('--demo');
  const child = track(
    spawn(BIN, args, {
      // The batching window (120 s by default) would hold a page test's
      // lone order for two minutes, as in the API tests' servers.
      env: {
        ...process.env,
        DISPATCH__DISPATCH__ROUND_INTERVAL_MS: '200',
        DISPATCH__DISPATCH__BATCH_WINDOW_SECS: '0',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const log = [];
  child.stderr.on('data', (chunk) => {
    log.push(chunk.toString());
    if (log.length > 400) log.shift();
  });
  const stop = async () => {
    await stopProcess(child);
    rmSync(dir, { recursive: true, force: true });
  };
  /** SIGKILL, as a node dies: no hand-over. */
  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  };
  try {
    const url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`dispatchd did not start within 30 s:\n${log.join('')}`)), 30_000);
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`dispatchd exited with ${code}:\n${log.join('')}`)));
      readline.createInterface({ input: child.stdout }).once('line', (line) => {
        clearTimeout(timer);
        const match = /^listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(line);
        if (match) resolve(match[1]);
        else reject(new Error(`unexpected first line from dispatchd: ${line}`));
      });
    });
    return { url, stop, kill, log };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * A fresh Postgres database for one test, on the server that
 * `DISPATCHD_TEST_POSTGRES` names (an admin URL, as for the Rust suite), or
 * null when it is not set. `drop()` removes it.
 */
export function freshPostgres() {
  const admin = process.env.DISPATCHD_TEST_POSTGRES;
  if (!admin) return null;
  const name = `dispatchd_test_browser_${process.pid}_${Date.now()}`;
  const psql = (sql) => {
    const run = spawnSync('psql', [admin, '-qAtc', sql], { encoding: 'utf8', timeout: 30_000 });
    if (run.status !== 0) throw new Error(`psql ${sql}: ${run.stderr || run.error}`);
  };
  psql(`CREATE DATABASE "${name}"`);
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => psql(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`) };
}

/** Whether NATS answers on 127.0.0.1:4222 (cluster mode's bus). */
export async function natsUp() {
  const socket = net.connect(4222, '127.0.0.1');
  try {
    await Promise.race([once(socket, 'connect'), sleep(2000).then(() => Promise.reject(new Error('timeout')))]);
    return true;
  } catch {
    return false;
  } finally {
    socket.destroy();
  }
}

/** Whether this build has the `sim` subcommand (DISPATCHD_NO_SIM=1 says no). */
export function simAvailable() {
  if (process.env.DISPATCHD_NO_SIM) return false;
  return spawnSync(BIN, ['sim', '--help'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

/** Runs `dispatchd sim` against `url` (40 s of drivers, customers and orders). */
export function startSim(url) {
  const child = track(
    spawn(
      BIN,
      ['sim', '--server', url, '--drivers', '10', '--customers', '4', '--order-rate', '1', '--location-hz', '2', '--duration', '40'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    ),
  );
  const log = [];
  child.stderr.on('data', (chunk) => log.push(chunk.toString()));
  return { log, stop: () => stopProcess(child) };
}

// ---- The API -------------------------------------------------------------------

export async function api(base, pathname, { token, method = 'GET', body, headers = {} } = {}) {
  const response = await fetch(base + pathname, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body ? { 'Content-Type': 'application/json' } : {}),
      ...headers,
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${method} ${pathname}: ${response.status} ${text}`);
  return data;
}

/** Signs in a demo account (`customer1`, `driver3`, ...) and returns its token. */
export async function login(base, account) {
  const { token } = await api(base, '/api/auth/login', {
    method: 'POST',
    body: { email: `${account}@demo.local`, password: 'demo-pass' },
  });
  return token;
}

let orderKeys = 0;
/** Places an order at restaurant 1 (menu items 1..8 are its own). */
export async function placeOrder(base, token, items = [{ menuItemId: 1, quantity: 2 }]) {
  const { order } = await api(base, '/api/orders', {
    token,
    method: 'POST',
    headers: { 'Idempotency-Key': `browser-test-${process.pid}-${++orderKeys}` },
    body: { restaurantId: 1, items, deliveryAddress: ADDRESS },
  });
  return order;
}

export async function act(base, token, orderId, action) {
  const { order } = await api(base, `/api/orders/${orderId}/status`, { token, method: 'PATCH', body: { action } });
  return order;
}

/** A point `km` east (negative: west) and `kmNorth` north of `at`. */
export function offset(at, kmEast, kmNorth = 0) {
  return {
    lat: at.lat + kmNorth / 111.32,
    lon: at.lon + kmEast / (111.32 * Math.cos((at.lat * Math.PI) / 180)),
  };
}

// ---- A demo account over the WebSocket (a driver, or a customer watching) ----------

export class UserSocket {
  static async connect(base, account) {
    const token = await login(base, account);
    const me = await api(base, '/api/me', { token });
    const ws = new WebSocket(`${base.replace('http', 'ws')}/ws?token=${encodeURIComponent(token)}`);
    const driver = new UserSocket(ws, token, me.user.id);
    await once(ws, 'open');
    return driver;
  }

  constructor(ws, token, id) {
    this.ws = ws;
    this.token = token;
    this.id = id;
    this.inbox = [];
    this.waiters = [];
    ws.on('message', (data) => {
      this.inbox.push(JSON.parse(data.toString()));
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  send(message) {
    this.ws.send(JSON.stringify(message));
  }

  moveTo(at) {
    this.at = at;
    this.send({ type: 'location', lat: at.lat, lon: at.lon, speedMps: 8 });
  }

  /** The next message of `type` (earlier ones of other types are kept). */
  async next(type, timeout = 10_000) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const index = this.inbox.findIndex((m) => m.type === type);
      if (index >= 0) return this.inbox.splice(index, 1)[0];
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`driver ${this.id}: no ${type} within ${timeout} ms`);
      await Promise.race([new Promise((wake) => this.waiters.push(wake)), sleep(left)]);
    }
  }

  close() {
    this.ws.terminate();
  }
}

/** Polls the admin's `nearby` until `driver` is in the geo index. */
export async function waitUntilIndexed(base, adminToken, driver) {
  await waitFor(
    async () => {
      const { lat, lon } = driver.at;
      const { drivers } = await api(base, `/api/drivers/nearby?lat=${lat}&lon=${lon}&radiusKm=1&limit=100`, {
        token: adminToken,
      });
      return drivers.some((d) => d.id === driver.id);
    },
    { what: `driver ${driver.id} in the index` },
  );
}

/**
 * Stands in for `dispatchd sim`: `count` drivers circling the city centre at
 * 2 Hz that accept every offer after a moment, and a few orders placed and
 * confirmed, so the console has something to show.
 */
export async function startFleet(base, { count = 8, orders = 3 } = {}) {
  const center = { lat: 30.2747, lon: -97.7404 };
  const drivers = [];
  for (let i = 0; i < count; i++) {
    const driver = await UserSocket.connect(base, `driver${i + 1}`);
    driver.phase = (2 * Math.PI * i) / count;
    driver.radiusKm = 0.8 + (i % 4) * 0.7;
    drivers.push(driver);
  }
  let running = true;
  const step = () => {
    for (const d of drivers) {
      d.phase += 0.03;
      d.moveTo(offset(center, d.radiusKm * Math.cos(d.phase), d.radiusKm * Math.sin(d.phase)));
      const offer = d.inbox.findIndex((m) => m.type === 'offer');
      if (offer >= 0) {
        const { offerId } = d.inbox.splice(offer, 1)[0];
        setTimeout(() => running && d.send({ type: 'offer_response', offerId, accept: true }), 1500);
      }
    }
  };
  step();
  const timer = setInterval(step, 500);
  // The customer watches its orders, so driver positions fan out to someone.
  const customer = await UserSocket.connect(base, 'customer1');
  const staff = await login(base, 'restaurant1');
  for (let i = 0; i < orders; i++) {
    const order = await placeOrder(base, customer.token);
    customer.send({ type: 'subscribe', orderId: order.id });
    if (i > 0) await act(base, staff, order.id, 'confirm');
  }
  return {
    drivers,
    stop: async () => {
      running = false;
      clearInterval(timer);
      for (const d of drivers) d.close();
      customer.close();
    },
  };
}

// ---- The browser -------------------------------------------------------------------

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}

/** A fresh page (its own sessionStorage); uncaught page errors are collected in `page.errors`. */
export async function newPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(error.message));
  return page;
}

/** Fills and submits the page's sign-in form, and waits for the signed-in view. */
export async function signInThroughForm(page, email) {
  await page.fill('#email', email);
  await page.fill('#password', 'demo-pass');
  await page.click('#login button[type="submit"]');
  await page.waitForSelector('#app-view:not([hidden])');
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}
