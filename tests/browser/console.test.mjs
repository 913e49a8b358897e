// The operator console, as an operator sees it: sign in, watch drivers move
// on the map, read the live figures, click a driver and an order.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  freshPostgres,
  launchBrowser,
  natsUp,
  newPage,
  screenshot,
  signInThroughForm,
  simAvailable,
  startFleet,
  startServer,
  startSim,
  waitFor,
} from './harness.mjs';
import { randomBytes } from 'node:crypto';

const drivers = (page) => page.evaluate(() => JSON.parse(document.getElementById('map').dataset.drivers ?? '[]'));
const figure = (page, id) => page.textContent(`[data-testid="${id}"]`);

test('the operator console shows drivers moving on the map with live figures', { timeout: 120_000 }, async () => {
  const server = await startServer();
  let traffic;
  let browser;
  try {
    // The simulator when this build has it; otherwise drivers driven from here.
    traffic = simAvailable() ? startSim(server.url) : await startFleet(server.url);
    browser = await launchBrowser();
    const page = await newPage(browser);
    await page.goto(`${server.url}/`);
    await signInThroughForm(page, 'admin@demo.local');
    await waitFor(async () => (await figure(page, 'connection')) === 'live', { what: 'the socket' });

    // Drivers appear as dots, and the figures count them.
    const first = await waitFor(async () => {
      const now = await drivers(page);
      return now.length >= 3 && now;
    }, { timeout: 30_000, what: 'drivers on the map' });
    await waitFor(async () => Number(await figure(page, 'drivers-online')) > 0, { what: 'drivers online' });
    await waitFor(async () => Number(await figure(page, 'positions-per-sec')) > 0, { what: 'location updates per second' });

    // A few seconds later the same drivers are somewhere else.
    const moved = await waitFor(async () => {
      const later = await drivers(page);
      const changed = later.filter((d) => {
        const before = first.find((f) => f.id === d.id);
        return before && (before.lat !== d.lat || before.lon !== d.lon);
      });
      return changed.length > 0 && changed;
    }, { timeout: 15_000, what: 'a driver to move' });
    assert.ok(moved.length >= 1);

    // Orders by status come from the API; the p99 figures from /metrics.
    await waitFor(async () => (await page.locator('#orders li').count()) > 0, { timeout: 20_000, what: 'an active order' });
    // Drivers take orders (a dot turns busy), and their positions reach the
    // customers watching, which gives the fan-out latency a p99.
    await waitFor(async () => (await drivers(page)).some((d) => d.state === 'busy'), {
      timeout: 30_000,
      what: 'a busy driver',
    });
    await waitFor(async () => /\d ms|\d s/.test(await figure(page, 'fanout-p99')), {
      timeout: 20_000,
      what: 'p99 fan-out latency',
    });

    // Clicking a dot shows that driver.
    const target = moved[0].id;
    const box = await page.locator('#map').boundingBox();
    const at = await page.evaluate((id) => window.__console.locate(id), target);
    await page.mouse.click(box.x + at.x, box.y + at.y);
    await waitFor(async () => (await page.textContent('#details-title')) === `Driver #${target}`, {
      what: 'the driver details',
    });

    // Clicking an order shows its history.
    await page.locator('#orders li button').first().click();
    await waitFor(async () => (await page.locator('[data-testid="history"] li').count()) >= 1, {
      what: 'the order history',
    });
    assert.match(await page.textContent('[data-testid="history"]'), /Placed/);

    await screenshot(page, 'console');
    assert.deepEqual(page.errors, []);
  } finally {
    await browser?.close();
    await traffic?.stop();
    await server.stop();
  }
});

// README "Cluster mode": the console lists every region with the node that
// holds it; when a node dies, its regions move to the survivor.
test('the console shows which node holds each region, and the survivor taking over a dead node\'s', { timeout: 120_000 }, async (t) => {
  const db = freshPostgres();
  if (!db) {
    t.skip('cluster mode needs Postgres (set DISPATCHD_TEST_POSTGRES, as .ci/run does)');
    return;
  }
  if (!(await natsUp())) {
    db.drop();
    if (process.env.DISPATCHD_TEST_NATS === 'required') throw new Error('DISPATCHD_TEST_NATS=required, but NATS is not on 127.0.0.1:4222');
    t.skip('no NATS on 127.0.0.1:4222; .ci/run starts one');
    return;
  }
  const env = {
    DISPATCH__AUTH__JWT_SECRET: randomBytes(32).toString('hex'),
    DISPATCH__CLUSTER__NATS_URL: 'nats://127.0.0.1:4222',
    DISPATCH__CLUSTER__BUCKET: `dispatchd_test_browser_${randomBytes(6).toString('hex')}`,
    DISPATCH__CLUSTER__LEASE_TTL_MS: '3000',
    DISPATCH__CLUSTER__RENEW_MS: '500',
    DISPATCH__CLUSTER__FENCE_MARGIN_MS: '1000',
    DISPATCH__CLUSTER__REBALANCE_MS: '300',
    DISPATCH__CLUSTER__REGION_DEG: '0.02',
  };
  let first;
  let second;
  let browser;
  try {
    first = await startServer({ databaseUrl: db.url, env });
    second = await startServer({ databaseUrl: db.url, env, demo: false });
    browser = await launchBrowser();
    const page = await newPage(browser);
    await page.goto(`${first.url}/`);
    await signInThroughForm(page, 'admin@demo.local');
    const holders = () =>
      page.$$eval('[data-testid="regions"] li', (items) => items.map((li) => li.dataset.node ?? ''));

    // Every region held, by two different nodes between them.
    const both = await waitFor(async () => {
      const now = await holders();
      const nodes = new Set(now);
      return now.length > 1 && !nodes.has('') && nodes.size === 2 && now;
    }, { timeout: 40_000, what: 'every region held by the two nodes' });
    assert.match(await page.textContent('[data-testid="cluster-note"]'), new RegExp(`^${both.length} of ${both.length} held · 2 nodes`));
    await screenshot(page, 'console-regions');

    // The second node dies without handing over: once its leases lapse the
    // first holds every region, and the console says so.
    await second.kill();
    const mine = await page.textContent('[data-testid="cluster-note"]').then((note) => /this is (\S+)/.exec(note)?.[1]);
    await waitFor(async () => {
      const now = await holders();
      return now.length === both.length && now.every((node) => node === mine);
    }, { timeout: 30_000, what: "the survivor holding the dead node's regions" });
    assert.match(await page.textContent('[data-testid="cluster-note"]'), / · 1 node · /);
    assert.deepEqual(page.errors, []);
  } finally {
    await browser?.close();
    await second?.stop();
    await first?.stop();
    db.drop();
  }
});
