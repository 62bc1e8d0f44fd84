//! Where the answers to this node's calls arrive: one wildcard subscription,
//! `<inbox>.>`, for all of them.
//!
//! Each request message gets a reply subject of its own, `<inbox>.<batch>`.
//! The answers of a reply message are handed to their calls by id; a refusal
//! of the whole message, or the broker's word that nobody listens on its
//! subject, goes to every call it carried. An answer in chunks comes to
//! `<inbox>.<batch>.<id>` and is put together here.
//!
//! A subscription per call would cost the broker two interest updates per call
//! (the subscribe and the unsubscribe), and a cross-node send is a call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use async_nats::{Client, Message, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OnceCell, mpsc, oneshot};

use super::wire::{self, Answers, Assembly, CHUNK_HEADER, NODE_HEADER, Refusal};

/// What reaches one call.
#[derive(Debug)]
pub(super) struct Arrival {
    /// The node it came from, when the reply names it.
    pub node: Option<String>,
    pub content: Content,
}

/// What a call hears.
#[derive(Debug)]
pub(super) enum Content {
    /// Its reply: a `wire::Reply` as JSON.
    Reply(Bytes),
    /// Nobody subscribes to the subject the call went to.
    NoResponders,
    /// The node refused the whole request message the call went in.
    Refused(Refusal),
    /// What came back could not be read.
    Unreadable(String),
    /// The call could not be sent.
    Unsent(String),
}

/// The reply subjects of one node's calls.
#[derive(Debug)]
pub(super) struct Inbox {
    /// The subject prefix, once the wildcard subscription is up.
    prefix: OnceCell<String>,
    state: Mutex<State>,
    /// Call ids and batch numbers, from one counter.
    next: AtomicU64,
    /// Where the batch number of each reply message goes, for the sender to
    /// know that the message got its first reply.
    replied: mpsc::UnboundedSender<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// The calls still waiting, by id.
    calls: HashMap<u64, Waiting>,
    /// The calls of each request message sent, while any of them waits.
    batches: HashMap<u64, Vec<u64>>,
}

#[derive(Debug)]
struct Waiting {
    deliver: Deliver,
    /// The request message it went in, once sent.
    batch: Option<u64>,
    /// Its answer, when that comes in chunks.
    chunks: Assembly,
}

impl Inbox {
    /// An inbox, and the batch numbers of the reply messages it will receive.
    pub(super) fn new() -> (Arc<Inbox>, mpsc::UnboundedReceiver<u64>) {
        let (replied, replies) = mpsc::unbounded_channel();
        let inbox = Inbox {
            prefix: OnceCell::new(),
            state: Mutex::default(),
            next: AtomicU64::new(0),
            replied,
        };
        (Arc::new(inbox), replies)
    }

    /// Registers a call that `expects` one reply or many (one per node):
    /// its id, and what comes for it.
    ///
    /// The first call subscribes; a later call's publish follows that
    /// subscription on the same connection, so no answer can come before it.
    pub(super) async fn open(
        self: &Arc<Inbox>,
        client: &Client,
        expects: Expects,
    ) -> Result<Replies, async_nats::SubscribeError> {
        self.prefix
            .get_or_try_init(|| subscribe(Arc::downgrade(self), client))
            .await?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        // Most calls want one reply: a oneshot costs far less than a channel.
        let (deliver, receive) = match expects {
            Expects::One => {
                let (sender, receiver) = oneshot::channel();
                (Deliver::One(Some(sender)), Receive::One(Some(receiver)))
            }
            Expects::Many => {
                let (sender, receiver) = mpsc::unbounded_channel();
                (Deliver::Many(sender), Receive::Many(receiver))
            }
        };
        let waiting = Waiting {
            deliver,
            batch: None,
            chunks: Assembly::default(),
        };
        self.state().calls.insert(id, waiting);
        Ok(Replies {
            id,
            receive,
            inbox: Arc::clone(self),
        })
    }

    /// The batch number and reply subject of a request message carrying the
    /// calls `ids`, or `None` when none of them waits any more (nothing to send).
    pub(super) fn seal(&self, ids: impl IntoIterator<Item = u64>) -> Option<(u64, String)> {
        let prefix = self.prefix.get()?;
        let batch = self.next.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state();
        let mut sealed = Vec::new();
        for id in ids {
            if let Some(waiting) = state.calls.get_mut(&id) {
                waiting.batch = Some(batch);
                sealed.push(id);
            }
        }
        if sealed.is_empty() {
            return None;
        }
        state.batches.insert(batch, sealed);
        Some((batch, format!("{prefix}.{batch}")))
    }

    /// Tells every call of the request message `subject` that it was not sent.
    pub(super) fn unsent(&self, subject: &str, detail: &str) {
        if let Some((batch, None)) = self.tokens(subject) {
            self.to_batch(batch, None, || Content::Unsent(detail.to_owned()));
        }
    }

    /// Hands `message` to the calls it is for. Replies to calls that have
    /// ended (answered already, or past their deadline) are dropped.
    fn dispatch(&self, message: Message) {
        let Some((batch, chunked)) = self.tokens(&message.subject) else {
            return;
        };
        if chunked.is_none() {
            let _ = self.replied.send(batch);
        }
        let node = header(&message, NODE_HEADER).map(str::to_owned);
        if message.status == Some(StatusCode::NO_RESPONDERS) {
            self.to_batch(batch, node, || Content::NoResponders);
            return;
        }
        if let Some(id) = chunked {
            self.add_chunk(id, node, &message);
            return;
        }
        let whole = message.payload;
        match wire::decode_answers(&whole) {
            Ok(Answers::Each(replies)) => {
                let mut state = self.state();
                for (id, reply) in replies {
                    // Only a call of the message answered: never another's by mistake.
                    if let Some(waiting) = state.calls.get_mut(&id)
                        && waiting.batch == Some(batch)
                    {
                        let node = node.clone();
                        let content = Content::Reply(reply);
                        waiting.deliver.send(Arrival { node, content });
                    }
                }
            }
            Ok(Answers::Refused(refusal)) => {
                self.to_batch(batch, node, || Content::Refused(refusal.clone()));
            }
            Err(detail) => self.to_batch(batch, node, || Content::Unreadable(detail.clone())),
        }
    }

    /// Adds a chunk of call `id`'s answer; once it is whole, hands the bare
    /// reply to the call unread (a big answer is parsed once, by its call).
    fn add_chunk(&self, id: u64, node: Option<String>, message: &Message) {
        let chunk = header(message, CHUNK_HEADER);
        let mut state = self.state();
        let Some(waiting) = state.calls.get_mut(&id) else {
            return;
        };
        let from = node.as_deref().unwrap_or_default();
        let content = match waiting.chunks.add(from, chunk, message.payload.clone()) {
            None => return,
            Some(Ok(whole)) => Content::Reply(whole),
            Some(Err(detail)) => Content::Unreadable(detail),
        };
        waiting.deliver.send(Arrival { node, content });
    }

    /// Gives each waiting call of request message `batch` what `content` makes.
    fn to_batch(&self, batch: u64, node: Option<String>, content: impl Fn() -> Content) {
        let mut state = self.state();
        let State { calls, batches } = &mut *state;
        let Some(ids) = batches.get(&batch) else {
            return;
        };
        for id in ids {
            if let Some(waiting) = calls.get_mut(id) {
                let node = node.clone();
                let content = content();
                waiting.deliver.send(Arrival { node, content });
            }
        }
    }

    /// The batch number, and the call id for a chunk, that `subject` names.
    fn tokens(&self, subject: &str) -> Option<(u64, Option<u64>)> {
        let rest = subject
            .strip_prefix(self.prefix.get()?.as_str())?
            .strip_prefix('.')?;
        match rest.split_once('.') {
            None => Some((rest.parse().ok()?, None)),
            Some((batch, id)) => Some((batch.parse().ok()?, Some(id.parse().ok()?))),
        }
    }

    fn forget(&self, id: u64) {
        let mut state = self.state();
        let Some(batch) = state.calls.remove(&id).and_then(|waiting| waiting.batch) else {
            return;
        };
        if let Some(ids) = state.batches.get_mut(&batch) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                state.batches.remove(&batch);
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Subscribes to `<fresh inbox>.>` and dispatches what arrives until the
/// connection or the inbox goes away; the prefix.
async fn subscribe(
    inbox: Weak<Inbox>,
    client: &Client,
) -> Result<String, async_nats::SubscribeError> {
    let prefix = client.new_inbox();
    let mut subscriber = client.subscribe(format!("{prefix}.>")).await?;
    tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            let Some(inbox) = inbox.upgrade() else {
                break;
            };
            inbox.dispatch(message);
        }
        // The connection is closed for good: the waiting calls hear of it now.
        if let Some(inbox) = inbox.upgrade() {
            let mut state = inbox.state();
            state.calls.clear();
            state.batches.clear();
        }
    });
    Ok(prefix)
}

fn header<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(name))
        .map(|value| value.as_str())
}

/// How many replies a call waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expects {
    /// One: a call to one node.
    One,
    /// Any number: a call to every node.
    Many,
}

/// Where a call's arrivals go.
#[derive(Debug)]
enum Deliver {
    /// The first one only.
    One(Option<oneshot::Sender<Arrival>>),
    Many(mpsc::UnboundedSender<Arrival>),
}

impl Deliver {
    fn send(&mut self, arrival: Arrival) {
        match self {
            Deliver::One(sender) => {
                if let Some(sender) = sender.take() {
                    let _ = sender.send(arrival);
                }
            }
            Deliver::Many(sender) => {
                let _ = sender.send(arrival);
            }
        }
    }
}

#[derive(Debug)]
enum Receive {
    One(Option<oneshot::Receiver<Arrival>>),
    Many(mpsc::UnboundedReceiver<Arrival>),
}

/// What comes for one call, in order of arrival; the call is forgotten when dropped.
#[derive(Debug)]
pub(super) struct Replies {
    id: u64,
    receive: Receive,
    inbox: Arc<Inbox>,
}

impl Replies {
    /// The call's id.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// The next arrival; `None` once the connection is gone (or, for a call
    /// that expects one reply, after it).
    pub(super) async fn next(&mut self) -> Option<Arrival> {
        match &mut self.receive {
            Receive::One(receiver) => receiver.take()?.await.ok(),
            Receive::Many(receiver) => receiver.recv().await,
        }
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.inbox.forget(self.id);
    }
}
