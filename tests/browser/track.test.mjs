// The customer's tracking page, as a customer sees it: each step appears in
// the timeline as the restaurant works, and once a driver has the order its
// marker comes closer to the delivery address.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ADDRESS,
  UserSocket,
  RESTAURANT_1,
  act,
  launchBrowser,
  login,
  newPage,
  offset,
  placeOrder,
  screenshot,
  signInThroughForm,
  startServer,
  waitFor,
  waitUntilIndexed,
} from './harness.mjs';

/** The timeline entry of `step`, once it is done or current (it shows a time). */
async function stepReached(page, step) {
  const item = page.locator(`[data-testid="timeline"] li[data-step="${step}"]`);
  await waitFor(
    async () => ['done', 'current'].includes(await item.getAttribute('data-state')) && (await item.locator('time').textContent()) !== '',
    { what: `timeline step ${step}` },
  );
}

const distance = async (page) => Number(await page.getAttribute('[data-testid="driver-distance"]', 'data-distance-m'));

test('the tracking page shows each step and the driver approaching the address', { timeout: 120_000 }, async () => {
  const server = await startServer();
  let browser;
  let driver;
  try {
    // A driver just east of restaurant 1, ready for offers.
    driver = await UserSocket.connect(server.url, 'driver1');
    driver.moveTo(offset(RESTAURANT_1, 0.4));
    await waitUntilIndexed(server.url, await login(server.url, 'admin'), driver);

    const customer = await login(server.url, 'customer1');
    const staff = await login(server.url, 'restaurant1');
    const order = await placeOrder(server.url, customer);

    browser = await launchBrowser();
    const page = await newPage(browser);
    await page.goto(`${server.url}/track/${order.id}`);
    await signInThroughForm(page, 'customer1@demo.local');
    await waitFor(async () => (await page.textContent('[data-testid="connection"]')) === 'live', { what: 'the socket' });
    assert.equal(await page.textContent('[data-testid="order-title"]'), `Order #${order.id}`);
    await stepReached(page, 'PLACED');
    assert.equal(await page.getAttribute('[data-testid="timeline"] li[data-step="CONFIRMED"]', 'data-state'), 'pending');
    assert.match(await page.textContent('[data-testid="eta"]'), /^\d+ min$/);

    await act(server.url, staff, order.id, 'confirm');
    await stepReached(page, 'CONFIRMED');

    // The engine offers the order to our driver, who takes it.
    const offer = await driver.next('offer', 15_000);
    assert.equal(offer.orderId, order.id);
    driver.send({ type: 'offer_response', offerId: offer.offerId, accept: true });
    assert.equal((await driver.next('offer_result')).result, 'assigned');
    await page.locator('[data-testid="driver"]').waitFor({ state: 'visible' });
    await waitFor(async () => /is your driver/.test(await page.textContent('[data-testid="driver-name"]')), {
      what: 'the driver name',
    });

    await act(server.url, staff, order.id, 'start_preparing');
    await stepReached(page, 'PREPARING');
    await act(server.url, staff, order.id, 'mark_ready');
    await stepReached(page, 'READY_FOR_PICKUP');

    driver.moveTo(RESTAURANT_1);
    await act(server.url, driver.token, order.id, 'pick_up');
    await stepReached(page, 'PICKED_UP');

    // Drive toward the address; the page's distance shrinks with each fix.
    const seen = [];
    const steps = 8;
    for (let i = 1; i <= steps; i++) {
      const t = i / (steps + 1);
      driver.moveTo({
        lat: RESTAURANT_1.lat + (ADDRESS.lat - RESTAURANT_1.lat) * t,
        lon: RESTAURANT_1.lon + (ADDRESS.lon - RESTAURANT_1.lon) * t,
      });
      const previous = seen.at(-1) ?? Infinity;
      seen.push(await waitFor(async () => {
        const metres = await distance(page);
        return metres > 0 && metres < previous && metres;
      }, { what: `the distance to shrink below ${previous} m` }));
      if (i === steps / 2) await screenshot(page, 'track');
      await sleep(300);
    }
    assert.ok(seen.at(-1) < seen[0] / 2, `distances ${seen}`);
    assert.match(await page.textContent('[data-testid="eta"]'), /^\d+ min$/);

    await act(server.url, driver.token, order.id, 'deliver');
    await stepReached(page, 'DELIVERED');
    assert.match(await page.textContent('[data-testid="status"]'), /Delivered/);
    await screenshot(page, 'track-delivered');
    assert.deepEqual(page.errors, []);
  } finally {
    driver?.close();
    await browser?.close();
    await server.stop();
  }
});
