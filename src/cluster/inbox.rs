//! Where the answers to this node's calls arrive: one wildcard subscription,
//! `<inbox>.*`, for every call, each call's replies told apart by the last
//! token of its reply subject.
//!
//! A subscription per call would cost the broker two interest updates per call
//! (the subscribe and the unsubscribe), and a cross-node send is a call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use async_nats::{Client, Message};
use futures_util::StreamExt;
use tokio::sync::{OnceCell, mpsc};

type Waiting = HashMap<u64, mpsc::UnboundedSender<Message>>;

/// The reply subjects of one node's calls; shared by its clones of `Rpc`.
#[derive(Debug, Default)]
pub(super) struct Inbox {
    /// The subject prefix, once the wildcard subscription is up.
    prefix: OnceCell<String>,
    /// The calls still waiting, by token.
    waiting: Mutex<Waiting>,
    next_token: AtomicU64,
}

impl Inbox {
    /// A reply subject of its own for one call, and the stream of what comes to it.
    ///
    /// The first call subscribes; a later call's publish follows that
    /// subscription on the same connection, so no answer can come before it.
    pub(super) async fn open(
        self: &Arc<Inbox>,
        client: &Client,
    ) -> Result<Replies, async_nats::SubscribeError> {
        let prefix = self
            .prefix
            .get_or_try_init(|| subscribe(Arc::downgrade(self), client))
            .await?;
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::unbounded_channel();
        self.waiting().insert(token, sender);
        Ok(Replies {
            subject: format!("{prefix}.{token}"),
            token,
            receiver,
            inbox: Arc::clone(self),
        })
    }

    /// Hands `message` to the call its subject names. Replies to a call that
    /// has ended (answered already, or past its deadline) are dropped.
    fn dispatch(&self, message: Message) {
        let token = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|token| token.parse::<u64>().ok());
        let sender = token.and_then(|token| self.waiting().get(&token).cloned());
        if let Some(sender) = sender {
            let _ = sender.send(message);
        }
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Subscribes to `<fresh inbox>.*` and dispatches what arrives until the
/// connection or the inbox goes away; the prefix.
async fn subscribe(
    inbox: Weak<Inbox>,
    client: &Client,
) -> Result<String, async_nats::SubscribeError> {
    let prefix = client.new_inbox();
    let mut subscriber = client.subscribe(format!("{prefix}.*")).await?;
    tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            let Some(inbox) = inbox.upgrade() else {
                break;
            };
            inbox.dispatch(message);
        }
        // The connection is closed for good: the waiting calls hear of it now.
        if let Some(inbox) = inbox.upgrade() {
            inbox.waiting().clear();
        }
    });
    Ok(prefix)
}

/// The replies to one call, in order of arrival; its token is given back when dropped.
#[derive(Debug)]
pub(super) struct Replies {
    subject: String,
    token: u64,
    receiver: mpsc::UnboundedReceiver<Message>,
    inbox: Arc<Inbox>,
}

impl Replies {
    /// The subject the answering nodes reply to.
    pub(super) fn subject(&self) -> &str {
        &self.subject
    }

    /// The next reply; `None` once the connection is gone.
    pub(super) async fn next(&mut self) -> Option<Message> {
        self.receiver.recv().await
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.inbox.waiting().remove(&self.token);
    }
}
