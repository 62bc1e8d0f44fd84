// End-to-end tests of the dashboard's activity views: the 15-minute charts, the live event
// feed and the client detail panel, against a real tcphub and real TCP clients.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TcpClient, launchBrowser, newPage, openDashboard, rowFor, withHub } from './support.mjs';

/** How often app.js samples /metrics for the charts. */
const SAMPLE_MS = 2000;

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

const waitForText = (page, selector, text) => page.waitForFunction(
  ([s, t]) => document.querySelector(s)?.textContent === t, [selector, text]);

/** Each feed entry as [kind, client, detail], newest first. */
const feedEntries = (page) => page.locator('#feed-list li').evaluateAll((items) => items.map((item) => [
  item.querySelector('.event-kind').textContent,
  item.querySelector('.event-client').textContent,
  item.querySelector('.event-detail').textContent,
]));

/** Sends `frames` as info frames, then a ping: once the pong is back, the hub has seen them all. */
async function sendInfos(client, messages) {
  for (const message of messages) client.send({ type: 'info', message });
  client.send({ type: 'ping' });
  assert.deepEqual(await client.next(), { type: 'pong' });
}

test('charts connected clients and frames in and out per second from /metrics', () =>
  withHub({}, async (hub, clients) => {
    const page = await newPage(browser);
    // With the page's clock paused, samples are taken only when the test lets page time
    // pass, so the rates are exact: frames counted between two samples over SAMPLE_MS.
    await page.clock.install();
    await page.clock.pauseAt(Date.now() + 60_000);
    await page.goto(hub.url);
    await page.locator('#chart-clients svg[data-samples="1"]').waitFor({ state: 'attached' });
    assert.equal(await page.locator('#chart-clients path[data-series="connected"]').getAttribute('data-latest'), '0');
    assert.equal(await page.locator('#chart-messages path[data-series="in"]').getAttribute('data-latest'), '',
      'one sample has no rate yet');

    const one = await TcpClient.synced(hub, 'Client-1');
    const two = await TcpClient.synced(hub, 'Client-2');
    clients.push(one, two);
    await sendInfos(one, [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]);
    // In: two syncs, four infos, a ping. Out: two welcomes, a pong.
    await hub.metricsReach({ tcphub_frames_in_total: 7, tcphub_frames_out_total: 3 });

    await page.clock.runFor(SAMPLE_MS);
    await page.locator('#chart-messages svg[data-samples="2"]').waitFor({ state: 'attached' });
    const latest = (chart, series) => page.locator(`#${chart} path[data-series="${series}"]`).getAttribute('data-latest');
    assert.equal(await latest('chart-clients', 'connected'), '2');
    assert.equal(await latest('chart-messages', 'in'), '3.5');
    assert.equal(await latest('chart-messages', 'out'), '1.5');
    assert.equal(await page.locator('#chart-messages [data-latest-of="in"]').textContent(), '3.5');
    assert.equal(await page.locator('#chart-messages [data-latest-of="out"]').textContent(), '1.5');
    assert.equal(await page.locator('#chart-clients [data-latest-of="connected"]').textContent(), '2');
    assert.equal(await page.locator('#figure-rate').textContent(), '1.5');
    assert.match(await page.locator('#chart-messages path[data-series="in"]').getAttribute('d'),
      /^M[\d.]+ [\d.]+ L[\d.]+ [\d.]+$/, 'one point: the first sample has no rate');

    two.close();
    await hub.metricsReach({ tcphub_clients_connected: 1 });
    await page.clock.runFor(SAMPLE_MS);
    await page.locator('#chart-clients svg[data-samples="3"]').waitFor({ state: 'attached' });
    assert.equal(await latest('chart-clients', 'connected'), '1');
    assert.equal(await latest('chart-messages', 'in'), '0');
    assert.match(await page.locator('#chart-clients path[data-series="connected"]').getAttribute('d'),
      /^M[\d.]+ [\d.]+ L[\d.]+ [\d.]+ L[\d.]+ [\d.]+ L[\d.]+ [\d.]+$/, 'three samples, one line');
    await page.context().close();
  }));

test('the event feed shows connects, names, info messages and disconnects, filters by type, and pauses', () =>
  withHub({}, async (hub, clients) => {
    const page = await openDashboard(browser, hub);
    await page.locator('#connection-state.state-live').waitFor();
    const device = await TcpClient.synced(hub, 'Client-1');
    clients.push(device);
    await sendInfos(device, [{ temp: 21.5 }]);

    await page.locator('#feed-list li[data-type="client.message"]').waitFor();
    assert.deepEqual(await feedEntries(page), [
      ['info', 'Client-1', '{"temp":21.5}'],
      ['named', 'Client-1', `as ${device.sessionId}`],
      ['connected', device.sessionId, `from ${device.peer}`],
    ]);

    const infoFilter = page.locator('#feed-types input[data-type="client.message"]');
    await infoFilter.uncheck();
    assert.deepEqual((await feedEntries(page)).map(([kind]) => kind), ['named', 'connected']);
    await infoFilter.check();
    assert.deepEqual((await feedEntries(page)).map(([kind]) => kind), ['info', 'named', 'connected']);

    const pause = page.locator('#feed-pause');
    await pause.click();
    assert.equal(await pause.textContent(), 'Resume');
    assert.equal(await pause.getAttribute('aria-pressed'), 'true');
    await sendInfos(device, ['while paused']);
    await waitForText(page, '#feed-status', 'Paused · 1 new');
    assert.equal(await page.locator('#feed-list li').count(), 3, 'a paused feed does not move');

    await pause.click();
    assert.equal(await pause.textContent(), 'Pause');
    assert.deepEqual((await feedEntries(page))[0], ['info', 'Client-1', '"while paused"']);
    assert.equal(await page.locator('#feed-status').textContent(), 'Newest 4');

    device.close();
    await page.locator('#feed-list li[data-type="client.disconnected"]').waitFor();
    assert.deepEqual((await feedEntries(page))[0], ['left', 'Client-1', 'closed']);
    await page.context().close();
  }));

test('the detail panel shows a client\'s counters and its info messages, including earlier ones', () =>
  withHub({}, async (hub, clients) => {
    const page = await openDashboard(browser, hub);
    // From here on the hub keeps events, so the panel can show messages sent before it opened.
    await page.locator('#connection-state.state-live').waitFor();
    const device = await TcpClient.synced(hub, 'Client-1');
    clients.push(device);
    await sendInfos(device, [{ seq: 1 }, { seq: 2 }]);
    const bystander = await TcpClient.synced(hub, 'Client-2');
    clients.push(bystander);
    await sendInfos(bystander, [{ seq: 'not Client-1' }]);

    const row = rowFor(page, 'Client-1');
    await row.waitFor();
    await row.locator('button[data-action=details]').click();
    const panel = page.locator('#client-panel');
    await panel.waitFor();
    assert.equal(await panel.locator('#panel-title').textContent(), 'Client-1');
    assert.equal(await panel.locator('#panel-state').textContent(), 'Connected');
    assert.equal(await panel.locator('[data-field=id]').textContent(), device.sessionId);
    assert.equal(await panel.locator('[data-field=peer]').textContent(), device.peer);

    const messages = () => panel.locator('#panel-messages li code').allTextContents();
    await page.waitForFunction(() => document.querySelectorAll('#panel-messages li').length === 2);
    assert.deepEqual(await messages(), ['{"seq":2}', '{"seq":1}']);
    // In: the sync, two infos, a ping. Out: the welcome, the pong.
    await waitForText(page, '#client-panel [data-field=framesIn]', '4');
    assert.equal(await panel.locator('[data-field=framesOut]').textContent(), '2');

    await sendInfos(device, [{ seq: 3 }]);
    await page.waitForFunction(() => document.querySelectorAll('#panel-messages li').length === 3);
    assert.deepEqual(await messages(), ['{"seq":3}', '{"seq":2}', '{"seq":1}']);
    await waitForText(page, '#client-panel [data-field=framesIn]', '6');

    const kicked = await hub.fetch('/clients/Client-1', { method: 'DELETE' });
    assert.equal(kicked.status, 204);
    await waitForText(page, '#panel-state', 'Disconnected · kicked');

    await panel.locator('#panel-close').click();
    assert.equal(await panel.isHidden(), true);
    await page.context().close();
  }));
