//! One connected client as the registry holds it, and the registration that
//! removes it when its connection task ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;

use super::{Registry, lock, unix_millis};
use crate::outbox::{FrameSink, Outbox, Written};

/// One connected TCP client as the hub sees it.
#[derive(Debug)]
pub struct Client {
    pub(super) session: u64,
    pub(super) peer: SocketAddr,
    /// Milliseconds since the Unix epoch (half a `SystemTime`: this struct is
    /// kept once per connection).
    pub(super) connected_at_ms: u64,
    pub(super) name: Mutex<Option<Arc<str>>>,
    /// Its groups, sorted; changed only under the registry lock, with the index.
    /// (A boxed slice, not a `Vec`: 8 bytes less keep `Client` in a smaller
    /// allocation class, and this struct is kept once per connection.)
    pub(super) groups: Mutex<Box<[Arc<str>]>>,
    pub(super) socket: Option<TcpStream>,
    pub(super) outbox: Outbox,
    pub(super) stats: ClientStats,
    /// Bytes of its unfinished inbound frame counted in the hub's pending total.
    pub(super) pending_in: AtomicUsize,
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

    pub(super) fn sink(&self) -> Option<&dyn FrameSink> {
        self.socket.as_ref().map(|socket| socket as &dyn FrameSink)
    }

    pub(super) fn record_written(&self, written: Written) {
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
    pub(super) registry: Registry,
    pub(super) client: Arc<Client>,
    pub(super) ended_by_error: bool,
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
