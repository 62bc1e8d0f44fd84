//! Calls on their way out: one task takes every call made since it last
//! sent and puts the calls for one subject into one request message.
//!
//! A call made alone goes out at once, alone; calls made while the task is
//! busy (under load: many) share a message. The broker and the answering
//! node then handle one message for all of them.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::broker::Broker;
use super::inbox::Inbox;
use super::wire::{self, CallOut, HEADER_ROOM, MESSAGE_ROOM};

/// The most calls one request message carries, so that one burst does not
/// hold all the answers of the next until it is all sent.
const MAX_CALLS: usize = 256;

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
    /// reply subjects from `inbox`.
    pub(super) fn start(broker: Broker, inbox: Arc<Inbox>) -> Outgoing {
        let (queue, calls) = mpsc::unbounded_channel();
        tokio::spawn(send_all(calls, broker, inbox));
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

async fn send_all(mut calls: mpsc::UnboundedReceiver<Queued>, broker: Broker, inbox: Arc<Inbox>) {
    let mut ready = Vec::new();
    while calls.recv_many(&mut ready, MAX_CALLS).await > 0 {
        // One subject's calls together, in the order they were made.
        ready.sort_by(|a: &Queued, b| a.subject.cmp(&b.subject));
        let max = max_message(&broker);
        for same in ready.chunk_by(|a, b| a.subject == b.subject) {
            let mut start = 0;
            let mut size = MESSAGE_ROOM;
            for (i, queued) in same.iter().enumerate() {
                if i > start && size + queued.call.size() > max {
                    send(&broker, &inbox, &same[start..i]).await;
                    (start, size) = (i, MESSAGE_ROOM);
                }
                size += queued.call.size();
            }
            send(&broker, &inbox, &same[start..]).await;
        }
        ready.clear();
    }
}

/// Sends `calls`, all for one subject, in one message; a call that cannot be
/// sent hears why at once.
async fn send(broker: &Broker, inbox: &Inbox, calls: &[Queued]) {
    let Some(first) = calls.first() else {
        return;
    };
    let Some(reply) = inbox.seal(calls.iter().map(|queued| queued.call.id)) else {
        return; // every one of them stopped waiting
    };
    let bodies: Vec<&CallOut> = calls.iter().map(|queued| &queued.call).collect();
    let sent = match wire::encode_calls(&bodies) {
        Ok(payload) => broker
            .client()
            .publish_with_reply(first.subject.clone(), reply.clone(), payload.into())
            .await
            .map_err(|err| err.to_string()),
        Err(err) => Err(format!("request does not encode: {err}")),
    };
    if let Err(detail) = sent {
        inbox.unsent(&reply, &detail);
    }
}
