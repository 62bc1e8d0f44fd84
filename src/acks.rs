//! Delivery acknowledgements: HTTP sends waiting for the client's `ack` frame.
//!
//! A waiting send registers here before its message can reach the socket, so
//! an ack that comes back at once is never missed. An entry leaves the table
//! when its ack arrives, when the waiting request gives up (the [`AckWait`] is
//! dropped), or when its client disconnects. Nothing is kept per connection:
//! the table holds only sends that are waiting right now.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Sends waiting for an ack, by (session, message number).
#[derive(Debug, Default)]
pub struct PendingAcks {
    waiting: Mutex<BTreeMap<(u64, u64), oneshot::Sender<()>>>,
}

impl PendingAcks {
    /// Waits for the client of `session` to ack the message numbered `message`.
    pub fn register(self: &Arc<Self>, session: u64, message: u64, id: String) -> AckWait {
        let (acked, receiver) = oneshot::channel();
        self.lock().insert((session, message), acked);
        AckWait {
            table: Arc::clone(self),
            key: (session, message),
            id,
            receiver,
        }
    }

    /// The client of `session` acked `message`: wakes the send waiting for it, if any.
    pub fn acknowledge(&self, session: u64, message: u64) {
        if let Some(acked) = self.lock().remove(&(session, message)) {
            // The waiter may have given up a moment ago; that is its choice.
            let _ = acked.send(());
        }
    }

    /// The client of `session` is gone: its waiting sends learn it at once.
    pub fn forget_session(&self, session: u64) {
        let mut waiting = self.lock();
        if waiting.is_empty() {
            return;
        }
        let rest = waiting.split_off(&(session + 1, 0));
        let forgotten = waiting.split_off(&(session, 0));
        waiting.extend(rest);
        drop(waiting);
        // Dropping the senders tells each waiter that no ack will come.
        drop(forgotten);
    }

    /// Sends waiting right now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no send is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(u64, u64), oneshot::Sender<()>>> {
        // Inserts and removes cannot panic halfway; a poisoned table is consistent.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A send waiting for its ack; dropping it withdraws the wait.
#[derive(Debug)]
pub struct AckWait {
    table: Arc<PendingAcks>,
    key: (u64, u64),
    id: String,
    receiver: oneshot::Receiver<()>,
}

/// The client disconnected before it acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client disconnected before it acknowledged the message")]
pub struct ClientGone;

impl AckWait {
    /// The id of the message waited for.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Resolves when the client acks the message, or fails when it disconnects first.
    pub async fn acked(&mut self) -> Result<(), ClientGone> {
        (&mut self.receiver).await.map_err(|_| ClientGone)
    }

    /// Gives up at once, as if the client had disconnected.
    pub fn abandon(&self) {
        self.table.lock().remove(&self.key);
    }
}

impl Drop for AckWait {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ack_wakes_only_the_send_it_names() {
        let table = Arc::new(PendingAcks::default());
        let mut first = table.register(1, 10, "m10".into());
        let second = table.register(1, 11, "m11".into());
        table.acknowledge(2, 10); // another client cannot ack it
        table.acknowledge(1, 10);
        assert_eq!(first.acked().await, Ok(()));
        assert_eq!(table.len(), 1);
        drop(second);
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn a_disconnect_fails_only_that_clients_waits() {
        let table = Arc::new(PendingAcks::default());
        let mut before = table.register(1, 5, "m5".into());
        let mut gone = table.register(2, 6, "m6".into());
        let mut after = table.register(3, 7, "m7".into());
        table.forget_session(2);
        assert_eq!(gone.acked().await, Err(ClientGone));
        assert_eq!(table.len(), 2);
        table.acknowledge(1, 5);
        table.acknowledge(3, 7);
        assert_eq!(
            (before.acked().await, after.acked().await),
            (Ok(()), Ok(()))
        );
    }
}
