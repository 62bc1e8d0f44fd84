#!/usr/bin/env bash
# Checks the monitoring files against the hub: `promtool check rules` and `promtool test
# rules` on deploy/prometheus/, then starts the debug hub, reads GET /metrics, and fails if
# the Grafana dashboard or the alert rules use a tcphub_* series or a label the hub does not
# export. Installs Debian's prometheus package (for promtool) when it is missing; a missing
# tool fails the run, nothing is skipped.
#
#   scripts/monitoring-check.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
rules="$root/deploy/prometheus/alerts.yml"
rule_tests="$root/deploy/prometheus/alerts.test.yml"
dashboard="$root/deploy/grafana/tcphub.json"
work="$(mktemp -d)"
hub_pid=""

cleanup() {
    [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

if ! command -v promtool >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
command -v promtool >/dev/null || { echo "promtool is still missing" >&2; exit 1; }

promtool check rules "$rules"
promtool test rules "$rule_tests"

cargo build --quiet --manifest-path "$root/Cargo.toml"
"$target/debug/tcphub" --tcp-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --log-format json >"$work/hub.log" 2>&1 &
hub_pid=$!
for _ in $(seq 1 100); do
    grep -q '"tcphub listening"' "$work/hub.log" && break
    kill -0 "$hub_pid" 2>/dev/null || { cat "$work/hub.log"; exit 1; }
    sleep 0.1
done
listening="$(grep '"tcphub listening"' "$work/hub.log")" || { cat "$work/hub.log"; exit 1; }
http_addr="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["http"])' "$listening")"
python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=5).read().decode())' \
    "$http_addr" >"$work/metrics.txt"

python3 - "$work/metrics.txt" "$dashboard" "$rules" <<'PY'
"""Every tcphub_* series and label the monitoring files use must be exported."""
import json
import re
import sys

metrics_path, dashboard_path, rules_path = sys.argv[1:]

# Series names per family, from the # TYPE lines: a family with no samples yet (a labelled
# counter nothing has incremented) is still exported.
SUFFIXES = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"],
            "summary": ["", "_sum", "_count"], "unknown": [""], "info": ["_info"]}
families, labels = {}, {}
text = open(metrics_path).read()
for line in text.splitlines():
    if line.startswith("# TYPE "):
        _, _, family, kind = line.split(" ", 3)
        for suffix in SUFFIXES[kind]:
            families[family + suffix] = family
        labels.setdefault(family, set())
        if kind == "histogram":
            labels[family].add("le")
    elif line.startswith("# HELP "):
        # The help texts name their labels ("..., by route, method and status"); a unit
        # test of src/metrics.rs keeps them exact.
        family, _, help_text = line[len("# HELP "):].partition(" ")
        if " by " in help_text:
            promised = help_text.split(" by ", 1)[1].split(" (")[0].rstrip(".")
            words = [w for w in re.split(r"[, ]+", promised) if w and w != "and"]
            labels.setdefault(family, set()).update(words)
    elif line and not line.startswith("#"):
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        found = re.search(r"\{(.*)\}", line)
        if found and name in families:
            labels[families[name]].update(re.findall(r'([a-zA-Z_]\w*)="', found.group(1)))
assert len(families) > 20, f"only {len(families)} series names in GET /metrics"

# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}


def expressions(path):
    if path.endswith(".json"):
        found = []

        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key in ("expr", "query", "definition") and isinstance(value, str):
                        found.append(value)
                    else:
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(json.load(open(path)))
        return found
    return re.findall(r"^\s*expr:\s*(\|\n(?:\s{10,}.*\n?)+|.*)$", open(path).read(), re.M)


def problems(expr):
    found = []
    used = set(re.findall(r"\btcphub_[a-zA-Z0-9_:]*", expr))
    for name in sorted(used - families.keys()):
        found.append(f"series {name} is not exported")
    known = set(TARGET_LABELS)
    for name in used & families.keys():
        known |= labels[families[name]]
    for name, matchers in re.findall(r"\b(tcphub_[a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        if name not in families:
            continue
        for label in re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers):
            if label not in labels[families[name]] | TARGET_LABELS:
                found.append(f"{name} has no label {label}")
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        for label in re.split(r"\s*,\s*", group.strip()):
            if label and label not in known:
                found.append(f"no series in the expression has the label {label}")
    return found


# The check itself must be able to fail.
assert problems('rate(tcphub_no_such_thing_total[5m])'), "a made-up series passed"
assert problems('tcphub_http_requests_total{code="500"}'), "a made-up label passed"
assert problems('sum by (nope) (tcphub_clients_connected)'), "a made-up grouping label passed"
assert problems('tcphub_http_request_duration_seconds{route="/x"}'), "a histogram without a suffix passed"

failed = False
for path in (dashboard_path, rules_path):
    exprs = expressions(path)
    names = {n for e in exprs for n in re.findall(r"\btcphub_[a-zA-Z0-9_:]*", e)}
    if len(names) < 5:
        print(f"{path}: only {len(names)} tcphub series found in {len(exprs)} expressions", file=sys.stderr)
        failed = True
    found = [(problem, expr) for expr in exprs for problem in problems(expr)]
    for problem, expr in found:
        print(f"{path}: {problem}\n    in {' '.join(expr.split())}", file=sys.stderr)
    failed = failed or bool(found)
    verdict = f"{len(found)} problems" if found else "all exported"
    print(f"{path}: {len(exprs)} expressions, {len(names)} tcphub series, {verdict}")
sys.exit(1 if failed else 0)
PY
echo "monitoring: rules valid, rule tests pass, every series and label used is exported"
