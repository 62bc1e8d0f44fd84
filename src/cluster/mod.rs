//! Cluster mode: several hubs on one NATS broker act as one hub.
//!
//! The NATS layer knows nothing of the registry, of sockets or of HTTP; it
//! moves names, node records and serde values:
//! - [`broker`]: connect (fail fast), reconnect forever, and follow the state.
//! - [`names`]: `tcphub_<cluster>_names`, one compare-and-set entry per name.
//! - [`nodes`]: `tcphub_<cluster>_nodes`, heartbeats that expire with the node ttl.
//! - [`rpc`]: requests to one node, scatter-gather to all, and serving both;
//!   `inbox`: the one subscription their replies arrive on.
//!
//! On it, a node's part in the cluster ([`Membership`]):
//! - `claims`: cluster-unique names, claimed before the registry takes them.
//! - `calls`: what nodes ask each other; `answer`: answering it locally.
//! - `directed` and `gathered`: the directory's verbs for names held on other
//!   nodes, and for listings and fan-outs across all of them; `holders`: who
//!   answered for a name last, so a directed call needs no table read.
//! - `mailbox` and `mail`: the mailbox in a JetStream stream, so that any
//!   node delivers a returning client's stored messages.
//! - `liveness`: heartbeats, sweeping the names of vanished nodes, and
//!   reconciling after the broker was out of reach.

mod answer;
pub mod broker;
mod calls;
mod claims;
mod directed;
mod gathered;
mod holders;
mod inbox;
mod kv;
mod liveness;
mod mail;
mod mailbox;
mod membership;
pub mod names;
pub mod nodes;
mod outgoing;
pub mod rpc;
mod wire;

pub use membership::{JoinError, Membership};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use kv::KvError;
pub use mail::StoredEntry;

/// The settings of cluster mode (SPEC §7), as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Names the buckets and subjects this cluster's nodes share (`--cluster-name`).
    pub cluster_name: String,
    /// This node's name, the readable part of its id (`--node-name`).
    pub node_name: String,
    /// The broker's URLs, comma-separated (`--cluster-nats-url`).
    pub nats_urls: String,
    /// Replicas of each key-value bucket (`--cluster-kv-replicas`).
    pub kv_replicas: usize,
    /// A node silent for this long is dead (`--cluster-node-ttl`).
    pub node_ttl: Duration,
    /// How often a node writes its record (`--cluster-heartbeat`).
    pub heartbeat: Duration,
    /// How long a call to one node may take (`--cluster-rpc-timeout`).
    pub rpc_timeout: Duration,
    /// How long a listing waits for every node (`--cluster-list-timeout`).
    pub list_timeout: Duration,
}

impl Default for ClusterSettings {
    /// SPEC §7's defaults, with no broker URL and the node named after the host.
    fn default() -> ClusterSettings {
        ClusterSettings {
            cluster_name: "tcphub".to_owned(),
            node_name: crate::directory::host_name(),
            nats_urls: String::new(),
            kv_replicas: 1,
            node_ttl: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(2),
            list_timeout: Duration::from_secs(1),
        }
    }
}

/// Why cluster settings were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// A name that would not fit a bucket name or a subject token.
    #[error("{what} {value:?} must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    BadName {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// A duration or count that makes no sense.
    #[error("{0}")]
    Invalid(&'static str),
}

impl ClusterSettings {
    /// Checks what the broker would refuse later, or what would make nodes
    /// drop each other: names usable in subjects and bucket names, and a
    /// heartbeat well inside the node ttl.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (what, value) in [
            ("cluster name", &self.cluster_name),
            ("node name", &self.node_name),
        ] {
            if !is_token(value) {
                return Err(SettingsError::BadName {
                    what,
                    value: value.clone(),
                });
            }
        }
        if self.kv_replicas == 0 || self.kv_replicas > 5 {
            return Err(SettingsError::Invalid("kv replicas must be 1 to 5"));
        }
        if self.heartbeat.is_zero() || self.heartbeat * 2 > self.node_ttl {
            return Err(SettingsError::Invalid(
                "the heartbeat must be non-zero and at most half the node ttl",
            ));
        }
        if self.rpc_timeout.is_zero() || self.list_timeout.is_zero() {
            return Err(SettingsError::Invalid(
                "rpc and list timeouts must be non-zero",
            ));
        }
        Ok(())
    }
}

/// Whether `value` is safe as a NATS subject token and in a bucket name.
fn is_token(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Milliseconds since the Unix epoch, the time unit of every cluster record.
pub fn epoch_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ClusterSettings {
        ClusterSettings {
            node_name: "a".to_owned(),
            nats_urls: "nats://127.0.0.1:4222".to_owned(),
            ..ClusterSettings::default()
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(settings().validate(), Ok(()));
    }

    #[test]
    fn names_that_break_subjects_are_refused() {
        for bad in ["", "a.b", "a b", "a*", ">", &"x".repeat(65)] {
            let s = ClusterSettings {
                cluster_name: bad.to_owned(),
                ..settings()
            };
            assert!(
                matches!(
                    s.validate(),
                    Err(SettingsError::BadName {
                        what: "cluster name",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_heartbeat_past_half_the_ttl_is_refused() {
        let s = ClusterSettings {
            heartbeat: Duration::from_secs(3),
            ..settings()
        };
        assert!(matches!(s.validate(), Err(SettingsError::Invalid(_))));
    }
}
