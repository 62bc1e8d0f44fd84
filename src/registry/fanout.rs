//! Broadcasts: one frame, serialized once, offered to many clients, on several
//! threads when they are many (a socket write is the whole cost of a delivery).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::{Client, Registry};
use crate::outbox::{Offer, Written};
use crate::protocol::{HubFrame, Scope};

/// Broadcasts to at least this many clients are spread over several cores.
const PARALLEL_FANOUT_MIN: usize = 2048;

/// Threads a large broadcast writes from: all cores but one, which stays free
/// for the connection tasks and the HTTP API (and, on a small machine, for the
/// clients' side of the loopback writes).
fn fanout_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get().saturating_sub(1).max(1))
}

/// The message id and what a broadcast reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastReport {
    /// The message id.
    pub id: String,
    /// Live clients when it was sent.
    pub recipients: usize,
    /// Clients that accepted it into their queue (or got it written at once).
    pub queued: usize,
    /// Clients whose queue was full.
    pub dropped: usize,
}

/// What part of a broadcast reached.
#[derive(Debug, Default)]
struct FanOut {
    recipients: usize,
    queued: usize,
    dropped: usize,
    written: Written,
}

impl FanOut {
    fn add(&mut self, other: FanOut) {
        self.recipients += other.recipients;
        self.queued += other.queued;
        self.dropped += other.dropped;
        self.written.frames += other.written.frames;
        self.written.bytes += other.written.bytes;
    }
}

impl Registry {
    /// Pushes `message` to every live client, serialized once for all of them.
    pub fn broadcast(&self, message: &Value) -> BroadcastReport {
        self.broadcast_as(self.next_message_id(), message)
    }

    /// Pushes `message` as message `id` (issued elsewhere: a cluster-wide
    /// broadcast) to every live client of this node.
    pub fn broadcast_as(&self, id: String, message: &Value) -> BroadcastReport {
        // With client authentication on, a connection proves itself by its `sync`:
        // until then it is told nothing.
        let authenticated_only = self.inner.client_auth.is_some();
        let recipients: Vec<Arc<Client>> = self
            .lock()
            .by_session
            .values()
            .filter(|client| !authenticated_only || client.name().is_some())
            .cloned()
            .collect();
        let frame = HubFrame::Message {
            id: &id,
            scope: Scope::Broadcast,
            group: None,
            message,
        }
        .encode();
        let report = self.fan_out(&recipients, &frame, id, Scope::Broadcast);
        self.inner
            .metrics
            .broadcast_fanout
            .observe(report.recipients as f64);
        report
    }

    /// Writes or queues one encoded `frame` (message `id`) for every recipient,
    /// on several threads when they are many.
    pub(super) fn fan_out(
        &self,
        recipients: &[Arc<Client>],
        frame: &Bytes,
        id: String,
        scope: Scope,
    ) -> BroadcastReport {
        let threads = fanout_threads();
        let tally = if recipients.len() < PARALLEL_FANOUT_MIN || threads < 2 {
            self.deliver_to_all(recipients, frame, &id)
        } else {
            self.deliver_in_parallel(recipients, frame, &id, threads)
        };
        self.record_written(tally.written);
        self.count_queued(scope, tally.queued as u64);
        BroadcastReport {
            id,
            recipients: tally.recipients,
            queued: tally.queued,
            dropped: tally.dropped,
        }
    }

    /// Fans `frame` out over `threads` threads, each writing to its share of the
    /// recipients (a socket write is the whole cost of a delivery).
    fn deliver_in_parallel(
        &self,
        recipients: &[Arc<Client>],
        frame: &Bytes,
        id: &str,
        threads: usize,
    ) -> FanOut {
        let share = recipients.len().div_ceil(threads);
        let mut shares = recipients.chunks(share);
        let own = shares.next().unwrap_or_default();
        std::thread::scope(|scope| {
            let others: Vec<_> = shares
                .map(|share| scope.spawn(move || self.deliver_to_all(share, frame, id)))
                .collect();
            let mut tally = self.deliver_to_all(own, frame, id);
            for other in others {
                // A delivery thread only panics on a bug; its share is then unreported.
                tally.add(other.join().unwrap_or_default());
            }
            tally
        })
    }

    /// Offers `frame` to each client in turn.
    fn deliver_to_all(&self, recipients: &[Arc<Client>], frame: &Bytes, id: &str) -> FanOut {
        let mut tally = FanOut::default();
        for client in recipients {
            let (offer, written) =
                client
                    .outbox
                    .offer(frame, self.inner.queue_capacity, client.sink());
            client.record_written(written);
            tally.written.frames += written.frames;
            tally.written.bytes += written.bytes;
            match offer {
                Offer::Accepted => tally.queued += 1,
                Offer::Full => {
                    self.on_full_queue(client, id);
                    tally.dropped += 1;
                }
                Offer::Closing => continue,
            }
            tally.recipients += 1;
        }
        tally
    }
}
