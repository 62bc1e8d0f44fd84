//! The cluster-wide name table: JetStream key-value bucket
//! `tcphub_<cluster>_names`, one key per held name, whose value says which
//! node's session holds it. Every write is a compare-and-set on the key's
//! revision, so two nodes can never both believe a write of theirs won.
//!
//! Keys are the base64url encoding (no padding) of the name, so any name the
//! protocol accepts is a valid key, whatever it contains (`.`, `*`, `>`,
//! spaces, any Unicode): a name is encoded, never refused.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv::{CreateErrorKind, EntryErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::broker::Broker;
use super::kv::{Bucket, KvError, is_answer};
use super::{ClusterSettings, epoch_millis};

/// How often [`Names::create`] re-reads a name that was released between its
/// write and its read before giving up with an error.
const CREATE_ATTEMPTS: usize = 3;
/// Reads in flight while listing every entry: enough to hide the round trip.
const ENTRY_READS_IN_FLIGHT: usize = 64;

/// Who holds a name: a session on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The node's id (`<node-name>-<8 hex>`).
    pub node: String,
    /// The session on that node.
    pub session: u64,
    /// When the claim was written, in ms since the Unix epoch.
    pub since: u64,
}

impl Holder {
    /// `session` on `node`, claiming now.
    pub fn new(node: &str, session: u64) -> Holder {
        Holder {
            node: node.to_owned(),
            session,
            since: epoch_millis(SystemTime::now()),
        }
    }

    /// Whether `self` and `other` are the same session (whatever their `since`).
    pub fn same_session(&self, other: &Holder) -> bool {
        self.node == other.node && self.session == other.session
    }
}

/// What [`Names::create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The name was free and is now the caller's, at `revision`.
    Created {
        /// The revision to release or be taken over from.
        revision: u64,
    },
    /// Someone holds it, at `revision`.
    Held {
        /// The current holder.
        holder: Holder,
        /// The revision a takeover must expect.
        revision: u64,
    },
}

/// One held name, as [`Names::entries`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    /// The name, decoded.
    pub name: String,
    /// Its holder.
    pub holder: Holder,
    /// The revision a release or takeover must expect.
    pub revision: u64,
}

/// The name table of one cluster; cheap to clone.
#[derive(Debug, Clone)]
pub struct Names {
    bucket: Arc<Bucket>,
}

impl Names {
    /// Opens (creating if absent) the name table of `settings.cluster_name`,
    /// with `settings.kv_replicas` replicas; operations give up after
    /// `settings.rpc_timeout`.
    pub async fn open(broker: &Broker, settings: &ClusterSettings) -> Result<Names, KvError> {
        let bucket = Bucket::open(
            broker,
            format!("tcphub_{}_names", settings.cluster_name),
            StorageType::Memory,
            settings.kv_replicas,
            Duration::ZERO,
            settings.rpc_timeout,
        )
        .await?;
        Ok(Names { bucket })
    }

    /// Claims `name` for `holder` if nobody holds it; else reports who does.
    /// A claim by the same session that is already written (a retried call)
    /// counts as created.
    pub async fn create(&self, name: &str, holder: &Holder) -> Result<Claim, KvError> {
        let key = encode_key(name);
        let value = self.encode(holder)?;
        for _ in 0..CREATE_ATTEMPTS {
            let created = self
                .bucket
                .retrying(
                    |store| {
                        let (key, value) = (key.clone(), value.clone());
                        async move { store.create(&key, value).await }
                    },
                    |err| {
                        matches!(
                            err.kind(),
                            CreateErrorKind::AlreadyExists | CreateErrorKind::InvalidKey
                        )
                    },
                )
                .await;
            match created {
                Ok(revision) => return Ok(Claim::Created { revision }),
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {}
                Err(err) => return Err(self.bucket.error(err)),
            }
            match self.get_key(&key).await? {
                Some((current, revision)) if current.same_session(holder) => {
                    return Ok(Claim::Created { revision });
                }
                Some((holder, revision)) => return Ok(Claim::Held { holder, revision }),
                // Released between the two calls: try again.
                None => {}
            }
        }
        Err(self.bucket.error(format!(
            "name {name:?} kept changing hands while being claimed"
        )))
    }

    /// Writes `holder` over the claim at `expected_revision`: the new revision,
    /// or `None` when the name changed since (another takeover or a release won).
    pub async fn take_over(
        &self,
        name: &str,
        holder: &Holder,
        expected_revision: u64,
    ) -> Result<Option<u64>, KvError> {
        let key = encode_key(name);
        let value = self.encode(holder)?;
        let updated = self
            .bucket
            .retrying(
                |store| {
                    let (key, value) = (key.clone(), value.clone());
                    async move { store.update(&key, value, expected_revision).await }
                },
                is_answer,
            )
            .await;
        match updated {
            Ok(revision) => Ok(Some(revision)),
            Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {
                match self.get_key(&key).await? {
                    // Our own write, whose answer was lost and retried.
                    Some((current, revision)) if current.same_session(holder) => Ok(Some(revision)),
                    _ => Ok(None),
                }
            }
            Err(err) => Err(self.bucket.error(err)),
        }
    }

    /// Deletes `name` only if it is still at `expected_revision`; `false` when
    /// it changed since (taken over, or already released), which leaves it alone.
    pub async fn release(&self, name: &str, expected_revision: u64) -> Result<bool, KvError> {
        let key = encode_key(name);
        let deleted = self
            .bucket
            .retrying(
                |store| {
                    let key = key.clone();
                    async move {
                        store
                            .delete_expect_revision(&key, Some(expected_revision))
                            .await
                    }
                },
                is_answer,
            )
            .await;
        match deleted {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(err) => Err(self.bucket.error(err)),
        }
    }

    /// The holder of `name` and the claim's revision, or `None` when free.
    pub async fn get(&self, name: &str) -> Result<Option<(Holder, u64)>, KvError> {
        self.get_key(&encode_key(name)).await
    }

    /// Every held name with its holder and revision, for sweeping a dead
    /// node's names or reconciling after the broker comes back. Keys that are
    /// not an encoded name or values that are not a holder are skipped: no
    /// node wrote them.
    pub async fn entries(&self) -> Result<Vec<NameEntry>, KvError> {
        let keys = self.bucket.keys().await?;
        let read = futures_util::stream::iter(keys)
            .filter_map(|key| std::future::ready(decode_key(&key).map(|name| (name, key))))
            .map(|(name, key)| async move { (name, self.get_key(&key).await) })
            .buffered(ENTRY_READS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut entries = Vec::with_capacity(read.len());
        for (name, got) in read {
            match got {
                Ok(Some((holder, revision))) => entries.push(NameEntry {
                    name,
                    holder,
                    revision,
                }),
                // Released since the listing, or not ours.
                Ok(None) | Err(KvError::Corrupt { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(entries)
    }

    /// Creates the bucket again if the broker lost it; to call once the
    /// broker is back, before reconciling (every operation also does it when
    /// it finds the bucket gone).
    pub async fn ensure(&self) -> Result<(), KvError> {
        self.bucket.ensure().await
    }

    async fn get_key(&self, key: &str) -> Result<Option<(Holder, u64)>, KvError> {
        let entry = self
            .bucket
            .retrying(
                |store| {
                    let key = key.to_owned();
                    async move { store.entry(&key).await }
                },
                |err| err.kind() == EntryErrorKind::InvalidKey,
            )
            .await
            .map_err(|err| self.bucket.error(err))?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                let holder = serde_json::from_slice(&entry.value)
                    .map_err(|err| self.bucket.corrupt(key, err))?;
                Ok(Some((holder, entry.revision)))
            }
            // Absent, or a delete marker left by a release.
            _ => Ok(None),
        }
    }

    fn encode(&self, holder: &Holder) -> Result<Bytes, KvError> {
        serde_json::to_vec(holder)
            .map(Bytes::from)
            .map_err(|err| self.bucket.error(err))
    }
}

/// The key of `name`: base64url without padding, so only `[-_A-Za-z0-9]`.
pub fn encode_key(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(name.as_bytes())
}

/// The name behind `key`, or `None` when it is not an encoded name.
pub fn decode_key(key: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(key).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_names_make_plain_keys_and_come_back() {
        for name in ["a b", "ünïcödé ✓", "a.b", "*", ">", "..", "x=y", "日本"] {
            let key = encode_key(name);
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{name:?} -> {key:?}"
            );
            assert_eq!(decode_key(&key).as_deref(), Some(name));
        }
    }

    #[test]
    fn keys_that_are_not_names_decode_to_none() {
        assert_eq!(decode_key("not base64!"), None);
        assert_eq!(decode_key(&URL_SAFE_NO_PAD.encode([0xff, 0xfe])), None);
    }

    #[test]
    fn a_holder_is_the_documented_json() {
        let holder = Holder {
            node: "a-0123abcd".to_owned(),
            session: 7,
            since: 1_700_000_000_000,
        };
        assert_eq!(
            serde_json::to_value(&holder).unwrap(),
            serde_json::json!({"node": "a-0123abcd", "session": 7, "since": 1_700_000_000_000u64})
        );
    }
}
