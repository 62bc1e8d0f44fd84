#!/usr/bin/env bash
# The whole test suite, as CI runs it: the Rust tests, then the checks that need
# more than cargo (each installs what it needs; a missing tool is a failure).
# Run from anywhere as root (apt-get and dockerd need it): scripts/test-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo test (unit, integration, Node seed clients)"
cargo test --all-targets

step "bench smoke: every scenario once at tiny N against the release binary"
cargo build --release
bench/smoke.sh target/release/tcphub

step "container image: hadolint, build from the Dockerfile, run, drain"
scripts/container-smoke.sh

printf '\nall checks passed\n'
