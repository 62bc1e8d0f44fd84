// End-to-end tests of the dashboard served at GET /: a real tcphub, real TCP clients, and
// the page in headless Chromium. Every wait is for something to happen (a frame, an element).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TcpClient, enterToken, launchBrowser, newPage, openDashboard, rowFor, withHub } from './support.mjs';

const TOKEN = 'e2e-secret-token';
/** Page time after an event by which the table must have been re-read (app.js waits 100 ms). */
const EVENT_DEBOUNCE_MS = 150;

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });


test('asks for the token once, keeps it for the tab, and never puts it in a URL', () =>
  withHub({ token: TOKEN }, async (hub) => {
    const page = await newPage(browser);
    const requests = [];
    page.on('request', (request) => requests.push(request));
    await page.goto(hub.url);

    await page.locator('#token-panel').waitFor();
    assert.equal(await page.locator('#workspace').isHidden(), true);
    assert.equal(await page.locator('#token-error').isHidden(), true, 'no error before any token was tried');

    await enterToken(page, 'not-the-token');
    const error = page.locator('#token-error');
    await error.waitFor();
    assert.equal(await error.textContent(), 'The hub did not accept that token.');

    await enterToken(page, TOKEN);
    await page.locator('#workspace').waitFor();
    assert.equal(await page.locator('#token-panel').isHidden(), true);

    await page.reload();
    await page.locator('#workspace').waitFor();
    assert.equal(await page.locator('#token-panel').isHidden(), true, 'the token is kept for the tab');

    const apiRequests = requests.filter((request) => request.url().includes('/clients'));
    assert.ok(apiRequests.length > 0);
    for (const request of requests) {
      assert.ok(!request.url().includes(TOKEN), `token in URL ${request.url()}`);
    }
    const authorized = apiRequests.filter((r) => r.headers().authorization === `Bearer ${TOKEN}`);
    assert.ok(authorized.length > 0, 'API calls carry the token as a bearer header');
    await page.context().close();
  }));

test('a client appears without a reload, receives send and broadcast, and leaves when kicked', () =>
  withHub({ token: TOKEN }, async (hub, clients) => {
    const page = await openDashboard(browser, hub);
    const device = await TcpClient.synced(hub, 'Client-1');
    clients.push(device);

    const row = rowFor(page, 'Client-1');
    await row.waitFor();
    assert.equal(await row.locator('.id').textContent(), device.sessionId);
    assert.equal(await row.locator('.peer').textContent(), device.peer);

    await row.locator('button[data-action=send]').click();
    const sendForm = page.locator('#clients-body tr.send-row form');
    const sendResult = sendForm.locator('output');
    await sendForm.locator('textarea').fill('{"led":"on"}');
    await sendForm.locator('button[type=submit]').click();
    const direct = await device.next();
    await page.locator('#clients-body tr.send-row output[data-message-id]').waitFor();
    const directId = await sendResult.getAttribute('data-message-id');
    assert.deepEqual(direct, { type: 'message', id: directId, scope: 'direct', message: { led: 'on' } });
    assert.equal(await sendResult.textContent(), `Queued for Client-1 · id ${directId}`);

    await sendForm.locator('textarea').fill('hello, device');
    await sendForm.locator('button[type=submit]').click();
    const text = await device.next();
    assert.equal(text.type, 'message');
    assert.equal(text.message, 'hello, device', 'text that is not JSON is sent as a string');
    assert.notEqual(text.id, directId);

    await page.locator('#broadcast-input').fill('maintenance at 22:00');
    await page.locator('#broadcast-form button[type=submit]').click();
    const broadcast = await device.next();
    const broadcastResult = page.locator(`#broadcast-result[data-message-id="${broadcast.id}"]`);
    await broadcastResult.waitFor();
    assert.deepEqual(broadcast,
      { type: 'message', id: broadcast.id, scope: 'broadcast', message: 'maintenance at 22:00' });
    assert.equal(await broadcastResult.textContent(),
      `1 recipient: 1 queued, 0 dropped · id ${broadcast.id}`);

    const kick = row.locator('button[data-action=kick]');
    await kick.click();
    assert.equal(await kick.textContent(), 'Confirm', 'the first click only arms the button');
    await kick.click();
    assert.deepEqual(await device.next(), { type: 'bye', reason: 'kicked' });
    await device.closed();
    await row.waitFor({ state: 'detached' });
    assert.equal(await page.locator('#action-result').textContent(), 'Disconnected Client-1.');
    await page.context().close();
  }));

test('shows the problem detail when the hub refuses a message', () =>
  withHub({ extraArgs: ['--max-message-bytes', '64'] }, async (hub, clients) => {
    const page = await openDashboard(browser, hub);
    clients.push(await TcpClient.synced(hub, 'Client-1'));
    const tooLong = 'x'.repeat(100);
    const refusal = await hub.fetch('/broadcast', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ message: tooLong }),
    });
    assert.equal(refusal.status, 413);
    const { detail } = await refusal.json();

    await page.locator('#broadcast-input').fill(tooLong);
    await page.locator('#broadcast-form button[type=submit]').click();
    const result = page.locator('#broadcast-result.error');
    await result.waitFor();
    assert.equal(await result.textContent(), detail);
    await page.context().close();
  }));

test('pages through clients, filters them by name prefix, and counts them and the nodes in the header', () =>
  withHub({ extraArgs: ['--node-name', 'e2e-hub'] }, async (hub, clients) => {
    const names = Array.from({ length: 52 }, (_, index) => `node-${String(index).padStart(2, '0')}`);
    // Sequential, so that the hub lists them (oldest first) in this order.
    for (const name of names) clients.push(await TcpClient.synced(hub, name));
    clients.push(await TcpClient.connect(hub));
    const page = await openDashboard(browser, hub);

    const summary = page.locator('#page-summary');
    const waitForText = (selector, text) => page.waitForFunction(
      ([s, t]) => document.querySelector(s)?.textContent === t, [selector, text]);
    await waitForText('#page-summary', '1–50 of 53');
    assert.equal(await page.locator('#clients-body tr.client-row').count(), 50);
    assert.equal(await page.locator('#clients-body tr.client-row').first().getAttribute('data-name'), 'node-00');
    await waitForText('#figure-connected', '53');
    await waitForText('#figure-named', '52');
    await waitForText('#figure-nodes', '1');
    assert.equal(await page.locator('#clients-body tr.client-row .node').first().textContent(), 'e2e-hub');

    await page.locator('#page-next').click();
    await waitForText('#page-summary', '51–53 of 53');
    assert.deepEqual(
      await page.locator('#clients-body tr.client-row').evaluateAll((rows) => rows.map((r) => r.dataset.name ?? null)),
      ['node-50', 'node-51', null]);
    const unnamed = page.locator('#clients-body tr.client-row:not([data-name])');
    assert.equal(await unnamed.locator('.name').textContent(), 'unnamed');
    assert.equal(await unnamed.locator('button[data-action=send]').isDisabled(), true);
    assert.equal(await unnamed.locator('button[data-action=kick]').isDisabled(), true);

    await page.locator('#filter-prefix').fill('node-4');
    await waitForText('#page-summary', '1–10 of 10');
    assert.deepEqual(
      await page.locator('#clients-body tr.client-row').evaluateAll((rows) => rows.map((r) => r.dataset.name)),
      names.slice(40, 50));
    assert.equal(await summary.textContent(), '1–10 of 10');
    await page.context().close();
  }));

test('shows each client\'s groups, lists one group\'s members, and sends to a group', () =>
  withHub({}, async (hub, clients) => {
    const kiosk = await TcpClient.synced(hub, 'kiosk-1');
    const meter = await TcpClient.synced(hub, 'meter-1');
    clients.push(kiosk, meter);
    kiosk.send({ type: 'join', groups: ['kiosks', 'floor-2'] });
    assert.deepEqual(await kiosk.next(), { type: 'groups', groups: ['floor-2', 'kiosks'] });
    const page = await openDashboard(browser, hub);

    const kioskRow = rowFor(page, 'kiosk-1');
    await kioskRow.waitFor();
    assert.equal(await kioskRow.locator('.groups').textContent(), 'floor-2, kiosks');
    assert.equal(await rowFor(page, 'meter-1').locator('.groups').textContent(), '');
    // A change arrives as a client.groups event, which refreshes the row.
    meter.send({ type: 'join', groups: ['meters'] });
    assert.deepEqual(await meter.next(), { type: 'groups', groups: ['meters'] });
    await page.waitForFunction(() =>
      document.querySelector('#clients-body tr[data-name="meter-1"] .groups')?.textContent === 'meters');

    await page.locator('#filter-group').fill('kiosks');
    await page.waitForFunction(() => document.querySelector('#page-summary')?.textContent === '1–1 of 1');
    assert.deepEqual(
      await page.locator('#clients-body tr.client-row').evaluateAll((rows) => rows.map((r) => r.dataset.name)),
      ['kiosk-1']);
    assert.equal(await page.locator('#filter-prefix').isDisabled(), true);

    await page.locator('#group-send-name').fill('kiosks');
    await page.locator('#group-send-input').fill('{"screen":"off"}');
    await page.locator('#group-send-form button[type=submit]').click();
    const pushed = await kiosk.next();
    assert.deepEqual(pushed,
      { type: 'message', id: pushed.id, scope: 'group', group: 'kiosks', message: { screen: 'off' } });
    const result = page.locator(`#group-send-result[data-message-id="${pushed.id}"]`);
    await result.waitFor();
    assert.equal(await result.textContent(), `1 member: 1 queued, 0 dropped · id ${pushed.id}`);
    await page.context().close();
  }));

/** Connects Client-1, waits for its row, then disconnects it and waits for the row to go. */
async function showsComingAndGoing(page, hub) {
  const device = await TcpClient.synced(hub, 'Client-1');
  await rowFor(page, 'Client-1').waitFor();
  device.close();
  await rowFor(page, 'Client-1').waitFor({ state: 'detached' });
}

test('follows GET /events: each connect and disconnect alone refreshes the table', () =>
  withHub({ token: TOKEN }, async (hub) => {
    const page = await newPage(browser);
    // With the page's clock paused, no periodic refresh can run: only what an event
    // schedules, once the test lets a little page time pass.
    await page.clock.install();
    await page.clock.pauseAt(Date.now() + 60_000);
    await page.goto(hub.url);
    await enterToken(page, hub.token);
    const state = page.locator('#connection-state.state-live');
    await state.waitFor();
    assert.equal(await state.textContent(), 'Live');
    await page.clock.runFor(10);
    await page.locator('#workspace').waitFor();

    const lastEvent = (type) => page.locator(`#connection-state[data-last-event="${type}"]`);
    const device = await TcpClient.synced(hub, 'Client-1');
    await lastEvent('client.named').waitFor({ state: 'attached' });
    await page.clock.runFor(EVENT_DEBOUNCE_MS);
    await rowFor(page, 'Client-1').waitFor();

    device.close();
    await lastEvent('client.disconnected').waitFor({ state: 'attached' });
    await page.clock.runFor(EVENT_DEBOUNCE_MS);
    await rowFor(page, 'Client-1').waitFor({ state: 'detached' });
    await page.context().close();
  }));

test('polls GET /clients while the hub has no event stream, and says so', () =>
  withHub({ token: TOKEN }, async (hub) => {
    const page = await newPage(browser);
    await page.route('**/events?*', (route) => route.fulfill({
      status: 404,
      contentType: 'application/problem+json',
      body: JSON.stringify({ type: 'about:blank', title: 'Not Found', status: 404, detail: 'no such route', code: 'not_found' }),
    }));
    await page.goto(hub.url);
    await enterToken(page, hub.token);
    const state = page.locator('#connection-state.state-polling');
    await state.waitFor();
    assert.equal(await state.textContent(), 'Polling');
    await showsComingAndGoing(page, hub);
    await page.context().close();
  }));
