//! Hub events: who came and went, renames, what clients said, what was dropped.
//!
//! The registry emits every event through [`EventBus::emit`], the one place they
//! come from; followers (the HTTP event stream, webhooks, tests) subscribe. With
//! no subscriber an event costs an id and a time, no allocation beyond the event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// Events a slow subscriber may fall behind by before it misses some.
const SUBSCRIBER_BACKLOG: usize = 4096;

/// Something that happened in the hub.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Increasing number, unique for the process.
    pub id: u64,
    /// When it happened.
    #[serde(with = "crate::time_format")]
    pub time: SystemTime,
    /// The session id of the client concerned.
    pub client_id: String,
    /// The client's name at the time, if it had one.
    pub name: Option<Arc<str>>,
    /// The client's address.
    pub peer: SocketAddr,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of event, with what each carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum EventKind {
    /// A TCP client connected.
    #[serde(rename = "client.connected")]
    Connected,
    /// A client registered a name or renamed itself.
    #[serde(rename = "client.named")]
    Named {
        /// The name it had before, if any.
        old_name: Option<Arc<str>>,
    },
    /// A client's connection ended.
    #[serde(rename = "client.disconnected")]
    Disconnected {
        /// `closed`, `error`, or the `bye` reason the hub sent.
        reason: &'static str,
    },
    /// A client sent an `info` frame.
    #[serde(rename = "client.message")]
    Message {
        /// The frame's `message`.
        message: Value,
    },
    /// A pushed message was dropped because the client's queue was full.
    #[serde(rename = "message.dropped")]
    Dropped {
        /// The dropped message's id.
        message_id: Arc<str>,
    },
    /// A client acknowledged a pushed message.
    #[serde(rename = "client.acked")]
    Acked {
        /// The acknowledged message's id.
        message_id: String,
    },
}

/// The single source of hub events.
#[derive(Debug)]
pub struct EventBus {
    next_id: AtomicU64,
    sender: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus {
            next_id: AtomicU64::new(1),
            sender: broadcast::Sender::new(SUBSCRIBER_BACKLOG),
        }
    }
}

impl EventBus {
    /// Publishes an event about the client that `subject` describes (session id,
    /// name, peer); `subject` runs only when someone is listening.
    pub fn emit(
        &self,
        subject: impl FnOnce() -> (String, Option<Arc<str>>, SocketAddr),
        kind: EventKind,
    ) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let (client_id, name, peer) = subject();
        let event = Event {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            time: SystemTime::now(),
            client_id,
            name,
            peer,
            kind,
        };
        // An error only means every subscriber left since the check above.
        let _ = self.sender.send(Arc::new(event));
    }

    /// A stream of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}
