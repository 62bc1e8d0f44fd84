//! The scenarios (idle, fanout, direct, flood): open a fleet of registered subscribers, trigger
//! pushes, check that every message reached the right client exactly once, and report one
//! JSON object. Losses, duplicates and misroutes are counted and make the run fail.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};
use tokio::time::timeout;

use crate::http::HttpConn;
use crate::server::{CpuMeter, ServerProcess};
use crate::wire::{client_name, ClientConn, Ended, Publisher, Scope, Target};

/// Options every scenario shares.
#[derive(Args, Clone)]
pub struct Common {
    /// The server under test.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Where subscribers (and, for the brokers, publishers) connect.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub addr: SocketAddr,
    /// The HTTP API that triggers pushes (tcphub and seed only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// The server's process id, for /proc/<pid>/status and /proc/<pid>/stat.
    #[arg(long)]
    pub server_pid: u32,
    /// How many subscribers to open.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Size of each pushed message's payload.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// At most this many subscribers are between connect and confirmed registration at once.
    #[arg(long, default_value_t = 64)]
    pub connects_in_flight: usize,
    /// Subscribers per loopback source address: 127.0.0.<first-source>, then the next, ...
    #[arg(long, default_value_t = 1000)]
    pub clients_per_source: usize,
    /// Last byte of the first source address (127.0.0.x).
    #[arg(long, default_value_t = 2)]
    pub first_source: u8,
    /// How long to wait for any one registration, round or message before counting it lost.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// Groups each subscriber joins in its `sync` (tcphub only; see `groups::memberships`).
    #[arg(long, default_value_t = 0)]
    pub groups_per_client: usize,
    /// Members of each group of the second kind (`b-<n>`), the small group of the group scenario.
    #[arg(long, default_value_t = 100)]
    pub group_size: usize,
    /// Cluster mode: subscribers connect to these nodes' TCP addresses (in equal blocks, in
    /// order) instead of to --addr; repeat for each node.
    #[arg(long = "node-addr")]
    pub node_addrs: Vec<SocketAddr>,
    /// Subscriber i registers as `c-<first-client + i>`, so that several load-tool
    /// processes can hold disjoint names in one cluster (idle, fanout and direct).
    #[arg(long, default_value_t = 0)]
    pub first_client: usize,
}

impl Common {
    pub(crate) fn source(&self, client: usize) -> Result<IpAddr> {
        let last = usize::from(self.first_source) + client / self.clients_per_source.max(1);
        let last = u8::try_from(last)
            .ok()
            .filter(|&b| b < 255)
            .context("out of loopback source addresses")?;
        Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
    }

    /// Where subscriber `client` connects: --addr, or its block's --node-addr.
    pub(crate) fn addr_of(&self, client: usize) -> SocketAddr {
        match self.node_addrs.len() {
            0 => self.addr,
            nodes => self.node_addrs[client * nodes / self.clients.max(1)],
        }
    }

    pub(crate) fn patience(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// Receives what the subscribers are pushed.
pub(crate) trait Sink: Send + Sync + 'static {
    fn deliver(&self, client: usize, scope: Scope, payload: &[u8]);
}

/// The subscribers' registration outcome and later trouble, shared with their tasks.
#[derive(Default)]
pub(crate) struct FleetState {
    registered: AtomicUsize,
    failed: AtomicUsize,
    settled: AtomicUsize,
    all_settled: Notify,
    /// Connections the server closed or refused after registering them.
    dropped: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl FleetState {
    fn note_error(&self, error: String) {
        self.first_error.lock().unwrap().get_or_insert(error);
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "registered": self.registered.load(Relaxed),
            "registration_failures": self.failed.load(Relaxed),
            "dropped_by_server": self.dropped.load(Relaxed),
            "first_error": *self.first_error.lock().unwrap(),
        })
    }

    pub(crate) fn healthy(&self, clients: usize) -> bool {
        self.registered.load(Relaxed) == clients && self.dropped.load(Relaxed) == 0
    }
}

/// Opens `common.clients` subscribers, at most `connects_in_flight` registering at once, and
/// returns when each has registered or failed, with the time that took.
pub(crate) async fn open_fleet(
    common: &Common,
    sink: Arc<dyn Sink>,
) -> Result<(Arc<FleetState>, Duration)> {
    let fleet = Arc::new(FleetState::default());
    let gate = Arc::new(Semaphore::new(common.connects_in_flight));
    let started = Instant::now();
    for client in 0..common.clients {
        let permit = gate.clone().acquire_owned().await?;
        let (fleet, sink, source) = (fleet.clone(), sink.clone(), common.source(client)?);
        let groups = crate::groups::memberships(client, common);
        let (target, addr, patience, total) = (
            common.target,
            common.addr_of(client),
            common.patience(),
            common.clients,
        );
        let name = client_name(common.first_client + client);
        tokio::spawn(async move {
            let registered = timeout(
                patience,
                ClientConn::register(target, addr, source, &name, &groups),
            )
            .await;
            drop(permit);
            let conn = match registered {
                Ok(Ok(conn)) => {
                    fleet.registered.fetch_add(1, Relaxed);
                    Some(conn)
                }
                Ok(Err(e)) => {
                    fleet.failed.fetch_add(1, Relaxed);
                    fleet.note_error(format!("{e:#}"));
                    None
                }
                Err(_) => {
                    fleet.failed.fetch_add(1, Relaxed);
                    fleet.note_error(format!(
                        "{name}: no registration confirmed within {patience:?}"
                    ));
                    None
                }
            };
            if fleet.settled.fetch_add(1, Relaxed) + 1 == total {
                fleet.all_settled.notify_one();
            }
            let Some(conn) = conn else { return };
            let ended = conn
                .read_deliveries(|scope, payload| sink.deliver(client, scope, payload))
                .await;
            fleet.dropped.fetch_add(1, Relaxed);
            fleet.note_error(match ended {
                Ok(Ended::Closed) => format!("{name}: server closed the connection"),
                Ok(Ended::Refused(why)) => format!("{name}: {why}"),
                Err(e) => format!("{name}: {e:#}"),
            });
        });
    }
    while fleet.settled.load(Relaxed) < common.clients {
        fleet.all_settled.notified().await;
    }
    Ok((fleet, started.elapsed()))
}

/// A payload of `bytes` bytes (at least the tag) that starts with the tag a sink parses back.
pub(crate) fn payload(tag: String, bytes: usize) -> String {
    let mut text = tag;
    while text.len() < bytes {
        text.push('.');
    }
    text
}

/// Parses the `:`-separated numbers a payload starts with: `r12:` or `m7:d3:w1:`.
pub(crate) fn tag_numbers<const N: usize>(payload: &[u8], letters: [u8; N]) -> Option<[usize; N]> {
    let mut numbers = [0; N];
    let mut fields = payload.split(|&b| b == b':');
    for (number, letter) in numbers.iter_mut().zip(letters) {
        let field = fields.next()?.strip_prefix(&[letter])?;
        *number = std::str::from_utf8(field).ok()?.parse().ok()?;
    }
    Some(numbers)
}

/// Nanoseconds since `epoch`, plus one so that zero can mean "not yet".
pub(crate) fn stamp(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64 + 1
}

/// Milliseconds at quantile `q` of sorted nanosecond samples.
pub(crate) fn quantile_ms(sorted: &[u64], q: f64) -> Option<f64> {
    let at = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(at).map(|&ns| ns as f64 / 1e6)
}

/// A sink for the idle scenario: nothing should arrive.
#[derive(Default)]
struct Silence {
    unexpected: AtomicU64,
}

impl Sink for Silence {
    fn deliver(&self, _: usize, _: Scope, _: &[u8]) {
        self.unexpected.fetch_add(1, Relaxed);
    }
}

/// How many clients tcphub or the seed server lists (`GET /clients` total).
async fn listed_clients(common: &Common) -> Result<Option<u64>> {
    if !common.target.uses_http() {
        return Ok(None);
    }
    let mut http = HttpConn::connect(common.http_addr).await?;
    let (status, body) = http.get("/clients?limit=1").await?;
    ensure!(status == 200, "GET /clients: {status}");
    let body: Value = serde_json::from_slice(&body)?;
    Ok(body["total"].as_u64())
}

/// `idle`: registers N clients on a fresh server and reports the server's resident memory per
/// connection and registrations per second.
pub async fn idle(common: &Common, settle: Duration) -> Result<(bool, Value)> {
    let server = ServerProcess::new(common.server_pid)?;
    let rss_before = server.rss_kib()?;
    let silence = Arc::new(Silence::default());
    let meter = CpuMeter::start(server)?;
    let (fleet, took) = open_fleet(common, silence.clone()).await?;
    let cpu = meter.spent()?;
    let rss_registered = server.rss_kib()?;
    // Let allocators and garbage collectors settle, so the figure is the steady idle cost.
    tokio::time::sleep(settle).await;
    let rss_settled = server.rss_kib()?;
    let listed = listed_clients(common).await?;
    let registered = fleet.registered.load(Relaxed);
    let unexpected = silence.unexpected.load(Relaxed);
    let ok = fleet.healthy(common.clients)
        && unexpected == 0
        && listed.is_none_or(|n| n == common.clients as u64);
    let per_conn =
        |kib: u64| (kib.saturating_sub(rss_before) * 1024) as f64 / registered.max(1) as f64;
    Ok((
        ok,
        json!({
            "register_secs": took.as_secs_f64(),
            "registrations_per_sec": registered as f64 / took.as_secs_f64(),
            "server_cpu_us_per_registration": cpu.server * 1e6 / registered.max(1) as f64,
            "load_tool_cpu_us_per_registration": cpu.load_tool * 1e6 / registered.max(1) as f64,
            "rss_before_kib": rss_before,
            "rss_registered_kib": rss_registered,
            "rss_settled_kib": rss_settled,
            "rss_bytes_per_client": per_conn(rss_settled),
            "rss_bytes_per_client_at_registration": per_conn(rss_registered),
            "server_lists_clients": listed,
            "unexpected_deliveries": unexpected,
            "fleet": fleet.json(),
        }),
    ))
}

/// Arrival times of every broadcast round at every client.
struct Rounds {
    clients: usize,
    rounds: usize,
    payload_bytes: usize,
    epoch: Instant,
    /// `round * clients + client` → arrival stamp, 0 until it arrives.
    arrivals: Vec<AtomicU64>,
    received: Vec<AtomicUsize>,
    round_complete: Notify,
    duplicates: AtomicU64,
    /// Deliveries that belong to no round, had the wrong scope or the wrong size.
    strays: AtomicU64,
}

impl Sink for Rounds {
    fn deliver(&self, client: usize, scope: Scope, payload: &[u8]) {
        let now = stamp(self.epoch);
        let round = match tag_numbers(payload, [b'r']) {
            Some([round])
                if round < self.rounds
                    && scope == Scope::Broadcast
                    && payload.len() == self.payload_bytes =>
            {
                round
            }
            _ => {
                self.strays.fetch_add(1, Relaxed);
                return;
            }
        };
        match self.arrivals[round * self.clients + client]
            .compare_exchange(0, now, Relaxed, Relaxed)
        {
            Ok(_) if self.received[round].fetch_add(1, Relaxed) + 1 == self.clients => {
                self.round_complete.notify_one()
            }
            Ok(_) => {}
            Err(_) => {
                self.duplicates.fetch_add(1, Relaxed);
            }
        }
    }
}

/// `fanout`: broadcasts one message per round to N clients and measures the time until the
/// last client has it, plus the server's CPU per delivered message over the measured rounds.
pub async fn fanout(common: &Common, rounds: usize, warmup: usize) -> Result<(bool, Value)> {
    let server = ServerProcess::new(common.server_pid)?;
    let total = warmup + rounds;
    let state = Arc::new(Rounds {
        clients: common.clients,
        rounds: total,
        payload_bytes: common.payload_bytes,
        epoch: Instant::now(),
        arrivals: (0..total * common.clients)
            .map(|_| AtomicU64::new(0))
            .collect(),
        received: (0..total).map(|_| AtomicUsize::new(0)).collect(),
        round_complete: Notify::new(),
        duplicates: AtomicU64::new(0),
        strays: AtomicU64::new(0),
    });
    let (fleet, _) = open_fleet(common, state.clone()).await?;
    ensure!(
        fleet.healthy(common.clients),
        "registration failed: {}",
        fleet.json()
    );
    let mut publisher = Publisher::connect(common.target, common.addr, common.http_addr, 0).await?;
    let mut started = vec![0u64; total];
    let mut trigger_errors = Vec::new();
    let mut meter = CpuMeter::start(server)?;
    for (round, started) in started.iter_mut().enumerate() {
        if round == warmup {
            meter = CpuMeter::start(server)?;
        }
        let text = payload(format!("r{round}:"), common.payload_bytes);
        *started = stamp(state.epoch);
        if let Err(e) = publisher.broadcast(&text).await {
            trigger_errors.push(format!("round {round}: {e:#}"));
        }
        let deadline = tokio::time::Instant::now() + common.patience();
        while state.received[round].load(Relaxed) < common.clients {
            if tokio::time::timeout_at(deadline, state.round_complete.notified())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    let cpu = meter.spent()?;

    let mut last_arrivals = Vec::with_capacity(rounds);
    let mut each_arrival = Vec::with_capacity(rounds * common.clients);
    let mut delivered = 0u64;
    let measured = state
        .arrivals
        .chunks(common.clients)
        .zip(&started)
        .skip(warmup);
    for (row, &started) in measured {
        let arrived: Vec<u64> = row
            .iter()
            .map(|a| a.load(Relaxed))
            .filter(|&t| t != 0)
            .collect();
        delivered += arrived.len() as u64;
        each_arrival.extend(arrived.iter().map(|t| t - started));
        if arrived.len() == common.clients {
            last_arrivals.push(arrived.iter().max().copied().unwrap_or(0) - started);
        }
    }
    let warmup_delivered: usize = state.received[..warmup]
        .iter()
        .map(|r| r.load(Relaxed))
        .sum();
    let lost = (total * common.clients) as u64 - delivered - warmup_delivered as u64;
    last_arrivals.sort_unstable();
    each_arrival.sort_unstable();
    let (duplicates, strays) = (state.duplicates.load(Relaxed), state.strays.load(Relaxed));
    let ok = fleet.healthy(common.clients)
        && lost == 0
        && duplicates == 0
        && strays == 0
        && trigger_errors.is_empty();
    Ok((
        ok,
        json!({
            "rounds": rounds,
            "warmup_rounds": warmup,
            "complete_rounds": last_arrivals.len(),
            "last_client_p50_ms": quantile_ms(&last_arrivals, 0.5),
            "last_client_p99_ms": quantile_ms(&last_arrivals, 0.99),
            "last_client_max_ms": quantile_ms(&last_arrivals, 1.0),
            "per_message_p50_ms": quantile_ms(&each_arrival, 0.5),
            "per_message_p99_ms": quantile_ms(&each_arrival, 0.99),
            "delivered": delivered,
            "lost": lost,
            "duplicates": duplicates,
            "strays": strays,
            "trigger_errors": trigger_errors.len(),
            "first_trigger_error": trigger_errors.first(),
            "server_cpu_secs": cpu.server,
            "server_cpu_us_per_message": cpu.server * 1e6 / delivered.max(1) as f64,
            "load_tool_cpu_us_per_message": cpu.load_tool * 1e6 / delivered.max(1) as f64,
            "fleet": fleet.json(),
        }),
    ))
}

/// Send and arrival times of every directed message.
struct Sends {
    payload_bytes: usize,
    epoch: Instant,
    sent: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
    /// One per sender; a sender waits for its message's arrival before sending the next.
    arrival_signals: Vec<Notify>,
    duplicates: AtomicU64,
    misrouted: AtomicU64,
    strays: AtomicU64,
}

impl Sink for Sends {
    fn deliver(&self, client: usize, scope: Scope, payload: &[u8]) {
        let now = stamp(self.epoch);
        let [seq, dest, sender] = match tag_numbers(payload, [b'm', b'd', b'w']) {
            Some(tag)
                if tag[0] < self.arrived.len()
                    && tag[2] < self.arrival_signals.len()
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
            return;
        }
        match self.arrived[seq].compare_exchange(0, now, Relaxed, Relaxed) {
            Ok(_) => self.arrival_signals[sender].notify_one(),
            Err(_) => {
                self.duplicates.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A small deterministic generator (xorshift64*), so every target gets the same destinations.
pub(crate) struct Destinations(pub(crate) u64);

impl Destinations {
    pub(crate) fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound as u64) as usize
    }
}

/// `direct`: `inflight` senders each push a message to a random client and wait until it has
/// arrived (and, over HTTP, until the 202 is back) before sending the next.
pub async fn direct(common: &Common, inflight: usize, messages: usize) -> Result<(bool, Value)> {
    let server = ServerProcess::new(common.server_pid)?;
    let state = Arc::new(Sends {
        payload_bytes: common.payload_bytes,
        epoch: Instant::now(),
        sent: (0..messages).map(|_| AtomicU64::new(0)).collect(),
        arrived: (0..messages).map(|_| AtomicU64::new(0)).collect(),
        arrival_signals: (0..inflight).map(|_| Notify::new()).collect(),
        duplicates: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        strays: AtomicU64::new(0),
    });
    let (fleet, _) = open_fleet(common, state.clone()).await?;
    ensure!(
        fleet.healthy(common.clients),
        "registration failed: {}",
        fleet.json()
    );
    let mut publishers = Vec::with_capacity(inflight);
    for sender in 0..inflight {
        publishers
            .push(Publisher::connect(common.target, common.addr, common.http_addr, sender).await?);
    }
    let next_seq = Arc::new(AtomicUsize::new(0));
    let trigger_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let meter = CpuMeter::start(server)?;
    let started = Instant::now();
    let mut senders = Vec::with_capacity(inflight);
    for (sender, mut publisher) in publishers.into_iter().enumerate() {
        let (state, next_seq, trigger_errors) =
            (state.clone(), next_seq.clone(), trigger_errors.clone());
        let (clients, patience, first_client) =
            (common.clients, common.patience(), common.first_client);
        senders.push(tokio::spawn(async move {
            let mut destinations = Destinations(0x9e37_79b9_7f4a_7c15 ^ (sender as u64 + 1));
            loop {
                let seq = next_seq.fetch_add(1, Relaxed);
                if seq >= state.sent.len() {
                    break;
                }
                let dest = destinations.next(clients);
                let text = payload(format!("m{seq}:d{dest}:w{sender}:"), state.payload_bytes);
                state.sent[seq].store(stamp(state.epoch), Relaxed);
                if let Err(e) = publisher
                    .direct(&client_name(first_client + dest), &text)
                    .await
                {
                    trigger_errors
                        .lock()
                        .unwrap()
                        .push(format!("message {seq}: {e:#}"));
                    continue;
                }
                let deadline = tokio::time::Instant::now() + patience;
                while state.arrived[seq].load(Relaxed) == 0 {
                    let signal = state.arrival_signals[sender].notified();
                    if tokio::time::timeout_at(deadline, signal).await.is_err() {
                        break;
                    }
                }
            }
        }));
    }
    for sender in senders {
        sender.await?;
    }
    let took = started.elapsed();
    let cpu = meter.spent()?;

    let mut latencies: Vec<u64> = (0..messages)
        .filter_map(|seq| {
            let arrived = state.arrived[seq].load(Relaxed);
            (arrived != 0).then(|| arrived - state.sent[seq].load(Relaxed))
        })
        .collect();
    latencies.sort_unstable();
    let delivered = latencies.len() as u64;
    let lost = messages as u64 - delivered;
    let trigger_errors = trigger_errors.lock().unwrap();
    let (duplicates, misrouted, strays) = (
        state.duplicates.load(Relaxed),
        state.misrouted.load(Relaxed),
        state.strays.load(Relaxed),
    );
    let ok = fleet.healthy(common.clients)
        && lost == 0
        && duplicates == 0
        && misrouted == 0
        && strays == 0
        && trigger_errors.is_empty();
    Ok((
        ok,
        json!({
            "inflight": inflight,
            "messages": messages,
            "secs": took.as_secs_f64(),
            "delivered_per_sec": delivered as f64 / took.as_secs_f64(),
            "p50_ms": quantile_ms(&latencies, 0.5),
            "p99_ms": quantile_ms(&latencies, 0.99),
            "delivered": delivered,
            "lost": lost,
            "duplicates": duplicates,
            "misrouted": misrouted,
            "strays": strays,
            "trigger_errors": trigger_errors.len(),
            "first_trigger_error": trigger_errors.first(),
            "server_cpu_secs": cpu.server,
            "server_cpu_us_per_message": cpu.server * 1e6 / delivered.max(1) as f64,
            "load_tool_cpu_us_per_message": cpu.load_tool * 1e6 / delivered.max(1) as f64,
            "fleet": fleet.json(),
        }),
    ))
}

/// One `info` frame a flooder writes, over and over.
const FLOOD_FRAME: &[u8] = b"{\"type\":\"info\",\"message\":\"flood\"}\n";

/// Clients that write `info` frames as fast as the server reads them, each on an OS thread of
/// its own with blocking writes, so that the flood does not share the timed runtime.
struct Flood {
    stop: Arc<AtomicBool>,
    streams: Vec<std::net::TcpStream>,
    threads: Vec<std::thread::JoinHandle<()>>,
    written: Arc<AtomicU64>,
}

impl Flood {
    fn start(addr: SocketAddr, flooders: usize) -> Result<Flood> {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let burst = FLOOD_FRAME.repeat(64 * 1024 / FLOOD_FRAME.len());
        let (mut streams, mut threads) = (Vec::new(), Vec::new());
        for _ in 0..flooders {
            let mut stream = std::net::TcpStream::connect(addr).context("flooder connect")?;
            streams.push(stream.try_clone()?);
            let (stop, written, burst) = (stop.clone(), written.clone(), burst.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Relaxed) && stream.write_all(&burst).is_ok() {
                    written.fetch_add(burst.len() as u64, Relaxed);
                }
            }));
        }
        Ok(Flood {
            stop,
            streams,
            threads,
            written,
        })
    }

    /// Stops the flooders (closing their sockets unblocks writes the server is not reading)
    /// and returns how many frames they wrote.
    fn stop(self) -> u64 {
        self.stop.store(true, Relaxed);
        for stream in &self.streams {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        self.written.load(Relaxed) / FLOOD_FRAME.len() as u64
    }
}

/// tcphub's count of frames received from clients, from `/metrics` (None for other servers).
async fn frames_in(common: &Common) -> Result<Option<u64>> {
    if common.target != Target::Tcphub {
        return Ok(None);
    }
    let mut http = HttpConn::connect(common.http_addr).await?;
    let (status, body) = http.get("/metrics").await?;
    ensure!(status == 200, "GET /metrics: {status}");
    let text = String::from_utf8_lossy(&body);
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix("tcphub_frames_in_total "))
        .and_then(|n| n.parse().ok()))
}

/// `flood`: `flooders` connections write `info` frames as fast as they can while the fleet
/// registers and one sender pushes `messages` directed messages, one at a time: the latency
/// of a well-behaved client's traffic under an inbound flood.
pub async fn flood(common: &Common, flooders: usize, messages: usize) -> Result<(bool, Value)> {
    ensure!(
        common.target.uses_http(),
        "the flood scenario writes tcphub frames: --target tcphub or seed"
    );
    let frames_before = frames_in(common).await?;
    let flood = Flood::start(common.addr, flooders)?;
    let started = Instant::now();
    let outcome = direct(common, 1, messages).await;
    let took = started.elapsed();
    let frames_after = frames_in(common).await;
    let written = flood.stop();
    let (ok, mut results) = outcome?;
    let read = match (frames_before, frames_after?) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    results["flooders"] = json!(flooders);
    results["flood_secs"] = json!(took.as_secs_f64());
    results["flood_frames_written_per_sec"] = json!(written as f64 / took.as_secs_f64());
    results["server_frames_read_per_sec"] =
        json!(read.map(|read| read as f64 / took.as_secs_f64()));
    Ok((ok, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_padded_payloads() {
        let text = payload("m12:d3:w7:".into(), 100);
        assert_eq!(text.len(), 100);
        assert_eq!(
            tag_numbers(text.as_bytes(), [b'm', b'd', b'w']),
            Some([12, 3, 7])
        );
        assert_eq!(tag_numbers(b"r5:....", [b'r']), Some([5]));
        assert_eq!(tag_numbers(b"x5:....", [b'r']), None);
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let samples: Vec<u64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        assert_eq!(quantile_ms(&samples, 0.5), Some(50.0));
        assert_eq!(quantile_ms(&samples, 0.99), Some(99.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
    }
}
