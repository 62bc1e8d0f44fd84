//! Hub events: who came and went, renames, what clients said, what was dropped
//! and what was acknowledged.
//!
//! The registry emits every event through [`EventBus::emit`], the one place they
//! come from; followers (the HTTP event stream, webhooks, tests) subscribe. The
//! bus keeps the last `--event-buffer` events so that a follower that reconnects
//! can resume where it left off, and so that a follower that falls behind loses
//! the oldest events (and is told how many) instead of slowing the hub down.
//!
//! Until the first follower subscribes, an event costs one atomic load: no id,
//! no allocation, no lock. From then on every event is kept, so that followers
//! can resume across reconnects even while none is connected.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use utoipa::ToSchema;

/// Something that happened in the hub.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": 42, "time": "2026-11-25T18:40:30.123Z", "clientId": "c7", "name": "Client-1",
    "peer": "127.0.0.1:50312", "type": "client.named", "oldName": null
}))]
pub struct Event {
    /// Increasing number, unique for the process; the SSE `id` to resume from.
    pub id: u64,
    /// When it happened: RFC 3339 UTC with milliseconds, `2026-11-25T18:40:30.120Z`.
    #[serde(with = "crate::time_format")]
    #[schema(value_type = String, format = DateTime)]
    pub time: SystemTime,
    /// The session id of the client concerned; absent for a mailbox event
    /// without a live client (`message.stored`, `message.expired`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The client's name at the time, null while unnamed.
    #[schema(value_type = Option<String>, required = true)]
    pub name: Option<Arc<str>>,
    /// The client's address, `ip:port`; absent when `clientId` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub peer: Option<SocketAddr>,
    /// What happened, with what each kind carries.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of event, with what each carries; `type` names the kind.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
// Fields are renamed per variant: the OpenAPI generator ignores `rename_all_fields`.
#[serde(tag = "type")]
pub enum EventKind {
    /// A TCP client connected (unnamed until it sends `sync`).
    #[serde(rename = "client.connected")]
    Connected,
    /// A client registered a name or renamed itself; `name` is the new name.
    #[serde(rename = "client.named", rename_all = "camelCase")]
    Named {
        /// The name it had before, null on its first `sync`.
        #[schema(value_type = Option<String>, required = true)]
        old_name: Option<Arc<str>>,
    },
    /// A client's connection ended.
    #[serde(rename = "client.disconnected")]
    Disconnected {
        /// `closed` (by the client), `error`, or the `bye` reason the hub sent:
        /// `kicked`, `replaced`, `idle_timeout`, `slow_consumer`, `shutdown`,
        /// `frame_too_large`.
        #[schema(value_type = String, example = "kicked")]
        reason: &'static str,
    },
    /// A client sent an `info` frame.
    #[serde(rename = "client.message")]
    Message {
        /// The frame's `message`, any JSON.
        message: Value,
    },
    /// A pushed message was dropped because the client's queue was full.
    #[serde(rename = "message.dropped", rename_all = "camelCase")]
    Dropped {
        /// The dropped message's id.
        #[schema(value_type = String)]
        message_id: Arc<str>,
    },
    /// A client acknowledged a pushed message with an `ack` frame.
    #[serde(rename = "client.acked", rename_all = "camelCase")]
    Acked {
        /// The acknowledged message's id.
        message_id: String,
    },
    /// A client's group set changed (by `sync`, `join`, `leave` or over HTTP).
    #[serde(rename = "client.groups")]
    Groups {
        /// The new set, sorted.
        #[schema(value_type = Vec<String>)]
        groups: Vec<Arc<str>>,
    },
    /// A message was stored in `name`'s mailbox.
    #[serde(rename = "message.stored", rename_all = "camelCase")]
    Stored {
        /// The stored message's id.
        message_id: String,
        /// Kept until the client acks it.
        until_ack: bool,
    },
    /// A stored message was delivered to the client that now holds the name.
    #[serde(rename = "message.delivered", rename_all = "camelCase")]
    Delivered {
        /// The delivered message's id.
        message_id: String,
        /// An earlier session of the name got it already.
        redelivered: bool,
    },
    /// A stored message's ttl ran out before it was delivered (or acked).
    #[serde(rename = "message.expired", rename_all = "camelCase")]
    Expired {
        /// The expired message's id.
        message_id: String,
    },
}

impl EventKind {
    /// Every event type, as it appears in `type`.
    pub const TYPES: [&'static str; 10] = [
        "client.connected",
        "client.named",
        "client.disconnected",
        "client.message",
        "message.dropped",
        "client.acked",
        "client.groups",
        "message.stored",
        "message.delivered",
        "message.expired",
    ];

    /// The event's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Connected => "client.connected",
            EventKind::Named { .. } => "client.named",
            EventKind::Disconnected { .. } => "client.disconnected",
            EventKind::Message { .. } => "client.message",
            EventKind::Dropped { .. } => "message.dropped",
            EventKind::Acked { .. } => "client.acked",
            EventKind::Groups { .. } => "client.groups",
            EventKind::Stored { .. } => "message.stored",
            EventKind::Delivered { .. } => "message.delivered",
            EventKind::Expired { .. } => "message.expired",
        }
    }
}

/// The single source of hub events and the buffer followers resume from.
#[derive(Debug)]
pub struct EventBus {
    /// Set by the first subscription; events before it are not even built.
    recording: AtomicBool,
    /// Events kept for resumption: the newest `capacity`.
    capacity: usize,
    history: Mutex<History>,
    live: broadcast::Sender<Arc<Event>>,
    /// Cancelled when the hub has stopped emitting (after the shutdown drain).
    closed: CancellationToken,
}

#[derive(Debug)]
struct History {
    /// The id the next event gets.
    next_id: u64,
    events: VecDeque<Arc<Event>>,
}

/// A new follower's starting point: what it missed, what it can replay, and
/// the live events after those.
#[derive(Debug)]
pub struct Follow {
    /// Events after the requested id that are no longer buffered.
    pub missed: u64,
    /// Buffered events after the requested id, oldest first.
    pub backlog: Vec<Arc<Event>>,
    /// Every event after the backlog. It lags (`RecvError::Lagged`) when its
    /// reader falls more than the buffer size behind.
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl EventBus {
    /// A bus that keeps the newest `capacity` events (at least one).
    pub fn new(capacity: usize) -> EventBus {
        let capacity = capacity.max(1);
        EventBus {
            recording: AtomicBool::new(false),
            capacity,
            history: Mutex::new(History {
                next_id: 1,
                events: VecDeque::new(),
            }),
            live: broadcast::Sender::new(capacity),
            closed: CancellationToken::new(),
        }
    }

    /// Publishes an event about the client that `subject` describes (session id,
    /// name, peer); `subject` runs only once someone follows the events.
    pub fn emit(
        &self,
        subject: impl FnOnce() -> (String, Option<Arc<str>>, SocketAddr),
        kind: EventKind,
    ) {
        if !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let (client_id, name, peer) = subject();
        self.publish(Some(client_id), name, Some(peer), kind);
    }

    /// Publishes an event about a name no live client is concerned in (a mailbox's).
    pub fn emit_for_name(&self, name: &str, kind: EventKind) {
        if self.recording.load(Ordering::Relaxed) {
            self.publish(None, Some(Arc::from(name)), None, kind);
        }
    }

    fn publish(
        &self,
        client_id: Option<String>,
        name: Option<Arc<str>>,
        peer: Option<SocketAddr>,
        kind: EventKind,
    ) {
        let mut history = self.history();
        let event = Arc::new(Event {
            id: history.next_id,
            time: SystemTime::now(),
            client_id,
            name,
            peer,
            kind,
        });
        history.next_id += 1;
        if history.events.len() == self.capacity {
            history.events.pop_front();
        }
        history.events.push_back(Arc::clone(&event));
        // Sent under the history lock, so that `follow` sees every event either
        // in the backlog or on the live receiver, never both and never neither.
        // An error only means that no follower is connected right now.
        let _ = self.live.send(event);
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.recording.store(true, Ordering::Relaxed);
        self.live.subscribe()
    }

    /// Every event after the one with id `after` (as far as the buffer reaches),
    /// or from now on when `after` is `None`.
    ///
    /// An id this process has not issued yet (a follower of an earlier run)
    /// replays the whole buffer.
    pub fn follow(&self, after: Option<u64>) -> Follow {
        self.recording.store(true, Ordering::Relaxed);
        let history = self.history();
        let live = self.live.subscribe();
        let Some(after) = after else {
            return Follow {
                missed: 0,
                backlog: Vec::new(),
                live,
            };
        };
        let after = if after >= history.next_id { 0 } else { after };
        let oldest = history.events.front().map_or(history.next_id, |e| e.id);
        let missed = oldest.saturating_sub(after + 1);
        // Ids in the buffer are consecutive, so the position is arithmetic.
        let skip = usize::try_from((after + 1).saturating_sub(oldest)).unwrap_or(usize::MAX);
        let backlog = history.events.iter().skip(skip).cloned().collect();
        Follow {
            missed,
            backlog,
            live,
        }
    }

    /// Marks the end of the event stream: the hub has stopped and will emit no
    /// more. Followers drain what they have and finish.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Resolves once [`EventBus::close`] was called.
    pub fn closed(&self) -> WaitForCancellationFuture<'_> {
        self.closed.cancelled()
    }

    fn history(&self) -> MutexGuard<'_, History> {
        // Every mutation of the history is a push and a pop that cannot panic
        // halfway, so a poisoned lock still holds a consistent buffer.
        self.history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(bus: &EventBus, n: u64) {
        let peer = SocketAddr::from(([127, 0, 0, 1], 9));
        for i in 0..n {
            bus.emit(
                || (format!("c{i}"), None, peer),
                EventKind::Disconnected { reason: "closed" },
            );
        }
    }

    fn ids(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|event| event.id).collect()
    }

    #[test]
    fn nothing_is_built_before_anyone_follows() {
        let bus = EventBus::new(8);
        emit(&bus, 3);
        let follow = bus.follow(Some(0));
        assert_eq!((follow.missed, ids(&follow.backlog)), (0, vec![]));
        emit(&bus, 1);
        assert_eq!(ids(&bus.follow(Some(0)).backlog), vec![1]);
    }

    #[test]
    fn followers_resume_after_the_id_they_last_saw() {
        let bus = EventBus::new(4);
        let _started = bus.subscribe();
        emit(&bus, 6);
        let from_two = bus.follow(Some(2));
        assert_eq!(
            (from_two.missed, ids(&from_two.backlog)),
            (0, vec![3, 4, 5, 6])
        );
        let from_one = bus.follow(Some(1));
        assert_eq!(
            (from_one.missed, ids(&from_one.backlog)),
            (1, vec![3, 4, 5, 6])
        );
        let caught_up = bus.follow(Some(6));
        assert_eq!((caught_up.missed, ids(&caught_up.backlog)), (0, vec![]));
        let earlier_run = bus.follow(Some(99));
        assert_eq!(
            (earlier_run.missed, ids(&earlier_run.backlog)),
            (2, vec![3, 4, 5, 6])
        );
    }
}
