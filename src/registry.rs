//! The live clients: who is connected, under which name, and how to reach them.
//!
//! [`Registry`] is a cheap-to-clone handle over one mutex holding the clients by
//! session id (in connection order) and a name index. It is the only way to
//! reach a client: sends, broadcasts and kicks go through its verbs, and every
//! change emits its event here. The lock is never held across an `.await` nor
//! during a socket write; per-client counters are atomics updated without it.
//! The registry does not read sockets or speak HTTP. Group membership and group
//! sends live in [`groups`], bulk sends in [`bulk`].

mod bulk;
mod groups;

pub use bulk::Delivery;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::acks::{AckWait, PendingAcks};
use crate::client_auth::ClientAuth;
use crate::config::{ClientAuthMode, Config, DuplicateNames, SlowConsumer};
use crate::events::{EventBus, EventKind};
use crate::fd_budget::FdBudget;
use crate::groups::GroupIndex;
use crate::mailbox::{self, Mailbox};
use crate::metrics::{Metrics, ReasonLabels, ScopeLabels};
use crate::outbox::{FrameSink, Offer, Outbox, Written};
use crate::protocol::{ByeReason, HubFrame, Scope};
use crate::throttle::InboundRate;
use prometheus_client::metrics::gauge::Gauge;

/// Broadcasts to at least this many clients are spread over several cores.
const PARALLEL_FANOUT_MIN: usize = 2048;

/// Threads a large broadcast writes from: all cores but one, which stays free
/// for the connection tasks and the HTTP API (and, on a small machine, for the
/// clients' side of the loopback writes).
fn fanout_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get().saturating_sub(1).max(1))
}

/// Handle to the shared registry of live clients.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_frame_bytes: usize,
    client_rate: InboundRate,
    max_pending_bytes: usize,
    close_grace: Duration,
    duplicate_names: DuplicateNames,
    max_clients: usize,
    queue_capacity: usize,
    slow_consumer: SlowConsumer,
    clients: Mutex<Clients>,
    next_session: AtomicU64,
    next_message: AtomicU64,
    events: EventBus,
    acks: Arc<PendingAcks>,
    mailbox: Mailbox,
    metrics: Metrics,
    /// Set when clients must prove their names; then only named clients get broadcasts.
    client_auth: Option<ClientAuth>,
    /// Most groups one connection may be in.
    max_groups: usize,
}

#[derive(Debug, Default)]
struct Clients {
    /// Session numbers increase, so this map is in connection order.
    by_session: BTreeMap<u64, Arc<Client>>,
    by_name: HashMap<Arc<str>, u64>,
    /// The `clients_named` metric, kept equal to `by_name.len()` by every change to it.
    named_gauge: Gauge,
    /// Group → members, kept equal to the clients' own sets by every change to them.
    groups: GroupIndex<Arc<Client>>,
    shutting_down: bool,
}

/// One connected TCP client as the hub sees it.
#[derive(Debug)]
pub struct Client {
    session: u64,
    peer: SocketAddr,
    /// Milliseconds since the Unix epoch (half a `SystemTime`: this struct is
    /// kept once per connection).
    connected_at_ms: u64,
    name: Mutex<Option<Arc<str>>>,
    /// Its groups, sorted; changed only under the registry lock, with the index.
    /// (A boxed slice, not a `Vec`: 8 bytes less keep `Client` in a smaller
    /// allocation class, and this struct is kept once per connection.)
    groups: Mutex<Box<[Arc<str>]>>,
    socket: Option<TcpStream>,
    outbox: Outbox,
    stats: ClientStats,
    /// Bytes of its unfinished inbound frame counted in the hub's pending total.
    pending_in: AtomicUsize,
}

/// Per-client counters, updated without the registry lock.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Frames written.
    pub frames_out: AtomicU64,
    /// Bytes written.
    pub bytes_out: AtomicU64,
    /// Pushed messages dropped on a full queue.
    pub dropped: AtomicU64,
    /// Milliseconds since the Unix epoch of the last frame received (or the connect).
    pub last_active_ms: AtomicU64,
}

impl Client {
    /// The session id, opaque and unique for the process.
    pub fn id(&self) -> String {
        format!("c{}", self.session)
    }

    /// The session number (the `n` of its id `c<n>`).
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The remote address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// When the connection was accepted.
    pub fn connected_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.connected_at_ms)
    }

    /// When the client last sent a frame (or connected).
    pub fn last_active_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.stats.last_active_ms.load(Ordering::Relaxed))
    }

    /// The registered name, if any.
    pub fn name(&self) -> Option<Arc<str>> {
        lock(&self.name).clone()
    }

    /// Its groups, sorted.
    pub fn groups(&self) -> Vec<Arc<str>> {
        lock(&self.groups).to_vec()
    }

    /// Its counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Frames waiting in its outbound queue.
    pub fn queue_len(&self) -> usize {
        self.outbox.len()
    }

    /// Its outbound queue.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The socket, when the hub may write to it directly.
    pub fn socket(&self) -> Option<&TcpStream> {
        self.socket.as_ref()
    }

    /// Notes that a frame of `bytes` arrived.
    pub fn record_inbound(&self, frames: u64, bytes: u64) {
        self.stats.frames_in.fetch_add(frames, Ordering::Relaxed);
        self.stats.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        self.stats
            .last_active_ms
            .store(unix_millis(SystemTime::now()), Ordering::Relaxed);
    }

    fn sink(&self) -> Option<&dyn FrameSink> {
        self.socket.as_ref().map(|socket| socket as &dyn FrameSink)
    }

    fn record_written(&self, written: Written) {
        self.stats
            .frames_out
            .fetch_add(written.frames, Ordering::Relaxed);
        self.stats
            .bytes_out
            .fetch_add(written.bytes, Ordering::Relaxed);
    }
}

/// A connection the registry admitted; dropping it removes the client and emits
/// `client.disconnected`, however the connection task ends.
#[derive(Debug)]
pub struct Registration {
    registry: Registry,
    client: Arc<Client>,
    ended_by_error: bool,
}

impl Registration {
    /// The registry it belongs to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registered client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Marks the connection as ended by an I/O error rather than a clean close.
    pub fn ended_by_error(&mut self) {
        self.ended_by_error = true;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let reason = match self.client.outbox.closing() {
            Some(bye) => bye.as_str(),
            None if self.ended_by_error => "error",
            None => "closed",
        };
        self.registry.remove(&self.client, reason);
    }
}

/// The outcome of a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Registered (unnamed).
    Admitted(Registration),
    /// Refused: the client has its `bye` queued and must be closed.
    Refused(Arc<Client>),
}

/// Why a `sync` did not register the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Another connection holds it and duplicates are rejected.
    #[error("the name is held by another connection")]
    NameTaken,
    /// The connection is being closed.
    #[error("the connection is closing")]
    Closing,
}

/// Why a message was not sent to a named client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No live client has that name.
    #[error("no live client has that name")]
    NotFound,
    /// Its queue is full; nothing was queued.
    #[error("the client's queue is full")]
    Backlogged,
}

/// The message id and what a broadcast reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastReport {
    /// The message id.
    pub id: String,
    /// Live clients when it was sent.
    pub recipients: usize,
    /// Clients that accepted it into their queue (or got it written at once).
    pub queued: usize,
    /// Clients whose queue was full.
    pub dropped: usize,
}

/// What part of a broadcast reached.
#[derive(Debug, Default)]
struct FanOut {
    recipients: usize,
    queued: usize,
    dropped: usize,
    written: Written,
}

impl FanOut {
    fn add(&mut self, other: FanOut) {
        self.recipients += other.recipients;
        self.queued += other.queued;
        self.dropped += other.dropped;
        self.written.frames += other.written.frames;
        self.written.bytes += other.written.bytes;
    }
}

/// A client as [`Registry::list`] saw it.
#[derive(Debug)]
pub struct Listed {
    /// The client.
    pub client: Arc<Client>,
    /// Its name when it was listed.
    pub name: Option<Arc<str>>,
}

/// Which clients `list` returns.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Only named (`true`) or unnamed (`false`) clients.
    pub named: Option<bool>,
    /// Skip this many matches.
    pub offset: usize,
    /// Return at most this many.
    pub limit: usize,
}

impl Registry {
    /// An empty registry with the limits and policies of `config`.
    ///
    /// Clients are admitted up to `--max-clients` or what the open-files limit
    /// leaves for them, whichever is lower (see [`FdBudget`]).
    pub fn new(config: &Config) -> Registry {
        Registry::with_mailbox(config, Mailbox::memory(config), 1)
    }

    /// An empty registry whose stored messages are in `mailbox`; message ids
    /// start at `m<next_message>`.
    pub fn with_mailbox(config: &Config, mailbox: Mailbox, next_message: u64) -> Registry {
        let metrics = Metrics::default();
        let max_clients = FdBudget::current(config).clients;
        metrics
            .clients_limit
            .set(i64::try_from(max_clients).unwrap_or(i64::MAX));
        Registry {
            inner: Arc::new(Inner {
                max_frame_bytes: config.max_frame_bytes,
                client_rate: config.client_rate,
                max_pending_bytes: config.max_pending_bytes,
                close_grace: config.shutdown_grace,
                duplicate_names: config.duplicate_names,
                max_clients,
                queue_capacity: config.queue_capacity,
                slow_consumer: config.slow_consumer,
                clients: Mutex::new(Clients {
                    named_gauge: metrics.clients_named.clone(),
                    ..Clients::default()
                }),
                next_session: AtomicU64::new(1),
                next_message: AtomicU64::new(next_message),
                events: EventBus::new(config.event_buffer),
                acks: Arc::default(),
                mailbox,
                metrics,
                client_auth: match (config.client_auth, &config.client_secret) {
                    (ClientAuthMode::Jwt, Some(secret)) => {
                        Some(ClientAuth::hs256(secret.as_bytes()))
                    }
                    _ => None,
                },
                max_groups: config.max_groups_per_client,
            }),
        }
    }

    /// How `sync` tokens are checked, when clients must authenticate.
    pub fn client_auth(&self) -> Option<&ClientAuth> {
        self.inner.client_auth.as_ref()
    }

    /// The stored messages of names.
    pub fn mailbox(&self) -> &Mailbox {
        &self.inner.mailbox
    }

    /// Longest inbound frame a connection accepts.
    pub fn max_frame_bytes(&self) -> usize {
        self.inner.max_frame_bytes
    }

    /// How long a closing connection may spend flushing what is queued for it.
    pub fn close_grace(&self) -> Duration {
        self.inner.close_grace
    }

    /// How fast each TCP client may send.
    pub fn client_rate(&self) -> &InboundRate {
        &self.inner.client_rate
    }

    /// Notes that a connection stopped reading until its rate allows.
    pub fn record_throttled(&self) {
        self.inner.metrics.inbound_throttled.inc();
    }

    /// Sets how many bytes `client` holds in its unfinished frame. Growth that
    /// would take the hub's total past `--max-pending-bytes` is refused: the
    /// client's share is released and the caller must close it.
    pub fn hold_pending(&self, client: &Client, len: usize) -> bool {
        let pending = &self.inner.metrics.inbound_pending_bytes;
        let held = client.pending_in.load(Ordering::Relaxed);
        if len <= held {
            pending.dec_by((held - len) as i64);
            client.pending_in.store(len, Ordering::Relaxed);
            return true;
        }
        let growth = (len - held) as i64;
        let before = pending.inc_by(growth);
        if before + growth <= self.inner.max_pending_bytes as i64 {
            client.pending_in.store(len, Ordering::Relaxed);
            return true;
        }
        pending.dec_by(growth + held as i64);
        client.pending_in.store(0, Ordering::Relaxed);
        self.inner.metrics.inbound_pending_refused.inc();
        false
    }

    /// The hub's events.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// The hub's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Most live clients admitted at once.
    pub fn max_clients(&self) -> usize {
        self.inner.max_clients
    }

    /// Counts a connection refused with `bye` `server_full` before it could be
    /// admitted (when the process had no descriptor left for it).
    pub fn count_refused_full(&self) {
        self.count_disconnect(ByeReason::ServerFull.as_str());
    }

    /// Admits a new connection, unnamed, unless the hub is full or shutting down.
    pub fn connect(&self, peer: SocketAddr, socket: Option<TcpStream>) -> Admission {
        let now = SystemTime::now();
        let client = Arc::new(Client {
            session: self.inner.next_session.fetch_add(1, Ordering::Relaxed),
            peer,
            connected_at_ms: unix_millis(now),
            name: Mutex::new(None),
            groups: Mutex::default(),
            socket,
            outbox: Outbox::default(),
            pending_in: AtomicUsize::new(0),
            stats: ClientStats {
                last_active_ms: AtomicU64::new(unix_millis(now)),
                ..ClientStats::default()
            },
        });
        let refusal = {
            let mut clients = self.lock();
            if clients.shutting_down {
                Some(ByeReason::Shutdown)
            } else if clients.by_session.len() >= self.inner.max_clients {
                Some(ByeReason::ServerFull)
            } else {
                clients
                    .by_session
                    .insert(client.session, Arc::clone(&client));
                None
            }
        };
        if let Some(reason) = refusal {
            client.outbox.close(reason);
            self.count_disconnect(reason.as_str());
            return Admission::Refused(client);
        }
        self.inner.metrics.connections.inc();
        self.inner.metrics.clients_connected.inc();
        self.emit(&client, EventKind::Connected);
        Admission::Admitted(Registration {
            registry: self.clone(),
            client,
            ended_by_error: false,
        })
    }

    /// Registers `name` for `client`, or renames it.
    pub fn sync(&self, client: &Arc<Client>, name: &str) -> Result<(), SyncError> {
        let (old_name, replaced) = {
            let mut clients = self.lock();
            if !clients.by_session.contains_key(&client.session) {
                return Err(SyncError::Closing);
            }
            let mut current = lock(&client.name);
            if current.as_deref() == Some(name) {
                return Ok(());
            }
            let holder = clients.by_name.get(name).copied();
            let replaced = match holder {
                Some(_) if self.inner.duplicate_names == DuplicateNames::Reject => {
                    return Err(SyncError::NameTaken);
                }
                Some(holder) => clients.remove_session(holder),
                None => None,
            };
            let name: Arc<str> = Arc::from(name);
            let old_name = current.replace(Arc::clone(&name));
            if let Some(old) = &old_name {
                clients.by_name.remove(old);
            }
            clients.by_name.insert(name, client.session);
            clients.named_changed();
            (old_name, replaced)
        };
        if let Some(replaced) = replaced {
            replaced.outbox.close(ByeReason::Replaced);
        }
        self.emit(client, EventKind::Named { old_name });
        Ok(())
    }

    /// The live client registered as `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Client>> {
        let clients = self.lock();
        let session = clients.by_name.get(name)?;
        clients.by_session.get(session).cloned()
    }

    /// Live clients matching `query`, oldest first, and how many match in all.
    ///
    /// Each comes with the name it held while the registry was locked: read
    /// later, a name could already have moved to another connection (which
    /// would then show twice) or be a replaced connection's last name.
    pub fn list(&self, query: &ListQuery) -> (usize, Vec<Listed>) {
        let clients = self.lock();
        let listed = |client: &Arc<Client>| Listed {
            client: Arc::clone(client),
            name: client.name(),
        };
        let prefix = query.prefix.as_deref().filter(|prefix| !prefix.is_empty());
        if prefix.is_none() && query.named.is_none() {
            let total = clients.by_session.len();
            let page = clients
                .by_session
                .values()
                .skip(query.offset)
                .take(query.limit);
            return (total, page.map(listed).collect());
        }
        let mut total = 0;
        let mut page = Vec::new();
        for client in clients.by_session.values() {
            let name = lock(&client.name);
            let wanted = query.named.is_none_or(|named| named == name.is_some())
                && prefix
                    .is_none_or(|prefix| name.as_deref().is_some_and(|n| n.starts_with(prefix)));
            if wanted {
                if total >= query.offset && page.len() < query.limit {
                    page.push(Listed {
                        client: Arc::clone(client),
                        name: name.clone(),
                    });
                }
                total += 1;
            }
        }
        (total, page)
    }

    /// Live clients.
    pub fn len(&self) -> usize {
        self.lock().by_session.len()
    }

    /// Sends waiting for their client's ack right now.
    pub fn acks_waiting(&self) -> usize {
        self.inner.acks.len()
    }

    /// Whether no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pushes `message` to the client named `name`; returns the message id.
    pub fn send_to(&self, name: &str, message: &Value) -> Result<String, SendError> {
        let client = self.get(name).ok_or(SendError::NotFound)?;
        let id = self.next_message_id();
        self.push_direct(&client, &id, message)?;
        Ok(id)
    }

    /// Pushes `message` to the client named `name`, like [`Registry::send_to`],
    /// and returns a wait for the client's `ack` of it.
    pub fn send_awaiting_ack(&self, name: &str, message: &Value) -> Result<AckWait, SendError> {
        let client = self.get(name).ok_or(SendError::NotFound)?;
        let number = self.inner.next_message.fetch_add(1, Ordering::Relaxed);
        // Registered before the message can reach the client, so that no ack is missed.
        let wait = self
            .inner
            .acks
            .register(client.session, number, format!("m{number}"));
        self.push_direct(&client, wait.id(), message)?;
        if !self.lock().by_session.contains_key(&client.session) {
            // It left before the wait was registered; no disconnect will end it.
            wait.abandon();
        }
        Ok(wait)
    }

    /// Pushes `message` to every live client, serialized once for all of them.
    pub fn broadcast(&self, message: &Value) -> BroadcastReport {
        // With client authentication on, a connection proves itself by its `sync`:
        // until then it is told nothing.
        let authenticated_only = self.inner.client_auth.is_some();
        let recipients: Vec<Arc<Client>> = self
            .lock()
            .by_session
            .values()
            .filter(|client| !authenticated_only || client.name().is_some())
            .cloned()
            .collect();
        let id = self.next_message_id();
        let frame = HubFrame::Message {
            id: &id,
            scope: Scope::Broadcast,
            group: None,
            message,
        }
        .encode();
        let report = self.fan_out(&recipients, &frame, id, Scope::Broadcast);
        self.inner
            .metrics
            .broadcast_fanout
            .observe(report.recipients as f64);
        report
    }

    /// Writes or queues one encoded `frame` (message `id`) for every recipient,
    /// on several threads when they are many.
    fn fan_out(
        &self,
        recipients: &[Arc<Client>],
        frame: &Bytes,
        id: String,
        scope: Scope,
    ) -> BroadcastReport {
        let threads = fanout_threads();
        let tally = if recipients.len() < PARALLEL_FANOUT_MIN || threads < 2 {
            self.deliver_to_all(recipients, frame, &id)
        } else {
            self.deliver_in_parallel(recipients, frame, &id, threads)
        };
        self.record_written(tally.written);
        self.count_queued(scope, tally.queued as u64);
        BroadcastReport {
            id,
            recipients: tally.recipients,
            queued: tally.queued,
            dropped: tally.dropped,
        }
    }

    /// Fans `frame` out over `threads` threads, each writing to its share of the
    /// recipients (a socket write is the whole cost of a delivery).
    fn deliver_in_parallel(
        &self,
        recipients: &[Arc<Client>],
        frame: &Bytes,
        id: &str,
        threads: usize,
    ) -> FanOut {
        let share = recipients.len().div_ceil(threads);
        let mut shares = recipients.chunks(share);
        let own = shares.next().unwrap_or_default();
        std::thread::scope(|scope| {
            let others: Vec<_> = shares
                .map(|share| scope.spawn(move || self.deliver_to_all(share, frame, id)))
                .collect();
            let mut tally = self.deliver_to_all(own, frame, id);
            for other in others {
                // A delivery thread only panics on a bug; its share is then unreported.
                tally.add(other.join().unwrap_or_default());
            }
            tally
        })
    }

    /// Offers `frame` to each client in turn.
    fn deliver_to_all(&self, recipients: &[Arc<Client>], frame: &Bytes, id: &str) -> FanOut {
        let mut tally = FanOut::default();
        for client in recipients {
            let (offer, written) =
                client
                    .outbox
                    .offer(frame, self.inner.queue_capacity, client.sink());
            client.record_written(written);
            tally.written.frames += written.frames;
            tally.written.bytes += written.bytes;
            match offer {
                Offer::Accepted => tally.queued += 1,
                Offer::Full => {
                    self.on_full_queue(client, id);
                    tally.dropped += 1;
                }
                Offer::Closing => continue,
            }
            tally.recipients += 1;
        }
        tally
    }

    /// Queues a frame the hub itself sends `client` (a reply); false when refused.
    pub fn reply(&self, client: &Client, frame: &Bytes) -> bool {
        self.offer(client, frame) == Offer::Accepted
    }

    /// Disconnects the client named `name` with a `bye`.
    pub fn kick(&self, name: &str, reason: ByeReason) -> Result<(), SendError> {
        let client = {
            let mut clients = self.lock();
            let session = clients
                .by_name
                .get(name)
                .copied()
                .ok_or(SendError::NotFound)?;
            clients.remove_session(session).ok_or(SendError::NotFound)?
        };
        client.outbox.close(reason);
        Ok(())
    }

    /// Disconnects every client silent since before `cutoff`.
    pub fn kick_idle(&self, cutoff: SystemTime) -> usize {
        let cutoff = unix_millis(cutoff);
        let idle: Vec<Arc<Client>> = {
            let mut clients = self.lock();
            let sessions: Vec<u64> = clients
                .by_session
                .values()
                .filter(|client| client.stats.last_active_ms.load(Ordering::Relaxed) < cutoff)
                .map(|client| client.session)
                .collect();
            sessions
                .into_iter()
                .filter_map(|session| clients.remove_session(session))
                .collect()
        };
        for client in &idle {
            client.outbox.close(ByeReason::IdleTimeout);
        }
        idle.len()
    }

    /// Refuses new clients from now on and queues `bye` `shutdown` for every live one.
    pub fn shut_down(&self) {
        let clients: Vec<Arc<Client>> = {
            let mut clients = self.lock();
            clients.shutting_down = true;
            clients.by_session.values().cloned().collect()
        };
        for client in clients {
            client.outbox.close(ByeReason::Shutdown);
        }
    }

    /// Whether the hub is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// Publishes what a client said in an `info` frame.
    pub fn client_message(&self, client: &Client, message: Value) {
        self.emit(client, EventKind::Message { message });
    }

    /// Takes a client's acknowledgement of a pushed message: wakes the send
    /// waiting for it and publishes it. Ids the hub never issued are only counted.
    pub fn client_acked(&self, client: &Client, message_id: String) {
        let Some(number) = self.issued_message(&message_id) else {
            self.inner.metrics.acks_unknown.inc();
            return;
        };
        self.inner.metrics.acks.inc();
        self.inner.acks.acknowledge(client.session, number);
        mailbox::delivery::acked(self, client, number);
        self.emit(client, EventKind::Acked { message_id });
    }

    /// Counts bytes and frames the connection task wrote for `client`.
    pub fn record_written_for(&self, client: &Client, written: Written) {
        client.record_written(written);
        self.record_written(written);
    }

    /// Counts frames and bytes a connection received.
    pub fn record_inbound(&self, client: &Client, frames: u64, bytes: u64) {
        client.record_inbound(frames, bytes);
        self.inner.metrics.frames_in.inc_by(frames);
        self.inner.metrics.bytes_in.inc_by(bytes);
    }

    fn push_direct(
        &self,
        client: &Arc<Client>,
        id: &str,
        message: &Value,
    ) -> Result<(), SendError> {
        let frame = HubFrame::Message {
            id,
            scope: Scope::Direct,
            group: None,
            message,
        }
        .encode();
        match self.offer(client, &frame) {
            Offer::Accepted => {
                self.count_queued(Scope::Direct, 1);
                Ok(())
            }
            Offer::Full => {
                self.on_full_queue(client, id);
                Err(SendError::Backlogged)
            }
            Offer::Closing => Err(SendError::NotFound),
        }
    }

    fn offer(&self, client: &Client, frame: &Bytes) -> Offer {
        let (offer, written) = client
            .outbox
            .offer(frame, self.inner.queue_capacity, client.sink());
        self.record_written_for(client, written);
        offer
    }

    fn on_full_queue(&self, client: &Arc<Client>, message_id: &str) {
        client.stats.dropped.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.messages_dropped.inc();
        self.emit(
            client,
            EventKind::Dropped {
                message_id: Arc::from(message_id),
            },
        );
        if self.inner.slow_consumer == SlowConsumer::Disconnect {
            let removed = self.lock().remove_session(client.session);
            if removed.is_some() {
                client.outbox.close(ByeReason::SlowConsumer);
            }
        }
    }

    fn remove(&self, client: &Arc<Client>, reason: &'static str) {
        self.lock().remove_session(client.session);
        self.hold_pending(client, 0);
        self.inner.metrics.clients_connected.dec();
        self.inner.acks.forget_session(client.session);
        self.count_disconnect(reason);
        self.emit(client, EventKind::Disconnected { reason });
    }

    fn count_disconnect(&self, reason: &'static str) {
        self.inner
            .metrics
            .disconnections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    fn count_queued(&self, scope: Scope, messages: u64) {
        let scope = match scope {
            Scope::Direct => "direct",
            Scope::Broadcast => "broadcast",
            Scope::Group => "group",
        };
        self.inner
            .metrics
            .messages_queued
            .get_or_create(&ScopeLabels { scope })
            .inc_by(messages);
    }

    fn record_written(&self, written: Written) {
        self.inner.metrics.frames_out.inc_by(written.frames);
        self.inner.metrics.bytes_out.inc_by(written.bytes);
    }

    pub(crate) fn emit(&self, client: &Client, kind: EventKind) {
        self.inner
            .events
            .emit(|| (client.id(), client.name(), client.peer), kind);
    }

    /// The number of a message id this hub issued (`m<number>`).
    fn issued_message(&self, id: &str) -> Option<u64> {
        let number: u64 = id.strip_prefix('m')?.parse().ok()?;
        let issued = 1..self.inner.next_message.load(Ordering::Relaxed);
        issued.contains(&number).then_some(number)
    }

    fn next_message_id(&self) -> String {
        self.issue_message_id().1
    }

    /// A new message number and its id, `m<number>`.
    pub(crate) fn issue_message_id(&self) -> (u64, String) {
        let number = self.inner.next_message.fetch_add(1, Ordering::Relaxed);
        (number, format!("m{number}"))
    }

    fn lock(&self) -> MutexGuard<'_, Clients> {
        lock(&self.inner.clients)
    }
}

impl Clients {
    /// Removes a session and, if it holds one, its name.
    fn remove_session(&mut self, session: u64) -> Option<Arc<Client>> {
        let client = self.by_session.remove(&session)?;
        self.groups.forget(session, &lock(&client.groups));
        if let Some(name) = lock(&client.name).as_ref() {
            if self.by_name.get(name) == Some(&session) {
                self.by_name.remove(name);
                self.named_changed();
            }
        }
        Some(client)
    }

    fn named_changed(&self) {
        self.named_gauge.set(self.by_name.len() as i64);
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
