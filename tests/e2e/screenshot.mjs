// Renders docs/dashboard.png: the dashboard of a real hub with a few clients and some
// traffic, as an operator would see it. Run with `npm run screenshot` (TCPHUB_BIN as for the tests).

import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hub, TcpClient, launchBrowser, openDashboard } from './support.mjs';

const output = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'dashboard.png');
const names = ['boiler-room-1', 'gate-north', 'gate-south', 'meter-14', 'pump-station-3', 'lobby-display'];
const TRAFFIC_ROUNDS = 80;
const TRAFFIC_PERIOD_MS = 100;

const hub = await Hub.start();
const clients = [];
const browser = await launchBrowser();
try {
  for (const [index, name] of names.entries()) {
    const client = await TcpClient.synced(hub, name);
    for (let reading = 0; reading <= index; reading += 1) {
      client.send({ type: 'info', clientName: name, message: { reading, celsius: 20 + index } });
    }
    clients.push(client);
  }
  clients.push(await TcpClient.connect(hub));

  // A steady trickle of pushes, so that the header shows a rate.
  let round = 0;
  const traffic = setInterval(() => {
    round += 1;
    if (round > TRAFFIC_ROUNDS) return clearInterval(traffic);
    const name = names[round % names.length];
    hub.fetch(`/clients/${name}/send`, { method: 'POST', body: `tick ${round}` });
  }, TRAFFIC_PERIOD_MS);

  const page = await openDashboard(browser, hub);
  await page.setViewportSize({ width: 1360, height: 700 });
  await page.locator('#broadcast-input').fill('{"notice":"firmware 2.4 rolls out at 22:00 UTC"}');
  await page.locator('#broadcast-form button[type=submit]').click();
  await page.locator('#broadcast-result.ok').waitFor();

  await page.locator('#clients-body tr[data-name="gate-north"] button[data-action=send]').click();
  const sendForm = page.locator('#clients-body tr.send-row form');
  await sendForm.locator('textarea').fill('{"gate":"open","seconds":30}');
  await sendForm.locator('textarea').dispatchEvent('input');
  await sendForm.locator('button[type=submit]').click();
  await sendForm.locator('output.ok').waitFor();

  await page.waitForFunction(() => Number(document.getElementById('figure-rate').textContent) > 0);
  await page.mouse.move(0, 0);
  await page.screenshot({ path: output, fullPage: true });
  clearInterval(traffic);
  console.log(`wrote ${output}`);
} finally {
  for (const client of clients) client.close();
  await Promise.allSettled([browser.close(), hub.stop()]);
}
