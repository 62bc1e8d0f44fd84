//! The directory: the one way the HTTP API and the connection tasks reach
//! clients by name, by group or all at once.
//!
//! Its verbs say what a caller wants (claim a name, look a client up, list,
//! send, broadcast, send to a group, send in bulk, kick) and answer with a
//! plain record ([`ClientView`], [`Reach`], ...) or a [`Failure`], which the
//! API maps to an HTTP status in one place. On a single node every verb ends
//! in this process's [`Registry`] at once: nothing is added to the hot path.
//! Socket writes of many deliveries run on the blocking pool, off the async
//! workers that serve connections and requests.

mod bulk;
mod cursor;
mod node;
mod view;

pub use bulk::{BulkItem, BulkStatus, Recipient};
pub use cursor::{BadCursor, Cursor};
pub use node::{Node, NodeView};
pub use view::ClientView;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::groups::{GroupChange, GroupsError};
use crate::mailbox::StoreError;
use crate::mailbox::delivery::{self, Keep, StoreFailure};
use crate::metrics::OutcomeLabels;
use crate::protocol::ByeReason;
use crate::registry::{
    BroadcastReport, Client, ListQuery, Listing, Registry, SendError, SyncError,
};

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
    /// A fault inside the hub (logged where it happened).
    #[error("internal error")]
    Internal,
}

/// What a broadcast or a group send reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The message id and the counts.
    pub report: BroadcastReport,
}

/// A page of clients and how many match in all.
#[derive(Debug)]
pub struct ClientPage {
    /// Clients matching the filters, on all pages.
    pub total: usize,
    /// This page, oldest connection first.
    pub clients: Vec<ClientView>,
    /// The cursor of the next page (`after`), when there are more.
    pub next: Option<String>,
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

/// The way to every client of the hub.
#[derive(Debug, Clone)]
pub struct Directory {
    registry: Registry,
    node: Arc<Node>,
}

impl Directory {
    /// A directory of the clients of this process alone.
    pub fn local(registry: Registry, node: Node) -> Directory {
        Directory {
            registry,
            node: Arc::new(node),
        }
    }

    /// This node's registry: its own clients, events, metrics and mailbox.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// This node's identity.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Registers `name` for `client`, or renames it.
    pub fn claim(&self, client: &Arc<Client>, name: &str) -> Result<(), SyncError> {
        self.registry.sync(client, name)
    }

    /// The live client named `name`.
    pub async fn get(&self, name: &str) -> Result<ClientView, Failure> {
        let client = self
            .registry
            .get(name)
            .ok_or_else(|| Failure::NotFound(name.to_owned()))?;
        Ok(ClientView::named(
            &client,
            Some(Arc::from(name)),
            &self.node.id,
        ))
    }

    /// Live clients matching `query`, after `after`: node by node, each
    /// node's oldest first.
    pub async fn list(
        &self,
        query: &ListQuery,
        after: Option<&Cursor>,
    ) -> Result<ClientPage, Failure> {
        let listing = local_page(&self.registry, &self.node.id, query, after);
        let next = listing.page.last().filter(|_| listing.more).map(|last| {
            Cursor {
                node: self.node.id.clone(),
                session: last.client.session(),
            }
            .to_string()
        });
        let clients = listing
            .page
            .iter()
            .map(|listed| ClientView::listed(listed, &self.node.id))
            .collect();
        Ok(ClientPage {
            total: listing.total,
            clients,
            next,
        })
    }

    /// The live nodes: on a single node, itself.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, Failure> {
        Ok(vec![NodeView::of(&self.node, self.registry.len())])
    }

    /// Pushes `message` to the client named `name`.
    pub async fn send(&self, name: &str, message: &Value) -> Result<Sent, Failure> {
        let id = self
            .registry
            .send_to(name, message)
            .map_err(|err| send_failure(err, name))?;
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
        let mut wait = self
            .registry
            .send_awaiting_ack(name, message)
            .map_err(|err| send_failure(err, name))?;
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
        self.registry
            .metrics()
            .ack_waits
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        match failure {
            None => Ok(id),
            Some(detail) => Err(Failure::AckTimeout(detail)),
        }
    }

    /// Pushes `message` to the live client named `name`, or stores it for the
    /// name as `keep` says; answers once a stored message is durable.
    pub async fn send_or_store(
        &self,
        name: &str,
        message: &Value,
        keep: Keep,
    ) -> Result<Sent, Failure> {
        let sent = delivery::send_or_store(&self.registry, name, message, keep)
            .await
            .map_err(|err| store_failure(err, name))?;
        Ok(Sent {
            id: sent.id,
            queued: sent.queued,
            stored: Some(sent.stored),
        })
    }

    /// Pushes `message` to every live client.
    pub async fn broadcast(&self, message: Value) -> Result<Reach, Failure> {
        let registry = self.registry.clone();
        let report = blocking("broadcast", move || registry.broadcast(&message)).await?;
        Ok(Reach { report })
    }

    /// Pushes `message` to every member of `group`.
    pub async fn send_to_group(&self, group: String, message: Value) -> Result<Reach, Failure> {
        let registry = self.registry.clone();
        let report = blocking("group send", move || {
            registry.send_to_group(&group, &message)
        })
        .await?;
        Ok(Reach { report })
    }

    /// Groups with members whose name starts with `prefix`, by name, and how
    /// many there are in all.
    pub async fn groups(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<(String, usize)>), Failure> {
        let (total, page) = self.registry.group_page(prefix, offset, limit);
        let page = page
            .into_iter()
            .map(|(name, members)| (name.to_string(), members))
            .collect();
        Ok((total, page))
    }

    /// A page of `group`'s members, oldest first, and how many it has.
    pub async fn group_members(
        &self,
        group: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<ClientView>), Failure> {
        let (members, page) = self.registry.group_members(group, offset, limit);
        let clients = page
            .iter()
            .map(|listed| ClientView::listed(listed, &self.node.id))
            .collect();
        Ok((members, clients))
    }

    /// Replaces the group set of the client named `name`; returns the new set.
    pub async fn set_groups_of(
        &self,
        name: &str,
        change: &GroupChange,
    ) -> Result<Vec<Arc<str>>, Failure> {
        self.registry
            .set_groups_of(name, change)
            .map_err(|err| match err {
                GroupsError::NotFound => Failure::NotFound(name.to_owned()),
                GroupsError::Invalid(detail) | GroupsError::Forbidden(detail) => {
                    Failure::InvalidGroups(detail)
                }
            })
    }

    /// Sends each item to its recipients; one outcome per recipient, in order.
    pub async fn send_bulk(&self, items: Vec<BulkItem>) -> Result<Vec<Recipient>, Failure> {
        bulk::send(&self.registry, items).await
    }

    /// Disconnects the client named `name` with `bye` `kicked`.
    pub async fn kick(&self, name: &str) -> Result<(), Failure> {
        self.registry
            .kick(name, ByeReason::Kicked)
            .map_err(|err| send_failure(err, name))
    }
}

/// This node's part of a page: its clients matching `query` that come after `after`.
fn local_page(
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
