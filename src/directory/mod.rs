//! The directory: the one way the HTTP API and the connection tasks reach
//! clients by name, by group or all at once.
//!
//! Its verbs say what a caller wants (claim a name, look a client up, list,
//! send, broadcast, send to a group, send in bulk, kick) and answer with a
//! plain record ([`ClientView`], [`Reach`], ...) or a [`Failure`], which the
//! API maps to an HTTP status in one place. On a single node every verb ends
//! in this process's [`Registry`] at once: nothing is added to the hot path.
//! In a cluster ([`Membership`]) a name with a live client on this node is
//! still served here without the broker; anything else asks the node that
//! holds the name, or every node. Socket writes of many deliveries run on the
//! blocking pool, off the async workers that serve connections and requests.
//!
//! Calls to one other node are boxed where they are awaited: each holds a
//! broker round trip's state (kilobytes), and the future of a send to a local
//! client, which every API request allocates and moves, should not carry it.

mod bulk;
mod cursor;
mod node;
mod view;

pub use bulk::{BulkItem, BulkStatus, Recipient};
pub use cursor::{BadCursor, Cursor};
pub(crate) use node::host_name;
pub use node::{Node, NodeView};
pub use view::ClientView;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::acks::AckWait;
use crate::cluster::{Membership, StoredEntry};
use crate::groups::{GroupChange, GroupsError};
use crate::mailbox::StoreError;
use crate::mailbox::delivery::{self, Keep, StoreFailure};
use crate::mailbox::memory::Summary;
use crate::metrics::OutcomeLabels;
use crate::protocol::ByeReason;
use crate::registry::{Client, ListQuery, Listing, Registry, SendError, SyncError};

pub use crate::registry::BroadcastReport;

/// Why a verb did not do what was asked. Each maps to one HTTP problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No live client holds the name.
    #[error("no live client is named {0:?}")]
    NotFound(String),
    /// The client's queue is full; nothing was queued.
    #[error("the queue of client {0:?} is full; nothing was queued")]
    Backlogged(String),
    /// The client did not acknowledge in time, or disconnected first.
    #[error("{0}")]
    AckTimeout(String),
    /// A mailbox limit or the disk is full; nothing was stored.
    #[error("{0}")]
    MailboxFull(String),
    /// Group names that break the rules, or too many.
    #[error("{0}")]
    InvalidGroups(String),
    /// The broker cannot be reached and the answer needs it.
    #[error("the cluster's broker cannot be reached: only this node's own clients can be served")]
    ClusterUnavailable,
    /// The node holding the name did not answer in time.
    #[error("node {0} did not answer in time: the message may or may not have been queued")]
    NodeUnreachable(String),
    /// A fault inside the hub (logged where it happened).
    #[error("internal error")]
    Internal,
}

/// What a broadcast or a group send reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The message id and the counts (of the nodes that answered).
    pub report: BroadcastReport,
    /// Nodes that did not answer in time: the counts leave them out.
    pub missing_nodes: Vec<String>,
}

/// A page of clients and how many match in all.
#[derive(Debug)]
pub struct ClientPage {
    /// Clients matching the filters, on all pages.
    pub total: usize,
    /// This page.
    pub clients: Vec<ClientView>,
    /// The cursor of the next page (`after`), when there are more.
    pub next: Option<String>,
    /// Nodes that did not answer in time: their clients are not counted.
    pub missing_nodes: Vec<String>,
}

/// A page of groups, how many there are, and the nodes that did not answer.
#[derive(Debug)]
pub struct GroupPage {
    /// Groups matching, on all pages.
    pub total: usize,
    /// This page: each group's name and member count.
    pub groups: Vec<(String, usize)>,
    /// Nodes that did not answer in time.
    pub missing_nodes: Vec<String>,
}

/// A message pushed to one client, or stored for its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message id, as the client receives it.
    pub id: String,
    /// 1 when it went on the live client's queue, else 0.
    pub queued: usize,
    /// Whether it is in the name's mailbox (`None`: storing was not asked for).
    pub stored: Option<bool>,
}

/// A `sync`'s claim of its name: decided at once on a single node, after a
/// round trip to the name table in a cluster.
pub enum Claiming {
    /// Decided.
    Done(Result<(), SyncError>),
    /// To be awaited off the connection task, with [`Directory::spawn_claiming`].
    Pending(Pin<Box<dyn Future<Output = Result<(), SyncError>> + Send>>),
}

/// The way to every client of the hub.
///
/// One pointer wide: every connection task keeps a copy, and an idle client's
/// task must stay within its allocation class (see `tests/footprint.rs`).
#[derive(Debug, Clone)]
pub struct Directory {
    parts: Arc<Parts>,
}

#[derive(Debug)]
struct Parts {
    registry: Registry,
    node: Arc<Node>,
    cluster: Option<Arc<Membership>>,
}

impl Directory {
    /// A directory of the clients of this process alone.
    pub fn local(registry: Registry, node: Arc<Node>) -> Directory {
        Directory {
            parts: Arc::new(Parts {
                registry,
                node,
                cluster: None,
            }),
        }
    }

    /// A directory of every client of the cluster `membership` belongs to.
    pub fn clustered(registry: Registry, membership: Arc<Membership>) -> Directory {
        Directory {
            parts: Arc::new(Parts {
                registry,
                node: Arc::clone(membership.node()),
                cluster: Some(membership),
            }),
        }
    }

    /// This node's registry: its own clients, events, metrics and mailbox.
    pub fn registry(&self) -> &Registry {
        &self.parts.registry
    }

    /// This node's identity.
    pub fn node(&self) -> &Node {
        &self.parts.node
    }

    /// This node's part in a cluster, if it is in one.
    pub fn cluster(&self) -> Option<&Arc<Membership>> {
        self.parts.cluster.as_ref()
    }

    /// Registers `name` for `client`, or renames it.
    pub fn claim(&self, client: &Arc<Client>, name: &str) -> Claiming {
        match &self.parts.cluster {
            None => Claiming::Done(self.parts.registry.sync(client, name)),
            Some(cluster) => Claiming::Pending(Box::pin(
                Arc::clone(cluster).claim_with_mail(Arc::clone(client), name.to_owned()),
            )),
        }
    }

    /// Runs `task`, which awaits a [`Claiming::Pending`] claim, where the
    /// cluster's broker round trips run (see [`Membership::spawn`]).
    pub fn spawn_claiming(&self, task: impl Future<Output = ()> + Send + 'static) {
        match &self.parts.cluster {
            Some(cluster) => cluster.spawn(task),
            None => drop(tokio::spawn(task)),
        }
    }

    /// The live client named `name`, if it is connected to this node.
    fn live_here(&self, name: &str) -> Option<Arc<Client>> {
        self.parts.registry.get(name)
    }

    /// The live client named `name`.
    pub async fn get(&self, name: &str) -> Result<ClientView, Failure> {
        match (self.live_here(name), &self.parts.cluster) {
            (Some(client), _) => Ok(ClientView::named(
                &client,
                Some(Arc::from(name)),
                &self.parts.node.id,
            )),
            (None, Some(cluster)) => Box::pin(cluster.remote_client(name)).await,
            (None, None) => Err(Failure::NotFound(name.to_owned())),
        }
    }

    /// Live clients matching `query`, after `after`: node by node, each
    /// node's oldest first.
    pub async fn list(
        &self,
        query: &ListQuery,
        after: Option<&Cursor>,
    ) -> Result<ClientPage, Failure> {
        if let Some(cluster) = &self.parts.cluster {
            let page = cluster.list_all(query, after).await?;
            return Ok(ClientPage {
                total: page.total,
                clients: page.clients,
                next: page.next.map(|cursor| cursor.to_string()),
                missing_nodes: page.missing,
            });
        }
        let listing = local_page(&self.parts.registry, &self.parts.node.id, query, after);
        let next = listing.page.last().filter(|_| listing.more).map(|last| {
            Cursor {
                node: self.parts.node.id.clone(),
                session: last.client.session(),
            }
            .to_string()
        });
        let clients = listing
            .page
            .iter()
            .map(|listed| ClientView::listed(listed, &self.parts.node.id))
            .collect();
        Ok(ClientPage {
            total: listing.total,
            clients,
            next,
            missing_nodes: Vec::new(),
        })
    }

    /// The live nodes: on a single node, itself.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, Failure> {
        match &self.parts.cluster {
            Some(cluster) => Ok(cluster.nodes_all().await),
            None => Ok(vec![NodeView::of(
                &self.parts.node,
                self.parts.registry.len(),
            )]),
        }
    }

    /// Pushes `message` to the client named `name`.
    pub async fn send(&self, name: &str, message: &Value) -> Result<Sent, Failure> {
        let id = match (self.live_here(name), &self.parts.cluster) {
            (Some(client), _) => self
                .parts
                .registry
                .send_to_client(&client, message)
                .map_err(|err| send_failure(err, name))?,
            (None, Some(cluster)) => Box::pin(cluster.remote_send(name, message)).await?,
            (None, None) => return Err(Failure::NotFound(name.to_owned())),
        };
        Ok(Sent {
            id,
            queued: 1,
            stored: None,
        })
    }

    /// Pushes `message` to the client named `name` and waits up to `patience`
    /// for its `ack`; returns the message id once acknowledged.
    pub async fn send_awaiting_ack(
        &self,
        name: &str,
        message: &Value,
        patience: Duration,
    ) -> Result<String, Failure> {
        let client = match (self.live_here(name), &self.parts.cluster) {
            (Some(client), _) => client,
            (None, Some(cluster)) => {
                return Box::pin(cluster.remote_send_awaiting_ack(name, message, patience)).await;
            }
            (None, None) => return Err(Failure::NotFound(name.to_owned())),
        };
        let wait = self
            .parts
            .registry
            .send_awaiting_ack_from(&client, message)
            .map_err(|err| send_failure(err, name))?;
        wait_for_ack(&self.parts.registry, name, wait, patience)
            .await
            .map_err(Failure::AckTimeout)
    }

    /// Pushes `message` to the live client named `name`, or stores it for the
    /// name as `keep` says; answers once a stored message is durable.
    ///
    /// In a cluster a live client on another node gets it from there, and a
    /// message for a name with no live client is stored in the cluster's
    /// mailbox stream, for whichever node the name syncs on next.
    pub async fn send_or_store(
        &self,
        name: &str,
        message: &Value,
        keep: Keep,
    ) -> Result<Sent, Failure> {
        let remote = self
            .parts
            .cluster
            .as_ref()
            .filter(|_| !keep.until_ack && self.live_here(name).is_none());
        if let Some(cluster) = remote {
            match Box::pin(cluster.remote_send(name, message)).await {
                Ok(id) => {
                    return Ok(Sent {
                        id,
                        queued: 1,
                        stored: Some(false),
                    });
                }
                Err(Failure::NotFound(_)) => {}
                Err(other) => return Err(other),
            }
        }
        let sent = match &self.parts.cluster {
            Some(cluster) => {
                if let Some(client) = self.live_here(name).filter(|_| !keep.until_ack) {
                    let id = self
                        .parts
                        .registry
                        .send_to_client(&client, message)
                        .map_err(|err| send_failure(err, name))?;
                    return Ok(Sent {
                        id,
                        queued: 1,
                        stored: Some(false),
                    });
                }
                Box::pin(cluster.store_shared(name, message, keep))
                    .await
                    .map_err(|err| store_failure(err.into(), name))?
            }
            None => delivery::send_or_store(&self.parts.registry, name, message, keep)
                .await
                .map_err(|err| store_failure(err, name))?,
        };
        Ok(Sent {
            id: sent.id,
            queued: sent.queued,
            stored: Some(sent.stored),
        })
    }

    /// Pushes `message` to every live client.
    pub async fn broadcast(&self, message: Value) -> Result<Reach, Failure> {
        if let Some(cluster) = &self.parts.cluster {
            let (report, missing_nodes) = cluster.fan_out_all(None, message).await?;
            return Ok(Reach {
                report,
                missing_nodes,
            });
        }
        let registry = self.parts.registry.clone();
        let report = blocking("broadcast", move || registry.broadcast(&message)).await?;
        Ok(Reach {
            report,
            missing_nodes: Vec::new(),
        })
    }

    /// Pushes `message` to every member of `group`.
    pub async fn send_to_group(&self, group: String, message: Value) -> Result<Reach, Failure> {
        if let Some(cluster) = &self.parts.cluster {
            let (report, missing_nodes) = cluster.fan_out_all(Some(group), message).await?;
            return Ok(Reach {
                report,
                missing_nodes,
            });
        }
        let registry = self.parts.registry.clone();
        let report = blocking("group send", move || {
            registry.send_to_group(&group, &message)
        })
        .await?;
        Ok(Reach {
            report,
            missing_nodes: Vec::new(),
        })
    }

    /// Groups with members whose name starts with `prefix`, by name, and how
    /// many there are in all.
    pub async fn groups(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<GroupPage, Failure> {
        if let Some(cluster) = &self.parts.cluster {
            let (total, groups, missing_nodes) = cluster.groups_all(prefix, offset, limit).await?;
            return Ok(GroupPage {
                total,
                groups,
                missing_nodes,
            });
        }
        let (total, page) = self.parts.registry.group_page(prefix, offset, limit);
        let groups = page
            .into_iter()
            .map(|(name, members)| (name.to_string(), members))
            .collect();
        Ok(GroupPage {
            total,
            groups,
            missing_nodes: Vec::new(),
        })
    }

    /// A page of `group`'s members (node by node, each node's oldest first)
    /// and how many it has.
    pub async fn group_members(
        &self,
        group: &str,
        offset: usize,
        limit: usize,
    ) -> Result<ClientPage, Failure> {
        if let Some(cluster) = &self.parts.cluster {
            let page = cluster.group_members_all(group, offset, limit).await?;
            return Ok(ClientPage {
                total: page.total,
                clients: page.clients,
                next: None,
                missing_nodes: page.missing,
            });
        }
        let (total, page) = self.parts.registry.group_members(group, offset, limit);
        let clients = page
            .iter()
            .map(|listed| ClientView::listed(listed, &self.parts.node.id))
            .collect();
        Ok(ClientPage {
            total,
            clients,
            next: None,
            missing_nodes: Vec::new(),
        })
    }

    /// Replaces the group set of the client named `name`; returns the new set.
    pub async fn set_groups_of(
        &self,
        name: &str,
        groups: BTreeSet<Arc<str>>,
    ) -> Result<Vec<String>, Failure> {
        let (Some(cluster), None) = (&self.parts.cluster, self.live_here(name)) else {
            let groups = self
                .parts
                .registry
                .set_groups_of(name, &GroupChange::Replace(groups))
                .map_err(|err| match err {
                    GroupsError::NotFound => Failure::NotFound(name.to_owned()),
                    GroupsError::Invalid(detail) | GroupsError::Forbidden(detail) => {
                        Failure::InvalidGroups(detail)
                    }
                })?;
            return Ok(groups.iter().map(|g| g.to_string()).collect());
        };
        let groups = groups.iter().map(|g| g.to_string()).collect();
        Box::pin(cluster.remote_set_groups(name, groups)).await
    }

    /// Sends each item to its recipients; one outcome per recipient, in order.
    pub async fn send_bulk(&self, items: Vec<BulkItem>) -> Result<Vec<Recipient>, Failure> {
        bulk::send(&self.parts.registry, self.parts.cluster.as_deref(), items).await
    }

    /// Pushes the stored messages of `client`'s name, right after its `welcome`.
    pub fn deliver_stored(&self, client: &Arc<Client>) {
        match &self.parts.cluster {
            Some(cluster) => cluster.deliver_after_welcome(client),
            None => {
                delivery::deliver_stored(&self.parts.registry, client);
            }
        }
    }

    /// Takes `client`'s ack of message `id`: in a cluster, a message kept
    /// until acked that another node stored leaves the mailbox too.
    pub fn acked(&self, client: &Client, id: String) {
        if let Some(cluster) = &self.parts.cluster
            && cluster.mail_acked(client, &id)
            && !self.parts.registry.issued(&id)
        {
            return self.parts.registry.stored_message_acked(client, id);
        }
        self.parts.registry.client_acked(client, id);
    }

    /// Names with stored messages starting with `prefix`, by name: how many
    /// there are, and a page of them.
    pub async fn mailboxes(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<Summary>), Failure> {
        match &self.parts.cluster {
            Some(cluster) => cluster.mailboxes(prefix, offset, limit).await,
            None => Ok(self.parts.registry.mailbox().names(prefix, offset, limit)),
        }
    }

    /// The messages stored for `name`, oldest first.
    pub async fn mailbox(&self, name: &str) -> Result<Vec<StoredEntry>, Failure> {
        let Some(cluster) = &self.parts.cluster else {
            let registry = &self.parts.registry;
            return Ok(registry
                .mailbox()
                .messages(name)
                .into_iter()
                .map(|stored| StoredEntry {
                    id: registry.message_id(stored.number),
                    size: stored.size,
                    stored_at_ms: stored.stored_at_ms,
                    expires_at_ms: stored.expires_at_ms,
                    until_ack: stored.until_ack,
                })
                .collect());
        };
        cluster.mailbox(name).await
    }

    /// Removes every message stored for `name`.
    pub async fn purge_mailbox(&self, name: &str) -> Result<(), Failure> {
        match &self.parts.cluster {
            Some(cluster) => cluster.purge_mailbox(name).await,
            None => {
                self.parts.registry.mailbox().purge(name);
                delivery::record_totals(&self.parts.registry);
                Ok(())
            }
        }
    }

    /// Disconnects the client named `name` with `bye` `kicked`.
    pub async fn kick(&self, name: &str) -> Result<(), Failure> {
        match (self.live_here(name), &self.parts.cluster) {
            (None, Some(cluster)) => Box::pin(cluster.remote_kick(name)).await,
            _ => self
                .parts
                .registry
                .kick(name, ByeReason::Kicked)
                .map_err(|err| send_failure(err, name)),
        }
    }
}

/// Waits up to `patience` for the client's ack of the message `wait` is for,
/// and counts the outcome; the message id, or what happened instead.
pub(crate) async fn wait_for_ack(
    registry: &Registry,
    name: &str,
    mut wait: AckWait,
    patience: Duration,
) -> Result<String, String> {
    let id = wait.id().to_owned();
    let (outcome, failure) = match tokio::time::timeout(patience, wait.acked()).await {
        Ok(Ok(())) => ("acked", None),
        Ok(Err(_gone)) => (
            "disconnected",
            Some(format!(
                "{name:?} disconnected before acknowledging message {id}"
            )),
        ),
        Err(_elapsed) => (
            "timeout",
            Some(format!(
                "{name:?} did not acknowledge message {id} within {} ms",
                patience.as_millis()
            )),
        ),
    };
    registry
        .metrics()
        .ack_waits
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    match failure {
        None => Ok(id),
        Some(detail) => Err(detail),
    }
}

/// This node's part of a page: its clients matching `query` that come after `after`.
pub(crate) fn local_page(
    registry: &Registry,
    node: &str,
    query: &ListQuery,
    after: Option<&Cursor>,
) -> Listing {
    let Some(sessions) = after.map_or(Some(None), |cursor| cursor.sessions_after_on(node)) else {
        // Every client of this node comes before the cursor: only the count.
        let mut counted = registry.list(&ListQuery {
            limit: 0,
            ..query.clone()
        });
        counted.more = false;
        return counted;
    };
    registry.list(&ListQuery {
        after: sessions,
        ..query.clone()
    })
}

fn send_failure(err: SendError, name: &str) -> Failure {
    match err {
        SendError::NotFound => Failure::NotFound(name.to_owned()),
        SendError::Backlogged => Failure::Backlogged(name.to_owned()),
    }
}

fn store_failure(err: StoreFailure, name: &str) -> Failure {
    match err {
        StoreFailure::Backlogged => Failure::Backlogged(name.to_owned()),
        StoreFailure::Store(StoreError::Full(detail)) => Failure::MailboxFull(detail),
        StoreFailure::Store(StoreError::Failed) => Failure::Internal,
    }
}

/// Runs many socket writes on the blocking pool: a fan-out to 10,000 clients is
/// tens of milliseconds that would otherwise hold an async worker.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work).await.map_err(|err| {
        // Only a bug (a panic) or the runtime stopping ends the task early.
        tracing::error!(%err, "{what} task failed");
        Failure::Internal
    })
}
