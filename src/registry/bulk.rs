//! Bulk sends: one message to a list of named clients, serialized once.

use std::collections::HashMap;
use std::sync::Arc;

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
    /// Pushes `message`, as a `direct` message with one id, to each client in
    /// `names`; returns the id and one outcome per name, in order. A client named
    /// more than once gets the message once, and each mention reports the outcome.
    pub fn send_each(&self, names: &[String], message: &Value) -> (String, Vec<Delivery>) {
        let found: Vec<Option<Arc<Client>>> = {
            let clients = self.lock();
            names
                .iter()
                .map(|name| {
                    let session = clients.by_name.get(name.as_str())?;
                    clients.by_session.get(session).cloned()
                })
                .collect()
        };
        let id = self.next_message_id();
        let frame = HubFrame::Message {
            id: &id,
            scope: Scope::Direct,
            group: None,
            message,
        }
        .encode();
        let mut delivered: HashMap<u64, Delivery> = HashMap::new();
        let outcomes: Vec<Delivery> = found
            .iter()
            .map(|client| {
                let Some(client) = client else {
                    return Delivery::NotFound;
                };
                *delivered.entry(client.session).or_insert_with(|| {
                    match self.offer(client, &frame) {
                        Offer::Accepted => Delivery::Queued,
                        Offer::Full => {
                            self.on_full_queue(client, &id);
                            Delivery::Backlogged
                        }
                        Offer::Closing => Delivery::NotFound,
                    }
                })
            })
            .collect();
        let queued = delivered
            .values()
            .filter(|outcome| **outcome == Delivery::Queued)
            .count();
        self.count_queued(Scope::Direct, queued as u64);
        (id, outcomes)
    }
}
