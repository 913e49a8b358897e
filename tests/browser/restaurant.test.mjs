// The restaurant tablet, as kitchen staff see it: a new order appears by
// itself, and its buttons move it from Placed to Ready for pickup.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { act, api, launchBrowser, login, newPage, placeOrder, screenshot, signInThroughForm, startServer, waitFor } from './harness.mjs';

test('a new order appears on the kitchen tablet and its buttons move it to ready', { timeout: 90_000 }, async () => {
  const server = await startServer();
  let browser;
  try {
    browser = await launchBrowser();
    const page = await newPage(browser);
    await page.goto(`${server.url}/restaurant`);
    await signInThroughForm(page, 'restaurant1@demo.local');
    await waitFor(async () => (await page.textContent('[data-testid="restaurant-name"]')) === 'Congress Avenue Tacos', {
      what: 'the restaurant name',
    });
    await waitFor(async () => (await page.textContent('[data-testid="connection"]')) === 'live', { what: 'the socket' });

    // The customer orders through the API; the card appears without a reload.
    const customer = await login(server.url, 'customer1');
    const order = await placeOrder(server.url, customer, [
      { menuItemId: 1, quantity: 2 },
      { menuItemId: 8, quantity: 1, specialInstructions: 'No ice' },
    ]);
    const card = page.locator(`[data-testid="order-card"][data-order-id="${order.id}"]`);
    await card.waitFor();
    const status = card.locator('[data-testid="order-status"]');
    assert.equal(await status.textContent(), 'Placed');
    assert.equal(await card.evaluate((c) => c.parentElement.dataset.column), 'new');
    await waitFor(async () => /Horchata/.test(await card.textContent()), { what: 'the items' });

    const press = async (label, expected, column) => {
      await card.getByRole('button', { name: label, exact: true }).click();
      await waitFor(async () => (await status.textContent()) === expected, { what: `status ${expected}` });
      assert.equal(await card.evaluate((c) => c.parentElement.dataset.column), column);
    };
    assert.ok(await card.getByRole('button', { name: 'Ready', exact: true }).isDisabled());
    await press('Confirm', 'Confirmed', 'kitchen');
    await press('Start preparing', 'Preparing', 'kitchen');
    await press('Ready', 'Ready for pickup', 'ready');
    const { order: stored } = await api(server.url, `/api/orders/${order.id}`, { token: customer });
    assert.equal(stored.status, 'READY_FOR_PICKUP');
    assert.equal(stored.version, 4);

    // A change made elsewhere (another tablet, the API) reaches the card too.
    const second = await placeOrder(server.url, customer, [{ menuItemId: 3, quantity: 1 }]);
    const secondCard = page.locator(`[data-testid="order-card"][data-order-id="${second.id}"]`);
    await secondCard.waitFor();
    const staff = await login(server.url, 'restaurant1');
    await act(server.url, staff, second.id, 'confirm');
    await waitFor(async () => (await secondCard.locator('[data-testid="order-status"]').textContent()) === 'Confirmed', {
      what: 'the pushed confirmation',
    });
    await placeOrder(server.url, customer, [{ menuItemId: 2, quantity: 3 }]);
    await waitFor(async () => (await page.textContent('[data-testid="count-new"]')) === '1', { what: 'the third card' });

    // New cards flash once, then settle.
    await waitFor(async () => (await page.locator('[data-fresh]').count()) === 0, {
      timeout: 8_000,
      what: 'the new-order highlight to fade',
    });
    await screenshot(page, 'restaurant');
    assert.deepEqual(page.errors, []);
  } finally {
    await browser?.close();
    await server.stop();
  }
});
