// The tcphub dashboard's behaviour: follows the hub through its HTTP API (GET /clients,
// GET /groups/{group}, GET /events, GET /metrics, GET /mailboxes, GET /nodes), drives it (send, send
// to a group, broadcast, kick, purge a mailbox), and asks for the API
// token when the hub wants one. Plain browser JavaScript modules: no framework, no build step.
import { drawChart } from './chart.js';
import { EventFeed } from './feed.js';
import { MAILBOX_EVENTS, MailboxPanel } from './mailboxes.js';

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
// What the feed shows. Acks are left out: one per pushed message, they would bury the rest.
// Mailbox events only tell the mailbox panel to re-read its listing.
const FOLLOWED_EVENTS = ['client.connected', 'client.named', 'client.message', 'client.disconnected',
  'message.dropped', 'client.groups', ...MAILBOX_EVENTS].join(',');
const DROP_EVENT = 'message.dropped';
const MESSAGE_EVENT = 'client.message';
const METRIC_CONNECTED = 'tcphub_clients_connected';
const METRIC_FRAMES_IN = 'tcphub_frames_in_total';
const METRIC_FRAMES_OUT = 'tcphub_frames_out_total';
const METRIC_DROPPED = 'tcphub_messages_dropped_total';
const CHART_WINDOW_MS = 15 * 60 * 1000;
const PANEL_MESSAGES = 50;

const $ = (id) => document.getElementById(id);
const numberFormat = new Intl.NumberFormat('en-US');
const rateFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

// With `group` set, the table lists that group's members (GET /groups/{group}), which
// takes no name filters.
const view = { prefix: '', named: '', group: '', offset: 0, total: 0, clients: [] };
const hub = {
  token: sessionStorage.getItem(TOKEN_KEY),
  locked: false,
  reached: false,
  unreachable: false,
  streamLive: false,
};
const refresh = { timer: null, due: Infinity, running: false, again: false, lastAt: 0 };
let figuresAt = 0;
// One sample per figures refresh: { at, connected, in, out }, null where nothing is known.
const samples = [];
let counterSample = null;
const feed = new EventFeed($('feed-list'), $('feed-status'));
const mailboxes = new MailboxPanel(
  { body: $('mailboxes-body'), empty: $('mailboxes-empty'), summary: $('mailboxes-summary'), result: $('mailboxes-result') },
  { api, problemDetail, isRefused: (error) => error instanceof Unauthorized },
  { count: numberFormat.format, bytes: formatBytes, time: setTime },
);
let eventsAbort = null;
let lastEventId = null;
// The client detail panel: which client, the stream of its info messages, the newest shown.
const panel = { id: null, name: null, abort: null, newestId: 0 };
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
  closePanel();
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

/** The request behind the table: a page of clients, or of one group's members. */
function tableQuery() {
  const query = new URLSearchParams({ limit: PAGE_SIZE, offset: view.offset });
  if (view.group) return `/groups/${encodeURIComponent(view.group)}?${query}`;
  if (view.prefix) query.set('prefix', view.prefix);
  if (view.named) query.set('named', view.named);
  return `/clients?${query}`;
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
    const response = await api(query);
    if (!response.ok) throw new Error(await problemDetail(response));
    const body = await response.json();
    page = view.group ? { total: body.members, clients: body.clients } : body;
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
  const shown = panel.id && clientById(panel.id);
  if (shown) updatePanel(shown);
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
    <td class="groups"></td>
    <td class="node"></td>
    <td class="actions">
      <button type="button" class="small" data-action="details">Details</button>
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
  set('.groups', client.groups.join(', '));
  set('.node', nodeName(client.node)).title = client.node;
  for (const button of row.querySelectorAll('button[data-action=send], button[data-action=kick]')) {
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

/** The live nodes (GET /nodes): one on a single hub, every node of a cluster. */
async function readNodes() {
  const response = await api('/nodes');
  if (!response.ok) throw new Error(await problemDetail(response));
  return (await response.json()).nodes;
}

/** A node id is the node's name and 8 hex digits: the name is what an operator knows. */
function nodeName(id) {
  return id.replace(/-[0-9a-f]{8}$/, '');
}

async function readMetrics() {
  const response = await api('/metrics');
  if (!response.ok) throw new Error(await problemDetail(response));
  return metricTotals(await response.text());
}

async function refreshFigures() {
  if (hub.locked) return;
  figuresAt = Date.now();
  // Acks and purges by others change the mailboxes without a followed event: re-read them too.
  const [connected, named, metrics, nodes] = await Promise.allSettled([
    countClients(''), countClients('&named=true'), readMetrics(), readNodes(), mailboxes.refresh(),
  ]);
  const show = (id, outcome, format) => {
    $(id).textContent = outcome.status === 'fulfilled' && Number.isFinite(outcome.value)
      ? format(outcome.value) : '–';
  };
  show('figure-connected', connected, numberFormat.format);
  show('figure-named', named, numberFormat.format);
  show('figure-nodes', { status: nodes.status, value: nodes.value?.length }, numberFormat.format);
  $('figure-nodes').title = nodes.status === 'fulfilled'
    ? nodes.value.map((node) => `${node.name}: ${numberFormat.format(node.clients)} clients`).join('\n') : '';
  const totals = metrics.status === 'fulfilled' ? metrics.value : new Map();
  show('figure-dropped', { status: 'fulfilled', value: totals.get(METRIC_DROPPED) }, numberFormat.format);
  const sample = recordSample(totals);
  show('figure-rate', { status: 'fulfilled', value: sample.out ?? undefined }, rateFormat.format);
}

// ---- charts --------------------------------------------------------------------------

/** Adds a sample for the charts from the hub's metrics (empty when they could not be read). */
function recordSample(totals) {
  const clock = performance.now();
  const framesIn = totals.get(METRIC_FRAMES_IN);
  const framesOut = totals.get(METRIC_FRAMES_OUT);
  const previous = counterSample;
  counterSample = framesIn === undefined || framesOut === undefined ? null : { framesIn, framesOut, clock };
  // A counter that went down belongs to a restarted hub: no rate across that.
  const rate = (now, before) => (previous && counterSample && now >= before && clock > previous.clock
    ? ((now - before) * 1000) / (clock - previous.clock) : null);
  const sample = {
    at: Date.now(),
    connected: totals.get(METRIC_CONNECTED) ?? null,
    in: rate(framesIn, previous?.framesIn),
    out: rate(framesOut, previous?.framesOut),
  };
  samples.push(sample);
  while (samples[0].at < sample.at - CHART_WINDOW_MS) samples.shift();
  drawCharts(sample.at);
  return sample;
}

function drawCharts(now) {
  const points = (key) => samples.map((sample) => ({ at: sample.at, value: sample[key] }));
  const charts = [
    ['chart-clients', ['connected'], (value) => numberFormat.format(Math.round(value))],
    ['chart-messages', ['in', 'out'], rateFormat.format],
  ];
  for (const [id, keys, format] of charts) {
    const figure = $(id);
    drawChart(figure.querySelector('svg'), {
      series: keys.map((key) => ({ key, points: points(key) })),
      windowMs: CHART_WINDOW_MS,
      now,
      format,
    });
    for (const key of keys) {
      const latest = samples.at(-1)[key];
      figure.querySelector(`[data-latest-of="${key}"]`).textContent = latest === null ? '–' : format(latest);
    }
  }
}

// ---- live events ---------------------------------------------------------------------

/** An incremental text/event-stream parser (the WHATWG rules this page needs). */
class EventStreamParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.type = '';
    this.id = null;
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
      if (this.data.length > 0) this.onEvent({ type: this.type || 'message', id: this.id, data: this.data.join('\n') });
      this.type = '';
      this.id = null;
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'id') this.id = value;
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
    // After a drop, resume where the stream left off, so the feed has no hole.
    const headers = { Accept: 'text/event-stream' };
    if (lastEventId !== null) headers['Last-Event-ID'] = lastEventId;
    try {
      const response = await api(`/events?types=${FOLLOWED_EVENTS}`, { headers, signal: eventsAbort.signal });
      const type = response.headers.get('Content-Type') ?? '';
      if (response.ok && type.startsWith('text/event-stream')) {
        setStreamLive(true);
        backoff = RECONNECT_MIN_MS;
        scheduleRefresh(0); // whatever happened before the stream opened
        await readEvents(response.body, onHubEvent);
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

async function readEvents(body, onEvent) {
  const parser = new EventStreamParser(onEvent);
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parser.push(value);
  }
}

/** Rows change with every followed event, and after `events.missed` nothing is known: re-read. */
function onHubEvent(sse) {
  const badge = $('connection-state');
  badge.dataset.lastEvent = sse.type;
  badge.title = `Following GET /events; last event: ${sse.type} at ${new Date().toLocaleTimeString()}`;
  if (sse.id !== null) lastEventId = sse.id;
  if (MAILBOX_EVENTS.includes(sse.type)) {
    mailboxes.changed();
    return;
  }
  const event = parseEvent(sse);
  if (event) {
    feed.add(event);
    panelSees(event);
  }
  if (event?.type === 'events.missed') mailboxes.changed();
  const traffic = sse.type === DROP_EVENT || sse.type === MESSAGE_EVENT;
  scheduleRefresh(traffic ? TRAFFIC_DEBOUNCE_MS : MEMBERSHIP_DEBOUNCE_MS);
}

function parseEvent(sse) {
  try {
    return JSON.parse(sse.data);
  } catch {
    return null;
  }
}

function setStreamLive(live) {
  if (hub.streamLive === live) return;
  hub.streamLive = live;
  showState();
}

// ---- the client detail panel ---------------------------------------------------------

function openPanel(row) {
  const client = clientById(row.dataset.id);
  if (!client) return;
  closePanel();
  panel.id = client.id;
  panel.name = client.name;
  const element = $('client-panel');
  element.dataset.id = client.id;
  element.hidden = false;
  $('panel-title').textContent = client.name ?? 'Unnamed client';
  showPanelState('Connected', false);
  updatePanel(client);
  followPanelMessages(0);
  element.scrollIntoView({ block: 'nearest' });
}

function closePanel() {
  panel.abort?.abort();
  Object.assign(panel, { id: null, name: null, abort: null, newestId: 0 });
  $('client-panel').hidden = true;
  delete $('client-panel').dataset.id;
  $('panel-messages').replaceChildren();
  $('panel-messages-empty').hidden = false;
}

function updatePanel(client) {
  const field = (name) => $('client-panel').querySelector(`[data-field="${name}"]`);
  field('id').textContent = client.id;
  field('peer').textContent = client.peer;
  setTime(field('connectedAt'), client.connectedAt);
  setTime(field('lastActiveAt'), client.lastActiveAt);
  for (const name of ['framesIn', 'framesOut', 'queueLen', 'dropped']) {
    field(name).textContent = numberFormat.format(client[name]);
  }
  field('bytesIn').textContent = formatBytes(client.bytesIn);
  field('bytesOut').textContent = formatBytes(client.bytesOut);
  field('groups').textContent = client.groups.length === 0 ? 'none' : client.groups.join(', ');
  field('node').textContent = client.node;
  field('dropped').classList.toggle('alert', client.dropped > 0);
}

function showPanelState(text, gone) {
  const state = $('panel-state');
  state.textContent = text;
  state.classList.toggle('gone', gone);
}

/**
 * A named client's info messages come from a stream of their own, which starts with what
 * the hub's event buffer still holds after event `after`; an unnamed one's come from the
 * page's stream (the hub filters only by name).
 */
async function followPanelMessages(after) {
  panel.abort?.abort();
  panel.abort = null;
  if (panel.name === null) return;
  const abort = new AbortController();
  panel.abort = abort;
  const query = new URLSearchParams({ types: MESSAGE_EVENT, name: panel.name });
  try {
    const response = await api(`/events?${query}`, {
      headers: { Accept: 'text/event-stream', 'Last-Event-ID': String(after) },
      signal: abort.signal,
    });
    if (!response.ok) return await response.body?.cancel();
    await readEvents(response.body, (sse) => {
      const event = parseEvent(sse);
      if (event?.type === MESSAGE_EVENT) addPanelMessage(event);
    });
  } catch {
    // Closed, aborted or unreachable: the panel keeps what it has.
  }
}

/** Events about the open panel's client on the page's own stream. */
function panelSees(event) {
  if (event.clientId !== panel.id || panel.id === null) return;
  if (event.type === 'client.disconnected') {
    showPanelState(`Disconnected · ${event.reason}`, true);
  } else if (event.type === 'client.named') {
    panel.name = event.name;
    $('panel-title').textContent = event.name;
    followPanelMessages(event.id);
  } else if (event.type === MESSAGE_EVENT && panel.abort === null) {
    addPanelMessage(event);
  }
}

function addPanelMessage(event) {
  // Earlier sessions under the same name are not this client's.
  if (event.clientId !== panel.id || event.id <= panel.newestId) return;
  panel.newestId = event.id;
  const item = document.createElement('li');
  item.dataset.eventId = event.id;
  const time = document.createElement('time');
  time.dateTime = event.time;
  time.textContent = new Date(event.time).toLocaleTimeString('en-GB', { hour12: false });
  const body = document.createElement('code');
  body.textContent = JSON.stringify(event.message);
  item.append(time, body);
  const list = $('panel-messages');
  list.prepend(item);
  while (list.childElementCount > PANEL_MESSAGES) list.lastElementChild.remove();
  $('panel-messages-empty').hidden = true;
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

  const groupForm = $('group-send-form');
  const groupInput = $('group-send-input');
  wireKindHint(groupInput, groupForm.querySelector('.kind'));
  groupForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const result = $('group-send-result');
    const group = $('group-send-name').value.trim();
    try {
      const path = `/groups/${encodeURIComponent(group)}/send`;
      const answer = await postMessage(path, parseMessage(groupInput.value).message);
      const members = answer.recipients === 1 ? '1 member' : `${numberFormat.format(answer.recipients)} members`;
      showResult(result,
        `${members}: ${numberFormat.format(answer.queued)} queued, ${numberFormat.format(answer.dropped)} dropped · id ${answer.id}`,
        false, answer.id);
      scheduleRefresh(TRAFFIC_DEBOUNCE_MS);
    } catch (error) {
      if (!(error instanceof Unauthorized)) showResult(result, error.message, true);
    }
  });

  let groupTimer = null;
  $('filter-group').addEventListener('input', (event) => {
    clearTimeout(groupTimer);
    groupTimer = setTimeout(() => {
      view.group = event.target.value.trim();
      view.offset = 0;
      // A group's member list takes no name filters.
      $('filter-prefix').disabled = view.group !== '';
      $('filter-named').disabled = view.group !== '';
      scheduleRefresh(0);
    }, FILTER_DEBOUNCE_MS);
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

  $('panel-close').addEventListener('click', closePanel);
  $('feed-pause').addEventListener('click', (event) => {
    const paused = !feed.paused;
    feed.setPaused(paused);
    event.target.setAttribute('aria-pressed', String(paused));
    event.target.textContent = paused ? 'Resume' : 'Pause';
  });
  $('feed-types').addEventListener('change', (event) => {
    feed.setShown(event.target.dataset.type, event.target.checked);
  });

  $('clients-body').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const row = button.closest('tr.client-row');
    if (button.dataset.action === 'details') openPanel(row);
    else if (button.dataset.action === 'send') openSendRow(row);
    else if (button.dataset.action === 'kick') kick(button, row);
  });
}

wire();
showState();
scheduleRefresh(0);
refreshFigures();
followEvents();
setInterval(tick, TICK_MS);
