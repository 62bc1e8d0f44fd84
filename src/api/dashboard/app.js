// The tcphub dashboard's behaviour: follows the hub through its HTTP API (GET /clients,
// GET /events, GET /metrics), drives it (send, broadcast, kick), and asks for the API
// token when the hub wants one. Plain browser JavaScript: no framework, no build step.
'use strict';

const PAGE_SIZE = 50;
const TICK_MS = 500;
const POLL_INTERVAL_MS = 2000;
// Pushes change counters without emitting events, so even a live table is re-read now and then.
const LIVE_REFRESH_MS = 5000;
const FIGURES_INTERVAL_MS = 2000;
// Connects and disconnects change the rows; traffic only changes numbers, which can wait a little.
const MEMBERSHIP_DEBOUNCE_MS = 100;
const TRAFFIC_DEBOUNCE_MS = 1000;
const FILTER_DEBOUNCE_MS = 250;
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30000;
const KICK_CONFIRM_MS = 4000;
const TOKEN_KEY = 'tcphub.apiToken';
// Only events that change rows or drop counts: per-message events could outnumber them a
// thousandfold, and the counters they would update are re-read every LIVE_REFRESH_MS anyway.
const FOLLOWED_EVENTS = 'client.connected,client.named,client.disconnected,message.dropped';
const DROP_EVENT = 'message.dropped';
const METRIC_FRAMES_OUT = 'tcphub_frames_out_total';
const METRIC_DROPPED = 'tcphub_messages_dropped_total';

const $ = (id) => document.getElementById(id);
const numberFormat = new Intl.NumberFormat('en-US');
const rateFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

const view = { prefix: '', named: '', offset: 0, total: 0, clients: [] };
const hub = {
  token: sessionStorage.getItem(TOKEN_KEY),
  locked: false,
  reached: false,
  unreachable: false,
  streamLive: false,
};
const refresh = { timer: null, due: Infinity, running: false, again: false, lastAt: 0 };
let figuresAt = 0;
let framesOutSample = null;
let eventsAbort = null;
let unlockWaiters = [];
let sendRow = null;

/** A 401 from the hub: the caller stops, the token form takes over. */
class Unauthorized extends Error {}

// ---- talking to the hub --------------------------------------------------------------

async function api(path, init = {}) {
  const sentToken = hub.token;
  const headers = new Headers(init.headers);
  if (sentToken) headers.set('Authorization', `Bearer ${sentToken}`);
  let response;
  try {
    response = await fetch(path, { ...init, headers, cache: 'no-store' });
  } catch (error) {
    if (error.name !== 'AbortError') setUnreachable(true);
    throw error;
  }
  setUnreachable(false);
  if (response.status === 401) {
    // A 401 for a token the user has since replaced says nothing about the new one.
    if (sentToken === hub.token) lock(sentToken ? 'The hub did not accept that token.' : '');
    throw new Unauthorized();
  }
  return response;
}

async function problemDetail(response) {
  const body = await response.text();
  try {
    const problem = JSON.parse(body);
    if (problem.detail || problem.title) return problem.detail || problem.title;
  } catch {
    // not problem+json: fall back to the status line
  }
  return `${response.status} ${response.statusText}`.trim();
}

async function postMessage(path, message) {
  const response = await api(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ message }),
  });
  if (!response.ok) throw new Error(await problemDetail(response));
  return response.json();
}

/** The text of a send box: JSON when it parses, otherwise the string as typed. */
function parseMessage(text) {
  try {
    return { message: JSON.parse(text), kind: 'JSON' };
  } catch {
    return { message: text, kind: 'Text' };
  }
}

// ---- the token -----------------------------------------------------------------------

function lock(reason) {
  hub.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  const error = $('token-error');
  if (reason) {
    error.textContent = reason;
    error.hidden = false;
  }
  if (hub.locked) return;
  hub.locked = true;
  eventsAbort?.abort();
  $('workspace').hidden = true;
  $('token-panel').hidden = false;
  $('token-input').focus();
  showState();
}

function unlock(token) {
  hub.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  hub.locked = false;
  $('token-panel').hidden = true;
  $('token-error').hidden = true;
  showState();
  scheduleRefresh(0);
  refreshFigures();
  for (const resolve of unlockWaiters) resolve();
  unlockWaiters = [];
}

function whenUnlocked() {
  return hub.locked ? new Promise((resolve) => unlockWaiters.push(resolve)) : Promise.resolve();
}

// ---- connection state ----------------------------------------------------------------

function setUnreachable(unreachable) {
  if (hub.unreachable === unreachable) return;
  hub.unreachable = unreachable;
  showState();
}

function showState() {
  const [state, label] = hub.locked ? ['locked', 'Token required']
    : hub.unreachable ? ['offline', 'Hub unreachable']
    : hub.streamLive ? ['live', 'Live']
    : hub.reached ? ['polling', 'Polling']
    : ['starting', 'Connecting'];
  const badge = $('connection-state');
  badge.className = `state state-${state}`;
  badge.textContent = label;
  badge.title = {
    live: 'Following GET /events',
    polling: `No event stream; the table is re-read every ${POLL_INTERVAL_MS / 1000} s`,
  }[state] ?? '';
  document.body.classList.toggle('stale', hub.unreachable);
}

// ---- the client table ----------------------------------------------------------------

function tableQuery() {
  const query = new URLSearchParams({ limit: PAGE_SIZE, offset: view.offset });
  if (view.prefix) query.set('prefix', view.prefix);
  if (view.named) query.set('named', view.named);
  return query.toString();
}

/** Asks for a table refresh within `delayMs`; an earlier request wins, none run concurrently. */
function scheduleRefresh(delayMs) {
  const due = Date.now() + delayMs;
  if (due >= refresh.due) return;
  clearTimeout(refresh.timer);
  refresh.due = due;
  refresh.timer = setTimeout(runRefresh, delayMs);
}

async function runRefresh() {
  refresh.timer = null;
  refresh.due = Infinity;
  if (refresh.running) {
    refresh.again = true;
    return;
  }
  refresh.running = true;
  try {
    await refreshTable();
  } finally {
    refresh.running = false;
    refresh.lastAt = Date.now();
  }
  if (refresh.again) {
    refresh.again = false;
    scheduleRefresh(0);
  }
}

async function refreshTable() {
  if (hub.locked) return;
  const query = tableQuery();
  let page;
  try {
    const response = await api(`/clients?${query}`);
    if (!response.ok) throw new Error(await problemDetail(response));
    page = await response.json();
  } catch (error) {
    if (!(error instanceof Unauthorized) && !hub.unreachable) showActionResult(error.message, true);
    return;
  }
  if (query !== tableQuery()) {
    refresh.again = true;
    return;
  }
  if (page.clients.length === 0 && view.offset > 0 && page.total > 0) {
    view.offset = Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE;
    refresh.again = true;
    return;
  }
  if (!hub.reached) {
    hub.reached = true;
    showState();
  }
  $('workspace').hidden = false;
  renderClients(page);
}

function renderClients(page) {
  view.total = page.total;
  view.clients = page.clients;
  const body = $('clients-body');
  const wanted = new Set(page.clients.map((client) => client.id));
  const rows = new Map();
  // Drop what left first, so that rows which stay are never moved (moving one would blur an open send box).
  for (const row of [...body.children]) {
    if (!wanted.has(row.dataset.id)) row.remove();
    else if (row.classList.contains('client-row')) rows.set(row.dataset.id, row);
  }
  if (sendRow && !sendRow.isConnected) sendRow = null;

  let position = 0;
  const place = (row) => {
    if (body.children[position] !== row) body.insertBefore(row, body.children[position] ?? null);
    position += 1;
  };
  for (const client of page.clients) {
    const row = rows.get(client.id) ?? createClientRow(client.id);
    updateClientRow(row, client);
    place(row);
    if (sendRow?.dataset.id === client.id) {
      place(sendRow);
      sendRow.querySelector('.send-label').textContent = `Message to ${client.name}`;
    }
  }
  $('clients-empty').hidden = page.clients.length > 0;
  renderPager();
}

function createClientRow(id) {
  const row = document.createElement('tr');
  row.className = 'client-row fresh';
  row.dataset.id = id;
  row.innerHTML = `
    <td class="name"></td>
    <td class="mono id"></td>
    <td class="mono peer"></td>
    <td><time class="connected" data-relative></time></td>
    <td><time class="active" data-relative></time></td>
    <td class="num frames"></td>
    <td class="num bytes"></td>
    <td class="num queue"></td>
    <td class="num dropped"></td>
    <td class="actions">
      <button type="button" class="small" data-action="send">Send</button>
      <button type="button" class="small danger" data-action="kick">Kick</button>
    </td>`;
  row.addEventListener('animationend', () => row.classList.remove('fresh'));
  return row;
}

function updateClientRow(row, client) {
  const set = (selector, text) => {
    const cell = row.querySelector(selector);
    if (cell.textContent !== text) cell.textContent = text;
    return cell;
  };
  if (client.name === null) delete row.dataset.name;
  else row.dataset.name = client.name;
  const name = set('.name', client.name ?? 'unnamed');
  name.classList.toggle('muted', client.name === null);
  set('.id', client.id);
  set('.peer', client.peer);
  setTime(row.querySelector('.connected'), client.connectedAt);
  setTime(row.querySelector('.active'), client.lastActiveAt);
  set('.frames', `${numberFormat.format(client.framesIn)} / ${numberFormat.format(client.framesOut)}`);
  set('.bytes', `${formatBytes(client.bytesIn)} / ${formatBytes(client.bytesOut)}`);
  set('.queue', numberFormat.format(client.queueLen));
  set('.dropped', numberFormat.format(client.dropped)).classList.toggle('alert', client.dropped > 0);
  for (const button of row.querySelectorAll('button[data-action]')) {
    button.disabled = client.name === null;
    button.title = client.name === null ? 'Unnamed clients cannot be addressed by name' : '';
  }
}

function setTime(element, iso) {
  if (element.dateTime === iso) return;
  element.dateTime = iso;
  element.title = new Date(iso).toLocaleString();
  element.textContent = ago(iso, Date.now());
}

function renderPager() {
  const { offset, total, clients } = view;
  $('page-summary').textContent = total === 0 ? 'No clients'
    : `${numberFormat.format(offset + 1)}–${numberFormat.format(offset + clients.length)} of ${numberFormat.format(total)}`;
  $('page-prev').disabled = offset === 0;
  $('page-next').disabled = offset + PAGE_SIZE >= total;
}

function showActionResult(text, isError) {
  const result = $('action-result');
  result.textContent = text;
  result.classList.toggle('error', isError);
}

// ---- per-client actions --------------------------------------------------------------

function clientById(id) {
  return view.clients.find((client) => client.id === id);
}

function openSendRow(clientRow) {
  if (sendRow?.dataset.id === clientRow.dataset.id) {
    sendRow.querySelector('textarea').focus();
    return;
  }
  sendRow?.remove();
  sendRow = $('send-row-template').content.firstElementChild.cloneNode(true);
  sendRow.dataset.id = clientRow.dataset.id;
  sendRow.querySelector('.send-label').textContent = `Message to ${clientRow.dataset.name}`;
  const form = sendRow.querySelector('form');
  const input = form.querySelector('textarea');
  const result = form.querySelector('output');
  input.id = `send-input-${clientRow.dataset.id}`;
  sendRow.querySelector('.send-label').htmlFor = input.id;
  wireKindHint(input, form.querySelector('.kind'));
  form.querySelector('.cancel').addEventListener('click', () => {
    sendRow.remove();
    sendRow = null;
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const client = clientById(form.closest('tr').dataset.id);
    if (!client?.name) return showResult(result, 'This client is no longer on this page.', true);
    const { message } = parseMessage(input.value);
    try {
      const answer = await postMessage(`/clients/${encodeURIComponent(client.name)}/send`, message);
      showResult(result, `Queued for ${client.name} · id ${answer.id}`, false, answer.id);
      scheduleRefresh(TRAFFIC_DEBOUNCE_MS);
    } catch (error) {
      if (!(error instanceof Unauthorized)) showResult(result, error.message, true);
    }
  });
  clientRow.after(sendRow);
  input.focus();
}

async function kick(button, clientRow) {
  // The first click arms the button, so a stray click never disconnects anybody.
  if (!button.classList.contains('armed')) {
    button.classList.add('armed');
    button.textContent = 'Confirm';
    setTimeout(() => {
      button.classList.remove('armed');
      button.textContent = 'Kick';
    }, KICK_CONFIRM_MS);
    return;
  }
  const name = clientRow.dataset.name;
  button.disabled = true;
  try {
    const response = await api(`/clients/${encodeURIComponent(name)}`, { method: 'DELETE' });
    if (!response.ok) throw new Error(await problemDetail(response));
    showActionResult(`Disconnected ${name}.`, false);
    scheduleRefresh(0);
  } catch (error) {
    button.disabled = false;
    if (!(error instanceof Unauthorized)) showActionResult(error.message, true);
  }
}

function showResult(output, text, isError, messageId) {
  output.textContent = text;
  output.classList.toggle('error', isError);
  output.classList.toggle('ok', !isError);
  if (messageId === undefined) delete output.dataset.messageId;
  else output.dataset.messageId = messageId;
}

function wireKindHint(input, hint) {
  input.addEventListener('input', () => {
    hint.textContent = input.value === '' ? '' : `Sends as ${parseMessage(input.value).kind}`;
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      input.form.requestSubmit();
    }
  });
}

// ---- header figures ------------------------------------------------------------------

async function countClients(filter) {
  const response = await api(`/clients?limit=0${filter}`);
  if (!response.ok) throw new Error(await problemDetail(response));
  return (await response.json()).total;
}

/** Sums each Prometheus sample over its label sets: name -> total. */
function metricTotals(text) {
  const totals = new Map();
  const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)/;
  for (const line of text.split('\n')) {
    const match = sample.exec(line);
    if (match) totals.set(match[1], (totals.get(match[1]) ?? 0) + Number(match[2]));
  }
  return totals;
}

async function readMetrics() {
  const response = await api('/metrics');
  if (!response.ok) throw new Error(await problemDetail(response));
  return metricTotals(await response.text());
}

async function refreshFigures() {
  if (hub.locked) return;
  figuresAt = Date.now();
  const [connected, named, metrics] = await Promise.allSettled([
    countClients(''), countClients('&named=true'), readMetrics(),
  ]);
  const show = (id, outcome, format) => {
    $(id).textContent = outcome.status === 'fulfilled' && Number.isFinite(outcome.value)
      ? format(outcome.value) : '–';
  };
  show('figure-connected', connected, numberFormat.format);
  show('figure-named', named, numberFormat.format);
  const totals = metrics.status === 'fulfilled' ? metrics.value : new Map();
  show('figure-dropped', { status: 'fulfilled', value: totals.get(METRIC_DROPPED) }, numberFormat.format);
  show('figure-rate', { status: 'fulfilled', value: framesOutRate(totals.get(METRIC_FRAMES_OUT)) },
    rateFormat.format);
}

function framesOutRate(framesOut) {
  if (framesOut === undefined) return undefined;
  const now = performance.now();
  const previous = framesOutSample;
  framesOutSample = { framesOut, at: now };
  if (!previous || framesOut < previous.framesOut) return undefined;
  return ((framesOut - previous.framesOut) * 1000) / (now - previous.at);
}

// ---- live events ---------------------------------------------------------------------

/** An incremental text/event-stream parser (the WHATWG rules this page needs). */
class EventStreamParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.type = '';
    this.data = [];
  }

  push(chunk) {
    this.buffer += chunk;
    // A trailing '\r' may be half of a '\r\n' that the next chunk completes.
    const pendingCr = this.buffer.endsWith('\r');
    const lines = (pendingCr ? this.buffer.slice(0, -1) : this.buffer).split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + (pendingCr ? '\r' : '');
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === '') {
      if (this.data.length > 0) this.onEvent({ type: this.type || 'message', data: this.data.join('\n') });
      this.type = '';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data.push(value);
  }
}

/**
 * Follows GET /events for as long as the page lives. EventSource cannot send an
 * Authorization header, hence fetch and a stream reader. While the stream is down
 * (or the hub has none) the ticker polls the table instead.
 */
async function followEvents() {
  let backoff = RECONNECT_MIN_MS;
  for (;;) {
    await whenUnlocked();
    eventsAbort = new AbortController();
    try {
      const response = await api(`/events?types=${FOLLOWED_EVENTS}`, {
        headers: { Accept: 'text/event-stream' },
        signal: eventsAbort.signal,
      });
      const type = response.headers.get('Content-Type') ?? '';
      if (response.ok && type.startsWith('text/event-stream')) {
        setStreamLive(true);
        backoff = RECONNECT_MIN_MS;
        scheduleRefresh(0); // whatever happened before the stream opened
        await readEvents(response.body);
      } else {
        await response.body?.cancel();
        if (response.status === 404) backoff = RECONNECT_MAX_MS;
      }
    } catch (error) {
      // Refused, or aborted by lock(): the token form takes over, and whenUnlocked()
      // resumes as soon as it is done.
      if (error instanceof Unauthorized || hub.locked) continue;
      // Otherwise dropped or unreachable: retried below.
    }
    setStreamLive(false);
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, RECONNECT_MAX_MS);
  }
}

async function readEvents(body) {
  const parser = new EventStreamParser(onHubEvent);
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parser.push(value);
  }
}

/** Rows change with every followed event, and after `events.missed` nothing is known: re-read. */
function onHubEvent(event) {
  const badge = $('connection-state');
  badge.dataset.lastEvent = event.type;
  badge.title = `Following GET /events; last event: ${event.type} at ${new Date().toLocaleTimeString()}`;
  scheduleRefresh(event.type === DROP_EVENT ? TRAFFIC_DEBOUNCE_MS : MEMBERSHIP_DEBOUNCE_MS);
}

function setStreamLive(live) {
  if (hub.streamLive === live) return;
  hub.streamLive = live;
  showState();
}

// ---- time and size formatting --------------------------------------------------------

function ago(iso, now) {
  let seconds = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${seconds}s ago`;
  const units = [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]];
  const parts = [];
  for (const [unit, size] of units) {
    if (seconds >= size || parts.length > 0) {
      parts.push(`${Math.floor(seconds / size)}${unit}`);
      seconds %= size;
    }
    if (parts.length === 2) break;
  }
  return `${parts.join(' ')} ago`;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

// ---- wiring --------------------------------------------------------------------------

function tick() {
  const now = Date.now();
  for (const time of document.querySelectorAll('time[data-relative]')) {
    const text = ago(time.dateTime, now);
    if (time.textContent !== text) time.textContent = text;
  }
  if (hub.locked) return;
  if (now - figuresAt >= FIGURES_INTERVAL_MS) refreshFigures();
  const interval = hub.streamLive ? LIVE_REFRESH_MS : POLL_INTERVAL_MS;
  if (!refresh.running && now - refresh.lastAt >= interval) scheduleRefresh(0);
}

function wire() {
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('token-input');
    const token = input.value.trim();
    input.value = '';
    if (token) unlock(token);
  });

  const broadcastForm = $('broadcast-form');
  const broadcastInput = $('broadcast-input');
  wireKindHint(broadcastInput, broadcastForm.querySelector('.kind'));
  broadcastForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const result = $('broadcast-result');
    try {
      const answer = await postMessage('/broadcast', parseMessage(broadcastInput.value).message);
      const recipients = answer.recipients === 1 ? '1 recipient' : `${numberFormat.format(answer.recipients)} recipients`;
      showResult(result,
        `${recipients}: ${numberFormat.format(answer.queued)} queued, ${numberFormat.format(answer.dropped)} dropped · id ${answer.id}`,
        false, answer.id);
      scheduleRefresh(TRAFFIC_DEBOUNCE_MS);
    } catch (error) {
      if (!(error instanceof Unauthorized)) showResult(result, error.message, true);
    }
  });

  let filterTimer = null;
  $('filter-prefix').addEventListener('input', (event) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      view.prefix = event.target.value;
      view.offset = 0;
      scheduleRefresh(0);
    }, FILTER_DEBOUNCE_MS);
  });
  $('filter-named').addEventListener('change', (event) => {
    view.named = event.target.value;
    view.offset = 0;
    scheduleRefresh(0);
  });
  $('page-prev').addEventListener('click', () => {
    view.offset = Math.max(0, view.offset - PAGE_SIZE);
    scheduleRefresh(0);
  });
  $('page-next').addEventListener('click', () => {
    view.offset += PAGE_SIZE;
    scheduleRefresh(0);
  });

  $('clients-body').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const row = button.closest('tr.client-row');
    if (button.dataset.action === 'send') openSendRow(row);
    else if (button.dataset.action === 'kick') kick(button, row);
  });
}

wire();
showState();
scheduleRefresh(0);
refreshFigures();
followEvents();
setInterval(tick, TICK_MS);
