//! Where the mailbox meets the live clients: a send that stores when no client
//! holds the name, delivery right after `welcome`, acks that remove what was
//! kept until acked, and the expiry sweep, each with its event and metrics.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use super::memory::Offered;
use crate::events::EventKind;
use crate::protocol::Scope;
use crate::registry::{Client, Registry, SendError};

/// How often expired messages are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// What became of a send that may store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message id.
    pub id: String,
    /// 1 when it went on a live client's queue, else 0.
    pub queued: usize,
    /// Whether it is in the name's mailbox.
    pub stored: bool,
}

/// Why a send that may store did neither.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailure {
    /// The live client's queue is full; nothing was queued or stored.
    #[error("the client's queue is full")]
    Backlogged,
    /// The mailbox refused it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a send stores its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// How long it stays stored at most.
    pub ttl: Duration,
    /// Whether it is stored even for a live client, until that client acks it.
    pub until_ack: bool,
}

/// Pushes `message` to the live client named `name`, or stores it in the name's
/// mailbox when there is none; with `until_ack`, stores it in any case (and
/// pushes it too, if the client is live). Answers once the message is durable.
pub async fn send_or_store(
    registry: &Registry,
    name: &str,
    message: &Value,
    keep: Keep,
) -> Result<Sent, StoreFailure> {
    if !keep.until_ack {
        match registry.send_to(name, message) {
            Ok(id) => {
                return Ok(Sent {
                    id,
                    queued: 1,
                    stored: false,
                });
            }
            Err(SendError::Backlogged) => return Err(StoreFailure::Backlogged),
            Err(SendError::NotFound) => {}
        }
    }
    Ok(store(registry, name, message, keep).await?)
}

/// Stores `message` in `name`'s mailbox under a new id, and delivers it at once
/// if a client took the name meanwhile. Answers once the message is durable.
pub async fn store(
    registry: &Registry,
    name: &str,
    message: &Value,
    keep: Keep,
) -> Result<Sent, StoreError> {
    let (number, id) = registry.issue_message_id();
    let mailbox = registry.mailbox();
    mailbox
        .store(name, number, message, keep.ttl, keep.until_ack)
        .await?;
    let metrics = registry.metrics();
    metrics.mailbox_stored.inc();
    record_totals(registry);
    registry.events().emit_for_name(
        name,
        EventKind::Stored {
            message_id: id.clone(),
            until_ack: keep.until_ack,
        },
    );
    // A client that took the name while the message was being stored synced
    // too early to get it: deliver now.
    let queued = registry.get(name).map_or(0, |client| {
        let delivered = deliver_stored(registry, &client);
        usize::from(delivered.contains(&number))
    });
    Ok(Sent {
        id,
        queued,
        stored: true,
    })
}

/// Offers the stored messages of `client`'s name to it, oldest first, as
/// `message` frames with their original ids; returns the numbers delivered.
pub fn deliver_stored(registry: &Registry, client: &Arc<Client>) -> Vec<u64> {
    let Some(name) = client.name() else {
        return Vec::new();
    };
    let delivered = registry
        .mailbox()
        .deliver(&name, client.session(), |offered| {
            registry.reply(client, &frame(registry, offered))
        });
    if delivered.is_empty() {
        return Vec::new();
    }
    registry
        .metrics()
        .mailbox_delivered
        .inc_by(delivered.len() as u64);
    record_totals(registry);
    for offered in &delivered {
        registry.emit(
            client,
            EventKind::Delivered {
                message_id: registry.message_id(offered.number),
                redelivered: offered.redelivered,
            },
        );
    }
    delivered.iter().map(|offered| offered.number).collect()
}

/// `client` acked message `number`: if its name kept that message until acked,
/// it leaves the mailbox.
pub fn acked(registry: &Registry, client: &Client, number: u64) {
    if let Some(name) = client.name()
        && registry.mailbox().acked(&name, number)
    {
        record_totals(registry);
    }
}

/// Removes expired messages, counting and announcing each.
pub fn expire(registry: &Registry) -> usize {
    let expired = registry.mailbox().expire();
    if expired.is_empty() {
        return 0;
    }
    registry
        .metrics()
        .mailbox_expired
        .inc_by(expired.len() as u64);
    record_totals(registry);
    for (name, number) in &expired {
        registry.events().emit_for_name(
            name,
            EventKind::Expired {
                message_id: registry.message_id(*number),
            },
        );
    }
    expired.len()
}

/// Removes expired messages every [`SWEEP_EVERY`] until shutdown.
pub async fn sweep(registry: Registry, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => { expire(&registry); }
        }
    }
}

/// Sets the mailbox gauges to what the mailboxes hold.
pub fn record_totals(registry: &Registry) {
    let (messages, bytes) = registry.mailbox().totals();
    let metrics = registry.metrics();
    metrics
        .mailbox_messages
        .set(i64::try_from(messages).unwrap_or(i64::MAX));
    metrics
        .mailbox_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// A stored message as the client receives it: a direct `message` frame, with
/// `"redelivered":true` when an earlier session got it already.
#[derive(Serialize)]
struct StoredFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    scope: Scope,
    message: &'a Value,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    redelivered: bool,
}

/// The line that hands a stored message to its client, with its original id;
/// the cluster's mailbox sends the same.
pub(crate) fn stored_frame(id: &str, message: &Value, redelivered: bool) -> Bytes {
    let frame = StoredFrame {
        kind: "message",
        id,
        scope: Scope::Direct,
        message,
        redelivered,
    };
    // Serializing a `Value` with string keys cannot fail.
    let mut line = serde_json::to_vec(&frame).unwrap_or_default();
    line.push(b'\n');
    line.into()
}

fn frame(registry: &Registry, offered: &Offered) -> Bytes {
    let id = registry.message_id(offered.number);
    stored_frame(&id, &offered.message, offered.redelivered)
}
