//! What the cluster's key-value buckets share: opening a bucket (created if
//! absent), recreating it when it vanished (a broker restarted without its
//! storage: always for memory storage, and for file storage when the
//! broker's data went with it), and one error type.
//!
//! A bucket is created again as soon as the broker is back, and also by any
//! operation that finds it gone before that.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv::{Config, Store, UpdateError, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use futures_util::TryStreamExt;
use tokio::sync::watch;
use tracing::warn;

use super::broker::{Broker, BrokerState};

/// A key-value operation that failed for a reason the caller cannot fix by
/// retrying differently: the broker, or a record no node wrote.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The broker did not answer, refused, or the bucket could not be (re)created.
    #[error("key-value bucket {bucket}: {detail}")]
    Broker {
        /// The bucket.
        bucket: String,
        /// What the client reported.
        detail: String,
    },
    /// A value that does not decode as this bucket's record.
    #[error("key-value bucket {bucket}: key {key:?} holds no valid record: {detail}")]
    Corrupt {
        /// The bucket.
        bucket: String,
        /// The key as stored.
        key: String,
        /// Why it did not decode.
        detail: String,
    },
}

/// One bucket, and how to create it again.
#[derive(Debug)]
pub(crate) struct Bucket {
    js: jetstream::Context,
    config: Config,
    store: Store,
}

impl Bucket {
    /// Opens bucket `name` (one value per key, `replicas` copies, entries
    /// expiring after `max_age`, zero: never) in `storage`, creating it if
    /// absent. Every operation on it gives up after `timeout`. It is created
    /// again whenever the broker comes back, for as long as it is in use.
    pub(crate) async fn open(
        broker: &Broker,
        name: String,
        storage: StorageType,
        replicas: usize,
        max_age: Duration,
        timeout: Duration,
    ) -> Result<Arc<Bucket>, KvError> {
        let config = Config {
            bucket: name,
            history: 1,
            max_age,
            storage,
            num_replicas: replicas,
            ..Config::default()
        };
        let js = broker.jetstream(timeout);
        let store = create(&js, &config).await?;
        let bucket = Arc::new(Bucket { js, config, store });
        tokio::spawn(recreate_on_reconnect(
            Arc::downgrade(&bucket),
            broker.watch_state(),
        ));
        Ok(bucket)
    }

    /// Runs `op`; when it fails with anything but an answer (`answer(&err)`:
    /// a conflict, a bad key), the bucket may have vanished, so this creates
    /// it again and runs `op` once more. A vanished bucket fails writes at
    /// once on current servers but lets them time out on 2.10, so timeouts
    /// count too. Creating a bucket that exists changes nothing, so a failure
    /// with another cause costs one more round trip (or timeout) and reports
    /// the first failure, as does a failure to create the bucket.
    pub(crate) async fn retrying<T, E, Fut>(
        &self,
        op: impl Fn(Store) -> Fut,
        answer: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        // The operation gets its own handle (a clone is a few reference
        // counts), so its future borrows nothing and can be spawned.
        match op(self.store.clone()).await {
            Err(err) if !answer(&err) => match create(&self.js, &self.config).await {
                Ok(_) => op(self.store.clone()).await,
                Err(_) => Err(err),
            },
            done => done,
        }
    }

    /// Every key that holds a value (not a delete marker), in one pass.
    pub(crate) async fn keys(&self) -> Result<Vec<String>, KvError> {
        self.retrying(
            |store| async move {
                let keys = store.keys().await.map_err(|err| err.to_string())?;
                keys.map_err(|err| err.to_string()).try_collect().await
            },
            |_| false,
        )
        .await
        .map_err(|err| self.error(err))
    }

    /// Creates the bucket if it is absent; for a caller that knows the broker
    /// restarted (a reconnection) and wants its buckets back before the next write.
    pub(crate) async fn ensure(&self) -> Result<(), KvError> {
        create(&self.js, &self.config).await.map(drop)
    }

    /// `err` as a broker error on this bucket.
    pub(crate) fn error(&self, err: impl std::fmt::Display) -> KvError {
        KvError::Broker {
            bucket: self.config.bucket.clone(),
            detail: err.to_string(),
        }
    }

    /// A value under `key` that did not decode.
    pub(crate) fn corrupt(&self, key: &str, err: impl std::fmt::Display) -> KvError {
        KvError::Corrupt {
            bucket: self.config.bucket.clone(),
            key: key.to_owned(),
            detail: err.to_string(),
        }
    }
}

/// Whether a failed update or delete is an answer (a conflict, a bad key)
/// rather than a failure.
pub(crate) fn is_answer(err: &UpdateError) -> bool {
    matches!(
        err.kind(),
        UpdateErrorKind::WrongLastRevision | UpdateErrorKind::InvalidKey
    )
}

/// Creates `bucket` again each time the broker is back, until it is dropped.
async fn recreate_on_reconnect(bucket: Weak<Bucket>, mut state: watch::Receiver<BrokerState>) {
    while state.changed().await.is_ok() {
        if *state.borrow_and_update() != BrokerState::Connected {
            continue;
        }
        let Some(bucket) = bucket.upgrade() else {
            return;
        };
        if let Err(err) = bucket.ensure().await {
            warn!(%err, "bucket not recreated after the broker came back");
        }
    }
}

/// Creates the bucket, or opens it when it exists with another configuration
/// (created by a node with other settings: its settings stand).
async fn create(js: &jetstream::Context, config: &Config) -> Result<Store, KvError> {
    let error = |err: &dyn std::fmt::Display| KvError::Broker {
        bucket: config.bucket.clone(),
        detail: err.to_string(),
    };
    match js.create_key_value(config.clone()).await {
        Ok(store) => Ok(store),
        Err(created) => js
            .get_key_value(config.bucket.clone())
            .await
            .map_err(|_| error(&created)),
    }
}
