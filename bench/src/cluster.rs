//! The cluster scenarios (docs/PROTOCOL.md §7), tcphub only: `cluster-idle`, one of several
//! load-tool processes that together hold more clients than one process may open files for,
//! and `failover`, the time from `kill -9` of a node until every one of its clients,
//! reconnected through the balancer, is addressable again. Directed sends and broadcasts
//! across nodes need no scenario of their own: `direct` with the clients on one node and
//! `--http-addr` on another, `fanout` with `--node-addr` once per node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::timeout;

use crate::http::HttpConn;
use crate::scenario::{self, open_fleet, quantile_ms, stamp, Common, Destinations, Sink};
use crate::server::{CpuMeter, ForeignLoad, ServerProcess};
use crate::wire::{client_name, ClientConn, Scope};

#[derive(Subcommand)]
pub enum Scenario {
    /// This process's share of a cluster's idle clients (all on the node of --addr and
    /// --server-pid): that node's memory per client once the whole cluster lists
    /// --cluster-total clients, and how long `GET /clients` then takes.
    #[command(name = "cluster-idle")]
    Idle {
        #[command(flatten)]
        common: Common,
        /// Clients the whole cluster lists once every load-tool process has registered its own.
        #[arg(long)]
        cluster_total: u64,
        /// Seconds to wait for that total.
        #[arg(long, default_value_t = 300)]
        total_wait_secs: u64,
        /// Seconds between reaching the total and the final memory reading.
        #[arg(long, default_value_t = 2)]
        settle_secs: u64,
        /// `GET /clients` requests timed at each page size (1000 and 10000); 0 in all
        /// processes but one, so that their listings do not overlap.
        #[arg(long, default_value_t = 5)]
        listings: usize,
        /// Seconds to keep the clients connected afterwards, so that the other processes,
        /// which poll for the total (and the one that lists, a settle period later), see it too.
        #[arg(long, default_value_t = 10)]
        hold_secs: u64,
    },
    /// Clients connected through the balancer to one node (--http-addr, --server-pid), which
    /// is then killed with SIGKILL; they reconnect at once through the balancer, and a send
    /// to each through the other nodes' APIs must be accepted (202) and arrive.
    Failover {
        /// --node-addr: the balancer's device ports (in equal blocks; one HAProxy process
        /// holds two descriptors per client). --http-addr and --server-pid: the holding node.
        #[command(flatten)]
        common: Common,
        /// An API of a surviving node that the proving sends go through (in turn); repeat.
        #[arg(long = "probe-api", required = true)]
        probe_apis: Vec<SocketAddr>,
        /// Back-off after a failed reconnection attempt, in ms, jittered by ±50% (the first
        /// attempt after the connection ends is immediate).
        #[arg(long, default_value_t = 100)]
        backoff_ms: u64,
        /// HTTP connections the proving sends are spread over.
        #[arg(long, default_value_t = 16)]
        probes: usize,
        /// Seconds after the kill until clients not yet addressable count as lost.
        #[arg(long, default_value_t = 60)]
        patience_secs: u64,
        /// Created once every client is on the holding node (the other nodes may start).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// The kill waits until this file exists (the balancers take the other nodes as up).
        #[arg(long)]
        go_file: Option<PathBuf>,
    },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Idle { .. } => "cluster-idle",
            Scenario::Failover { .. } => "failover",
        }
    }
}

/// Runs one scenario: whether it passed, and its whole JSON line.
pub async fn run(scenario: Scenario) -> Result<(bool, Value)> {
    crate::server::raise_open_files_limit()?;
    let name = scenario.name();
    let (common, (ok, results)) = match scenario {
        Scenario::Idle {
            common,
            cluster_total,
            total_wait_secs,
            settle_secs,
            listings,
            hold_secs,
        } => {
            let load = ForeignLoad::start(ServerProcess::new(common.server_pid)?)?;
            let wait = Duration::from_secs(total_wait_secs);
            let (ok, mut results) =
                idle(&common, cluster_total, wait, settle_secs, listings).await?;
            results["foreign_cpu_share"] = json!(load.share()?);
            tokio::time::sleep(Duration::from_secs(hold_secs)).await;
            (common, (ok, results))
        }
        Scenario::Failover {
            common,
            probe_apis,
            backoff_ms,
            probes,
            patience_secs,
            ready_file,
            go_file,
        } => {
            let backoff = Duration::from_millis(backoff_ms);
            let patience = Duration::from_secs(patience_secs);
            let files = (ready_file, go_file);
            let outcome = failover(&common, &probe_apis, backoff, probes, patience, files).await?;
            (common, outcome)
        }
    };
    let mut line = json!({
        "scenario": name,
        "target": common.target,
        "clients": common.clients,
        "ok": ok,
    });
    if let (Some(line), Some(results)) = (line.as_object_mut(), results.as_object()) {
        line.extend(results.clone());
    }
    Ok((ok, line))
}

/// A sink for idle clients: nothing should arrive.
#[derive(Default)]
struct Silence(AtomicU64);

impl Sink for Silence {
    fn deliver(&self, _: usize, _: Scope, _: &[u8]) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// The clients a node holds itself (`tcphub_clients_connected` of its `/metrics`).
async fn local_clients(api: SocketAddr) -> Result<u64> {
    let mut http = HttpConn::connect(api).await?;
    let (status, body) = http.get("/metrics").await?;
    ensure!(status == 200, "GET /metrics on {api}: {status}");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix("tcphub_clients_connected "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map(|n| n as u64)
        .with_context(|| format!("no tcphub_clients_connected in {api}/metrics"))
}

/// `GET path` on `http`: the elapsed time and the decoded body.
async fn timed_get(http: &mut HttpConn, path: &str) -> Result<(Duration, Value)> {
    let started = Instant::now();
    let (status, body) = http.get(path).await?;
    let took = started.elapsed();
    ensure!(status == 200, "GET {path}: {status}");
    Ok((took, serde_json::from_slice(&body)?))
}

/// `cluster-idle`: registers this process's clients on one node, waits until the cluster
/// lists `cluster_total`, and reports that node's memory per client and listing times.
async fn idle(
    common: &Common,
    cluster_total: u64,
    total_wait: Duration,
    settle_secs: u64,
    listings: usize,
) -> Result<(bool, Value)> {
    let server = ServerProcess::new(common.server_pid)?;
    let rss_before = server.rss_kib()?;
    let silence = Arc::new(Silence::default());
    let meter = CpuMeter::start(server)?;
    let (fleet, took) = open_fleet(common, silence.clone()).await?;
    let cpu = meter.spent()?;
    let registered_cpu = crate::server::watched_spent();
    let rss_registered = server.rss_kib()?;

    let mut http = HttpConn::connect(common.http_addr).await?;
    let deadline = Instant::now() + total_wait;
    let mut listed;
    loop {
        listed = timed_get(&mut http, "/clients?limit=1").await?.1["total"]
            .as_u64()
            .unwrap_or(0);
        if listed >= cluster_total || Instant::now() > deadline {
            break;
        }
        // Polling: the other load-tool processes give no other signal.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total_reached = Instant::now();
    tokio::time::sleep(Duration::from_secs(settle_secs)).await;
    let rss_settled = server.rss_kib()?;
    let local = local_clients(common.http_addr).await?;

    let mut timings = json!({});
    if listings > 0 {
        // The other processes read their nodes' memory up to a poll later than
        // this one: a listing (every node builds a page of thousands) must not
        // fall into their reading.
        tokio::time::sleep(Duration::from_secs(settle_secs.max(1))).await;
    }
    for limit in [1000, 10_000] {
        let mut samples = Vec::with_capacity(listings);
        for _ in 0..listings {
            let (took, body) = timed_get(&mut http, &format!("/clients?limit={limit}")).await?;
            let page = body["clients"].as_array().map_or(0, Vec::len);
            ensure!(
                body["total"].as_u64() == Some(cluster_total) && body.get("partial").is_none(),
                "GET /clients?limit={limit}: total {} partial {}",
                body["total"],
                body["partial"]
            );
            ensure!(
                page == limit.min(cluster_total as usize),
                "a page of {page}"
            );
            samples.push(took.as_nanos() as u64);
        }
        samples.sort_unstable();
        timings[format!("list_{limit}_p50_ms")] = json!(quantile_ms(&samples, 0.5));
        timings[format!("list_{limit}_max_ms")] = json!(quantile_ms(&samples, 1.0));
    }

    let registered = fleet.json()["registered"].as_u64().unwrap_or(0);
    let unexpected = silence.0.load(Relaxed);
    let ok = fleet.healthy(common.clients)
        && unexpected == 0
        && listed == cluster_total
        && local == common.clients as u64;
    let per_client =
        |kib: u64| (kib.saturating_sub(rss_before) * 1024) as f64 / registered.max(1) as f64;
    Ok((
        ok,
        json!({
            "first_client": common.first_client,
            "cluster_total": cluster_total,
            "cluster_listed": listed,
            "node_holds": local,
            "register_secs": took.as_secs_f64(),
            "registrations_per_sec": registered as f64 / took.as_secs_f64(),
            "total_reached_after_secs": (total_reached - (deadline - total_wait)).as_secs_f64(),
            "server_cpu_us_per_registration": cpu.server * 1e6 / registered.max(1) as f64,
            "watched_cpu_secs_registering": registered_cpu,
            "rss_before_kib": rss_before,
            "rss_registered_kib": rss_registered,
            "rss_settled_kib": rss_settled,
            "rss_bytes_per_client": per_client(rss_settled),
            "rss_bytes_per_client_at_registration": per_client(rss_registered),
            "listings": timings,
            "unexpected_deliveries": unexpected,
            "fleet": fleet.json(),
        }),
    ))
}

/// What the reconnecting clients of the failover scenario record.
struct Movers {
    epoch: Instant,
    /// Per client: the stamp of its latest confirmed registration, 0 before the first.
    registered_at: Vec<AtomicU64>,
    registrations: AtomicUsize,
    first_registered: Notify,
    /// Connections that ended (the server or the balancer closed them).
    ended: AtomicUsize,
    failed_attempts: AtomicU64,
    /// Proving sends that arrived at the right client, and anything else that arrived.
    proofs_received: AtomicU64,
    strays: AtomicU64,
    /// Clients that registered again after the kill, to be proven addressable.
    back: mpsc::UnboundedSender<usize>,
    /// Set at the kill: registrations after it are reconnections.
    killed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Sink for Movers {
    fn deliver(&self, client: usize, scope: Scope, payload: &[u8]) {
        match scenario::tag_numbers(payload, [b'f']) {
            Some([dest]) if dest == client && scope == Scope::Direct => {
                self.proofs_received.fetch_add(1, Relaxed)
            }
            _ => self.strays.fetch_add(1, Relaxed),
        };
    }
}

impl Movers {
    fn note_error(&self, error: String) {
        self.first_error.lock().unwrap().get_or_insert(error);
    }
}

/// One client: registers through the balancer, reads until the connection ends, then
/// reconnects at once, and after a failed attempt after a jittered back-off, for good.
async fn keep_connected(
    client: usize,
    common: Arc<Common>,
    movers: Arc<Movers>,
    gate: Arc<Semaphore>,
    backoff: Duration,
) {
    let name = client_name(common.first_client + client);
    let mut jitter = Destinations(0x9e37_79b9_7f4a_7c15 ^ (client as u64 + 1));
    let Ok(source) = common.source(client) else {
        movers.note_error(format!("{name}: out of source addresses"));
        return;
    };
    let mut first = true;
    loop {
        // Only the first connection waits for the gate: reconnections are the storm measured.
        let permit = if first {
            gate.clone().acquire_owned().await.ok()
        } else {
            None
        };
        let addr = common.addr_of(client);
        let attempt = timeout(
            common.patience(),
            ClientConn::register(common.target, addr, source, &name, &[]),
        )
        .await;
        drop(permit);
        let conn = match attempt {
            Ok(Ok(conn)) => conn,
            failed => {
                movers.failed_attempts.fetch_add(1, Relaxed);
                if let Ok(Err(e)) = failed {
                    movers.note_error(format!("{e:#}"));
                }
                let millis = backoff.as_millis() as u64;
                let wait = millis / 2 + jitter.next(millis.max(1) as usize) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
        };
        movers.registered_at[client].store(stamp(movers.epoch), Relaxed);
        if first {
            first = false;
            if movers.registrations.fetch_add(1, Relaxed) + 1 == movers.registered_at.len() {
                movers.first_registered.notify_one();
            }
        } else if movers.killed.load(Relaxed) != 0 {
            let _ = movers.back.send(client);
        }
        let _ = conn
            .read_deliveries(|scope, payload| movers.deliver(client, scope, payload))
            .await;
        movers.ended.fetch_add(1, Relaxed);
    }
}

/// What the proving sends found.
#[derive(Default)]
struct Proofs {
    /// Per client: the stamp of the first accepted send after the kill, 0 until then.
    addressable_at: Vec<AtomicU64>,
    addressable: AtomicUsize,
    all_addressable: Notify,
    accepted: AtomicU64,
    /// Sends answered with another status (404 while the name is not yet claimed again).
    refused: Mutex<std::collections::BTreeMap<u16, u64>>,
    errors: AtomicU64,
}

/// Sends to each client that registered again until one is accepted.
async fn prove(
    api: SocketAddr,
    movers: Arc<Movers>,
    proofs: Arc<Proofs>,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<usize>>>,
    first_client: usize,
) -> Result<()> {
    let mut http = HttpConn::connect(api).await?;
    loop {
        let Some(client) = queue.lock().await.recv().await else {
            return Ok(());
        };
        let path = format!("/clients/{}/send", client_name(first_client + client));
        let body = format!("{{\"message\":\"f{client}:\"}}");
        loop {
            match http.post_json(&path, body.as_bytes()).await {
                Ok((202, _)) => {
                    proofs.accepted.fetch_add(1, Relaxed);
                    let now = stamp(movers.epoch);
                    if proofs.addressable_at[client]
                        .compare_exchange(0, now, Relaxed, Relaxed)
                        .is_ok()
                        && proofs.addressable.fetch_add(1, Relaxed) + 1
                            == proofs.addressable_at.len()
                    {
                        proofs.all_addressable.notify_one();
                    }
                    break;
                }
                Ok((status, _)) => {
                    *proofs.refused.lock().unwrap().entry(status).or_default() += 1;
                }
                Err(e) => {
                    proofs.errors.fetch_add(1, Relaxed);
                    movers.note_error(format!("send via {api}: {e:#}"));
                    http = HttpConn::connect(api).await?;
                }
            }
            // The name is not claimed again yet: ask again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `failover`: see [`Scenario::Failover`].
async fn failover(
    common: &Common,
    probe_apis: &[SocketAddr],
    backoff: Duration,
    probes: usize,
    patience: Duration,
    (ready_file, go_file): (Option<PathBuf>, Option<PathBuf>),
) -> Result<(bool, Value)> {
    ensure!(
        !common.node_addrs.is_empty(),
        "failover needs --node-addr (the balancer)"
    );
    let clients = common.clients;
    let (back, queue) = mpsc::unbounded_channel();
    let movers = Arc::new(Movers {
        epoch: Instant::now(),
        registered_at: (0..clients).map(|_| AtomicU64::new(0)).collect(),
        registrations: AtomicUsize::new(0),
        first_registered: Notify::new(),
        ended: AtomicUsize::new(0),
        failed_attempts: AtomicU64::new(0),
        proofs_received: AtomicU64::new(0),
        strays: AtomicU64::new(0),
        back,
        killed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let shared = Arc::new(common.clone());
    let gate = Arc::new(Semaphore::new(common.connects_in_flight));
    for client in 0..clients {
        let task = keep_connected(
            client,
            shared.clone(),
            movers.clone(),
            gate.clone(),
            backoff,
        );
        tokio::spawn(task);
    }
    let deadline = Instant::now() + patience;
    while movers.registrations.load(Relaxed) < clients {
        if timeout(common.patience(), movers.first_registered.notified())
            .await
            .is_err()
            && Instant::now() > deadline
        {
            bail!(
                "only {} of {clients} registered: {:?}",
                movers.registrations.load(Relaxed),
                movers.first_error.lock().unwrap()
            );
        }
    }
    let held = local_clients(common.http_addr).await?;
    ensure!(
        held == clients as u64,
        "the holding node has {held} clients, not all {clients}: the balancer spread them"
    );
    if let Some(ready) = ready_file {
        std::fs::write(&ready, b"")
            .with_context(|| format!("cannot create {}", ready.display()))?;
    }
    if let Some(go) = go_file {
        let deadline = Instant::now() + patience;
        // Polling: the script that starts the other nodes gives no other signal.
        while !go.exists() {
            ensure!(
                Instant::now() < deadline,
                "{} not created in time",
                go.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let failed_before = movers.failed_attempts.load(Relaxed);

    let proofs = Arc::new(Proofs {
        addressable_at: (0..clients).map(|_| AtomicU64::new(0)).collect(),
        ..Proofs::default()
    });
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    for prover in 0..probes {
        let api = probe_apis[prover % probe_apis.len()];
        let task = prove(
            api,
            movers.clone(),
            proofs.clone(),
            queue.clone(),
            common.first_client,
        );
        tokio::spawn(async move {
            if let Err(e) = task.await {
                eprintln!("tcphub-bench: failover: prover via {api} stopped: {e:#}");
            }
        });
    }

    let killed = stamp(movers.epoch);
    movers.killed.store(killed, Relaxed);
    // SAFETY: kill only sends a signal to the given process.
    if unsafe { libc::kill(common.server_pid as libc::pid_t, libc::SIGKILL) } != 0 {
        bail!(
            "kill -9 {}: {}",
            common.server_pid,
            std::io::Error::last_os_error()
        );
    }
    let deadline = tokio::time::Instant::now() + patience;
    while proofs.addressable.load(Relaxed) < clients {
        let signal = proofs.all_addressable.notified();
        if tokio::time::timeout_at(deadline, signal).await.is_err() {
            break;
        }
    }
    let addressable = proofs.addressable.load(Relaxed);
    // Every accepted send must arrive, exactly once and at its client.
    let arrival_deadline = Instant::now() + common.patience();
    while movers.proofs_received.load(Relaxed) < proofs.accepted.load(Relaxed)
        && Instant::now() < arrival_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let since_kill = |stamps: &[AtomicU64]| {
        let mut after: Vec<u64> = stamps
            .iter()
            .map(|t| t.load(Relaxed))
            .filter(|&t| t > killed)
            .map(|t| t - killed)
            .collect();
        after.sort_unstable();
        after
    };
    let reconnected = since_kill(&movers.registered_at);
    let proven = since_kill(&proofs.addressable_at);
    let mut survivors = json!({});
    for api in probe_apis {
        survivors[api.to_string()] = json!(local_clients(*api).await?);
    }
    let (accepted, received) = (
        proofs.accepted.load(Relaxed),
        movers.proofs_received.load(Relaxed),
    );
    let strays = movers.strays.load(Relaxed);
    let ended = movers.ended.load(Relaxed);
    let ok = addressable == clients && received == accepted && strays == 0 && ended == clients;
    let refused = proofs.refused.lock().unwrap().clone();
    Ok((
        ok,
        json!({
            "backoff_ms": backoff.as_millis() as u64,
            "connections_ended": ended,
            "reconnected": reconnected.len(),
            "all_reconnected_secs": quantile_ms(&reconnected, 1.0).map(|ms| ms / 1e3),
            "reconnected_p50_secs": quantile_ms(&reconnected, 0.5).map(|ms| ms / 1e3),
            "addressable": addressable,
            "all_addressable_secs": (addressable == clients)
                .then(|| quantile_ms(&proven, 1.0).map(|ms| ms / 1e3)),
            "addressable_p50_secs": quantile_ms(&proven, 0.5).map(|ms| ms / 1e3),
            "addressable_p99_secs": quantile_ms(&proven, 0.99).map(|ms| ms / 1e3),
            "failed_attempts_after_kill": movers.failed_attempts.load(Relaxed) - failed_before,
            "sends_refused_by_status": refused,
            "send_errors": proofs.errors.load(Relaxed),
            "sends_accepted": accepted,
            "sends_received": received,
            "strays": strays,
            "survivors_hold": survivors,
            "first_error": *movers.first_error.lock().unwrap(),
        }),
    ))
}
