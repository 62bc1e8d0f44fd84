//! The live clients: who is connected, under which name, and how to reach them.
//!
//! [`Registry`] is a cheap-to-clone handle over one mutex holding the clients by
//! session id (in connection order) and a name index. It is the only way to
//! reach a client: sends, broadcasts and kicks go through its verbs, and every
//! change emits its event here. The lock is never held across an `.await` nor
//! during a socket write; per-client counters are atomics updated without it.
//! The registry does not read sockets or speak HTTP. A client's own state is in
//! [`client`], broadcasts in [`fanout`], listings in [`listing`], group
//! membership and group sends in [`groups`], bulk sends in [`bulk`].

mod bulk;
mod client;
mod fanout;
mod groups;
mod listing;

pub use bulk::Delivery;
pub use client::{Client, ClientStats, Registration};
pub use fanout::BroadcastReport;
pub use listing::{ListQuery, Listed, Listing};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::acks::{AckWait, PendingAcks};
use crate::client_auth::ClientAuth;
use crate::config::{ClientAuthMode, Config, DuplicateNames, SlowConsumer};
use crate::events::{EventBus, EventKind};
use crate::fd_budget::FdBudget;
use crate::groups::GroupIndex;
use crate::mailbox::{self, Mailbox};
use crate::metrics::{Metrics, ReasonLabels, ScopeLabels};
use crate::outbox::{Offer, Outbox, Written};
use crate::protocol::{ByeReason, HubFrame, Scope};
use crate::throttle::InboundRate;
use prometheus_client::metrics::gauge::Gauge;

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
    /// In a cluster: `.<node id>` after every message id this node issues, so
    /// that ids are unique cluster-wide (empty on a single node).
    id_suffix: OnceLock<Arc<str>>,
    /// In a cluster: told of every name a session stops holding.
    released: OnceLock<mpsc::UnboundedSender<Released>>,
}

/// A name that a session of this node stopped holding (it left, was renamed
/// or kicked), for the cluster's name table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The name.
    pub name: Arc<str>,
    /// The session that held it.
    pub session: u64,
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
    /// In a cluster: the name table could not be reached.
    #[error("the cluster's name table cannot be reached")]
    Unavailable,
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
                id_suffix: OnceLock::new(),
                released: OnceLock::new(),
            }),
        }
    }

    /// How `sync` tokens are checked, when clients must authenticate.
    pub fn client_auth(&self) -> Option<&ClientAuth> {
        self.inner.client_auth.as_ref()
    }

    /// What a `sync` for a name another connection holds does.
    pub fn duplicate_names(&self) -> DuplicateNames {
        self.inner.duplicate_names
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
        self.sync_shared(client, Arc::from(name))
    }

    /// [`Registry::sync`] with a name the caller keeps too (the cluster's
    /// record of the names it holds): one copy of it for both.
    pub fn sync_shared(&self, client: &Arc<Client>, name: Arc<str>) -> Result<(), SyncError> {
        let (old_name, replaced) = {
            let mut clients = self.lock();
            if !clients.by_session.contains_key(&client.session) {
                return Err(SyncError::Closing);
            }
            let mut current = lock(&client.name);
            if current.as_deref() == Some(&*name) {
                return Ok(());
            }
            let holder = clients.by_name.get(&*name).copied();
            let replaced = match holder {
                Some(_) if self.inner.duplicate_names == DuplicateNames::Reject => {
                    return Err(SyncError::NameTaken);
                }
                Some(holder) => clients.remove_session(holder),
                None => None,
            };
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
        if let Some(old) = &old_name {
            self.released(Arc::clone(old), client.session);
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

    /// Whether `client`'s connection is still registered (not ended).
    pub fn is_connected(&self, client: &Client) -> bool {
        self.lock().by_session.contains_key(&client.session)
    }

    /// The live client named `name`, if session `session` still holds it.
    pub fn holder(&self, name: &str, session: u64) -> Option<Arc<Client>> {
        self.get(name).filter(|client| client.session == session)
    }

    /// Pushes `message` to the client named `name`; returns the message id.
    pub fn send_to(&self, name: &str, message: &Value) -> Result<String, SendError> {
        let client = self.get(name).ok_or(SendError::NotFound)?;
        self.send_to_client(&client, message)
    }

    /// Pushes `message` to `client`; returns the message id.
    pub fn send_to_client(
        &self,
        client: &Arc<Client>,
        message: &Value,
    ) -> Result<String, SendError> {
        let id = self.next_message_id();
        self.push_direct(client, &id, message)?;
        Ok(id)
    }

    /// Pushes `message` to the client named `name`, like [`Registry::send_to`],
    /// and returns a wait for the client's `ack` of it.
    pub fn send_awaiting_ack(&self, name: &str, message: &Value) -> Result<AckWait, SendError> {
        let client = self.get(name).ok_or(SendError::NotFound)?;
        self.send_awaiting_ack_from(&client, message)
    }

    /// Pushes `message` to `client` and returns a wait for its `ack` of it.
    pub fn send_awaiting_ack_from(
        &self,
        client: &Arc<Client>,
        message: &Value,
    ) -> Result<AckWait, SendError> {
        let (number, id) = self.issue_message_id();
        // Registered before the message can reach the client, so that no ack is missed.
        let wait = self.inner.acks.register(client.session, number, id);
        self.push_direct(client, wait.id(), message)?;
        if !self.is_connected(client) {
            // It left before the wait was registered; no disconnect will end it.
            wait.abandon();
        }
        Ok(wait)
    }

    /// Queues a frame the hub itself sends `client` (a reply); false when refused.
    pub fn reply(&self, client: &Client, frame: &Bytes) -> bool {
        self.offer(client, frame) == Offer::Accepted
    }

    /// Disconnects the client named `name` with a `bye`.
    pub fn kick(&self, name: &str, reason: ByeReason) -> Result<(), SendError> {
        self.kick_holder(name, None, reason)
    }

    /// Disconnects the client named `name` with a `bye`, if `session` (when
    /// given) is the one holding it.
    pub fn kick_holder(
        &self,
        name: &str,
        session: Option<u64>,
        reason: ByeReason,
    ) -> Result<(), SendError> {
        let client = {
            let mut clients = self.lock();
            let holder = clients
                .by_name
                .get(name)
                .copied()
                .filter(|holder| session.is_none_or(|session| session == *holder))
                .ok_or(SendError::NotFound)?;
            clients.remove_session(holder).ok_or(SendError::NotFound)?
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

    /// Takes a client's ack of a stored message another node of the cluster
    /// issued: counted and published like any ack.
    pub(crate) fn stored_message_acked(&self, client: &Client, message_id: String) {
        self.inner.metrics.acks.inc();
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
        if let Some(name) = client.name() {
            self.released(name, client.session);
        }
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

    /// Joins a cluster: message ids get `.<node_id>` after their number, and
    /// every name a session stops holding is sent to `released`. Done once,
    /// before the hub serves anyone; a second call changes nothing.
    pub fn join_cluster(&self, node_id: &str, released: mpsc::UnboundedSender<Released>) {
        let _ = self.inner.id_suffix.set(Arc::from(format!(".{node_id}")));
        let _ = self.inner.released.set(released);
    }

    fn released(&self, name: Arc<str>, session: u64) {
        if let Some(released) = self.inner.released.get() {
            // The receiver lives as long as the cluster; after it, nobody asks.
            let _ = released.send(Released { name, session });
        }
    }

    /// The id of message `number`: `m<number>`, and in a cluster `.<node id>` after it.
    pub fn message_id(&self, number: u64) -> String {
        match self.inner.id_suffix.get() {
            Some(suffix) => format!("m{number}{suffix}"),
            None => format!("m{number}"),
        }
    }

    /// The number of a message id this hub issued.
    pub(crate) fn issued(&self, id: &str) -> bool {
        self.issued_message(id).is_some()
    }

    fn issued_message(&self, id: &str) -> Option<u64> {
        let id = match self.inner.id_suffix.get() {
            Some(suffix) => id.strip_suffix(&**suffix)?,
            None => id,
        };
        let number: u64 = id.strip_prefix('m')?.parse().ok()?;
        let issued = 1..self.inner.next_message.load(Ordering::Relaxed);
        issued.contains(&number).then_some(number)
    }

    fn next_message_id(&self) -> String {
        self.issue_message_id().1
    }

    /// A new message number and its id.
    pub(crate) fn issue_message_id(&self) -> (u64, String) {
        let number = self.inner.next_message.fetch_add(1, Ordering::Relaxed);
        (number, self.message_id(number))
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
        if let Some(name) = lock(&client.name).as_ref()
            && self.by_name.get(name) == Some(&session)
        {
            self.by_name.remove(name);
            self.named_changed();
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
