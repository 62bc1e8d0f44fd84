// The mailbox panel: the names with stored messages (GET /mailboxes), each with how many,
// their size and the age of the oldest, and a purge button (DELETE /mailboxes/{name}).
// It knows nothing of the page around it: app.js hands it the API and the formatters, and
// tells it when the hub's mailboxes may have changed.

/** Names shown; the summary says how many there are in all. */
const SHOWN = 50;
/** Mailbox events arrive one per stored or delivered message: re-read at most this often. */
const CHANGE_DEBOUNCE_MS = 200;
const PURGE_CONFIRM_MS = 4000;

/** The event types after which the listing is re-read. */
export const MAILBOX_EVENTS = ['message.stored', 'message.delivered', 'message.expired'];

export class MailboxPanel {
  /**
   * `elements`: the table body, the empty notice, the summary and the result line.
   * `hub`: { api(path, init), problemDetail(response), isRefused(error) }.
   * `format`: { count(n), bytes(n), time(element, iso) }.
   */
  constructor(elements, hub, format) {
    this.elements = elements;
    this.hub = hub;
    this.format = format;
    this.timer = null;
    this.running = false;
    this.again = false;
    elements.body.addEventListener('click', (event) => {
      const button = event.target.closest('button[data-action=purge]');
      if (button) this.purge(button, button.closest('tr'));
    });
  }

  /** Something changed (a mailbox event): re-read soon, once for a burst of them. */
  changed() {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.refresh();
    }, CHANGE_DEBOUNCE_MS);
  }

  /** Re-reads the listing now; a call while one runs makes it run once more afterwards. */
  async refresh() {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      const response = await this.hub.api(`/mailboxes?limit=${SHOWN}`);
      if (!response.ok) throw new Error(await this.hub.problemDetail(response));
      this.render(await response.json());
    } catch (error) {
      if (!this.hub.isRefused(error)) this.showResult(error.message, true);
    } finally {
      this.running = false;
    }
    if (this.again) {
      this.again = false;
      this.refresh();
    }
  }

  render(list) {
    const { body, empty, summary } = this.elements;
    const rows = new Map([...body.children].map((row) => [row.dataset.name, row]));
    const wanted = new Set(list.mailboxes.map((mailbox) => mailbox.name));
    for (const [name, row] of rows) {
      if (!wanted.has(name)) row.remove();
    }
    list.mailboxes.forEach((mailbox, position) => {
      const row = rows.get(mailbox.name) ?? this.createRow(mailbox.name);
      this.updateRow(row, mailbox);
      if (body.children[position] !== row) body.insertBefore(row, body.children[position] ?? null);
    });
    empty.hidden = list.mailboxes.length > 0;
    const messages = list.mailboxes.reduce((sum, mailbox) => sum + mailbox.pending, 0);
    summary.textContent = list.total === 0 ? 'Nothing stored'
      : list.total > list.mailboxes.length
        ? `First ${this.format.count(list.mailboxes.length)} of ${this.format.count(list.total)} names`
        : `${this.format.count(list.total)} ${list.total === 1 ? 'name' : 'names'}, `
          + `${this.format.count(messages)} ${messages === 1 ? 'message' : 'messages'}`;
  }

  createRow(name) {
    const row = document.createElement('tr');
    row.className = 'mailbox-row';
    row.dataset.name = name;
    row.innerHTML = `
      <td class="name"></td>
      <td class="num pending"></td>
      <td class="num bytes"></td>
      <td><time class="oldest" data-relative></time></td>
      <td class="actions">
        <button type="button" class="small danger" data-action="purge">Purge</button>
      </td>`;
    row.querySelector('.name').textContent = name;
    return row;
  }

  updateRow(row, mailbox) {
    row.querySelector('.pending').textContent = this.format.count(mailbox.pending);
    row.querySelector('.bytes').textContent = this.format.bytes(mailbox.bytes);
    this.format.time(row.querySelector('.oldest'), mailbox.oldestAt);
  }

  async purge(button, row) {
    // The first click arms the button, so a stray click never deletes anything.
    if (!button.classList.contains('armed')) {
      button.classList.add('armed');
      button.textContent = 'Confirm';
      setTimeout(() => {
        button.classList.remove('armed');
        button.textContent = 'Purge';
      }, PURGE_CONFIRM_MS);
      return;
    }
    const { name } = row.dataset;
    button.disabled = true;
    try {
      const response = await this.hub.api(`/mailboxes/${encodeURIComponent(name)}`, { method: 'DELETE' });
      if (!response.ok) throw new Error(await this.hub.problemDetail(response));
      this.showResult(`Purged the messages stored for ${name}.`, false);
      await this.refresh();
    } catch (error) {
      button.disabled = false;
      if (!this.hub.isRefused(error)) this.showResult(error.message, true);
    }
  }

  showResult(text, isError) {
    const { result } = this.elements;
    result.textContent = text;
    result.classList.toggle('error', isError);
    result.classList.toggle('ok', !isError);
  }
}
