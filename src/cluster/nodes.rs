//! The live-node table: JetStream key-value bucket `tcphub_<cluster>_nodes`,
//! one key per node id, rewritten at every heartbeat. The bucket's `max_age`
//! is the node ttl, so a node that stops beating drops out by itself.
//!
//! Servers before 2.11 raise no watch event when `max_age` removes a key, so
//! [`Nodes::live`] reads the table instead of following changes.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

use async_nats::jetstream::kv::{EntryErrorKind, Operation, PutErrorKind};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::broker::Broker;
use super::kv::{Bucket, KvError, is_answer};
use super::{ClusterSettings, epoch_millis};

/// Reads in flight while reading the table: it holds one key per node.
const READS_IN_FLIGHT: usize = 16;

/// What a node says about itself at every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The node id, also the key (`<node-name>-<8 hex>`).
    pub id: String,
    /// The node name (`--node-name`).
    pub name: String,
    /// Where its HTTP API listens.
    pub http_addr: String,
    /// When the node started, in ms since the Unix epoch.
    pub started_at: u64,
    /// How many clients it holds now.
    pub clients: u64,
}

/// The live-node table of one cluster; cheap to clone.
#[derive(Debug, Clone)]
pub struct Nodes {
    bucket: Arc<Bucket>,
}

impl Nodes {
    /// Opens (creating if absent) the node table of `settings.cluster_name`,
    /// whose records expire `settings.node_ttl` after their last heartbeat.
    pub async fn open(broker: &Broker, settings: &ClusterSettings) -> Result<Nodes, KvError> {
        let bucket = Bucket::open(
            broker,
            format!("tcphub_{}_nodes", settings.cluster_name),
            StorageType::Memory,
            settings.kv_replicas,
            settings.node_ttl,
            settings.rpc_timeout,
        )
        .await?;
        Ok(Nodes { bucket })
    }

    /// Writes `record` under its id: the node is live for another node ttl.
    pub async fn beat(&self, record: &NodeRecord) -> Result<(), KvError> {
        let value = serde_json::to_vec(record)
            .map(Bytes::from)
            .map_err(|err| self.bucket.error(err))?;
        self.bucket
            .retrying(
                |store| {
                    let (key, value) = (record.id.clone(), value.clone());
                    async move { store.put(&key, value).await }
                },
                |err| err.kind() == PutErrorKind::InvalidKey,
            )
            .await
            .map(drop)
            .map_err(|err| self.bucket.error(err))
    }

    /// Removes node `id` at once (a node shutting down says goodbye).
    pub async fn remove(&self, id: &str) -> Result<(), KvError> {
        self.bucket
            .retrying(
                |store| {
                    let id = id.to_owned();
                    async move { store.delete(&id).await }
                },
                is_answer,
            )
            .await
            .map_err(|err| self.bucket.error(err))
    }

    /// The records of every node that beat within the node ttl, by id.
    /// Records that do not decode are skipped: no node wrote them.
    pub async fn live(&self) -> Result<Vec<NodeRecord>, KvError> {
        let keys = self.bucket.keys().await?;
        let read = futures_util::stream::iter(keys)
            .map(|key| async move {
                self.bucket
                    .retrying(
                        |store| {
                            let key = key.clone();
                            async move { store.entry(&key).await }
                        },
                        |err| err.kind() == EntryErrorKind::InvalidKey,
                    )
                    .await
            })
            .buffered(READS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut nodes = Vec::with_capacity(read.len());
        for entry in read {
            match entry.map_err(|err| self.bucket.error(err))? {
                Some(entry) if entry.operation == Operation::Put => {
                    if let Ok(record) = serde_json::from_slice(&entry.value) {
                        nodes.push(record);
                    }
                }
                // Expired or removed since the keys were listed.
                _ => {}
            }
        }
        nodes.sort_by(|a: &NodeRecord, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Creates the bucket again if the broker lost it (see [`super::names::Names::ensure`]).
    pub async fn ensure(&self) -> Result<(), KvError> {
        self.bucket.ensure().await
    }
}

/// A new node id: `<node_name>-<8 random hex digits>`, so a restarted node
/// never answers for what an earlier run of it held.
pub fn new_node_id(node_name: &str) -> String {
    // RandomState is seeded from the OS once per thread and differs at each
    // call; the clock and pid make two processes' ids differ even if not.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(epoch_millis(SystemTime::now()));
    hasher.write_u32(std::process::id());
    format!("{node_name}-{:08x}", hasher.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_the_name_and_eight_hex_digits() {
        let id = new_node_id("web-1");
        let (name, suffix) = id.rsplit_once('-').unwrap();
        assert_eq!(name, "web-1");
        assert_eq!(suffix.len(), 8);
        assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    #[test]
    fn node_ids_differ() {
        let ids: std::collections::HashSet<String> = (0..100).map(|_| new_node_id("n")).collect();
        assert_eq!(ids.len(), 100);
    }

    #[test]
    fn a_record_is_the_documented_json() {
        let record = NodeRecord {
            id: "a-0123abcd".to_owned(),
            name: "a".to_owned(),
            http_addr: "10.0.0.1:8080".to_owned(),
            started_at: 1_700_000_000_000,
            clients: 3,
        };
        assert_eq!(
            serde_json::to_value(&record).unwrap(),
            serde_json::json!({"id": "a-0123abcd", "name": "a", "httpAddr": "10.0.0.1:8080",
                "startedAt": 1_700_000_000_000u64, "clients": 3})
        );
    }
}
