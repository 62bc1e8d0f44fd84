// The live event feed: the hub's latest events, newest first, with a filter by type and a
// pause. It keeps the newest events of each type separately, so that a flood of one type
// (info messages, say) never pushes the rare ones (a disconnect) out of the page.

/** The event types the feed shows, in the order of its filter. */
export const FEED_TYPES = ['client.connected', 'client.named', 'client.message', 'message.dropped', 'client.disconnected'];
/** The notice that the hub's buffer no longer held some events; always shown. */
const MISSED = 'events.missed';
const KEEP_PER_TYPE = 200;
const SHOWN = 200;
const DETAIL_CHARS = 300;

const LABELS = {
  'client.connected': 'connected',
  'client.named': 'named',
  'client.message': 'info',
  'message.dropped': 'dropped',
  'client.disconnected': 'left',
  'client.groups': 'groups',
  [MISSED]: 'missed',
};

export class EventFeed {
  constructor(list, status) {
    this.list = list;
    this.status = status;
    this.kept = new Map([...FEED_TYPES, MISSED].map((type) => [type, []]));
    this.shown = new Set([...FEED_TYPES, MISSED]);
    this.paused = false;
    this.unseen = 0;
    this.seq = 0;
    this.showStatus();
  }

  /** Takes one event (or an `events.missed` notice) from the stream. */
  add(event) {
    const kept = this.kept.get(event.type);
    if (!kept) return;
    const entry = { seq: this.seq, event };
    this.seq += 1;
    kept.push(entry);
    if (kept.length > KEEP_PER_TYPE) kept.shift();
    if (!this.shown.has(event.type)) return;
    if (this.paused) {
      this.unseen += 1;
    } else {
      this.list.prepend(render(entry.event));
      while (this.list.childElementCount > SHOWN) this.list.lastElementChild.remove();
    }
    this.showStatus();
  }

  /** Freezes the list (events are still kept) or, on resume, brings it up to date. */
  setPaused(paused) {
    this.paused = paused;
    this.unseen = 0;
    if (!paused) this.redraw();
    this.showStatus();
  }

  /** Shows or hides one type of event. */
  setShown(type, shown) {
    if (shown) this.shown.add(type);
    else this.shown.delete(type);
    if (!this.paused) this.redraw();
  }

  redraw() {
    const entries = [...this.shown].flatMap((type) => this.kept.get(type) ?? [])
      .sort((a, b) => b.seq - a.seq)
      .slice(0, SHOWN);
    this.list.replaceChildren(...entries.map((entry) => render(entry.event)));
    this.showStatus();
  }

  showStatus() {
    const count = this.list.childElementCount;
    this.status.textContent = this.paused
      ? `Paused · ${this.unseen} new`
      : count === 0 ? 'Waiting for events' : `Newest ${count}`;
    this.status.classList.toggle('paused', this.paused);
  }
}

function render(event) {
  const item = document.createElement('li');
  item.className = 'event';
  item.dataset.type = event.type;
  if (event.id !== undefined) item.dataset.eventId = event.id;
  if (event.clientId !== undefined) item.dataset.clientId = event.clientId;
  const time = document.createElement('time');
  const at = event.time ? new Date(event.time) : new Date();
  time.dateTime = at.toISOString();
  time.textContent = at.toLocaleTimeString('en-GB', { hour12: false });
  const kind = document.createElement('span');
  kind.className = 'event-kind';
  kind.textContent = LABELS[event.type];
  const who = document.createElement('span');
  who.className = 'event-client';
  who.textContent = event.type === MISSED ? '' : event.name ?? event.clientId;
  who.classList.toggle('muted', event.name === null);
  const detail = document.createElement('span');
  detail.className = 'event-detail';
  detail.textContent = describe(event);
  item.append(time, kind, who, detail);
  return item;
}

/** The part of an event worth a glance, in words. */
export function describe(event) {
  switch (event.type) {
    case 'client.connected': return `from ${event.peer}`;
    case 'client.named': return event.oldName === null ? `as ${event.clientId}` : `was ${event.oldName}`;
    case 'client.message': return clip(JSON.stringify(event.message) ?? '');
    case 'message.dropped': return `message ${event.messageId}, queue full`;
    case 'client.disconnected': return event.reason;
    case 'client.groups': return event.groups.length === 0 ? 'in no group' : `in ${event.groups.join(', ')}`;
    case MISSED: return `${event.missed} events were lost`;
    default: return '';
  }
}

function clip(text) {
  return text.length > DETAIL_CHARS ? `${text.slice(0, DETAIL_CHARS)}…` : text;
}
