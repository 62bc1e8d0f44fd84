//! The `bulk` scenario: `POST /send` with one different message for each client, against a
//! broadcast to the same clients in the same run (docs/PROTOCOL.md §5).

use anyhow::Result;
use serde_json::{json, Value};

use crate::rounds::{self, Push, Round, WARMUP};
use crate::scenario::Common;

/// `bulk`: in `blocks` blocks, `rounds` broadcasts and `rounds` bulk sends, each naming every
/// client once with a message of its own, each waiting until the last client has it.
/// Reports each phase's server CPU per delivery and the time until the last client had it.
pub async fn bulk(
    common: &Common,
    blocks: usize,
    rounds: usize,
    warmup: usize,
) -> Result<(bool, Value)> {
    let repeat = |phase, push, count| Round::repeated(phase, push, 0..common.clients, count);
    let mut plan = repeat(WARMUP, Push::Broadcast, warmup);
    plan.extend(repeat(WARMUP, Push::Bulk, warmup));
    let phases = [
        repeat("broadcast", Push::Broadcast, rounds),
        repeat("bulk", Push::Bulk, rounds),
    ];
    plan.extend(rounds::interleave(blocks, &phases));
    let (ok, mut results) = rounds::run(common, &plan).await?;
    let ms = |phase: &str| results[format!("{phase}_last_p50_ms")].as_f64();
    results["bulk_vs_broadcast_last_p50"] = json!(ms("bulk")
        .zip(ms("broadcast"))
        .map(|(bulk, all)| bulk / all));
    Ok((ok, results))
}
