// End-to-end tests of the dashboard's mailbox panel: the names with stored messages, how
// many, their size and age, following stores and deliveries, and the purge button, against
// a real tcphub with a data dir, real TCP clients and the page in headless Chromium.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { TcpClient, enterToken, launchBrowser, newPage, openDashboard, withHub } from './support.mjs';

const TOKEN = 'e2e-secret-token';
/** Page time after a mailbox event by which the panel must have re-read (mailboxes.js waits 200 ms). */
const CHANGE_DEBOUNCE_MS = 250;

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

/** Runs `body` against a hub whose mailbox is the SQLite database in a fresh directory. */
async function withDataDir(body) {
  const dir = mkdtempSync(join(tmpdir(), 'tcphub-e2e-'));
  try {
    await withHub({ token: TOKEN, extraArgs: ['--data-dir', dir] }, body);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Stores `message` for `name`, which no client holds; returns its id. */
async function store(hub, name, message) {
  const response = await hub.fetch(`/clients/${name}/send?ttl=600`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ message }),
  });
  assert.equal(response.status, 202);
  const answer = await response.json();
  assert.deepEqual(answer, { id: answer.id, queued: 0, stored: true });
  return answer.id;
}

/** Sends `name`'s live client a marker and expects it as its very next frame. */
async function expectMarkerNext(hub, client, name) {
  const response = await hub.fetch(`/clients/${name}/send`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ message: 'marker' }),
  });
  assert.equal(response.status, 202);
  const { id } = await response.json();
  assert.deepEqual(await client.next(), { type: 'message', id, scope: 'direct', message: 'marker' });
}

const mailboxRow = (page, name) => page.locator(`#mailboxes-body tr[data-name="${name}"]`);

/** Each row as [name, pending, bytes, oldest], in page order. */
const mailboxRows = (page) => page.locator('#mailboxes-body tr').evaluateAll((rows) => rows.map((row) => [
  row.querySelector('.name').textContent,
  row.querySelector('.pending').textContent,
  row.querySelector('.bytes').textContent,
  row.querySelector('.oldest').dateTime,
]));

test('lists each name\'s stored messages with their size and age, and purges one', () =>
  withDataDir(async (hub, clients) => {
    await store(hub, 'meter-7', { kwh: 1 });
    await store(hub, 'meter-7', { kwh: 2 });
    const hello = await store(hub, 'kiosk-2', 'hello');
    const listed = await (await hub.fetch('/mailboxes')).json();
    const oldest = Object.fromEntries(listed.mailboxes.map((m) => [m.name, m.oldestAt]));
    const page = await openDashboard(browser, hub);

    await mailboxRow(page, 'meter-7').waitFor();
    // {"kwh":1} and {"kwh":2} are 9 bytes of JSON each, "hello" is 7.
    assert.deepEqual(await mailboxRows(page), [
      ['kiosk-2', '1', '7 B', oldest['kiosk-2']],
      ['meter-7', '2', '18 B', oldest['meter-7']],
    ]);
    assert.equal(await page.locator('#mailboxes-summary').textContent(), '2 names, 3 messages');
    assert.equal(await mailboxRow(page, 'meter-7').locator('.oldest').textContent(), 'just now');
    assert.equal(await page.locator('#mailboxes-empty').isHidden(), true);

    const purge = mailboxRow(page, 'meter-7').locator('button[data-action=purge]');
    await purge.click();
    assert.equal(await purge.textContent(), 'Confirm', 'the first click only arms the button');
    await purge.click();
    await mailboxRow(page, 'meter-7').waitFor({ state: 'detached' });
    assert.equal(await page.locator('#mailboxes-result').textContent(), 'Purged the messages stored for meter-7.');
    const purged = await (await hub.fetch('/mailboxes/meter-7')).json();
    assert.deepEqual(purged, { name: 'meter-7', pending: 0, messages: [] });
    const meter = await TcpClient.synced(hub, 'meter-7');
    clients.push(meter);
    await expectMarkerNext(hub, meter, 'meter-7');

    // Delivered when its name comes back: the panel empties.
    const kiosk = await TcpClient.synced(hub, 'kiosk-2');
    clients.push(kiosk);
    assert.deepEqual(await kiosk.next(), { type: 'message', id: hello, scope: 'direct', message: 'hello' });
    await mailboxRow(page, 'kiosk-2').waitFor({ state: 'detached' });
    await page.locator('#mailboxes-empty').waitFor();
    assert.equal(await page.locator('#mailboxes-summary').textContent(), 'Nothing stored');
    await page.context().close();
  }));

test('follows message.stored and message.delivered from GET /events, without polling', () =>
  withDataDir(async (hub, clients) => {
    const page = await newPage(browser);
    // With the page's clock paused, no periodic refresh can run: only what an event
    // schedules, once the test lets a little page time pass.
    await page.clock.install();
    await page.clock.pauseAt(Date.now() + 1000);
    await page.goto(hub.url);
    await enterToken(page, hub.token);
    await page.locator('#connection-state.state-live').waitFor();
    await page.clock.runFor(10);
    await page.locator('#workspace').waitFor();
    await page.waitForFunction(() => document.querySelector('#mailboxes-summary')?.textContent === 'Nothing stored');

    const lastEvent = (type) => page.locator(`#connection-state[data-last-event="${type}"]`);
    await store(hub, 'dev-1', { led: 'on' });
    await lastEvent('message.stored').waitFor({ state: 'attached' });
    await page.clock.runFor(CHANGE_DEBOUNCE_MS);
    await mailboxRow(page, 'dev-1').waitFor();
    assert.equal(await page.locator('#mailboxes-summary').textContent(), '1 name, 1 message');

    const device = await TcpClient.synced(hub, 'dev-1');
    clients.push(device);
    assert.equal((await device.next()).message.led, 'on');
    await lastEvent('message.delivered').waitFor({ state: 'attached' });
    await page.clock.runFor(CHANGE_DEBOUNCE_MS);
    await mailboxRow(page, 'dev-1').waitFor({ state: 'detached' });
    // Mailbox events only refresh the panel; the feed shows what it showed before.
    assert.equal(await page.locator('#feed-list li[data-type^="message."]').count(), 0);
    await page.context().close();
  }));
