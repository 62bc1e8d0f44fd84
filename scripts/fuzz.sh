#!/usr/bin/env bash
# Coverage-guided fuzzing of the frame decoder for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]   (default 60)
#
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP lets the stable
# toolchain accept them. The hub forbids unsafe code, so the target is built
# without a sanitizer: builds are several times faster and a panic or failed
# assertion is what the target checks for. Any crash fails this script, and the
# input that caused it is left in fuzz/artifacts/decoder/.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cd "$root/fuzz"
mkdir -p corpus/decoder
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/fuzz/target}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo fuzz run decoder --sanitizer none corpus/decoder -- \
    -max_total_time="$seconds" -dict=decoder.dict -max_len=4096 \
    -print_final_stats=1 >"$log" 2>&1
status=$?
set -e
grep -E '^(#[0-9]+ *(INITED|DONE)|Done|stat::)' "$log" || true
runs="$(grep -oE '^Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' || true)"
if [ "$status" -ne 0 ] || [ -z "$runs" ]; then
    tail -n 40 "$log"
    echo "fuzz: decoder FAILED (exit $status)" >&2
    exit 1
fi
echo "fuzz: decoder ran $runs executions in ${seconds}s without a failure"
