//! Calls on their way out: one task sends every node's calls, one request
//! message per subject at a time.
//!
//! A call to a subject with no message in flight goes out at once (alone,
//! when it is alone). Calls made while a message to their subject is in
//! flight wait for its first reply (the answering node replies to every
//! message as soon as it has taken it, with the answers ready by then) and
//! then go together, the way Nagle's algorithm holds back small TCP segments.
//! Under load a message thus carries the calls of one round trip, and the
//! broker and the answering node wake once for all of them. A subject whose
//! message gets no reply within [`STALL`] (a node paused, or gone without the
//! broker noticing yet) is not waited for any longer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::broker::Broker;
use super::inbox::Inbox;
use super::wire::{self, CallOut, HEADER_ROOM, MESSAGE_ROOM};

/// The most calls one request message carries, so that one burst does not
/// hold all the answers of the next until it is all sent.
const MAX_CALLS: usize = 256;
/// How long the calls to a subject wait for the reply to the message in
/// flight before they go anyway.
const STALL: Duration = Duration::from_millis(5);

/// A call and the subject it goes to.
#[derive(Debug)]
struct Queued {
    subject: String,
    call: CallOut,
}

/// The queue of calls to send; sends nothing once every handle is dropped.
#[derive(Debug)]
pub(super) struct Outgoing {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Outgoing {
    /// Starts the task that sends what is queued through `broker`, with
    /// reply subjects from `inbox`; `replied` carries the request messages
    /// that got a first reply.
    pub(super) fn start(
        broker: Broker,
        inbox: Arc<Inbox>,
        replied: mpsc::UnboundedReceiver<u64>,
    ) -> Outgoing {
        let (queue, calls) = mpsc::unbounded_channel();
        let sender = Sender {
            broker,
            inbox,
            subjects: HashMap::new(),
            in_flight: HashMap::new(),
        };
        tokio::spawn(sender.run(calls, replied));
        Outgoing { queue }
    }

    /// Queues `call` for `subject`; an error only when the sending task has
    /// ended (the runtime is shutting down).
    pub(super) fn push(&self, subject: String, call: CallOut) -> Result<(), String> {
        self.queue
            .send(Queued { subject, call })
            .map_err(|_| "the call queue is closed".to_owned())
    }
}

/// The largest request message the broker takes.
pub(super) fn max_message(broker: &Broker) -> usize {
    broker.client().max_payload().saturating_sub(HEADER_ROOM)
}

struct Sender {
    broker: Broker,
    inbox: Arc<Inbox>,
    /// The subjects with calls waiting or a message in flight.
    subjects: HashMap<String, Subject>,
    /// The subject of each message in flight, by batch number.
    in_flight: HashMap<u64, String>,
}

#[derive(Default)]
struct Subject {
    waiting: Vec<CallOut>,
    /// The message in flight, and when it went.
    in_flight: Option<(u64, Instant)>,
}

impl Sender {
    async fn run(
        mut self,
        mut calls: mpsc::UnboundedReceiver<Queued>,
        mut replied: mpsc::UnboundedReceiver<u64>,
    ) {
        let (mut queued, mut batches) = (Vec::new(), Vec::new());
        loop {
            let stalled_at = self
                .subjects
                .values()
                .filter_map(|subject| subject.in_flight.map(|(_, sent)| sent + STALL))
                .min();
            tokio::select! {
                taken = calls.recv_many(&mut queued, MAX_CALLS) => {
                    if taken == 0 {
                        return; // every handle dropped
                    }
                    for Queued { subject, call } in queued.drain(..) {
                        self.subjects.entry(subject).or_default().waiting.push(call);
                    }
                }
                taken = replied.recv_many(&mut batches, MAX_CALLS) => {
                    if taken == 0 {
                        return; // the inbox is gone
                    }
                    for batch in batches.drain(..) {
                        self.landed(batch);
                    }
                }
                () = sleep_until(stalled_at) => {
                    let now = Instant::now();
                    let stalled: Vec<u64> = self
                        .subjects
                        .values()
                        .filter_map(|subject| subject.in_flight)
                        .filter(|(_, sent)| *sent + STALL <= now)
                        .map(|(batch, _)| batch)
                        .collect();
                    for batch in stalled {
                        self.landed(batch);
                    }
                }
            }
            self.send_waiting().await;
        }
    }

    /// The message `batch` got a reply (or is not waited for any longer):
    /// its subject may send again.
    fn landed(&mut self, batch: u64) {
        if let Some(name) = self.in_flight.remove(&batch)
            && let Some(subject) = self.subjects.get_mut(&name)
        {
            subject.in_flight = None;
        }
    }

    /// Sends the waiting calls of every subject with no message in flight.
    async fn send_waiting(&mut self) {
        let max = max_message(&self.broker);
        for (name, subject) in &mut self.subjects {
            if subject.in_flight.is_some() || subject.waiting.is_empty() {
                continue;
            }
            let calls = std::mem::take(&mut subject.waiting);
            let mut last = None;
            for message in messages(&calls, max) {
                last = send(&self.broker, &self.inbox, name, message)
                    .await
                    .or(last);
            }
            if let Some(batch) = last {
                subject.in_flight = Some((batch, Instant::now()));
                self.in_flight.insert(batch, name.clone());
            }
        }
        self.subjects
            .retain(|_, subject| subject.in_flight.is_some() || !subject.waiting.is_empty());
    }
}

/// `calls` cut into request messages of at most `max` bytes (and
/// [`MAX_CALLS`] calls), in order.
fn messages(calls: &[CallOut], max: usize) -> Vec<&[CallOut]> {
    let mut messages = Vec::new();
    let (mut start, mut size) = (0, MESSAGE_ROOM);
    for (i, call) in calls.iter().enumerate() {
        if i > start && (size + call.size() > max || i - start == MAX_CALLS) {
            messages.push(&calls[start..i]);
            (start, size) = (i, MESSAGE_ROOM);
        }
        size += call.size();
    }
    if start < calls.len() {
        messages.push(&calls[start..]);
    }
    messages
}

/// Sends `calls` to `subject` in one message; its batch number, or `None`
/// when nothing went (none of the calls waits any more, or the send failed:
/// then each call hears why at once).
async fn send(broker: &Broker, inbox: &Inbox, subject: &str, calls: &[CallOut]) -> Option<u64> {
    let (batch, reply) = inbox.seal(calls.iter().map(|call| call.id))?;
    let calls: Vec<&CallOut> = calls.iter().collect();
    let sent = match wire::encode_calls(&calls) {
        Ok(payload) => broker
            .client()
            .publish_with_reply(subject.to_owned(), reply.clone(), payload.into())
            .await
            .map_err(|err| err.to_string()),
        Err(err) => Err(format!("request does not encode: {err}")),
    };
    match sent {
        Ok(()) => Some(batch),
        Err(detail) => {
            inbox.unsent(&reply, &detail);
            None
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wake for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: u64, body_bytes: usize) -> CallOut {
        let body = serde_json::value::to_raw_value(&"x".repeat(body_bytes - 2)).unwrap();
        CallOut {
            id,
            deadline: 0,
            body,
        }
    }

    #[test]
    fn calls_fill_messages_in_order_up_to_the_size() {
        let calls: Vec<CallOut> = (0..5).map(|id| call(id, 100)).collect();
        let per_call = calls[0].size();
        let max = MESSAGE_ROOM + 2 * per_call;
        let cut: Vec<Vec<u64>> = messages(&calls, max)
            .iter()
            .map(|message| message.iter().map(|call| call.id).collect())
            .collect();
        assert_eq!(cut, [vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[test]
    fn a_call_over_the_size_still_goes_alone() {
        let calls = [call(0, 10), call(1, 1000), call(2, 10)];
        let cut: Vec<usize> = messages(&calls, 500).iter().map(|m| m.len()).collect();
        assert_eq!(cut, [1, 1, 1]);
    }

    #[test]
    fn a_message_carries_at_most_max_calls() {
        let calls: Vec<CallOut> = (0..MAX_CALLS as u64 + 1).map(|id| call(id, 4)).collect();
        let cut: Vec<usize> = messages(&calls, usize::MAX)
            .iter()
            .map(|m| m.len())
            .collect();
        assert_eq!(cut, [MAX_CALLS, 1]);
    }
}
