//! The mailbox verbs of a node in a cluster: storing in the shared stream
//! ([`mailbox`](super::mailbox)), delivering to a session of this node, acks,
//! expiry, and the listings, each with the events and metrics a single node
//! has for them.
//!
//! A `sync` reads its name's stored messages before it claims the name, and
//! they are pushed right after its `welcome`: nothing sent to the name once
//! it is claimed can overtake them. A message stored while a client holds
//! (or is taking) the name is then pushed by the node holding it. Per name,
//! this node remembers which session it gave messages up to which sequence,
//! so nothing is pushed twice to one session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::Value;
use tracing::warn;

use super::calls::{NodeAnswer, NodeCall};
use super::epoch_millis;
use super::mailbox::{Letter, SharedStore};
use super::membership::{Membership, lock};
use crate::directory::Failure;
use crate::events::EventKind;
use crate::mailbox::StoreError;
use crate::mailbox::delivery::{self, Keep, Sent};
use crate::mailbox::memory::Summary;
use crate::registry::{Client, SyncError};

/// How often expired messages are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The shared store and what this node gave its sessions from it.
#[derive(Debug)]
pub(crate) struct Mail {
    store: Arc<SharedStore>,
    /// Per name, what the session holding it here was given (only for
    /// sessions that were given mail, and only while they hold the name).
    given: Mutex<HashMap<Arc<str>, Given>>,
    /// Per session, the messages read before its claim, pushed after its `welcome`.
    fetched: Mutex<HashMap<u64, Fetched>>,
}

#[derive(Debug, Default)]
struct Given {
    session: u64,
    /// The highest sequence pushed to the session.
    last: u64,
    /// Message id to sequence, of those pushed and kept until acked.
    unacked: HashMap<String, u64>,
}

#[derive(Debug)]
struct Fetched {
    name: String,
    letters: Vec<Letter>,
    seen: u64,
}

/// What one push handed the client and found expired.
#[derive(Debug, Default)]
struct Pushed {
    delivered: Vec<Letter>,
    expired: Vec<Letter>,
}

impl Mail {
    /// Mail kept in `store`.
    pub(crate) fn new(store: SharedStore) -> Mail {
        Mail {
            store: Arc::new(store),
            given: Mutex::default(),
            fetched: Mutex::default(),
        }
    }
}

/// One stored message as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The message id.
    pub id: String,
    /// Bytes of its JSON text.
    pub size: u64,
    /// When it was stored, in ms since the Unix epoch.
    pub stored_at_ms: u64,
    /// When it expires, in ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// Kept until acked.
    pub until_ack: bool,
}

fn now_ms() -> u64 {
    epoch_millis(SystemTime::now())
}

impl Membership {
    /// Claims `name` for `client` like [`Membership::claim`], reading the
    /// name's stored messages first; they are pushed after the `welcome`
    /// ([`Membership::deliver_after_welcome`]).
    pub async fn claim_with_mail(
        self: Arc<Self>,
        client: Arc<Client>,
        name: String,
    ) -> Result<(), SyncError> {
        // Broker operations are boxed where they are awaited, here and in
        // every registration step: a registration storm leaves thousands of
        // claims waiting for a slot, and each should hold a few hundred bytes
        // while it waits, not the several kilobytes of a broker round trip
        // (which the allocator would keep long after the storm).
        let slot = self.claim_slots.acquire().await;
        let letters = Box::pin(self.mail.store.letters(&name)).await;
        drop(slot);
        let fetched = match letters {
            Ok(letters) if letters.is_empty() => None,
            Ok(letters) => {
                let seen = Box::pin(self.mail.store.seen(&name)).await;
                Some(Fetched {
                    name: name.clone(),
                    letters,
                    seen,
                })
            }
            Err(err) => {
                warn!(%err, %name, "stored messages not read before the claim");
                None
            }
        };
        let session = client.session();
        let outcome = Arc::clone(&self).claim(client, name).await;
        if let (Ok(()), Some(fetched)) = (&outcome, fetched) {
            Box::pin(self.mark_seen(&fetched.name, &fetched.letters, fetched.seen)).await;
            lock(&self.mail.fetched).insert(session, fetched);
        }
        outcome
    }

    /// Right after `client`'s `welcome`: pushes what was read before its
    /// claim, then looks again for what was stored meanwhile.
    pub fn deliver_after_welcome(self: &Arc<Self>, client: &Arc<Client>) {
        let fetched = lock(&self.mail.fetched).remove(&client.session());
        let Some(name) = client.name() else {
            return;
        };
        let pushed = fetched
            .filter(|fetched| *fetched.name == *name)
            .map(|fetched| self.push(client, &name, fetched.letters, fetched.seen))
            .unwrap_or_default();
        let membership = Arc::clone(self);
        let client = Arc::clone(client);
        tokio::spawn(async move {
            Box::pin(membership.settle(&name, pushed)).await;
            membership.deliver(&client).await;
        });
    }

    /// Pushes the stored messages of `client`'s name it was not given yet;
    /// the ids pushed.
    pub(crate) async fn deliver(&self, client: &Arc<Client>) -> Vec<String> {
        let Some(name) = client.name() else {
            return Vec::new();
        };
        // Boxed where awaited: see `claim_with_mail`.
        let slot = self.claim_slots.acquire().await;
        let letters = Box::pin(self.mail.store.letters(&name)).await;
        drop(slot);
        let letters = match letters {
            Ok(letters) => letters,
            Err(err) => {
                warn!(%err, %name, "stored messages not read");
                return Vec::new();
            }
        };
        let seen = if letters.iter().any(|letter| letter.until_ack) {
            Box::pin(self.mail.store.seen(&name)).await
        } else {
            0
        };
        Box::pin(self.mark_seen(&name, &letters, seen)).await;
        let pushed = self.push(client, &name, letters, seen);
        let ids = pushed.delivered.iter().map(|l| l.id.clone()).collect();
        Box::pin(self.settle(&name, pushed)).await;
        ids
    }

    /// Pushes, in order, the letters newer than what the session was given,
    /// up to a full queue; expired ones are set aside.
    fn push(&self, client: &Arc<Client>, name: &str, letters: Vec<Letter>, seen: u64) -> Pushed {
        let registry = &self.registry;
        let now = now_ms();
        let mut pushed = Pushed::default();
        if letters.is_empty() {
            // Most sessions never have mail: they keep no record here.
            return pushed;
        }
        let mut given = lock(&self.mail.given);
        let given = given.entry(Arc::from(name)).or_default();
        if given.session != client.session() {
            *given = Given {
                session: client.session(),
                ..Given::default()
            };
        }
        for letter in letters {
            if letter.seq <= given.last {
                continue;
            }
            if letter.expires_at_ms <= now {
                pushed.expired.push(letter);
                continue;
            }
            let redelivered = letter.until_ack && letter.seq <= seen;
            if !registry.reply(client, &frame(&letter, redelivered)) {
                break;
            }
            given.last = letter.seq;
            if letter.until_ack {
                given.unacked.insert(letter.id.clone(), letter.seq);
            }
            registry.metrics().mailbox_delivered.inc();
            registry.emit(
                client,
                EventKind::Delivered {
                    message_id: letter.id.clone(),
                    redelivered,
                },
            );
            pushed.delivered.push(letter);
        }
        pushed
    }

    /// Forgets what `session` was given under `name`: it no longer holds it.
    pub(super) fn forget_given(&self, name: &str, session: u64) {
        let mut given = lock(&self.mail.given);
        if given
            .get(name)
            .is_some_and(|given| given.session == session)
        {
            given.remove(name);
        }
    }

    /// Records, before they are pushed, that the letters kept until acked
    /// were given out: a later session, on any node, gets them marked
    /// `redelivered`. Written first so that a client that disconnects at
    /// once cannot outrun it; a letter a full queue then held back is marked
    /// too (the mark means "may have been delivered").
    async fn mark_seen(&self, name: &str, letters: &[Letter], seen: u64) {
        let last = letters
            .iter()
            .filter(|letter| letter.until_ack)
            .map(|letter| letter.seq)
            .max();
        if let Some(last) = last.filter(|last| *last > seen) {
            self.mail.store.mark_seen(name, last).await;
        }
    }

    /// Removes what was delivered (unless kept until acked) and what expired.
    async fn settle(&self, name: &str, pushed: Pushed) {
        for letter in &pushed.delivered {
            if !letter.until_ack {
                self.mail.store.remove(letter.seq).await;
            }
        }
        self.remove_expired(name, &pushed.expired).await;
    }

    /// Removes expired letters, counting and announcing those this node removed.
    async fn remove_expired(&self, name: &str, expired: &[Letter]) {
        for letter in expired {
            if self.mail.store.remove(letter.seq).await {
                self.registry.metrics().mailbox_expired.inc();
                self.registry.events().emit_for_name(
                    name,
                    EventKind::Expired {
                        message_id: letter.id.clone(),
                    },
                );
            }
        }
    }

    /// `client` acked message `id`: if this node gave it that message from
    /// the mailbox, kept until acked, it leaves the mailbox. Whether it did.
    pub fn mail_acked(&self, client: &Client, id: &str) -> bool {
        let Some(name) = client.name() else {
            return false;
        };
        let seq = {
            let mut given = lock(&self.mail.given);
            match given.get_mut(&*name) {
                Some(given) if given.session == client.session() => given.unacked.remove(id),
                _ => None,
            }
        };
        let Some(seq) = seq else {
            return false;
        };
        let store = Arc::clone(&self.mail.store);
        tokio::spawn(async move {
            store.remove(seq).await;
        });
        true
    }

    /// Stores `message` for `name` in the shared stream under a new id, and
    /// has a client that holds the name meanwhile get it at once. Answers
    /// once the broker acknowledged it.
    pub(crate) async fn store_shared(
        &self,
        name: &str,
        message: &Value,
        keep: Keep,
    ) -> Result<Sent, StoreError> {
        let (_, id) = self.registry.issue_message_id();
        let stored_at = now_ms();
        let expires_at = stored_at.saturating_add(keep.ttl.as_millis() as u64);
        self.mail
            .store
            .store(name, &id, message, stored_at, expires_at, keep.until_ack)
            .await?;
        self.registry.metrics().mailbox_stored.inc();
        self.registry.events().emit_for_name(
            name,
            EventKind::Stored {
                message_id: id.clone(),
                until_ack: keep.until_ack,
            },
        );
        let queued = usize::from(self.deliver_to_holder(name).await.contains(&id));
        Ok(Sent {
            id,
            queued,
            stored: true,
        })
    }

    /// Has the client holding `name`, on any node, get its stored messages; the ids pushed.
    async fn deliver_to_holder(&self, name: &str) -> Vec<String> {
        if let Some(client) = self.registry.get(name) {
            return self.deliver(&client).await;
        }
        let call = |session| NodeCall::DeliverStored {
            name: name.to_owned(),
            session,
        };
        match self
            .call_holder(name, self.settings.rpc_timeout, call)
            .await
        {
            Ok(Some(NodeAnswer::Delivered { ids })) => ids,
            _ => Vec::new(),
        }
    }

    /// Names with stored messages starting with `prefix`, by name: how many
    /// there are and the page asked for.
    pub(crate) async fn mailboxes(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<Summary>), Failure> {
        let counts = self
            .mail
            .store
            .counts()
            .await
            .map_err(|err| self.unavailable(&err))?;
        let names: Vec<&String> = counts
            .keys()
            .filter(|name| name.starts_with(prefix))
            .collect();
        let mut page = Vec::new();
        for name in names.iter().skip(offset).take(limit) {
            let letters = self
                .mail
                .store
                .letters(name)
                .await
                .map_err(|err| self.unavailable(&err))?;
            let Some(oldest) = letters.first() else {
                continue;
            };
            page.push(Summary {
                name: Arc::from(name.as_str()),
                pending: letters.len(),
                bytes: letters.iter().map(|letter| letter.size).sum(),
                oldest_ms: oldest.stored_at_ms,
            });
        }
        Ok((names.len(), page))
    }

    /// `name`'s stored messages, oldest first.
    pub(crate) async fn mailbox(&self, name: &str) -> Result<Vec<StoredEntry>, Failure> {
        let letters = self
            .mail
            .store
            .letters(name)
            .await
            .map_err(|err| self.unavailable(&err))?;
        Ok(letters
            .into_iter()
            .map(|letter| StoredEntry {
                id: letter.id,
                size: letter.size,
                stored_at_ms: letter.stored_at_ms,
                expires_at_ms: letter.expires_at_ms,
                until_ack: letter.until_ack,
            })
            .collect())
    }

    /// Removes every message stored for `name`.
    pub(crate) async fn purge_mailbox(&self, name: &str) -> Result<(), Failure> {
        self.mail
            .store
            .purge(name)
            .await
            .map(drop)
            .map_err(|err| self.unavailable(&err))
    }

    /// Removes expired messages of every name, and sets the mailbox gauges.
    async fn sweep_once(&self) -> Result<(), String> {
        let now = now_ms();
        for name in self.mail.store.counts().await?.into_keys() {
            let expired: Vec<Letter> = self
                .mail
                .store
                .letters(&name)
                .await?
                .into_iter()
                .filter(|letter| letter.expires_at_ms <= now)
                .collect();
            self.remove_expired(&name, &expired).await;
        }
        let (messages, bytes) = self.mail.store.totals().await?;
        let metrics = self.registry.metrics();
        metrics
            .mailbox_messages
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
        metrics
            .mailbox_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        Ok(())
    }
}

/// Removes expired messages every [`SWEEP_EVERY`] until the node leaves.
pub(super) async fn sweep(membership: Arc<Membership>) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            () = membership.stop.cancelled() => return,
            _ = ticks.tick() => {
                if let Err(err) = membership.sweep_once().await {
                    tracing::debug!(%err, "mailbox sweep failed");
                }
            }
        }
    }
}

fn frame(letter: &Letter, redelivered: bool) -> Bytes {
    delivery::stored_frame(&letter.id, &letter.message, redelivered)
}
