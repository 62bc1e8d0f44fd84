//! Bulk sends: messages to lists of named clients, each serialized once, all
//! of them looked up and serialized before the first is written.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::{Client, Registry};
use crate::outbox::Offer;
use crate::protocol::{HubFrame, Scope};

/// What became of one recipient of a bulk send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written to its socket or queued behind frames that are.
    Queued,
    /// No live client has the name.
    NotFound,
    /// Its queue was full; nothing was queued.
    Backlogged,
}

impl Delivery {
    /// The status as the API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Queued => "queued",
            Delivery::NotFound => "not_found",
            Delivery::Backlogged => "backlogged",
        }
    }
}

impl Registry {
    /// Pushes each item's message, as a `direct` message with an id of its own,
    /// to each client the item names; returns per item its id and one outcome
    /// per name, in order. A client named more than once in an item gets that
    /// message once, and each mention reports the outcome; a client named in two
    /// items gets both messages, in item order.
    ///
    /// Every name is looked up (under one lock) and every message serialized
    /// before the first write, so that the writes follow one another as a
    /// broadcast's do: readers woken by one write are not kept waiting while the
    /// next message is serialized.
    pub fn send_bulk<'a>(
        &self,
        items: impl ExactSizeIterator<Item = (&'a [String], &'a Value)>,
    ) -> Vec<(String, Vec<Delivery>)> {
        let mut found = Vec::with_capacity(items.len());
        let mut messages = Vec::with_capacity(items.len());
        {
            let clients = self.lock();
            for (names, message) in items {
                let holders: Vec<Option<Arc<Client>>> = names
                    .iter()
                    .map(|name| {
                        let session = clients.by_name.get(name.as_str())?;
                        clients.by_session.get(session).cloned()
                    })
                    .collect();
                found.push(holders);
                messages.push(message);
            }
        }
        let frames: Vec<(String, Bytes)> = messages
            .into_iter()
            .map(|message| {
                let id = self.next_message_id();
                let frame = HubFrame::Message {
                    id: &id,
                    scope: Scope::Direct,
                    group: None,
                    message,
                }
                .encode();
                (id, frame)
            })
            .collect();
        let mut queued = 0;
        let sent = found
            .iter()
            .zip(frames)
            .map(|(holders, (id, frame))| {
                let outcomes = self.offer_once_each(holders, &id, &frame, &mut queued);
                (id, outcomes)
            })
            .collect();
        self.count_queued(Scope::Direct, queued);
        sent
    }

    /// Offers `frame` (message `id`) to each client found, once per client
    /// however often it is named; one outcome per mention. Adds the clients that
    /// took it to `queued`.
    fn offer_once_each(
        &self,
        holders: &[Option<Arc<Client>>],
        id: &str,
        frame: &Bytes,
        queued: &mut u64,
    ) -> Vec<Delivery> {
        // Most items name one client: no table is needed to send it once.
        let mut offered: HashMap<u64, Delivery> = HashMap::new();
        holders
            .iter()
            .map(|holder| {
                let client = holder.as_ref()?;
                Some(if holders.len() == 1 {
                    self.offer_counted(client, id, frame, queued)
                } else {
                    *offered
                        .entry(client.session)
                        .or_insert_with(|| self.offer_counted(client, id, frame, queued))
                })
            })
            .map(|outcome| outcome.unwrap_or(Delivery::NotFound))
            .collect()
    }

    fn offer_counted(
        &self,
        client: &Arc<Client>,
        id: &str,
        frame: &Bytes,
        queued: &mut u64,
    ) -> Delivery {
        match self.offer(client, frame) {
            Offer::Accepted => {
                *queued += 1;
                Delivery::Queued
            }
            Offer::Full => {
                self.on_full_queue(client, id);
                Delivery::Backlogged
            }
            Offer::Closing => Delivery::NotFound,
        }
    }
}
