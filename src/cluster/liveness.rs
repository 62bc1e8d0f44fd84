//! Liveness: every heartbeat a node writes its record (which expires a node
//! ttl later), reads the live nodes, and sweeps the names of nodes that
//! vanished, and its own names that no session of its holds; after the
//! broker comes back, or after its own heartbeats stopped for a node ttl, it
//! reconciles its own names.
//!
//! A sweep removes a name only at the revision its stale holder wrote, so a
//! name taken over meanwhile is never removed, and several nodes sweeping
//! at once do no harm.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use super::broker::BrokerState;
use super::epoch_millis;
use super::membership::{Membership, lock};
use super::names::{Claim, Holder};
use super::nodes::NodeRecord;
use crate::metrics::ReasonLabels;
use crate::protocol::ByeReason;

/// Writes this node's record and reads the live nodes once.
pub(super) async fn beat_once(membership: &Membership) -> bool {
    let node = &membership.node;
    let record = NodeRecord {
        id: node.id.clone(),
        name: node.name.clone(),
        http_addr: node.http_addr.to_string(),
        started_at: epoch_millis(node.started_at),
        clients: membership.registry.len() as u64,
    };
    if let Err(err) = membership.nodes.beat(&record).await {
        warn!(%err, "heartbeat not written");
        return false;
    }
    match membership.nodes.live().await {
        Ok(live) => {
            *lock(&membership.live) = live;
            true
        }
        Err(err) => {
            warn!(%err, "live nodes not read");
            false
        }
    }
}

/// Beats, sweeps and reconciles until the node leaves.
pub(super) async fn run(membership: Arc<Membership>) {
    let mut ticks = tokio::time::interval(membership.settings.heartbeat);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut broker = membership.broker.watch_state();
    // Nodes seen alive; one that drops out of the table gets its names swept.
    let mut known: HashSet<String> = HashSet::new();
    // At start, names of nodes that died while nobody watched are swept too.
    let mut sweep_strangers = true;
    let mut refused = Refused::default();
    // A node whose heartbeats stopped for a node ttl (a paused process, a
    // stalled machine) was taken for dead by the others, who may have swept
    // and reclaimed its names: it reconciles before going on.
    let mut last_beat = Instant::now();
    membership
        .registry
        .metrics()
        .cluster_broker_connected
        .set(1);
    loop {
        tokio::select! {
            () = membership.stop.cancelled() => return,
            changed = broker.changed() => {
                if changed.is_err() {
                    return;
                }
                let connected = *broker.borrow_and_update() == BrokerState::Connected;
                membership
                    .registry
                    .metrics()
                    .cluster_broker_connected
                    .set(i64::from(connected));
                if connected {
                    reconcile(&membership).await;
                    sweep_strangers = true;
                }
            }
            _ = ticks.tick() => {
                refused.export(&membership);
                let presumed_dead = last_beat.elapsed() > membership.settings.node_ttl;
                if !beat_once(&membership).await {
                    continue;
                }
                last_beat = Instant::now();
                if presumed_dead {
                    reconcile(&membership).await;
                    sweep_strangers = true;
                }
                let live: HashSet<String> = membership.live_ids().into_iter().collect();
                let gone: HashSet<String> = known.difference(&live).cloned().collect();
                if sweep_strangers || !gone.is_empty() {
                    sweep(&membership, &live).await;
                    sweep_strangers = false;
                }
                known = live;
            }
        }
    }
}

/// The refusal counts of the call transport, as last exported to the metrics.
#[derive(Debug, Default)]
struct Refused {
    version: u64,
    malformed: u64,
    expired: u64,
}

impl Refused {
    /// Adds what the transport refused since the last export to
    /// `tcphub_cluster_calls_refused_total`.
    fn export(&mut self, membership: &Membership) {
        let stats = membership.rpc.stats();
        let metric = &membership.registry.metrics().cluster_calls_refused;
        for (reason, seen, now) in [
            (
                "unsupported_version",
                &mut self.version,
                stats.refused_version(),
            ),
            ("malformed", &mut self.malformed, stats.refused_malformed()),
            ("expired", &mut self.expired, stats.expired()),
        ] {
            if now > *seen {
                metric
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(now - *seen);
                *seen = now;
            }
        }
    }
}

/// Removes every name whose holder's node is not live, and every name this
/// node's table entry gives to a session that neither holds it nor is
/// claiming it (a claim refused after its write's answer was lost).
async fn sweep(membership: &Membership, live: &HashSet<String>) {
    membership.holders.keep_nodes(live);
    let entries = match membership.names.entries().await {
        Ok(entries) => entries,
        Err(err) => return warn!(%err, "names not swept"),
    };
    let mut swept = 0u64;
    for entry in entries {
        let stale = if entry.holder.node == membership.node.id {
            !membership.holds_or_claims(&entry.name, entry.holder.session, entry.revision)
        } else {
            !live.contains(&entry.holder.node)
        };
        if stale && let Ok(true) = membership.names.release(&entry.name, entry.revision).await {
            swept += 1;
        }
    }
    membership.registry.metrics().cluster_sweeps.inc();
    if swept > 0 {
        membership
            .registry
            .metrics()
            .cluster_names_swept
            .inc_by(swept);
        info!(names = swept, "names nobody holds released");
    }
}

/// After the broker was out of reach: recreate what it lost, and make the
/// name table and this node's sessions agree again. A local session whose
/// name another node took meanwhile is closed with `bye` `replaced`.
async fn reconcile(membership: &Membership) {
    let _ = membership.names.ensure().await;
    let _ = membership.nodes.ensure().await;
    beat_once(membership).await;
    let owned: Vec<(Arc<str>, u64)> = lock(&membership.owned)
        .iter()
        .map(|(name, owned)| (Arc::clone(name), owned.session))
        .collect();
    let mut replaced = 0usize;
    for (name, session) in owned {
        let me = Holder::new(&membership.node.id, session);
        let revision = match membership.names.get(&name).await {
            Ok(Some((holder, revision))) if holder.same_session(&me) => Some(revision),
            Ok(Some(_)) => None,
            Ok(None) => match membership.names.create(&name, &me).await {
                Ok(Claim::Created { revision }) => Some(revision),
                Ok(Claim::Held { .. }) => None,
                Err(err) => return warn!(%err, "reconciliation stopped: broker unreachable"),
            },
            Err(err) => return warn!(%err, "reconciliation stopped: broker unreachable"),
        };
        let mut table = lock(&membership.owned);
        match revision {
            Some(revision) => {
                if let Some(owned) = table.get_mut(&name).filter(|o| o.session == session) {
                    owned.revision = revision;
                }
            }
            None => {
                table.remove(&name);
                drop(table);
                let _ = membership
                    .registry
                    .kick_holder(&name, Some(session), ByeReason::Replaced);
                replaced += 1;
            }
        }
    }
    membership.registry.metrics().cluster_reconciliations.inc();
    info!(replaced, "reconciled with the cluster");
}
