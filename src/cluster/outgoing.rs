//! Calls on their way out: one task sends every node's calls, one request
//! message per subject at a time.
//!
//! A call to a subject with no message in flight goes out at once (alone,
//! when it is alone). Calls made while a message to their subject is in
//! flight wait for its first reply (the answering node replies to every
//! message as soon as it has taken it, with the answers ready by then) and
//! then go together, the way Nagle's algorithm holds back small TCP segments.
//! Under load a message thus carries the calls of one round trip, and the
//! broker and the answering node wake once for all of them; so does the
//! sending task, which a call waiting behind a message in flight does not
//! wake. Once woken, the task yields before it takes the calls: the requests
//! whose bytes arrived meanwhile (the answers just sent make the callers ask
//! again) queue their calls first and go in the same message. That costs one
//! turn of the runtime, no timer. A subject whose message gets no reply
//! within [`STALL`] (a node paused, or gone without the broker noticing yet)
//! is not waited for any longer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
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

/// The calls to send, shared by the callers and the sending task, which ends
/// when this is dropped.
#[derive(Debug)]
pub(super) struct Outgoing {
    queue: Arc<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    subjects: Mutex<HashMap<String, Subject>>,
    /// Wakes the sending task: a subject has calls and nothing in flight, or
    /// the queue is closed.
    ready: Notify,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct Subject {
    waiting: Vec<CallOut>,
    /// Since when a message is in flight (being sent, or sent and not replied
    /// to), and its batch number once sent.
    in_flight: Option<(Instant, Option<u64>)>,
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
        let queue = Arc::<Queue>::default();
        tokio::spawn(send_all(Arc::clone(&queue), broker, inbox, replied));
        Outgoing { queue }
    }

    /// Queues `call` for `subject`.
    pub(super) fn push(&self, subject: String, call: CallOut) {
        let mut subjects = self.queue.subjects();
        let queued = subjects.entry(subject).or_default();
        queued.waiting.push(call);
        let first = queued.in_flight.is_none() && queued.waiting.len() == 1;
        drop(subjects);
        if first {
            self.queue.ready.notify_one();
        }
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.ready.notify_one();
    }
}

impl Queue {
    fn subjects(&self) -> MutexGuard<'_, HashMap<String, Subject>> {
        self.subjects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the calls of every subject with nothing in flight, marking each
    /// in flight from now.
    fn take_sendable(&self) -> Vec<(String, Vec<CallOut>)> {
        let now = Instant::now();
        let mut subjects = self.subjects();
        let mut sendable = Vec::new();
        for (name, subject) in subjects.iter_mut() {
            if subject.in_flight.is_none() && !subject.waiting.is_empty() {
                subject.in_flight = Some((now, None));
                sendable.push((name.clone(), std::mem::take(&mut subject.waiting)));
            }
        }
        sendable
    }

    /// Records what went to `name`: the batch number of its last message, or
    /// `None` when nothing went (then nothing is in flight).
    fn sent(&self, name: &str, batch: Option<u64>) {
        let mut subjects = self.subjects();
        if let Some(subject) = subjects.get_mut(name) {
            subject.in_flight = batch.map(|batch| (Instant::now(), Some(batch)));
        }
    }

    /// The subjects whose message in flight is `landed` (it got a reply) or
    /// has stalled may send again; subjects with nothing left are dropped.
    /// When the next one stalls.
    fn land(&self, landed: &[u64]) -> Option<Instant> {
        let now = Instant::now();
        let mut subjects = self.subjects();
        for subject in subjects.values_mut() {
            if let Some((since, batch)) = subject.in_flight
                && (batch.is_some_and(|batch| landed.contains(&batch)) || since + STALL <= now)
            {
                subject.in_flight = None;
            }
        }
        subjects.retain(|_, subject| subject.in_flight.is_some() || !subject.waiting.is_empty());
        subjects
            .values()
            .filter_map(|subject| subject.in_flight.map(|(since, _)| since + STALL))
            .min()
    }
}

/// The largest request message the broker takes.
pub(super) fn max_message(broker: &Broker) -> usize {
    broker.client().max_payload().saturating_sub(HEADER_ROOM)
}

/// Sends what the queue holds, whenever a subject may send, until the queue
/// is closed or the inbox is gone.
async fn send_all(
    queue: Arc<Queue>,
    broker: Broker,
    inbox: Arc<Inbox>,
    mut replied: mpsc::UnboundedReceiver<u64>,
) {
    let mut landed = Vec::new();
    let mut stalls_at = None;
    while !queue.closed.load(Ordering::Acquire) {
        tokio::select! {
            () = queue.ready.notified() => {}
            taken = replied.recv_many(&mut landed, MAX_CALLS) => {
                if taken == 0 {
                    return;
                }
            }
            () = sleep_until(stalls_at) => {}
        }
        // Behind the tasks that are ready and the sockets that are readable
        // now: requests that arrived meanwhile queue their calls first, and
        // go in this message rather than the next.
        tokio::task::yield_now().await;
        stalls_at = queue.land(&landed);
        landed.clear();
        // Calls queued while a send failed find their subject free: another round.
        loop {
            let sendable = queue.take_sendable();
            if sendable.is_empty() {
                break;
            }
            let max = max_message(&broker);
            for (name, calls) in sendable {
                let mut last = None;
                for message in messages(&calls, max) {
                    last = send(&broker, &inbox, &name, message).await.or(last);
                }
                queue.sent(&name, last);
                stalls_at = stalls_at.or(last.map(|_| Instant::now() + STALL));
            }
        }
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
