// Renders docs/dashboard.png: the dashboard of a real hub with a few clients and some
// traffic, as an operator would see it. The page's clock is driven, so that ten minutes of
// charts take seconds: between samples the script moves real traffic through the hub,
// then lets two seconds of page time pass. Run with `npm run screenshot` (TCPHUB_BIN as for the tests).

import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hub, TcpClient, launchBrowser, newPage } from './support.mjs';

const output = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'dashboard.png');
const names = ['boiler-room-1', 'gate-north', 'gate-south', 'meter-14', 'pump-station-3', 'lobby-display'];
/** Samples of page time: 300 of 2 s make ten minutes of history. */
const SAMPLES = 300;
const SAMPLE_MS = 2000;

const hub = await Hub.start();
const clients = [];
const visitors = [];
const browser = await launchBrowser();
let framesIn = 0;
const report = (client, message) => {
  client.send({ type: 'info', message });
  framesIn += 1;
};
try {
  for (const [index, name] of names.entries()) {
    const client = await TcpClient.synced(hub, name);
    framesIn += 1;
    clients.push(client);
    report(client, { online: true, firmware: `2.${index}` });
  }
  clients.push(await TcpClient.connect(hub));

  const page = await newPage(browser);
  // The page's clock starts as far in the past as the history is long, so that it ends
  // near the hub's own time and the table's "last active" reads as it would.
  const start = Date.now() - SAMPLES * SAMPLE_MS;
  await page.clock.install({ time: start });
  await page.clock.pauseAt(start + 1000);
  await page.goto(hub.url);
  await page.locator('#connection-state.state-live').waitFor();
  await page.clock.runFor(10);
  await page.locator('#workspace').waitFor();
  await page.setViewportSize({ width: 1360, height: 700 });

  for (let step = 0; step < SAMPLES; step += 1) {
    // Visitors come and go in a slow wave; the devices report, and everybody gets a broadcast.
    const wantVisitors = Math.round(5 + 4 * Math.sin(step / 25));
    while (visitors.length < wantVisitors) {
      visitors.push(await TcpClient.synced(hub, `kiosk-${step}-${visitors.length}`));
      framesIn += 1;
    }
    while (visitors.length > wantVisitors) visitors.shift().close();
    const burst = Math.round(7 + 4 * Math.sin(step / 11));
    for (let round = 0; round < burst; round += 1) {
      report(clients[(step + round) % names.length], { celsius: Math.round(200 + 15 * Math.sin((step + round) / 7)) / 10 });
    }
    await hub.fetch('/broadcast', { method: 'POST', body: `tick ${step}` });
    if (step === SAMPLES - 5) {
      await page.locator('#broadcast-input').fill('{"notice":"firmware 2.4 rolls out at 22:00 UTC"}');
      await page.locator('#broadcast-form button[type=submit]').click();
      await page.locator('#broadcast-result.ok').waitFor();
      await page.locator('#clients-body tr[data-name="gate-north"] button[data-action=details]').click();
      await page.locator('#panel-messages li').first().waitFor();
    }
    // Every frame sent in this step is counted before its sample is taken.
    await hub.metricsReach({ tcphub_frames_in_total: framesIn });
    await page.clock.runFor(SAMPLE_MS);
    await page.waitForFunction((count) => Number(document.querySelector('#chart-messages svg').dataset.samples) >= count,
      step + 2);
  }
  await page.mouse.move(0, 0);
  await page.screenshot({ path: output, fullPage: true });
  console.log(`wrote ${output}`);
} finally {
  for (const client of [...clients, ...visitors]) client.close();
  await Promise.allSettled([browser.close(), hub.stop()]);
}
