//! One node's membership of a cluster: its broker connection, the name and
//! node tables, the call transport, and what it knows of the other nodes.
//!
//! [`Membership::join`] connects (or fails with one line naming the broker),
//! starts answering other nodes' calls ([`answer`](super::answer)), beats and
//! sweeps ([`liveness`](super::liveness)), and forwards every name a local
//! session gives up to the name table ([`claims`](super::claims)). The
//! directory's cluster verbs ([`directed`](super::directed),
//! [`gathered`](super::gathered)) use what it holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::Shared;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::broker::{Broker, BrokerOptions, BrokerState, ConnectError};
use super::holders::HolderCache;
use super::mail::{self, Mail};
use super::mailbox::{Limits, SharedStore};
use super::names::Names;
use super::nodes::{NodeRecord, Nodes};
use super::rpc::{Rpc, RpcError};
use super::{ClusterSettings, KvError, answer, claims, liveness};
use crate::directory::{Failure, Node};
use crate::registry::Registry;

/// Why a node could not join its cluster at start.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The broker could not be reached (the message names its URLs).
    #[error(transparent)]
    Broker(#[from] ConnectError),
    /// The name or node table could not be opened.
    #[error(transparent)]
    Table(#[from] KvError),
    /// The mailbox stream could not be opened.
    #[error("opening the cluster's mailbox: {0}")]
    Mailbox(String),
    /// This node's call subjects could not be subscribed.
    #[error("subscribing to the cluster's calls: {0}")]
    Calls(#[from] RpcError),
}

/// Claims (and the mailbox reads before and after each) a node has in flight
/// with the broker at once. A reconnect storm of thousands of `sync`s would
/// otherwise put them all in flight together, each waiting behind all the
/// others, and the client's tables and buffers that held them keep that size
/// afterwards; a few hundred in flight already keep the broker busy.
pub(super) const CLAIMS_IN_FLIGHT: usize = 256;

/// A name a session of this node holds in the name table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Owned {
    /// The session.
    pub session: u64,
    /// The table revision its claim wrote: a release expects it.
    pub revision: u64,
}

/// A claim of one session that has not finished; the session's next claim waits for it.
pub(super) type ClaimInFlight = Shared<oneshot::Receiver<()>>;

/// This node's part in the cluster; shared by the directory and the tasks.
#[derive(Debug)]
pub struct Membership {
    pub(super) settings: ClusterSettings,
    pub(super) registry: Registry,
    pub(super) node: Arc<Node>,
    pub(super) broker: Broker,
    pub(super) names: Names,
    pub(super) nodes: Nodes,
    pub(super) rpc: Rpc,
    /// Who held names this node last called on other nodes.
    pub(super) holders: HolderCache,
    /// The mailbox every node shares.
    pub(super) mail: Mail,
    /// Names this node's sessions hold in the name table.
    pub(super) owned: Mutex<HashMap<Arc<str>, Owned>>,
    /// The live nodes as last read, this one included.
    pub(super) live: Mutex<Vec<NodeRecord>>,
    /// Per session, its claim in flight.
    pub(super) claims: Mutex<HashMap<u64, ClaimInFlight>>,
    /// Sessions whose claim in flight another node's takeover may have
    /// overtaken: the name and the takeover's revision.
    pub(super) superseded: Mutex<HashMap<u64, (Arc<str>, u64)>>,
    /// Claims and mailbox reads talking to the broker at once; the others
    /// wait their turn. See [`CLAIMS_IN_FLIGHT`].
    pub(super) claim_slots: Semaphore,
    /// Cancelled when the node leaves: its tasks end.
    pub(super) stop: CancellationToken,
    /// The runtime the node joined from, where its broker connection lives.
    home: Handle,
}

impl Membership {
    /// Connects node `node` (whose clients are in `registry`) to the cluster
    /// `settings` describe and starts taking part in it.
    pub async fn join(
        registry: Registry,
        node: Arc<Node>,
        settings: ClusterSettings,
    ) -> Result<Arc<Membership>, JoinError> {
        // A broker that misses two pings is noticed within a heartbeat or so.
        let options = BrokerOptions::new(&node.id, settings.heartbeat);
        let broker = Broker::connect(&settings.nats_urls, options).await?;
        let names = Names::open(&broker, &settings).await?;
        let nodes = Nodes::open(&broker, &settings).await?;
        let limits = Limits {
            capacity: registry.mailbox().capacity(),
            max_bytes: registry.mailbox().max_bytes(),
            max_ttl: registry.mailbox().max_ttl(),
        };
        let mail = Mail::new(
            SharedStore::open(&broker, &settings, limits)
                .await
                .map_err(JoinError::Mailbox)?,
        );
        let rpc = Rpc::new(&broker, &settings.cluster_name, &node.id);
        let (released, releases) = mpsc::unbounded_channel();
        registry.join_cluster(&node.id, released);
        let membership = Arc::new(Membership {
            settings,
            registry,
            node,
            broker,
            names,
            nodes,
            rpc,
            holders: HolderCache::default(),
            mail,
            owned: Mutex::default(),
            live: Mutex::default(),
            claims: Mutex::default(),
            superseded: Mutex::default(),
            claim_slots: Semaphore::new(CLAIMS_IN_FLIGHT),
            stop: CancellationToken::new(),
            home: Handle::current(),
        });
        answer::start(&membership).await?;
        liveness::beat_once(&membership).await;
        tokio::spawn(liveness::run(Arc::clone(&membership)));
        tokio::spawn(mail::sweep(Arc::clone(&membership)));
        tokio::spawn(claims::release_all(Arc::clone(&membership), releases));
        info!(
            node = %membership.node.id,
            cluster = %membership.settings.cluster_name,
            broker = %membership.broker.urls(),
            "joined the cluster"
        );
        Ok(membership)
    }

    /// This node's identity.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Runs `task` on the runtime this node joined from, where its broker
    /// connection lives: a task of several round trips with the broker (a
    /// claim) then crosses no thread between them.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.home.spawn(task);
    }

    /// Whether the broker is reachable now.
    pub fn broker_connected(&self) -> bool {
        self.broker.state() == BrokerState::Connected
    }

    /// Leaves the cluster at the end of a drain: waits (up to `patience`) until
    /// the names of the sessions that left are released, then removes this
    /// node's record, so that other nodes stop counting on it at once.
    pub async fn leave(&self, patience: Duration) {
        let released = async {
            while !lock(&self.owned).is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(patience, released).await;
        let _ = self.nodes.remove(&self.node.id).await;
        self.stop.cancel();
        info!(node = %self.node.id, "left the cluster");
    }

    /// The ids of the live nodes, this one always among them.
    pub(super) fn live_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.live).iter().map(|n| n.id.clone()).collect();
        if !ids.contains(&self.node.id) {
            ids.push(self.node.id.clone());
        }
        ids.sort();
        ids
    }

    /// What a broker-side failure means to a caller: the cluster is out of reach.
    pub(super) fn unavailable(&self, err: &dyn std::fmt::Display) -> Failure {
        tracing::debug!(%err, "cluster call failed");
        Failure::ClusterUnavailable
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
