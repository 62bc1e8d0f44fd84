//! Cluster-unique names: a `sync` claims its name in the name table before the
//! local registry takes it, and a name a local session gives up is released
//! there, only if that session's claim is still the one written.
//!
//! A claim is one compare-and-set write. Under `replace` a name held elsewhere
//! is taken over (the write expects the holder's revision) and the old holder's
//! node is told to close that session with `bye` `replaced`; under `reject`
//! it is refused unless its holder's node is gone.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::calls::{NodeAnswer, NodeCall};
use super::kv::KvError;
use super::membership::{ClaimInFlight, Membership, Owned, lock};
use super::names::{Claim, Holder};
use super::rpc::RpcError;
use crate::config::DuplicateNames;
use crate::protocol::ByeReason;
use crate::registry::{Client, Released, SyncError};

/// How often a takeover re-reads and writes again when another claim raced it.
const TAKEOVER_ATTEMPTS: usize = 3;

impl Membership {
    /// Claims `name` for `client` in the name table, then in the local
    /// registry. Claims of one session complete in the order they were made.
    pub async fn claim(
        self: Arc<Self>,
        client: Arc<Client>,
        name: String,
    ) -> Result<(), SyncError> {
        let session = client.session();
        let (done, finished) = oneshot::channel();
        let mine = finished.shared();
        let previous = {
            let mut claims = lock(&self.claims);
            let previous = claims.insert(session, mine.clone());
            self.count_claims(&claims);
            previous
        };
        if let Some(previous) = previous {
            let _ = previous.await;
        }
        // Taken after the previous claim finished, never while waiting for it.
        let slot = self.claim_slots.acquire().await;
        // Boxed: a claim waiting for its turn stays small (see `claim_with_mail`).
        let outcome = Box::pin(self.claim_in_turn(&client, &name)).await;
        drop(slot);
        let _ = done.send(());
        lock(&self.superseded).remove(&session);
        // The session's last claim is this one unless a newer claim of it
        // came meanwhile (that one removes its own entry when it ends).
        let mut claims = lock(&self.claims);
        if claims.get(&session).is_some_and(|last| last.ptr_eq(&mine)) {
            claims.remove(&session);
            self.count_claims(&claims);
        }
        outcome
    }

    /// Shows how many sessions have a claim in flight.
    fn count_claims(&self, claims: &HashMap<u64, ClaimInFlight>) {
        let in_flight = i64::try_from(claims.len()).unwrap_or(i64::MAX);
        self.registry
            .metrics()
            .cluster_claims_in_flight
            .set(in_flight);
    }

    async fn claim_in_turn(&self, client: &Arc<Client>, name: &str) -> Result<(), SyncError> {
        if client.name().as_deref() == Some(name) {
            return Ok(());
        }
        // A connection that ended while its claim waited for its turn (its
        // client gave up and reconnected, maybe to another node) claims
        // nothing: its write could only take the name from the connection
        // that followed it.
        if !self.registry.is_connected(client) {
            debug!(%name, session = client.session(), "claim dropped: the connection ended first");
            return Err(SyncError::Closing);
        }
        let me = Holder::new(&self.node.id, client.session());
        let revision = self.write_claim(name, &me).await?;
        // The table write and the local registration must agree: a newer claim
        // of the name (a later revision on this node, or a takeover from
        // another node that arrived while this one was being written) wins,
        // and this connection is the replaced one.
        let taken = {
            let mut owned = lock(&self.owned);
            let overtaken = owned
                .get(name)
                .is_some_and(|newer| newer.revision > revision)
                || lock(&self.superseded)
                    .remove(&me.session)
                    .is_some_and(|(taken, at)| *taken == *name && at > revision);
            if overtaken {
                drop(owned);
                debug!(%name, session = me.session, revision, "claim overtaken before it landed");
                client.outbox().close(ByeReason::Replaced);
                return Err(SyncError::Closing);
            }
            let name: Arc<str> = Arc::from(name);
            owned.insert(
                Arc::clone(&name),
                Owned {
                    session: me.session,
                    revision,
                },
            );
            debug!(%name, session = me.session, revision, "claim landed");
            self.registry.sync_shared(client, name)
        };
        if taken.is_err() {
            // The connection closed meanwhile: the name goes back at once.
            self.release(Released {
                name: Arc::from(name),
                session: me.session,
            })
            .await;
        }
        taken
    }

    /// A claim (of another node, or of this one) took `name` over from
    /// `session` at table revision `revision`: closes that session if it
    /// holds the name here, or, if its claim is still being written, makes
    /// that claim give way when it lands (unless it wrote after the takeover).
    pub(super) fn replaced(&self, name: &str, session: u64, revision: u64) {
        // A claim lands (its check, its record, its registration) under this
        // lock: held here, the claim has either landed, and the kick finds
        // the session, or not yet, and it will find the mark.
        let _landing = lock(&self.owned);
        if self
            .registry
            .kick_holder(name, Some(session), ByeReason::Replaced)
            .is_ok()
        {
            debug!(%name, session, revision, "taken over: session closed");
            return;
        }
        if lock(&self.claims).contains_key(&session) {
            debug!(%name, session, revision, "taken over: claim to give way");
            lock(&self.superseded).insert(session, (Arc::from(name), revision));
        } else {
            debug!(%name, session, revision, "taken over: session already gone");
        }
    }

    /// Whether `session`'s claim of `name` at `revision` is held here, or a
    /// claim of `session` is still being written (it may be that one).
    pub(super) fn holds_or_claims(&self, name: &str, session: u64, revision: u64) -> bool {
        let owned = lock(&self.owned);
        owned
            .get(name)
            .is_some_and(|held| held.session == session && held.revision == revision)
            || lock(&self.claims).contains_key(&session)
    }

    /// Writes `me` as the holder of `name`; the revision written.
    async fn write_claim(&self, name: &str, me: &Holder) -> Result<u64, SyncError> {
        for _ in 0..TAKEOVER_ATTEMPTS {
            let held = match self.names.create(name, me).await {
                Ok(Claim::Created { revision }) => return Ok(revision),
                Ok(Claim::Held { holder, revision }) => (holder, revision),
                Err(err) => return self.unanswered(name, me, None, &err).await,
            };
            let (holder, revision) = held;
            if self.settings_reject() && self.holder_is_alive(&holder).await {
                return Err(SyncError::NameTaken);
            }
            match self.names.take_over(name, me, revision).await {
                Ok(Some(revision)) => {
                    self.close_replaced(name, &holder, revision);
                    return Ok(revision);
                }
                // Another claim wrote between our read and our write: read again.
                Ok(None) => continue,
                Err(err) => return self.unanswered(name, me, Some(&holder), &err).await,
            }
        }
        Err(SyncError::NameTaken)
    }

    /// A write whose answer never came may have landed all the same: the
    /// table is read back, and if it names `me` the claim stands (and the
    /// holder it displaced is told). Otherwise the sync is refused; an
    /// entry that landed unseen is removed by the next sweep of this node's
    /// names.
    async fn unanswered(
        &self,
        name: &str,
        me: &Holder,
        displaced: Option<&Holder>,
        err: &KvError,
    ) -> Result<u64, SyncError> {
        if let Ok(Some((holder, revision))) = self.names.get(name).await
            && holder.same_session(me)
        {
            if let Some(old) = displaced {
                self.close_replaced(name, old, revision);
            }
            return Ok(revision);
        }
        warn!(%name, %err, "name table unreachable: sync refused");
        Err(SyncError::Unavailable)
    }

    fn settings_reject(&self) -> bool {
        self.registry.duplicate_names() == DuplicateNames::Reject
    }

    /// Whether `holder`'s session may still be connected: its node is this
    /// one and holds it, or another node that answers.
    async fn holder_is_alive(&self, holder: &Holder) -> bool {
        if holder.node == self.node.id {
            return lock(&self.owned)
                .values()
                .any(|owned| owned.session == holder.session);
        }
        !matches!(
            self.rpc
                .request::<_, NodeAnswer>(&holder.node, &NodeCall::Ping, self.settings.rpc_timeout)
                .await,
            Err(RpcError::NoResponders)
        )
    }

    /// Tells the node of the holder a takeover displaced (this one or another)
    /// to close that session.
    fn close_replaced(&self, name: &str, old: &Holder, revision: u64) {
        if old.node == self.node.id {
            // Closed here, not left to this claim's registration: the claim
            // may itself be overtaken before it lands, and the old session
            // would then stay connected while the table names another.
            self.replaced(name, old.session, revision);
            return;
        }
        let rpc = self.rpc.clone();
        let call = NodeCall::Replaced {
            name: name.to_owned(),
            session: old.session,
            revision,
        };
        let node = old.node.clone();
        let timeout = self.settings.rpc_timeout;
        tokio::spawn(async move {
            if let Err(err) = rpc.request::<_, NodeAnswer>(&node, &call, timeout).await {
                // A dead node's sessions are gone anyway; a cut-off one learns
                // it when it reconciles.
                debug!(%node, %err, "replaced session not told");
            }
        });
    }

    /// Removes `released.name` from the name table if `released.session`'s
    /// claim is still the one written there.
    pub(super) async fn release(&self, released: Released) {
        self.forget_given(&released.name, released.session);
        let owned = {
            let mut owned = lock(&self.owned);
            match owned.get(&released.name) {
                Some(claim) if claim.session == released.session => owned.remove(&released.name),
                _ => None,
            }
        };
        let Some(owned) = owned else {
            return;
        };
        let released_now = self.names.release(&released.name, owned.revision).await;
        debug!(name = %released.name, session = released.session, revision = owned.revision, ?released_now, "release");
        if let Err(err) = released_now {
            // The sweep of this node's names after a reconnect catches it.
            debug!(name = %released.name, %err, "name not released");
        }
    }
}

/// Releases, one after the other, the names local sessions give up.
pub(super) async fn release_all(
    membership: Arc<Membership>,
    mut releases: mpsc::UnboundedReceiver<Released>,
) {
    while let Some(released) = releases.recv().await {
        membership.release(released).await;
    }
}
