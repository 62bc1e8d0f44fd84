//! The offline mailbox scenarios (docs/PROTOCOL.md section 6), for tcphub only:
//!
//! - `mailbox-store`: senders in a closed loop (each sends its next request once the answer to
//!   its last is back). Phase `live` sends to registered clients without `ttl`; phase `stored`
//!   sends with `?ttl=` to names no client holds, so every message is stored (with
//!   `--data-dir`, each 202 waits for its commit). The same run measures both, so their rates
//!   compare directly.
//! - `mailbox-return`: N messages are stored for a name, then a client takes the name: the time
//!   from its `welcome` until the last of them has arrived.
//! - `mailbox-restart`: the tool runs the hub itself on a data dir, stores N messages, stops it
//!   and starts it again: the time from the start until `/readyz` answers 200, and until a
//!   client that connects then has its stored messages.
//!
//! Every answer and every message is checked; anything lost, duplicated or refused fails the run.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;

use crate::http::HttpConn;
use crate::scenario::{open_fleet, payload, quantile_ms, tag_numbers, Common, Destinations, Sink};
use crate::server::{CpuMeter, ForeignLoad, ServerProcess};
use crate::wire::{client_name, Scope, Target};

/// The mailbox scenarios, as subcommands of the tool.
#[derive(Subcommand)]
pub enum Scenario {
    /// Closed-loop sends to live clients without ttl, then with ttl to absent names (stored).
    #[command(name = "mailbox-store")]
    Store {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        senders: Senders,
        /// Measured requests in each phase.
        #[arg(long, default_value_t = 50_000)]
        messages: usize,
        /// Unmeasured requests before each phase.
        #[arg(long, default_value_t = 2000)]
        warmup: usize,
        /// The phases to run, in this order (a hub without a mailbox can only run `live`).
        #[arg(long, value_delimiter = ',', default_value = "live,stored")]
        phases: Vec<Phase>,
        /// Absent names the stored messages are spread over (each holds at most
        /// `--mailbox-capacity`, 1000 by default).
        #[arg(long, default_value_t = 1000)]
        names: usize,
    },
    /// A returning client: N messages stored for its name, then it connects.
    #[command(name = "mailbox-return")]
    Return {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        senders: Senders,
        /// Messages stored for the name before it connects.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Names that come back, one after the other, each with its own messages.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// Runs the hub on a data dir, stores N messages, and restarts it.
    #[command(name = "mailbox-restart")]
    Restart {
        #[command(flatten)]
        hub: HubProcess,
        #[command(flatten)]
        senders: Senders,
        /// Messages stored before the first restart.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Names they are spread over (each holds at most 1000 by default).
        #[arg(long, default_value_t = 1000)]
        names: usize,
        /// Restarts; each then delivers one name's messages.
        #[arg(long, default_value_t = 3)]
        restarts: usize,
        /// Size of each stored message's payload.
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
        /// How long any one step may take.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

/// The senders of the HTTP requests that store.
#[derive(Args, Clone, Copy)]
pub struct Senders {
    /// Concurrent senders, each on a keep-alive connection of its own.
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Seconds a stored message is kept (`?ttl=`).
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

/// The hub binary that `mailbox-restart` runs.
#[derive(Args)]
pub struct HubProcess {
    /// The tcphub binary.
    #[arg(long)]
    hub_bin: PathBuf,
    /// Its data dir: must not exist yet or be empty.
    #[arg(long)]
    data_dir: PathBuf,
    /// CPUs to run it on (`taskset -c` syntax); any CPU when absent.
    #[arg(long)]
    hub_cpus: Option<String>,
}

/// A phase of `mailbox-store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Sends without ttl to registered clients.
    Live,
    /// Sends with ttl to names no client holds.
    Stored,
}

impl Scenario {
    /// The scenario's name, as in its JSON line.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Store { .. } => "mailbox-store",
            Scenario::Return { .. } => "mailbox-return",
            Scenario::Restart { .. } => "mailbox-restart",
        }
    }
}

/// Runs one scenario: whether it passed, and its whole JSON line.
pub async fn run(scenario: Scenario) -> Result<(bool, Value)> {
    crate::server::raise_open_files_limit()?;
    let name = scenario.name();
    let (ok, mut line) = match scenario {
        Scenario::Store {
            common,
            senders,
            messages,
            warmup,
            phases,
            names,
        } => {
            let load = ForeignLoad::start(ServerProcess::new(common.server_pid)?)?;
            let (ok, mut results) =
                store(&common, senders, messages, warmup, &phases, names).await?;
            results["foreign_cpu_share"] = json!(load.share()?);
            (ok, with_common(results, &common))
        }
        Scenario::Return {
            common,
            senders,
            messages,
            rounds,
        } => {
            let load = ForeignLoad::start(ServerProcess::new(common.server_pid)?)?;
            let (ok, mut results) = returning(&common, senders, messages, rounds).await?;
            results["foreign_cpu_share"] = json!(load.share()?);
            (ok, with_common(results, &common))
        }
        Scenario::Restart {
            hub,
            senders,
            messages,
            names,
            restarts,
            payload_bytes,
            timeout_secs,
        } => {
            let restart = Restart {
                hub,
                senders,
                messages,
                names,
                payload_bytes,
                patience: Duration::from_secs(timeout_secs),
            };
            restart.run(restarts).await?
        }
    };
    let mut head = json!({"scenario": name, "target": "tcphub", "ok": ok});
    head.as_object_mut()
        .context("an object")?
        .append(line.as_object_mut().context("an object")?);
    Ok((ok, head))
}

fn with_common(mut results: Value, common: &Common) -> Value {
    results["clients"] = json!(common.clients);
    results["payload_bytes"] = json!(common.payload_bytes);
    results
}

/// What one batch of closed-loop requests measured.
struct Driven {
    secs: f64,
    /// Round trips of the requests answered as expected, in nanoseconds, sorted.
    latencies: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
}

impl Driven {
    /// The figures, with the server's CPU per answered request when it was measured.
    fn json(&self, server_cpu_secs: Option<f64>) -> Value {
        let answered = self.latencies.len();
        let cpu_per_request = server_cpu_secs.map(|secs| secs * 1e6 / answered.max(1) as f64);
        json!({
            "answered": answered,
            "secs": self.secs,
            "per_sec": answered as f64 / self.secs,
            "p50_ms": quantile_ms(&self.latencies, 0.5),
            "p99_ms": quantile_ms(&self.latencies, 0.99),
            "max_ms": quantile_ms(&self.latencies, 1.0),
            "server_cpu_us_per_request": cpu_per_request,
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }
}

/// The request for sequence number `seq` from sender `sender`: path and JSON body.
type MakeRequest = Arc<dyn Fn(usize, usize) -> (String, Vec<u8>) + Send + Sync>;
/// Checks an answer: status and body.
type CheckAnswer = fn(u16, &[u8]) -> Result<()>;

/// Opens one keep-alive connection per sender.
async fn connect_senders(http: SocketAddr, senders: usize) -> Result<Vec<HttpConn>> {
    let mut conns = Vec::with_capacity(senders);
    for _ in 0..senders {
        conns.push(HttpConn::connect(http).await?);
    }
    Ok(conns)
}

/// Sends requests `first..first + count` from every connection at once, each connection
/// waiting for the answer to its last request before it sends the next; hands the
/// connections back for the next batch.
async fn drive(
    conns: Vec<HttpConn>,
    first: usize,
    count: usize,
    request: MakeRequest,
    check: CheckAnswer,
) -> Result<(Vec<HttpConn>, Driven)> {
    let next = Arc::new(AtomicUsize::new(first));
    let errors = Arc::new(Mutex::new((0usize, None::<String>)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns.len());
    for (sender, mut conn) in conns.into_iter().enumerate() {
        let (next, errors, request) = (next.clone(), errors.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let seq = next.fetch_add(1, Relaxed);
                if seq >= first + count {
                    break;
                }
                let (path, body) = request(seq, sender);
                let sent = Instant::now();
                let outcome = conn
                    .post_json(&path, &body)
                    .await
                    .and_then(|(status, reply)| check(status, &reply));
                match outcome {
                    Ok(()) => latencies.push(sent.elapsed().as_nanos() as u64),
                    Err(e) => {
                        let mut errors = errors.lock().unwrap();
                        errors.0 += 1;
                        errors
                            .1
                            .get_or_insert_with(|| format!("POST {path}: {e:#}"));
                    }
                }
            }
            (conn, latencies)
        }));
    }
    let mut conns = Vec::with_capacity(tasks.len());
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        let (conn, mine) = task.await?;
        conns.push(conn);
        latencies.extend(mine);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let (errors, first_error) = errors.lock().unwrap().clone();
    Ok((
        conns,
        Driven {
            secs,
            latencies,
            errors,
            first_error,
        },
    ))
}

fn answer(status: u16, body: &[u8]) -> Result<Value> {
    ensure!(status == 202, "{status} {}", String::from_utf8_lossy(body));
    Ok(serde_json::from_slice(body)?)
}

/// A live send's answer: pushed to the client's queue, not stored.
fn pushed(status: u16, body: &[u8]) -> Result<()> {
    let answer = answer(status, body)?;
    ensure!(answer["queued"] == 1, "not queued: {answer}");
    ensure!(
        answer.get("stored").is_none_or(|s| s == false),
        "stored: {answer}"
    );
    Ok(())
}

/// A send to an absent name: stored, not queued.
fn stored(status: u16, body: &[u8]) -> Result<()> {
    let answer = answer(status, body)?;
    ensure!(
        answer["stored"] == true && answer["queued"] == 0,
        "not stored: {answer}"
    );
    Ok(())
}

/// A request that stores message `seq` for one of `names` absent names starting with `prefix`.
fn store_request(prefix: String, names: usize, ttl: u64, payload_bytes: usize) -> MakeRequest {
    Arc::new(move |seq, _| {
        let path = format!("/clients/{prefix}{}/send?ttl={ttl}", seq % names);
        let text = payload(format!("m{seq}:"), payload_bytes);
        (path, body(&text))
    })
}

fn body(text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "message": text })).expect("a string serializes")
}

/// Arrivals of live sends, by sequence number.
struct Arrivals {
    payload_bytes: usize,
    arrived: Vec<AtomicBool>,
    count: AtomicUsize,
    duplicates: AtomicU64,
    misrouted: AtomicU64,
    strays: AtomicU64,
    all_arrived: Notify,
}

impl Sink for Arrivals {
    fn deliver(&self, client: usize, scope: Scope, payload: &[u8]) {
        let [seq, dest] = match tag_numbers(payload, [b'm', b'd']) {
            Some(tag)
                if tag[0] < self.arrived.len()
                    && scope == Scope::Direct
                    && payload.len() == self.payload_bytes =>
            {
                tag
            }
            _ => {
                self.strays.fetch_add(1, Relaxed);
                return;
            }
        };
        if dest != client {
            self.misrouted.fetch_add(1, Relaxed);
        } else if self.arrived[seq].swap(true, Relaxed) {
            self.duplicates.fetch_add(1, Relaxed);
        } else if self.count.fetch_add(1, Relaxed) + 1 == self.arrived.len() {
            self.all_arrived.notify_one();
        }
    }
}

/// `mailbox-store`: each phase's warmup, then its measured requests, with the server's CPU.
async fn store(
    common: &Common,
    senders: Senders,
    messages: usize,
    warmup: usize,
    phases: &[Phase],
    names: usize,
) -> Result<(bool, Value)> {
    ensure!(
        common.target == Target::Tcphub,
        "the mailbox is tcphub's: --target tcphub"
    );
    let server = ServerProcess::new(common.server_pid)?;
    let total = warmup + messages;
    let arrivals = Arc::new(Arrivals {
        payload_bytes: common.payload_bytes,
        arrived: (0..total).map(|_| AtomicBool::new(false)).collect(),
        count: AtomicUsize::new(0),
        duplicates: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        strays: AtomicU64::new(0),
        all_arrived: Notify::new(),
    });
    let (fleet, _) = open_fleet(common, arrivals.clone()).await?;
    ensure!(
        fleet.healthy(common.clients),
        "registration failed: {}",
        fleet.json()
    );
    let mut conns = connect_senders(common.http_addr, senders.senders).await?;
    let mut results = json!({
        "senders": senders.senders,
        "messages": messages,
        "warmup": warmup,
    });
    let mut ok = true;
    for &phase in phases {
        let (request, check): (MakeRequest, CheckAnswer) = match phase {
            Phase::Live => {
                let (clients, bytes) = (common.clients, common.payload_bytes);
                let request: MakeRequest = Arc::new(move |seq, _| {
                    // Chosen by the sequence number alone: the same for every hub measured.
                    let dest = Destinations(0x9e37_79b9_7f4a_7c15 ^ (seq as u64 + 1)).next(clients);
                    let text = payload(format!("m{seq}:d{dest}:"), bytes);
                    (format!("/clients/{}/send", client_name(dest)), body(&text))
                });
                (request, pushed)
            }
            Phase::Stored => (
                store_request("away-".into(), names, senders.ttl, common.payload_bytes),
                stored,
            ),
        };
        let (warm, _) = drive(conns, 0, warmup, request.clone(), check).await?;
        let meter = CpuMeter::start(server)?;
        let (back, driven) = drive(warm, warmup, messages, request, check).await?;
        conns = back;
        let cpu = meter.spent()?;
        let mut phase_json = driven.json(Some(cpu.server));
        ok &= driven.errors == 0;
        if phase == Phase::Live {
            let deadline = tokio::time::Instant::now() + common.patience();
            while arrivals.count.load(Relaxed) < total {
                let arrived = arrivals.all_arrived.notified();
                if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                    break;
                }
            }
            let lost = total - arrivals.count.load(Relaxed);
            let (duplicates, misrouted, strays) = (
                arrivals.duplicates.load(Relaxed),
                arrivals.misrouted.load(Relaxed),
                arrivals.strays.load(Relaxed),
            );
            ok &= lost == 0 && duplicates == 0 && misrouted == 0 && strays == 0;
            phase_json["lost"] = json!(lost);
            phase_json["duplicates"] = json!(duplicates);
            phase_json["misrouted"] = json!(misrouted);
            phase_json["strays"] = json!(strays);
        }
        results[phase_name(phase)] = phase_json;
    }
    if let (Some(live), Some(stored)) = (
        results["live"]["per_sec"].as_f64(),
        results["stored"]["per_sec"].as_f64(),
    ) {
        results["stored_to_live"] = json!(stored / live);
    }
    ok &= fleet.healthy(common.clients);
    results["fleet"] = fleet.json();
    Ok((ok, results))
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Live => "live",
        Phase::Stored => "stored",
    }
}

/// A raw tcphub client, for the scenarios that time what follows `welcome`.
struct LineClient {
    lines: BufReader<TcpStream>,
    line: String,
}

impl LineClient {
    async fn connect(server: SocketAddr, source: std::net::IpAddr) -> Result<LineClient> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        Ok(LineClient {
            lines: BufReader::new(stream),
            line: String::new(),
        })
    }

    async fn sync(&mut self, name: &str) -> Result<()> {
        let frame = format!("{{\"type\":\"sync\",\"clientName\":\"{name}\"}}\n");
        self.lines.get_mut().write_all(frame.as_bytes()).await?;
        let welcome = self.next().await?;
        ensure!(
            welcome["type"] == "welcome",
            "{name}: expected welcome, got {welcome}"
        );
        Ok(())
    }

    async fn next(&mut self) -> Result<Value> {
        self.line.clear();
        if self.lines.read_line(&mut self.line).await? == 0 {
            bail!("the hub closed the connection");
        }
        Ok(serde_json::from_str(&self.line)?)
    }

    /// Reads `count` stored messages, checking that they come in storing order: the time
    /// when the first and the last arrived.
    async fn stored_messages(&mut self, count: usize) -> Result<(Instant, Instant)> {
        let mut first = None;
        let mut previous = 0u64;
        for _ in 0..count {
            let frame = self.next().await?;
            let number = frame["id"]
                .as_str()
                .and_then(|id| id.strip_prefix('m'))
                .and_then(|n| n.parse::<u64>().ok())
                .with_context(|| format!("not a stored message: {frame}"))?;
            ensure!(
                frame["type"] == "message" && frame["scope"] == "direct" && number > previous,
                "out of order or not a message: {frame}"
            );
            previous = number;
            first.get_or_insert_with(Instant::now);
        }
        let last = Instant::now();
        Ok((first.unwrap_or(last), last))
    }
}

/// `mailbox-return`: each round stores `messages` for a fresh name, then the name connects.
async fn returning(
    common: &Common,
    senders: Senders,
    messages: usize,
    rounds: usize,
) -> Result<(bool, Value)> {
    ensure!(
        common.target == Target::Tcphub,
        "the mailbox is tcphub's: --target tcphub"
    );
    let mut conns = connect_senders(common.http_addr, senders.senders).await?;
    let (mut welcome_to_last, mut sync_to_welcome) = (Vec::new(), Vec::new());
    let mut errors = 0;
    let mut first_error = None;
    for round in 0..rounds {
        // One fresh name per round: back-<round>-0.
        let prefix = format!("back-{round}-");
        let name = format!("{prefix}0");
        let request = store_request(prefix, 1, senders.ttl, common.payload_bytes);
        let (back, driven) = drive(conns, 0, messages, request, stored).await?;
        conns = back;
        if driven.errors > 0 {
            errors += driven.errors;
            first_error = first_error.or(driven.first_error);
            continue;
        }
        let mut client = LineClient::connect(common.addr, common.source(round)?).await?;
        let synced = Instant::now();
        let timed = tokio::time::timeout(common.patience(), async {
            client.sync(&name).await?;
            let welcomed = Instant::now();
            let (_, last) = client.stored_messages(messages).await?;
            anyhow::Ok((welcomed, last))
        })
        .await;
        match timed {
            Ok(Ok((welcomed, last))) => {
                sync_to_welcome.push((welcomed - synced).as_nanos() as u64);
                welcome_to_last.push((last - welcomed).as_nanos() as u64);
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(format!("round {round}: {e:#}"));
            }
            Err(_) => {
                errors += 1;
                first_error.get_or_insert(format!("round {round}: not all delivered in time"));
            }
        }
    }
    welcome_to_last.sort_unstable();
    sync_to_welcome.sort_unstable();
    let ok = errors == 0 && welcome_to_last.len() == rounds;
    Ok((
        ok,
        json!({
            "messages": messages,
            "rounds": rounds,
            "senders": senders.senders,
            "complete_rounds": welcome_to_last.len(),
            "welcome_to_last_p50_ms": quantile_ms(&welcome_to_last, 0.5),
            "welcome_to_last_max_ms": quantile_ms(&welcome_to_last, 1.0),
            "sync_to_welcome_p50_ms": quantile_ms(&sync_to_welcome, 0.5),
            "errors": errors,
            "first_error": first_error,
        }),
    ))
}

/// `mailbox-restart`: the hub run by the tool, filled, then restarted.
struct Restart {
    hub: HubProcess,
    senders: Senders,
    messages: usize,
    names: usize,
    payload_bytes: usize,
    patience: Duration,
}

/// A hub process the tool started, with the addresses it was given.
struct RunningHub {
    child: Child,
    tcp: SocketAddr,
    http: SocketAddr,
    started: Instant,
}

impl Restart {
    async fn run(&self, restarts: usize) -> Result<(bool, Value)> {
        let dir = &self.hub.data_dir;
        ensure!(
            !dir.exists() || std::fs::read_dir(dir)?.next().is_none(),
            "{} must not exist or be empty",
            dir.display()
        );
        ensure!(
            self.messages.div_ceil(self.names) <= 1000,
            "more than the default mailbox capacity (1000) per name"
        );
        let mut hub = self.start()?;
        self.wait_ready(&hub).await?;
        let conns = connect_senders(hub.http, self.senders.senders).await?;
        let request = store_request(
            "s-".into(),
            self.names,
            self.senders.ttl,
            self.payload_bytes,
        );
        let (conns, fill) = drive(conns, 0, self.messages, request, stored).await?;
        drop(conns);
        self.stop(&mut hub).await?;
        let mut ok = fill.errors == 0;
        let db_bytes = file_size(&dir.join("mailbox.db")) + file_size(&dir.join("mailbox.db-wal"));

        let per_name = self.messages / self.names;
        let mut runs = Vec::new();
        let (mut ready_ms, mut delivered_ms) = (Vec::new(), Vec::new());
        for restart in 0..restarts {
            let expected = (self.messages - (restart + 1) * per_name) as u64;
            let mut hub = self.start()?;
            let outcome = self.serve_once(&hub, restart, per_name, expected).await;
            self.stop(&mut hub).await?;
            let run = outcome?;
            ok &= run["messages_left"] == json!(expected);
            ready_ms.push(nanos(&run["ready_ms"]));
            delivered_ms.push(nanos(&run["delivered_all_ms"]));
            runs.push(run);
        }
        ready_ms.sort_unstable();
        delivered_ms.sort_unstable();
        Ok((
            ok,
            json!({
                "messages": self.messages,
                "names": self.names,
                "payload_bytes": self.payload_bytes,
                "senders": self.senders.senders,
                "fill": fill.json(None),
                "db_bytes": db_bytes,
                "restarts": runs,
                "ready_p50_ms": quantile_ms(&ready_ms, 0.5),
                "ready_max_ms": quantile_ms(&ready_ms, 1.0),
                "delivered_p50_ms": quantile_ms(&delivered_ms, 0.5),
                "delivered_max_ms": quantile_ms(&delivered_ms, 1.0),
            }),
        ))
    }

    /// From the start: `/readyz` 200, then a client of one stored name gets all its messages.
    async fn serve_once(
        &self,
        hub: &RunningHub,
        restart: usize,
        per_name: usize,
        expected_left: u64,
    ) -> Result<Value> {
        let ready = self.wait_ready(hub).await?;
        let source = std::net::IpAddr::from([127, 0, 0, 2]);
        let mut client = LineClient::connect(hub.tcp, source).await?;
        let (first, last) = tokio::time::timeout(self.patience, async {
            client.sync(&format!("s-{restart}")).await?;
            client.stored_messages(per_name).await
        })
        .await
        .context("the stored messages did not arrive in time")??;
        let rss_kib = ServerProcess::new(hub.child.id())?.rss_kib()?;
        let left = self.messages_left(hub, expected_left).await?;
        let ms = |at: Instant| (at - hub.started).as_secs_f64() * 1e3;
        Ok(json!({
            "ready_ms": ms(ready),
            "delivered_first_ms": ms(first),
            "delivered_all_ms": ms(last),
            "messages_left": left,
            "rss_kib": rss_kib,
        }))
    }

    /// The `tcphub_mailbox_messages` gauge, read until it shows `expected` (the hub sets it
    /// just after a delivery, which the client may see first) or for a second at most.
    async fn messages_left(&self, hub: &RunningHub, expected: u64) -> Result<u64> {
        let mut http = HttpConn::connect(hub.http).await?;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let (status, metrics) = http.get("/metrics").await?;
            ensure!(status == 200, "GET /metrics: {status}");
            let left = String::from_utf8_lossy(&metrics)
                .lines()
                .find_map(|line| line.strip_prefix("tcphub_mailbox_messages "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .context("no tcphub_mailbox_messages in /metrics")?;
            if left == expected || Instant::now() > deadline {
                return Ok(left);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn start(&self) -> Result<RunningHub> {
        let (tcp, http) = (free_port()?, free_port()?);
        let mut command = match &self.hub.hub_cpus {
            Some(cpus) => {
                let mut taskset = Command::new("taskset");
                taskset.arg("-c").arg(cpus).arg(&self.hub.hub_bin);
                taskset
            }
            None => Command::new(&self.hub.hub_bin),
        };
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TCPHUB_") {
                command.env_remove(key);
            }
        }
        command
            .arg("--tcp-addr")
            .arg(tcp.to_string())
            .arg("--http-addr")
            .arg(http.to_string())
            .arg("--data-dir")
            .arg(&self.hub.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("start {}", self.hub.hub_bin.display()))?;
        Ok(RunningHub {
            child,
            tcp,
            http,
            started,
        })
    }

    /// Polls `/readyz` (the only signal a separate process gives) until it answers 200.
    async fn wait_ready(&self, hub: &RunningHub) -> Result<Instant> {
        let deadline = hub.started + self.patience;
        loop {
            if let Ok(mut http) = HttpConn::connect(hub.http).await {
                if let Ok((200, _)) = http.get("/readyz").await {
                    return Ok(Instant::now());
                }
            }
            ensure!(
                Instant::now() < deadline,
                "/readyz not 200 within {:?}",
                self.patience
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// SIGTERM, then waits for the exit (the drain closes the database).
    async fn stop(&self, hub: &mut RunningHub) -> Result<()> {
        // SAFETY: kill only sends a signal to the process this tool started.
        unsafe {
            libc::kill(hub.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + self.patience;
        loop {
            if let Some(status) = hub.child.try_wait()? {
                ensure!(status.success(), "the hub exited with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                hub.child.kill()?;
                bail!("the hub did not exit within {:?} of SIGTERM", self.patience);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Milliseconds (a JSON number) as nanoseconds, for the quantile helper.
fn nanos(ms: &Value) -> u64 {
    (ms.as_f64().unwrap_or(f64::INFINITY) * 1e6) as u64
}
