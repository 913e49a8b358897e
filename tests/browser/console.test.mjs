// The operator console, as an operator sees it: sign in, watch drivers move
// on the map, read the live figures, click a driver and an order.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  launchBrowser,
  newPage,
  screenshot,
  signInThroughForm,
  simAvailable,
  startFleet,
  startServer,
  startSim,
  waitFor,
} from './harness.mjs';

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
