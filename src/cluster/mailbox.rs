//! The cluster's mailbox: JetStream stream `tcphub_<cluster>_mailbox`, one
//! subject per name (`tcphub.<cluster>.mailbox.<base64url name>`), so that
//! whichever node a returning client lands on finds its stored messages.
//!
//! The stream keeps its messages on disk (file storage, `--cluster-kv-replicas`
//! copies) and enforces the limits itself: at most `--mailbox-capacity`
//! messages per subject (a publish past it is refused, not an old message
//! dropped), `--mailbox-max-bytes` in all and `--mailbox-max-ttl` of age. A
//! message's own `ttl` is a header, checked on delivery and by the sweep:
//! per-message expiry in the server needs 2.11, and 2.10 is supported.
//!
//! Key-value bucket `tcphub_<cluster>_mailbox_seen` keeps, per name, the
//! highest sequence a session was given, so that a message kept until acked
//! is marked `redelivered` on any node. Knows nothing of sockets or HTTP:
//! it moves [`Letter`]s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::kv::Store as KvStore;
use async_nats::jetstream::stream::{
    Config as StreamConfig, DirectGetErrorKind, DiscardPolicy, StorageType, Stream,
};
use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde_json::Value;

use super::ClusterSettings;
use super::broker::Broker;
use super::kv::Bucket;
use super::names::{decode_key, encode_key};
use crate::mailbox::StoreError;

const ID: &str = "Tcphub-Id";
const STORED_AT: &str = "Tcphub-Stored-At";
const EXPIRES_AT: &str = "Tcphub-Expires-At";
const UNTIL_ACK: &str = "Tcphub-Until-Ack";

/// One stored message as the stream holds it.
#[derive(Debug, Clone)]
pub(crate) struct Letter {
    /// Its sequence in the stream: the order messages were accepted in.
    pub seq: u64,
    /// The message id issued when it was stored.
    pub id: String,
    /// The message.
    pub message: Value,
    /// Bytes of its JSON text.
    pub size: u64,
    /// When it was stored, in ms since the Unix epoch.
    pub stored_at_ms: u64,
    /// When it expires, in ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// Kept until the client acks it.
    pub until_ack: bool,
}

/// The limits a store is opened with: the mailbox flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `--mailbox-capacity`.
    pub capacity: usize,
    /// `--mailbox-max-bytes`.
    pub max_bytes: u64,
    /// `--mailbox-max-ttl`.
    pub max_ttl: Duration,
}

/// The stream and the seen table, and how to recreate them.
#[derive(Debug)]
pub(crate) struct SharedStore {
    js: jetstream::Context,
    config: StreamConfig,
    stream: Stream,
    seen: Arc<Bucket>,
    prefix: String,
    limits: Limits,
}

impl SharedStore {
    /// Opens (creating if absent) the stream and the seen table of the cluster.
    pub(crate) async fn open(
        broker: &Broker,
        settings: &ClusterSettings,
        limits: Limits,
    ) -> Result<SharedStore, String> {
        let cluster = &settings.cluster_name;
        let prefix = format!("tcphub.{cluster}.mailbox");
        let js = broker.jetstream(settings.rpc_timeout);
        let config = StreamConfig {
            name: format!("tcphub_{cluster}_mailbox"),
            subjects: vec![format!("{prefix}.*")],
            storage: StorageType::File,
            num_replicas: settings.kv_replicas,
            max_messages_per_subject: i64::try_from(limits.capacity).unwrap_or(i64::MAX),
            max_bytes: i64::try_from(limits.max_bytes).unwrap_or(i64::MAX),
            max_age: limits.max_ttl,
            // Full means refused with 503, never an older message dropped.
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            allow_direct: true,
            ..StreamConfig::default()
        };
        let stream = js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|err| format!("stream {}: {err}", config.name))?;
        // Recreated when the broker comes back without it, as the stream is
        // when a store finds it gone.
        let seen = Bucket::open(
            broker,
            format!("tcphub_{cluster}_mailbox_seen"),
            StorageType::File,
            settings.kv_replicas,
            limits.max_ttl,
            settings.rpc_timeout,
        )
        .await
        .map_err(|err| err.to_string())?;
        Ok(SharedStore {
            js,
            config,
            stream,
            seen,
            prefix,
            limits,
        })
    }

    fn subject(&self, name: &str) -> String {
        format!("{}.{}", self.prefix, encode_key(name))
    }

    /// Publishes a message for `name`; returns once the broker acknowledged
    /// it (stored on disk, on a majority of the replicas).
    pub(crate) async fn store(
        &self,
        name: &str,
        id: &str,
        message: &Value,
        stored_at_ms: u64,
        expires_at_ms: u64,
        until_ack: bool,
    ) -> Result<(), StoreError> {
        let body = Bytes::from(message.to_string());
        let mut headers = HeaderMap::new();
        headers.insert(ID, id);
        headers.insert(STORED_AT, stored_at_ms.to_string().as_str());
        headers.insert(EXPIRES_AT, expires_at_ms.to_string().as_str());
        headers.insert(UNTIL_ACK, if until_ack { "1" } else { "0" });
        let subject = self.subject(name);
        let mut recreated = false;
        loop {
            let published = async {
                self.js
                    .publish_with_headers(subject.clone(), headers.clone(), body.clone())
                    .await?
                    .await
            };
            match published.await {
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == PublishErrorKind::StreamNotFound && !recreated => {
                    // A broker that restarted without its storage: the stream
                    // comes back empty, and this message goes into it.
                    recreated = true;
                    if let Err(err) = self.js.get_or_create_stream(self.config.clone()).await {
                        tracing::warn!(%err, "mailbox stream not recreated");
                        return Err(StoreError::Failed);
                    }
                }
                Err(err) => return Err(self.refusal(name, &err.to_string())),
            }
        }
    }

    /// What a refused publish means: a limit, or a broker that failed.
    fn refusal(&self, name: &str, err: &str) -> StoreError {
        if err.contains("per subject") {
            StoreError::Full(format!(
                "the mailbox of {name:?} holds {} messages already; nothing was stored",
                self.limits.capacity
            ))
        } else if err.contains("maximum bytes") || err.contains("insufficient resources") {
            StoreError::Full(format!(
                "the mailboxes hold {} bytes already; nothing was stored",
                self.limits.max_bytes
            ))
        } else {
            tracing::warn!(%err, "mailbox publish failed");
            StoreError::Failed
        }
    }

    /// `name`'s stored messages, oldest first.
    pub(crate) async fn letters(&self, name: &str) -> Result<Vec<Letter>, String> {
        let subject = self.subject(name);
        let mut letters = Vec::new();
        let mut next = 1;
        loop {
            match self
                .stream
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
            {
                Ok(message) => {
                    next = message.sequence + 1;
                    if let Some(letter) =
                        decode(message.sequence, &message.headers, &message.payload)
                    {
                        letters.push(letter);
                    }
                }
                Err(err) if err.kind() == DirectGetErrorKind::NotFound => return Ok(letters),
                Err(err) => return Err(err.to_string()),
            }
        }
    }

    /// Removes message `seq`; whether it was there to remove.
    pub(crate) async fn remove(&self, seq: u64) -> bool {
        self.stream.delete_message(seq).await.unwrap_or(false)
    }

    /// Removes every message of `name`; how many there were.
    pub(crate) async fn purge(&self, name: &str) -> Result<u64, String> {
        let purged = self
            .stream
            .purge()
            .filter(self.subject(name))
            .await
            .map_err(|err| err.to_string())?;
        let _ = self
            .on_seen(name, |store, key| async move { store.purge(key).await })
            .await;
        Ok(purged.purged)
    }

    /// Names with stored messages and how many each has, by name.
    pub(crate) async fn counts(&self) -> Result<BTreeMap<String, u64>, String> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|err| err.to_string())?;
        if info.state.messages == 0 {
            return Ok(BTreeMap::new());
        }
        let subjects = stream
            .info_with_subjects(format!("{}.*", self.prefix))
            .await
            .map_err(|err| err.to_string())?;
        let counted: Vec<(String, usize)> = subjects
            .try_collect()
            .await
            .map_err(|err| err.to_string())?;
        Ok(counted
            .into_iter()
            .filter_map(|(subject, count)| {
                let key = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
                Some((decode_key(key)?, count as u64))
            })
            .collect())
    }

    /// Messages and bytes in the stream (bytes as the broker counts them).
    pub(crate) async fn totals(&self) -> Result<(u64, u64), String> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|err| err.to_string())?;
        Ok((info.state.messages, info.state.bytes))
    }

    /// The highest sequence of `name` a session was given.
    pub(crate) async fn seen(&self, name: &str) -> u64 {
        let value = self.on_seen(name, |store, key| async move { store.get(key).await });
        match value.await {
            Ok(Some(value)) => std::str::from_utf8(&value)
                .ok()
                .and_then(|text| text.parse().ok())
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Notes that a session of `name` was given everything up to `seq`.
    pub(crate) async fn mark_seen(&self, name: &str, seq: u64) {
        let value = Bytes::from(seq.to_string());
        let marked = self.on_seen(name, |store, key| {
            let value = value.clone();
            async move { store.put(key, value).await }
        });
        if let Err(err) = marked.await {
            // Only the `redelivered` mark of a later delivery depends on it.
            tracing::debug!(%err, "mailbox seen mark not written");
        }
    }

    /// Runs `op` on the seen table with `name`'s key; if it fails, creates
    /// the table again (it may have vanished) and runs it once more.
    async fn on_seen<T, E, Fut>(
        &self,
        name: &str,
        op: impl Fn(KvStore, String) -> Fut,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let key = encode_key(name);
        self.seen
            .retrying(|store| op(store, key.clone()), |_| false)
            .await
    }
}

fn decode(seq: u64, headers: &HeaderMap, payload: &Bytes) -> Option<Letter> {
    let header = |key: &str| headers.get(key).map(|value| value.as_str().to_owned());
    let number = |key: &str| header(key).and_then(|text| text.parse::<u64>().ok());
    Some(Letter {
        seq,
        id: header(ID)?,
        message: serde_json::from_slice(payload).ok()?,
        size: payload.len() as u64,
        stored_at_ms: number(STORED_AT)?,
        expires_at_ms: number(EXPIRES_AT)?,
        until_ack: header(UNTIL_ACK).as_deref() == Some("1"),
    })
}
