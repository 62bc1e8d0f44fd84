#!/usr/bin/env bash
# Runs the dashboard's browser tests against a tcphub binary: installs Debian's Chromium
# and the test's npm packages when they are missing, builds the hub unless TCPHUB_BIN
# names one, then runs `node --test`. A missing tool fails the run; nothing is skipped.
set -euo pipefail

e2e_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "$e2e_dir/../.." && pwd)"

if [[ ! -x /usr/bin/chromium ]]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

if [[ -z "${TCPHUB_BIN:-}" ]]; then
  cargo build --locked --manifest-path "$repo_dir/Cargo.toml"
  export TCPHUB_BIN="${CARGO_TARGET_DIR:-$repo_dir/target}/debug/tcphub"
fi

cd "$e2e_dir"
npm ci --no-audit --no-fund
node --test --test-reporter=spec --test-reporter-destination=stdout ./*.test.mjs
