//! Bulk sends: each item's message to its recipients, serialized once per
//! item; with a `ttl`, recipients with no live client get it stored instead.

use std::collections::HashMap;

use futures_util::future::{Either, join_all};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{Failure, blocking};
use crate::cluster::Membership;
use crate::mailbox::StoreError;
use crate::mailbox::delivery::{self, Keep};
use crate::metrics::StatusLabels;
use crate::registry::{Delivery, Registry};

/// One message of a bulk send and who gets it.
#[derive(Debug, Clone)]
pub struct BulkItem {
    /// Client names, at least one; a name may repeat.
    pub to: Vec<String>,
    /// The message.
    pub message: Value,
    /// With a `ttl`: how long it is stored for names with no live client.
    pub keep: Option<Keep>,
}

/// What became of one recipient of a bulk send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkStatus {
    /// Queued on its live socket.
    Queued,
    /// No live client had the name; stored in its mailbox (items with `ttl`).
    Stored,
    /// No live client has the name (and the item has no `ttl`).
    NotFound,
    /// Its queue was full; nothing was queued.
    Backlogged,
    /// Its item has a `ttl` but a mailbox limit (or the disk) is full: nothing was stored.
    MailboxFull,
}

impl BulkStatus {
    /// The status as the API and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkStatus::Queued => "queued",
            BulkStatus::Stored => "stored",
            BulkStatus::NotFound => "not_found",
            BulkStatus::Backlogged => "backlogged",
            BulkStatus::MailboxFull => "mailbox_full",
        }
    }
}

/// What became of one recipient, with the id its message has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The message id: the item's, or for a stored copy its own.
    pub id: String,
    /// What became of it.
    pub status: BulkStatus,
}

/// An item's message id, and per recipient what became of it (with the id
/// another node gave it, when another node delivered it).
type ItemDeliveries = (String, Vec<(Option<String>, Delivery)>);

/// Sends every item, in order; one [`Recipient`] per recipient, in request order.
///
/// Live deliveries come first, all of them, on the blocking pool; then the
/// copies to store are written together, so that they share disk commits.
pub(super) async fn send(
    registry: &Registry,
    cluster: Option<&Membership>,
    items: Vec<BulkItem>,
) -> Result<Vec<Recipient>, Failure> {
    // The items go to the blocking pool and come back with the outcomes.
    let (items, mut live) = {
        let registry = registry.clone();
        blocking("bulk send", move || {
            let sent = registry
                .send_bulk(items.iter().map(|item| (&item.to[..], &item.message)))
                .into_iter()
                .map(|(id, deliveries)| (id, deliveries.into_iter().map(|d| (None, d)).collect()))
                .collect::<Vec<ItemDeliveries>>();
            (items, sent)
        })
        .await?
    };
    if let Some(cluster) = cluster {
        deliver_on_other_nodes(cluster, &items, &mut live).await?;
    }
    // One stored copy per absent name of an item, however often it is named.
    let mut to_store: Vec<(usize, &str)> = Vec::new();
    for (index, (item, (_, deliveries))) in items.iter().zip(&live).enumerate() {
        if item.keep.is_none() {
            continue;
        }
        for (name, (_, delivery)) in item.to.iter().zip(deliveries) {
            if *delivery == Delivery::NotFound && !to_store.contains(&(index, name.as_str())) {
                to_store.push((index, name));
            }
        }
    }
    let stores = to_store.iter().map(|&(index, name)| {
        let item = &items[index];
        let keep = item.keep.unwrap_or(Keep {
            ttl: registry.mailbox().max_ttl(),
            until_ack: false,
        });
        match cluster {
            Some(cluster) => Either::Left(cluster.store_shared(name, &item.message, keep)),
            None => Either::Right(delivery::store(registry, name, &item.message, keep)),
        }
    });
    let stored: HashMap<(usize, &str), Result<delivery::Sent, StoreError>> = to_store
        .iter()
        .copied()
        .zip(join_all(stores).await)
        .collect();

    let mut recipients = Vec::new();
    for (index, (item, (id, deliveries))) in items.iter().zip(live).enumerate() {
        for (name, (remote_id, delivery)) in item.to.iter().zip(deliveries) {
            let id = remote_id.as_ref().unwrap_or(&id);
            recipients.push(match (delivery, stored.get(&(index, name.as_str()))) {
                (Delivery::NotFound, Some(Ok(sent))) => Recipient {
                    id: sent.id.clone(),
                    status: BulkStatus::Stored,
                },
                (Delivery::NotFound, Some(Err(StoreError::Full(_)))) => Recipient {
                    id: id.clone(),
                    status: BulkStatus::MailboxFull,
                },
                (Delivery::NotFound, Some(Err(StoreError::Failed))) => {
                    return Err(Failure::Internal);
                }
                (delivery, _) => Recipient {
                    id: id.clone(),
                    status: match delivery {
                        Delivery::Queued => BulkStatus::Queued,
                        Delivery::NotFound => BulkStatus::NotFound,
                        Delivery::Backlogged => BulkStatus::Backlogged,
                    },
                },
            });
        }
    }
    count(registry, &recipients);
    Ok(recipients)
}

/// Hands the recipients no client of this node holds to the nodes that hold
/// them; each answer takes its recipient's place, with that node's message id.
async fn deliver_on_other_nodes(
    cluster: &Membership,
    items: &[BulkItem],
    live: &mut [ItemDeliveries],
) -> Result<(), Failure> {
    let pending: Vec<Vec<usize>> = live
        .iter()
        .map(|(_, deliveries)| {
            deliveries
                .iter()
                .enumerate()
                .filter(|(_, (_, delivery))| *delivery == Delivery::NotFound)
                .map(|(position, _)| position)
                .collect()
        })
        .collect();
    if pending.iter().all(Vec::is_empty) {
        return Ok(());
    }
    let sendable: Vec<(Vec<String>, Value)> = items
        .iter()
        .map(|item| (item.to.clone(), item.message.clone()))
        .collect();
    let delivered = cluster.bulk_remote(&sendable, &pending).await?;
    for ((item, position), (id, delivery)) in delivered {
        live[item].1[position] = (Some(id), delivery);
    }
    Ok(())
}

/// Counts recipients by status in `tcphub_bulk_recipients_total`.
fn count(registry: &Registry, recipients: &[Recipient]) {
    let mut tally: HashMap<BulkStatus, u64> = HashMap::new();
    for recipient in recipients {
        *tally.entry(recipient.status).or_default() += 1;
    }
    for (status, count) in tally {
        registry
            .metrics()
            .bulk_recipients
            .get_or_create(&StatusLabels {
                status: status.as_str(),
            })
            .inc_by(count);
    }
}
