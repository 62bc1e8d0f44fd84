// What the dashboard tests stand on: a real tcphub process on loopback, raw TCP clients
// that speak its wire protocol, and a headless Chromium driven through playwright-core.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

/** How long any single wait may take before the test fails. */
export const PATIENCE_MS = 15_000;

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Rejects with `what` if `promise` has not settled within PATIENCE_MS. */
export function patiently(promise, what) {
  let timer;
  const expiry = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${PATIENCE_MS} ms: ${what}`)), PATIENCE_MS);
  });
  return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
}

/** Hubs still running; if this process dies in the middle of a test, they die with it. */
const runningHubs = new Set();
process.once('exit', () => {
  for (const child of runningHubs) child.kill('SIGKILL');
});

/** A tcphub child process with both listeners on loopback ports the kernel picked. */
export class Hub {
  static async start({ token = null, extraArgs = [] } = {}) {
    const binary = resolve(repoRoot, process.env.TCPHUB_BIN ?? 'target/debug/tcphub');
    const args = [
      '--tcp-addr', '127.0.0.1:0',
      '--http-addr', '127.0.0.1:0',
      '--log-format', 'json',
      ...extraArgs,
    ];
    // Settings come from the arguments alone, never from the caller's TCPHUB_* environment.
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('TCPHUB_')));
    env.RUST_LOG = 'info';
    if (token) env.TCPHUB_API_TOKEN = token;
    const child = spawn(binary, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const hub = new Hub(child, token);
    const { tcp, http } = await patiently(hub.listening, `tcphub (${binary}) to log "tcphub listening"`);
    hub.tcpPort = Number(tcp.slice(tcp.lastIndexOf(':') + 1));
    hub.url = `http://${http}`;
    return hub;
  }

  constructor(child, token) {
    this.child = child;
    this.token = token;
    this.log = '';
    runningHubs.add(child);
    this.exited = once(child, 'exit');
    this.exited.then(() => runningHubs.delete(child));
    // Both listeners are bound before the hub says so, and the kernel queues connects
    // from then on: this log record is the readiness signal.
    this.listening = new Promise((resolveListening, rejectListening) => {
      let pending = '';
      child.stdout.setEncoding('utf8').on('data', (chunk) => {
        this.log += chunk;
        const lines = (pending + chunk).split('\n');
        pending = lines.pop();
        for (const line of lines) {
          const record = parseLogRecord(line);
          if (record?.message === 'tcphub listening') resolveListening(record);
        }
      });
      this.exited.then(([code]) => rejectListening(
        new Error(`tcphub exited with ${code} before it was listening:\n${this.log}`)));
    });
    this.listening.catch(() => {}); // awaited by start(); a late exit must not go unhandled
    child.stderr.setEncoding('utf8').on('data', (chunk) => { this.log += chunk; });
  }

  /** Calls the hub's API directly (to compare with what the page shows). */
  async fetch(path, init = {}) {
    const headers = new Headers(init.headers);
    if (this.token) headers.set('Authorization', `Bearer ${this.token}`);
    return fetch(`${this.url}${path}`, { ...init, headers });
  }

  /** The hub's own figures: metric name -> value, summed over label sets. */
  async metrics() {
    const text = await (await this.fetch('/metrics')).text();
    const totals = new Map();
    for (const line of text.split('\n')) {
      const match = /^([a-z_]+)(?:\{[^}]*\})? (\S+)$/.exec(line);
      if (match) totals.set(match[1], (totals.get(match[1]) ?? 0) + Number(match[2]));
    }
    return totals;
  }

  /**
   * Resolves once every metric in `wanted` ({ name: value }) has that value. The hub counts
   * a written frame just after the write, so a client may read it a moment before.
   */
  async metricsReach(wanted) {
    let expired = false;
    const reached = (async () => {
      while (!expired) {
        const totals = await this.metrics();
        if (Object.entries(wanted).every(([name, value]) => totals.get(name) === value)) return;
      }
    })();
    reached.catch(() => {}); // a late failure, after the wait has expired, is not news
    try {
      await patiently(reached, `metrics ${JSON.stringify(wanted)}`);
    } finally {
      expired = true;
    }
  }

  async stop() {
    if (this.child.exitCode === null) {
      this.child.kill('SIGTERM');
      await this.exited;
    }
  }
}

function parseLogRecord(line) {
  try {
    return JSON.parse(line);
  } catch {
    return null;
  }
}

/** Runs `body` against a hub of its own, stopping the hub and its clients afterwards. */
export async function withHub(options, body) {
  const hub = await Hub.start(options);
  const clients = [];
  try {
    await body(hub, clients);
  } catch (error) {
    error.message += `\n--- tcphub log ---\n${hub.log}`;
    throw error;
  } finally {
    for (const client of clients) client.close();
    await hub.stop();
  }
}

/** The clients table's row for the client named `name`. */
export const rowFor = (page, name) => page.locator(`#clients-body tr.client-row[data-name="${name}"]`);

/** A raw TCP client speaking the hub's line-delimited JSON protocol. */
export class TcpClient {
  static async connect(hub, localAddress = '127.0.0.1') {
    const socket = net.connect({ host: '127.0.0.1', port: hub.tcpPort, localAddress });
    await patiently(once(socket, 'connect'), 'a TCP connection to the hub');
    return new TcpClient(socket);
  }

  /** Connects and registers `name`, returning once the hub's `welcome` has arrived. */
  static async synced(hub, name) {
    const client = await TcpClient.connect(hub);
    client.send({ type: 'sync', clientName: name });
    const welcome = await client.next();
    if (welcome.type !== 'welcome' || welcome.clientName !== name) {
      throw new Error(`expected a welcome for ${name}, got ${JSON.stringify(welcome)}`);
    }
    client.sessionId = welcome.id;
    return client;
  }

  constructor(socket) {
    this.socket = socket;
    this.peer = `${socket.localAddress}:${socket.localPort}`;
    this.frames = [];
    this.waiters = [];
    this.partial = '';
    this.ended = new Promise((resolveEnd) => socket.once('close', resolveEnd));
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => this.receive(chunk));
    socket.on('error', () => {}); // a reset shows up as 'close', which the tests await
  }

  receive(chunk) {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop();
    for (const line of lines) {
      const frame = JSON.parse(line);
      const waiter = this.waiters.shift();
      if (waiter) waiter(frame);
      else this.frames.push(frame);
    }
  }

  send(frame) {
    this.socket.write(`${JSON.stringify(frame)}\n`);
  }

  /** The next frame from the hub. */
  next() {
    if (this.frames.length > 0) return Promise.resolve(this.frames.shift());
    return patiently(new Promise((resolveFrame) => this.waiters.push(resolveFrame)), 'a frame from the hub');
  }

  /** Resolves when the hub has closed the connection. */
  closed() {
    return patiently(this.ended, 'the hub to close the connection');
  }

  close() {
    this.socket.destroy();
  }
}

/**
 * Debian's Chromium, headless. Playwright starts it with a fresh, empty --user-data-dir
 * of its own and removes it on close.
 */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A tab in a browser context of its own (its own session storage and clock). */
export async function newPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1360, height: 820 } });
  context.setDefaultTimeout(PATIENCE_MS);
  const page = await context.newPage();
  return page;
}

/** Opens the dashboard in a new tab and, if the hub wants one, enters the token. */
export async function openDashboard(browser, hub) {
  const page = await newPage(browser);
  await page.goto(hub.url);
  if (hub.token) await enterToken(page, hub.token);
  await page.locator('#workspace').waitFor();
  return page;
}

/** Fills in and submits the page's token form. */
export async function enterToken(page, token) {
  await page.locator('#token-input').fill(token);
  await page.locator('#token-form button[type=submit]').click();
}
