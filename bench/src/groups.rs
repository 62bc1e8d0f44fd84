//! Groups (docs/PROTOCOL.md §5): which groups the fleet's clients join, and the `group`
//! scenario, which compares in one run a send to a group of every client with a broadcast to
//! the same clients, and a send to a small group among them with a send to the same clients
//! by name.

use std::ops::Range;

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use crate::rounds::{self, Push, Round, WARMUP};
use crate::scenario::Common;

/// The groups a client may be in, in the order `--groups-per-client` takes them.
const KINDS: usize = 3;

/// The groups client `client` joins in its `sync`: the first `--groups-per-client` of
/// `all` (every client), `b-<n>` (its block of `--group-size` consecutive clients) and
/// `s-<n>` (its block of a tenth of that).
pub fn memberships(client: usize, common: &Common) -> Vec<String> {
    let block = common.group_size.max(1);
    let small = (block / 10).max(1);
    [
        "all".to_owned(),
        format!("b-{}", client / block),
        format!("s-{}", client / small),
    ]
    .into_iter()
    .take(common.groups_per_client.min(KINDS))
    .collect()
}

/// The clients in group `b-<n>`.
fn block(n: usize, common: &Common) -> Range<usize> {
    let size = common.group_size.max(1);
    (n * size).min(common.clients)..((n + 1) * size).min(common.clients)
}

/// `group`: in `blocks` blocks, `rounds` broadcasts, `rounds` sends to the group of every
/// client, `small_sends` sends to the groups of `--group-size` in turn, and as many sends of
/// one message to the same clients by name (`POST /send`), each waiting until every recipient
/// has it. Reports each phase's server CPU per delivery and per send, and the ratios the
/// targets are stated in.
///
/// A small send's recipients wait in epoll when it starts, so each of its writes also wakes a
/// reader, which a large broadcast's writes mostly do not (its readers are still busy with the
/// writes before); the send by name has the same pattern without the group lookup.
pub async fn group(
    common: &Common,
    blocks: usize,
    rounds: usize,
    small_sends: usize,
    warmup: usize,
) -> Result<(bool, Value)> {
    ensure!(
        common.groups_per_client >= 2,
        "the group scenario needs --groups-per-client 2 or more (`all` and the `b-<n>` blocks)"
    );
    let everyone = 0..common.clients;
    let small_groups = common.clients.div_ceil(common.group_size.max(1)).max(1);
    let small = |phase, by_name: bool, count| -> Vec<Round> {
        (0..count)
            .map(|send| {
                let n = send % small_groups;
                let push = match by_name {
                    true => Push::Names,
                    false => Push::Group(format!("b-{n}")),
                };
                Round {
                    phase,
                    push,
                    recipients: block(n, common),
                }
            })
            .collect()
    };
    let repeat = |phase, push, count| Round::repeated(phase, push, everyone.clone(), count);
    let mut plan = repeat(WARMUP, Push::Broadcast, warmup);
    plan.extend(repeat(WARMUP, Push::Group("all".into()), warmup));
    plan.extend(small(WARMUP, false, warmup));
    plan.extend(small(WARMUP, true, warmup));
    let phases = [
        repeat("broadcast", Push::Broadcast, rounds),
        repeat("group_all", Push::Group("all".into()), rounds),
        small("group_small", false, small_sends),
        small("named_small", true, small_sends),
    ];
    plan.extend(rounds::interleave(blocks, &phases));
    let (ok, mut results) = rounds::run(common, &plan).await?;
    let ratio = |phase: &str, base: &str| {
        let per = |name: &str| results[format!("{name}_cpu_us_per_delivery")].as_f64();
        per(phase).zip(per(base)).map(|(phase, base)| phase / base)
    };
    let ratios = [
        (
            "group_all_vs_broadcast_cpu",
            ratio("group_all", "broadcast"),
        ),
        (
            "group_small_vs_broadcast_cpu",
            ratio("group_small", "broadcast"),
        ),
        (
            "group_small_vs_named_cpu",
            ratio("group_small", "named_small"),
        ),
    ];
    for (key, value) in ratios {
        results[key] = json!(value);
    }
    results["group_size"] = json!(common.group_size);
    results["groups_per_client"] = json!(common.groups_per_client);
    Ok((ok, results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        common: Common,
    }

    fn common(args: &[&str]) -> Common {
        let base = ["bench", "--target", "tcphub", "--server-pid", "1"];
        Args::parse_from(base.iter().chain(args)).common
    }

    #[test]
    fn clients_join_the_first_kinds_of_group() {
        let three = common(&["--groups-per-client", "3", "--clients", "250"]);
        assert_eq!(memberships(123, &three), ["all", "b-1", "s-12"]);
        let one = common(&["--groups-per-client", "1"]);
        assert_eq!(memberships(123, &one), ["all"]);
        assert!(memberships(123, &common(&[])).is_empty());
        assert_eq!(block(2, &three), 200..250);
    }
}
