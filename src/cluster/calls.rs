//! What nodes ask each other, and what they answer: the payloads of the
//! cross-node calls. Every call ends in the answering node's own registry, so
//! delivery rules, events and metrics stay in one place.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::directory::{ClientView, Cursor};

/// A call to the node that holds a name. Each carries the session the caller
/// found in the name table: a node answers `NotFound` when that session no
/// longer holds the name, so a call never reaches a newer holder by mistake.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum NodeCall {
    /// Whether the node answers at all.
    Ping,
    /// The client, as `GET /clients/{name}` shows it.
    Get {
        /// The name.
        name: String,
        /// The session expected to hold it.
        session: u64,
    },
    /// Push a direct message.
    Send {
        /// The name.
        name: String,
        /// The session expected to hold it.
        session: u64,
        /// The message.
        message: Value,
    },
    /// Push a direct message and answer once the client acks it, or after `patience_ms`.
    SendAwaitingAck {
        /// The name.
        name: String,
        /// The session expected to hold it.
        session: u64,
        /// The message.
        message: Value,
        /// How long to wait for the ack.
        patience_ms: u64,
    },
    /// Disconnect with `bye` `kicked`.
    Kick {
        /// The name.
        name: String,
        /// The session expected to hold it.
        session: u64,
    },
    /// The name was taken over on another node: close this session with `bye` `replaced`.
    Replaced {
        /// The name.
        name: String,
        /// The session that held it.
        session: u64,
        /// The table revision the takeover wrote: a claim of that session
        /// written later than this is the newer one and stands.
        revision: u64,
    },
    /// Replace the client's group set.
    SetGroups {
        /// The name.
        name: String,
        /// The session expected to hold it.
        session: u64,
        /// The new set.
        groups: Vec<String>,
    },
    /// Push the name's stored messages the session was not given yet.
    DeliverStored {
        /// The name.
        name: String,
        /// The session expected to hold it.
        session: u64,
    },
    /// Push each item's message to those of its names this node holds; one
    /// answer per name, in order.
    Bulk {
        /// `(names, message)` per item; the message id is issued by the answering node.
        items: Vec<(Vec<String>, Value)>,
    },
}

/// The answer to a [`NodeCall`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum NodeAnswer {
    /// The client asked for.
    Client(ClientView),
    /// Queued; the message id.
    Sent {
        /// The message id.
        id: String,
    },
    /// The client acked the message.
    Acked {
        /// The message id.
        id: String,
    },
    /// Stored messages pushed, by id.
    Delivered {
        /// Their ids, in order.
        ids: Vec<String>,
    },
    /// Done, nothing to report.
    Done,
    /// The session no longer holds the name.
    NotFound,
    /// The client's queue is full; nothing was queued.
    Backlogged,
    /// No ack in time, or the client left first.
    AckTimeout {
        /// What happened, for the problem's detail.
        detail: String,
    },
    /// The client's new group set.
    Groups {
        /// Sorted.
        groups: Vec<String>,
    },
    /// The group set was refused.
    InvalidGroups {
        /// Why.
        detail: String,
    },
    /// One outcome per name of a [`NodeCall::Bulk`], in order: the message id
    /// and `queued`, `not_found` or `backlogged`.
    Bulk {
        /// `(id, status)` per name.
        results: Vec<(String, String)>,
    },
}

/// A call every node answers for its own clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum AllCall {
    /// Its clients matching the filters after `after`: the count and the first `want`.
    List {
        /// Only names starting with this.
        prefix: Option<String>,
        /// Only named or unnamed clients.
        named: Option<bool>,
        /// Where the previous page ended.
        after: Option<Cursor>,
        /// How many to return at most.
        want: usize,
    },
    /// Deliver one message (id issued by the caller) to every live client.
    Broadcast {
        /// The message id, the same on every node.
        id: String,
        /// The message.
        message: Value,
    },
    /// Deliver one message to every member of a group.
    GroupSend {
        /// The message id, the same on every node.
        id: String,
        /// The group.
        group: String,
        /// The message.
        message: Value,
    },
    /// Its groups with members whose name starts with `prefix`, by name.
    Groups {
        /// The prefix.
        prefix: String,
    },
    /// A group's members on this node: the count and the first `want`.
    GroupMembers {
        /// The group.
        group: String,
        /// How many to return at most.
        want: usize,
    },
}

/// A node's answer to an [`AllCall`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum AllAnswer {
    /// Clients: how many match on this node, and the first ones.
    Clients {
        /// Matches on this node.
        total: usize,
        /// The first of them, oldest first.
        clients: Vec<ClientView>,
        /// The session of each, for the cursor.
        sessions: Vec<u64>,
        /// Whether more than these follow on this node.
        more: bool,
    },
    /// What a delivery reached on this node.
    Reached {
        /// Live clients (or members) when it was sent.
        recipients: usize,
        /// Those that accepted it.
        queued: usize,
        /// Those whose queue was full.
        dropped: usize,
    },
    /// Groups with their member count on this node, by name.
    Groups {
        /// `(group, members)`.
        groups: Vec<(String, usize)>,
    },
}
