//! Rounds of pushes through tcphub's HTTP API to known recipients, for the group and bulk
//! scenarios. Each round is one request (a broadcast, a group send or a bulk send) whose
//! recipients are a known range of the fleet; every delivery is checked against the round its
//! payload names (scope, recipient, size, once). Rounds belong to phases, and the server's CPU
//! time is read whenever the phase changes, so phases can run interleaved in blocks and be
//! compared within one run, on one fleet and one server process.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::http::HttpConn;
use crate::scenario::{open_fleet, payload, quantile_ms, stamp, tag_numbers, Common, Sink};
use crate::server::ServerProcess;
use crate::wire::{client_name, Scope};

/// Rounds of this phase are run but not reported.
pub const WARMUP: &str = "warmup";

/// What one round asks the hub to do.
#[derive(Clone, Debug)]
pub enum Push {
    /// `POST /broadcast`: every client.
    Broadcast,
    /// `POST /groups/{group}/send`.
    Group(String),
    /// `POST /send` with one item per recipient, each with its own message.
    Bulk,
    /// `POST /send` with one item naming every recipient: one message, sent by name.
    Names,
}

impl Push {
    fn scope(&self) -> Scope {
        match self {
            Push::Broadcast => Scope::Broadcast,
            Push::Group(_) => Scope::Group,
            Push::Bulk | Push::Names => Scope::Direct,
        }
    }

    /// Whether each recipient gets a message of its own, tagged with its index.
    fn tags_recipients(&self) -> bool {
        matches!(self, Push::Bulk)
    }
}

/// One request and who must get what it pushes.
#[derive(Clone, Debug)]
pub struct Round {
    /// The phase it is measured in ([`WARMUP`] for none).
    pub phase: &'static str,
    /// The request.
    pub push: Push,
    /// The clients (by index) it reaches, and no others.
    pub recipients: Range<usize>,
}

impl Round {
    /// `count` rounds of the same push to the same recipients.
    pub fn repeated(
        phase: &'static str,
        push: Push,
        recipients: Range<usize>,
        count: usize,
    ) -> Vec<Round> {
        let round = Round {
            phase,
            push,
            recipients,
        };
        vec![round; count]
    }
}

/// Arrival times of every round at every recipient, and everything that arrived wrong.
struct Arrivals {
    /// Each round's scope, recipients, and whether its messages name their recipient.
    rounds: Vec<(Scope, Range<usize>, bool)>,
    /// Where each round's slots start in `slots`.
    offsets: Vec<usize>,
    /// Arrival stamps, 0 until the recipient has it.
    slots: Vec<AtomicU64>,
    received: Vec<AtomicUsize>,
    round_complete: Notify,
    payload_bytes: usize,
    epoch: Instant,
    duplicates: AtomicU64,
    /// Deliveries to a client the round does not reach, or a bulk message for another client.
    misrouted: AtomicU64,
    /// Deliveries that belong to no round, or had the wrong scope or size.
    strays: AtomicU64,
}

impl Sink for Arrivals {
    fn deliver(&self, client: usize, scope: Scope, payload: &[u8]) {
        let now = stamp(self.epoch);
        let Some(round) = tag_numbers(payload, [b'r'])
            .map(|[round]| round)
            .filter(|&round| round < self.rounds.len())
        else {
            self.strays.fetch_add(1, Relaxed);
            return;
        };
        let (expected_scope, recipients, tagged) = &self.rounds[round];
        if scope != *expected_scope || payload.len() != self.payload_bytes {
            self.strays.fetch_add(1, Relaxed);
            return;
        }
        let addressed_to = match tagged {
            true => tag_numbers(payload, [b'r', b'd']).map(|[_, dest]| dest),
            false => Some(client),
        };
        if addressed_to != Some(client) || !recipients.contains(&client) {
            self.misrouted.fetch_add(1, Relaxed);
            return;
        }
        let slot = &self.slots[self.offsets[round] + client - recipients.start];
        match slot.compare_exchange(0, now, Relaxed, Relaxed) {
            Ok(_) if self.received[round].fetch_add(1, Relaxed) + 1 == recipients.len() => {
                self.round_complete.notify_one()
            }
            Ok(_) => {}
            Err(_) => {
                self.duplicates.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The text each recipient of `round` must get: tagged with the round and, for a bulk send,
/// with the recipient.
fn text(round: usize, client: Option<usize>, bytes: usize) -> String {
    match client {
        Some(client) => payload(format!("r{round}:d{client}:"), bytes),
        None => payload(format!("r{round}:"), bytes),
    }
}

/// The request body of `round`.
fn body(number: usize, round: &Round, bytes: usize) -> Result<Vec<u8>> {
    Ok(match round.push {
        Push::Broadcast | Push::Group(_) => {
            serde_json::to_vec(&json!({ "message": text(number, None, bytes) }))?
        }
        Push::Names => {
            let names: Vec<String> = round.recipients.clone().map(client_name).collect();
            let item = json!({"to": names, "message": text(number, None, bytes)});
            serde_json::to_vec(&json!({ "messages": [item] }))?
        }
        Push::Bulk => {
            let items: Vec<Value> = round
                .recipients
                .clone()
                .map(|client| {
                    json!({"to": client_name(client), "message": text(number, Some(client), bytes)})
                })
                .collect();
            serde_json::to_vec(&json!({ "messages": items }))?
        }
    })
}

/// Sends `round` and checks the hub's answer: every recipient reached, none missing or backlogged.
async fn trigger(http: &mut HttpConn, round: &Round, body: &[u8]) -> Result<()> {
    let path = match &round.push {
        Push::Broadcast => "/broadcast".to_owned(),
        Push::Group(group) => format!("/groups/{group}/send"),
        Push::Bulk | Push::Names => "/send".to_owned(),
    };
    let (status, reply) = http.post_json(&path, body).await?;
    let reply: Value = serde_json::from_slice(&reply)
        .map_err(|e| anyhow::anyhow!("POST {path}: {status}, unreadable answer: {e}"))?;
    let count = round.recipients.len() as u64;
    let reached = match round.push {
        Push::Broadcast | Push::Group(_) => {
            status == 202 && reply["recipients"] == count && reply["queued"] == count
        }
        Push::Bulk | Push::Names => {
            status == 200
                && reply["queued"] == count
                && reply["notFound"] == 0
                && reply["backlogged"] == 0
                && reply["results"].as_array().map(Vec::len) == Some(count as usize)
        }
    };
    let summary = || {
        let mut shown = reply.clone();
        if let Some(results) = shown.get_mut("results") {
            *results = json!(format!(
                "{} entries",
                results.as_array().map_or(0, Vec::len)
            ));
        }
        shown
    };
    ensure!(reached, "POST {path}: {status} {}", summary());
    Ok(())
}

/// What one phase cost and how long its rounds took.
#[derive(Default)]
struct Phase {
    rounds: usize,
    deliveries: u64,
    server_cpu_secs: f64,
    /// Time from just before each complete round's request to its last arrival, in ns.
    last_arrivals: Vec<u64>,
}

/// Opens the fleet, runs `rounds` in order and reports, per phase, the server's CPU per
/// delivery and per round, and the time until the last recipient had each round.
///
/// Result keys are `<phase>_<figure>`; the run fails on any loss, duplicate, misroute, stray
/// or refused request.
pub async fn run(common: &Common, rounds: &[Round]) -> Result<(bool, Value)> {
    ensure!(
        rounds
            .iter()
            .all(|round| round.recipients.end <= common.clients),
        "a round reaches past the fleet"
    );
    let server = ServerProcess::new(common.server_pid)?;
    let mut offsets = Vec::with_capacity(rounds.len());
    let mut slots = 0;
    for round in rounds {
        offsets.push(slots);
        slots += round.recipients.len();
    }
    let state = Arc::new(Arrivals {
        rounds: rounds
            .iter()
            .map(|round| {
                let push = &round.push;
                (
                    push.scope(),
                    round.recipients.clone(),
                    push.tags_recipients(),
                )
            })
            .collect(),
        offsets,
        slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        received: rounds.iter().map(|_| AtomicUsize::new(0)).collect(),
        round_complete: Notify::new(),
        payload_bytes: common.payload_bytes,
        epoch: Instant::now(),
        duplicates: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        strays: AtomicU64::new(0),
    });
    let (fleet, _) = open_fleet(common, state.clone()).await?;
    ensure!(
        fleet.healthy(common.clients),
        "registration failed: {}",
        fleet.json()
    );
    let mut http = HttpConn::connect(common.http_addr).await?;
    let mut started = vec![0u64; rounds.len()];
    let mut trigger_errors = Vec::new();
    let mut phases: BTreeMap<&'static str, Phase> = BTreeMap::new();
    let mut cpu_mark = server.cpu_seconds()?;
    for (number, round) in rounds.iter().enumerate() {
        // The CPU of a phase is read when it ends: ticks are 10 ms, a block of rounds is more.
        if number > 0 && rounds[number - 1].phase != round.phase {
            let now = server.cpu_seconds()?;
            phases
                .entry(rounds[number - 1].phase)
                .or_default()
                .server_cpu_secs += now - cpu_mark;
            cpu_mark = now;
        }
        let body = body(number, round, common.payload_bytes)?;
        started[number] = stamp(state.epoch);
        if let Err(e) = trigger(&mut http, round, &body).await {
            trigger_errors.push(format!("round {number}: {e:#}"));
            continue;
        }
        let deadline = tokio::time::Instant::now() + common.patience();
        while state.received[number].load(Relaxed) < round.recipients.len() {
            if tokio::time::timeout_at(deadline, state.round_complete.notified())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    if let Some(last) = rounds.last() {
        phases.entry(last.phase).or_default().server_cpu_secs += server.cpu_seconds()? - cpu_mark;
    }

    let mut lost = 0;
    for (number, round) in rounds.iter().enumerate() {
        let row = &state.slots[state.offsets[number]..][..round.recipients.len()];
        let arrived: Vec<u64> = row
            .iter()
            .map(|slot| slot.load(Relaxed))
            .filter(|&t| t != 0)
            .collect();
        lost += (round.recipients.len() - arrived.len()) as u64;
        let phase = phases.entry(round.phase).or_default();
        phase.rounds += 1;
        phase.deliveries += arrived.len() as u64;
        if arrived.len() == round.recipients.len() {
            let last = arrived.iter().max().copied().unwrap_or(0);
            phase
                .last_arrivals
                .push(last.saturating_sub(started[number]));
        }
    }
    let (duplicates, misrouted, strays) = (
        state.duplicates.load(Relaxed),
        state.misrouted.load(Relaxed),
        state.strays.load(Relaxed),
    );
    let ok = fleet.healthy(common.clients)
        && lost == 0
        && duplicates == 0
        && misrouted == 0
        && strays == 0
        && trigger_errors.is_empty();
    let mut results = json!({
        "lost": lost,
        "duplicates": duplicates,
        "misrouted": misrouted,
        "strays": strays,
        "trigger_errors": trigger_errors.len(),
        "first_trigger_error": trigger_errors.first(),
        "fleet": fleet.json(),
    });
    for (name, mut phase) in phases.into_iter().filter(|(name, _)| *name != WARMUP) {
        phase.last_arrivals.sort_unstable();
        let per = |count: f64| phase.server_cpu_secs * 1e6 / count.max(1.0);
        let figures = [
            ("rounds", json!(phase.rounds)),
            ("deliveries", json!(phase.deliveries)),
            ("server_cpu_secs", json!(phase.server_cpu_secs)),
            ("cpu_us_per_delivery", json!(per(phase.deliveries as f64))),
            ("cpu_us_per_round", json!(per(phase.rounds as f64))),
            ("last_p50_ms", json!(quantile_ms(&phase.last_arrivals, 0.5))),
            (
                "last_p99_ms",
                json!(quantile_ms(&phase.last_arrivals, 0.99)),
            ),
        ];
        for (figure, value) in figures {
            results[format!("{name}_{figure}")] = value;
        }
    }
    Ok((ok, results))
}

/// Blocks of phases: each block runs `phases` in order, every other block in reverse, so
/// that no phase always follows the same one.
pub fn interleave(blocks: usize, phases: &[Vec<Round>]) -> Vec<Round> {
    let mut out = Vec::new();
    for block in 0..blocks {
        let order: Vec<&Vec<Round>> = if block % 2 == 0 {
            phases.iter().collect()
        } else {
            phases.iter().rev().collect()
        };
        for phase in order {
            out.extend(phase.iter().cloned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrivals(rounds: Vec<(Scope, Range<usize>, bool)>) -> Arrivals {
        let mut offsets = Vec::new();
        let mut slots = 0;
        for (_, recipients, _) in &rounds {
            offsets.push(slots);
            slots += recipients.len();
        }
        Arrivals {
            received: rounds.iter().map(|_| AtomicUsize::new(0)).collect(),
            rounds,
            offsets,
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            round_complete: Notify::new(),
            payload_bytes: 40,
            epoch: Instant::now(),
            duplicates: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            strays: AtomicU64::new(0),
        }
    }

    #[test]
    fn deliveries_are_checked_against_their_round() {
        let sink = arrivals(vec![
            (Scope::Group, 10..20, false),
            (Scope::Direct, 0..5, true),
            (Scope::Direct, 0..5, false),
        ]);
        sink.deliver(12, Scope::Group, text(0, None, 40).as_bytes());
        sink.deliver(12, Scope::Group, text(0, None, 40).as_bytes());
        sink.deliver(3, Scope::Group, text(0, None, 40).as_bytes());
        sink.deliver(12, Scope::Broadcast, text(0, None, 40).as_bytes());
        sink.deliver(4, Scope::Direct, text(1, Some(4), 40).as_bytes());
        sink.deliver(2, Scope::Direct, text(1, Some(4), 40).as_bytes());
        sink.deliver(2, Scope::Direct, text(7, Some(2), 40).as_bytes());
        sink.deliver(2, Scope::Direct, text(2, None, 40).as_bytes());
        sink.deliver(5, Scope::Direct, text(2, None, 40).as_bytes());
        assert_eq!(sink.received[0].load(Relaxed), 1);
        assert_eq!(sink.received[1].load(Relaxed), 1);
        assert_eq!(sink.received[2].load(Relaxed), 1);
        assert_eq!(sink.duplicates.load(Relaxed), 1);
        assert_eq!(sink.misrouted.load(Relaxed), 3);
        assert_eq!(sink.strays.load(Relaxed), 2);
    }

    #[test]
    fn bulk_bodies_give_each_recipient_its_own_message() {
        let round = Round {
            phase: "bulk",
            push: Push::Bulk,
            recipients: 3..5,
        };
        let body: Value = serde_json::from_slice(&body(9, &round, 12).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"messages": [
                {"to": "c-3", "message": "r9:d3:......"},
                {"to": "c-4", "message": "r9:d4:......"},
            ]})
        );
    }

    #[test]
    fn odd_blocks_run_the_phases_in_reverse() {
        let round = |phase| Round {
            phase,
            push: Push::Broadcast,
            recipients: 0..1,
        };
        let plan = interleave(3, &[vec![round("a")], vec![round("b"), round("b")]]);
        let phases: Vec<&str> = plan.iter().map(|round| round.phase).collect();
        assert_eq!(phases, ["a", "b", "b", "b", "b", "a", "a", "b", "b"]);
    }
}
