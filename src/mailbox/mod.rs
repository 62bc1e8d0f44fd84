//! The offline mailbox: messages stored for a name while no live client holds
//! it (or until the client acks them), delivered on its next `sync`.
//!
//! [`Mailbox`] is the front: the limits (`--mailbox-capacity`,
//! `--mailbox-max-bytes`, `--mailbox-max-ttl`), the in-memory index
//! ([`memory`]) that every read uses, and, with `--data-dir`, the durable
//! [`sqlite`] store that a message is committed to before its send is answered.
//! [`delivery`] joins it to the registry: storing, delivering after `welcome`,
//! acks and expiry, with their events and metrics. The mailbox itself knows
//! nothing of sockets, HTTP or events.

pub mod delivery;
pub mod memory;
pub mod sqlite;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::config::Config;
use memory::{Boxes, Offered, Refusal, Stored, Summary};
use sqlite::{OpenError, Row, Store, WriteError};

/// Why a message was not stored; nothing was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A limit, or the disk, is full.
    #[error("{0}")]
    Full(String),
    /// The database failed otherwise (logged where it happened).
    #[error("the mailbox database failed")]
    Failed,
}

/// What a mailbox held when the hub started.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The number the first message id of this run takes.
    pub next_number: u64,
    /// Messages that expired while the hub was down.
    pub expired: u64,
}

/// Stored messages of every name, with their limits and durable store.
#[derive(Debug)]
pub struct Mailbox {
    boxes: Mutex<Boxes>,
    store: Option<Store>,
    capacity: usize,
    max_bytes: u64,
    max_ttl: Duration,
}

impl Mailbox {
    /// A mailbox kept in memory only, with the limits of `config`.
    pub fn memory(config: &Config) -> Mailbox {
        Mailbox {
            boxes: Mutex::default(),
            store: None,
            capacity: config.mailbox_capacity,
            max_bytes: config.mailbox_max_bytes,
            max_ttl: config.mailbox_max_ttl,
        }
    }

    /// The mailbox `config` asks for: in its data dir if it has one (loading
    /// what is stored there), else in memory.
    pub fn open(config: &Config) -> Result<(Mailbox, Recovered), OpenError> {
        let mut mailbox = Mailbox::memory(config);
        let Some(dir) = &config.data_dir else {
            let recovered = Recovered {
                next_number: 1,
                expired: 0,
            };
            return Ok((mailbox, recovered));
        };
        let (store, loaded) = Store::open(dir, now_ms())?;
        {
            let boxes = mailbox.boxes.get_mut().unwrap_or_else(|p| p.into_inner());
            for (name, stored) in loaded.messages {
                // What was stored under older (or no) limits stays until delivered.
                let _ = boxes.reserve(&name, stored, usize::MAX, u64::MAX);
            }
        }
        mailbox.store = Some(store);
        let recovered = Recovered {
            next_number: loaded.next_number,
            expired: loaded.expired,
        };
        Ok((mailbox, recovered))
    }

    /// Most messages stored per name.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Most message bytes stored in all.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The longest `ttl` a message may be stored for.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// Stores `message` as number `number` for `name`, for `ttl`; returns once
    /// it is durable (at once without a data dir).
    pub async fn store(
        &self,
        name: &str,
        number: u64,
        message: &Value,
        ttl: Duration,
        until_ack: bool,
    ) -> Result<(), StoreError> {
        let body = message.to_string();
        let stored_at_ms = now_ms();
        let stored = Stored {
            number,
            message: Arc::new(message.clone()),
            size: body.len() as u64,
            stored_at_ms,
            expires_at_ms: stored_at_ms.saturating_add(ttl.as_millis() as u64),
            until_ack,
            durable: self.store.is_none(),
            delivered_to: None,
        };
        let expires_at_ms = stored.expires_at_ms;
        self.boxes()
            .reserve(name, stored, self.capacity, self.max_bytes)
            .map_err(|refusal| {
                StoreError::Full(match refusal {
                    Refusal::NameFull => format!(
                        "the mailbox of {name:?} holds {} messages already; nothing was stored",
                        self.capacity
                    ),
                    Refusal::BytesFull => format!(
                        "the mailboxes hold {} bytes already; nothing was stored",
                        self.max_bytes
                    ),
                })
            })?;
        let Some(store) = &self.store else {
            return Ok(());
        };
        let row = Row {
            name: Arc::from(name),
            number,
            body,
            stored_at_ms,
            expires_at_ms,
            until_ack,
        };
        match store.insert(row).await {
            Ok(()) => {
                if !self.boxes().make_durable(name, number) {
                    // Purged while it was being written: keep it purged.
                    store.delete(vec![number]);
                }
                Ok(())
            }
            Err(err) => {
                self.boxes().remove(name, number);
                Err(match err {
                    WriteError::DiskFull => StoreError::Full(
                        "the disk of the mailbox database is full; nothing was stored".into(),
                    ),
                    WriteError::Failed => StoreError::Failed,
                })
            }
        }
    }

    /// Offers `name`'s stored messages to `session` (see [`Boxes::deliver`]),
    /// and removes those that are not kept until acked.
    pub fn deliver(
        &self,
        name: &str,
        session: u64,
        offer: impl FnMut(&Offered) -> bool,
    ) -> Vec<Offered> {
        let delivered = self.boxes().deliver(name, session, now_ms(), offer);
        self.journal_removed(
            delivered
                .iter()
                .filter(|offered| !offered.until_ack)
                .map(|offered| offered.number)
                .collect(),
        );
        delivered
    }

    /// The client holding `name` acked message `number`: it leaves the mailbox.
    pub fn acked(&self, name: &str, number: u64) -> bool {
        let removed = self.boxes().remove(name, number).is_some();
        if removed {
            self.journal_removed(vec![number]);
        }
        removed
    }

    /// Removes expired messages: `(name, number)` of each.
    pub fn expire(&self) -> Vec<(Arc<str>, u64)> {
        let expired = self.boxes().expire(now_ms());
        self.journal_removed(expired.iter().map(|(_, number)| *number).collect());
        expired
    }

    /// Removes every message stored for `name`; returns how many.
    pub fn purge(&self, name: &str) -> usize {
        let purged = self.boxes().purge(name);
        let count = purged.len();
        self.journal_removed(purged);
        count
    }

    /// `name`'s stored messages, oldest first.
    pub fn messages(&self, name: &str) -> Vec<Stored> {
        self.boxes().messages(name)
    }

    /// Names with stored messages (see [`Boxes::names`]).
    pub fn names(&self, prefix: &str, offset: usize, limit: usize) -> (usize, Vec<Summary>) {
        self.boxes().names(prefix, offset, limit)
    }

    /// Messages and bytes stored.
    pub fn totals(&self) -> (usize, u64) {
        self.boxes().totals()
    }

    /// Commits what is queued and closes the database (at the end of the
    /// drain); without a data dir, nothing to do.
    pub async fn close(&self) {
        if let Some(store) = &self.store {
            store.close().await;
        }
    }

    fn journal_removed(&self, numbers: Vec<u64>) {
        if let Some(store) = &self.store {
            store.delete(numbers);
        }
    }

    fn boxes(&self) -> MutexGuard<'_, Boxes> {
        // Every change to the boxes completes before anything can panic.
        self.boxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// A time in milliseconds since the Unix epoch as a `SystemTime`.
pub fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
