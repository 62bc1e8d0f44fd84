//! Faults and load: a slow consumer among a thousand clients, a storm of ten
//! thousand connections, races for the same names, admission at `--max-clients`,
//! idle timeouts at scale, and TCP keepalive on accepted sockets.
//!
//! The tests take turns (one lock for the binary): they count the process's open
//! file descriptors and share two cores, so running them at once would blur both.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{PATIENCE, TestClient, TestHub};
use futures_util::future::join_all;
use serde_json::{Value, json};
use socket2::SockRef;
use tcphub::Config;
use tcphub::config::SlowConsumer;
use tcphub::events::EventKind;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;
use tokio::time::timeout;

/// One heavy test at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Source addresses for client sockets: 127.0.0.2 and up, so that no single
/// address runs out of ephemeral ports or crowds one conntrack bucket.
const SOURCE_ADDRESSES: u8 = 50;

fn source_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (index % usize::from(SOURCE_ADDRESSES)) as u8)
}

/// Connects to the hub from `source` (bind before connect).
async fn connect_from(source: Ipv4Addr, hub: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    timeout(PATIENCE, socket.connect(hub))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|err| panic!("connect from {source}: {err}"))
}

/// Connects `count` clients named `{prefix}{i}`, a hundred at a time.
async fn synced_clients(hub: &TestHub, prefix: &str, count: usize) -> Vec<TestClient> {
    let mut clients = Vec::with_capacity(count);
    for batch in (0..count).collect::<Vec<_>>().chunks(100) {
        let connecting = batch.iter().map(|&i| async move {
            let stream = connect_from(source_address(i), hub.tcp_addr).await;
            let mut client = TestClient::from_stream(stream);
            client.sync(&format!("{prefix}{i}")).await;
            client
        });
        clients.extend(join_all(connecting).await);
    }
    clients
}

/// Waits, on events, until the registry holds no client.
async fn until_registry_is_empty(hub: &TestHub) {
    // Subscribed before looking, so no removal can slip between the two.
    let mut events = hub.events();
    while !hub.registry.is_empty() {
        events
            .until(|event| matches!(event.kind, EventKind::Disconnected { .. }))
            .await;
    }
}

/// Distinct sockets the process holds. (Descriptors alone would not do: each
/// test's runtime duplicates one for its signal driver, even while it waits for
/// its turn.)
fn open_sockets() -> usize {
    let sockets: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("socket:"))
        .collect();
    sockets.len()
}

/// Sockets the hub accepted on `addr` that are still open (held by a descriptor:
/// the kernel shows sockets no descriptor holds any more with inode 0).
fn open_accepted_sockets(addr: SocketAddr) -> usize {
    const LISTEN: &str = "0A";
    let SocketAddr::V4(addr) = addr else {
        panic!("the test hub listens on IPv4");
    };
    // /proc/net/tcp shows the address as the 32-bit value in host (little-endian) order.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields[1] == local && fields[3] != LISTEN && fields[9] != "0")
        .count()
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Fills `name`'s socket buffers and then its queue with large direct messages,
/// until the hub answers 503 `client_backlogged`; returns how many were accepted.
async fn fill_until_backlogged(hub: &TestHub, name: &str) -> usize {
    let large = "s".repeat(60_000);
    for accepted in 0..10_000 {
        let path = format!("/clients/{name}/send");
        let (status, body) = hub.post_raw(&path, "text/plain", large.clone()).await;
        if status == 503 {
            assert_eq!(body["code"], "client_backlogged");
            return accepted;
        }
        assert_eq!(status, 202, "{body}");
    }
    panic!("{name} never backed up");
}

/// One client that never reads and a thousand that do: every broadcast reaches
/// every reader, in order, while the slow one's queue stays at its capacity.
async fn slow_consumer_among_a_thousand(policy: SlowConsumer) {
    const CAPACITY: usize = 64;
    const OTHERS: usize = 1000;
    const ROUNDS: usize = 50;
    let _turn = SERIAL.lock().await;
    let hub = TestHub::start(Config {
        queue_capacity: CAPACITY,
        slow_consumer: policy,
        ..Config::default()
    })
    .await;
    // The slow client offers a tiny receive window, and never reads.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = TestClient::from_stream(socket.connect(hub.tcp_addr).await.unwrap());
    slow.sync("slow").await;
    let accepted = fill_until_backlogged(&hub, "slow").await;
    match policy {
        SlowConsumer::Drop => {
            let (_, view) = hub.get("/clients/slow").await;
            assert_eq!(
                (view["queueLen"].as_u64(), view["dropped"].as_u64()),
                (Some(CAPACITY as u64), Some(1))
            );
        }
        SlowConsumer::Disconnect => assert_eq!(hub.get("/clients/slow").await.0, 404),
    }

    let others = synced_clients(&hub, "reader-", OTHERS).await;
    let rss_before = resident_kib();
    let readers: Vec<_> = others
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(ROUNDS);
                for _ in 0..ROUNDS {
                    let frame = client.recv().await;
                    assert_eq!(frame["type"], "message", "{frame}");
                    ids.push(frame["id"].as_str().unwrap().to_owned());
                }
                ids
            })
        })
        .collect();
    let mut sent_ids = Vec::with_capacity(ROUNDS);
    let slow_recipient = usize::from(policy == SlowConsumer::Drop);
    for round in 0..ROUNDS {
        let (status, report) = hub
            .post("/broadcast", json!({"message": {"round": round}}))
            .await;
        assert_eq!(status, 202);
        assert_eq!(report["recipients"], OTHERS + slow_recipient, "{report}");
        assert_eq!(report["queued"], OTHERS, "{report}");
        assert_eq!(report["dropped"], slow_recipient, "{report}");
        if let Some(client) = hub.registry.get("slow") {
            assert!(
                client.queue_len() <= CAPACITY,
                "the queue outgrew its capacity"
            );
        }
        sent_ids.push(report["id"].as_str().unwrap().to_owned());
    }
    for reader in readers {
        let ids = timeout(PATIENCE, reader).await.unwrap().unwrap();
        assert_eq!(ids, sent_ids, "a reader missed or reordered a broadcast");
    }
    let rss_after = resident_kib();
    eprintln!(
        "figure: slow consumer ({policy:?}): {accepted} large sends taken before the queue of \
         {CAPACITY} frames was full; {OTHERS} readers got all {ROUNDS} broadcasts; \
         process RSS {rss_before} KiB -> {rss_after} KiB"
    );
    match policy {
        SlowConsumer::Drop => {
            let (_, view) = hub.get("/clients/slow").await;
            assert_eq!(view["queueLen"], CAPACITY);
            assert_eq!(
                view["dropped"],
                1 + ROUNDS,
                "every broadcast counted as dropped"
            );
            let text = hub.metrics().await;
            assert!(
                text.lines()
                    .any(|line| line.starts_with("tcphub_messages_dropped_total ")
                        && line.ends_with(&format!(" {}", 1 + ROUNDS))),
                "dropped messages are not in the metrics"
            );
        }
        SlowConsumer::Disconnect => {
            // What was accepted before the overflow still arrives, then the bye.
            for _ in 0..accepted {
                assert_eq!(slow.recv().await["type"], "message");
            }
            slow.expect_bye("slow_consumer").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_loses_only_its_own_messages_among_a_thousand_readers() {
    slow_consumer_among_a_thousand(SlowConsumer::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_and_a_thousand_readers_get_everything() {
    slow_consumer_among_a_thousand(SlowConsumer::Disconnect).await;
}

/// Connect, `sync`, wait for the `welcome`, close, and wait for the hub to close too.
async fn connection_cycle(hub: SocketAddr, source: Ipv4Addr, name: &str) {
    let mut stream = connect_from(source, hub).await;
    let sync = format!("{{\"type\":\"sync\",\"clientName\":\"{name}\"}}\n");
    stream.write_all(sync.as_bytes()).await.unwrap();
    let mut welcome = Vec::new();
    let mut byte = [0u8; 256];
    while !welcome.ends_with(b"\n") {
        let n = timeout(PATIENCE, stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the welcome");
        welcome.extend_from_slice(&byte[..n]);
    }
    let welcome: Value = serde_json::from_slice(&welcome).unwrap();
    assert_eq!(welcome["clientName"], name);
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_ten_thousand_connections_leaves_no_client_descriptor_or_task() {
    const WORKERS: usize = 100;
    const CYCLES: usize = 100;
    let _turn = SERIAL.lock().await;
    let hub = TestHub::start(Config::default()).await;
    // Warm up everything created once (the HTTP connection, runtime threads).
    connection_cycle(hub.tcp_addr, source_address(0), "warm-up").await;
    until_registry_is_empty(&hub).await;
    assert_eq!(hub.get("/clients").await.1["total"], 0);
    let runtime = tokio::runtime::Handle::current();
    let (sockets_before, tasks_before) = (open_sockets(), runtime.metrics().num_alive_tasks());

    let started = Instant::now();
    let tcp_addr = hub.tcp_addr;
    let workers = (0..WORKERS).map(|worker| {
        tokio::spawn(async move {
            for cycle in 0..CYCLES {
                let name = format!("storm-{worker}-{cycle}");
                connection_cycle(tcp_addr, source_address(worker), &name).await;
            }
        })
    });
    for worker in join_all(workers).await {
        worker.unwrap();
    }
    let elapsed = started.elapsed();
    until_registry_is_empty(&hub).await;

    // A connection task ends, and its socket closes, just after its removal. The
    // count may also fall as an earlier test's runtime finishes closing its own.
    let settled = async {
        while open_accepted_sockets(tcp_addr) > 0
            || open_sockets() > sockets_before
            || runtime.metrics().num_alive_tasks() > tasks_before
        {
            tokio::task::yield_now().await;
        }
    };
    if timeout(PATIENCE, settled).await.is_err() {
        panic!(
            "leaked: {} accepted sockets still open, {} sockets (before {sockets_before}), \
             {} tasks (before {tasks_before})",
            open_accepted_sockets(tcp_addr),
            open_sockets(),
            runtime.metrics().num_alive_tasks()
        );
    }
    // Checked after the count: an HTTP request may open a connection of its own.
    assert_eq!(hub.get("/clients").await.1["total"], 0);
    let total = WORKERS * CYCLES;
    eprintln!(
        "figure: storm: {total} connect/sync/close cycles from {WORKERS} tasks over {} source \
         addresses in {:.1} s ({:.0} cycles/s); {sockets_before} sockets and {tasks_before} \
         tasks before and after",
        SOURCE_ADDRESSES,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}

/// One racing connection and what it believes it holds.
struct Racer {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    session: String,
    holds: Option<String>,
}

impl Racer {
    async fn connect(hub: &TestHub, index: usize) -> Racer {
        let stream = connect_from(source_address(index), hub.tcp_addr).await;
        let (reader, writer) = stream.into_split();
        Racer {
            lines: BufReader::new(reader).lines(),
            writer,
            session: String::new(),
            holds: None,
        }
    }

    /// The next frame, or `None` once the hub has closed the connection.
    async fn next_frame(&mut self) -> Option<Value> {
        let line = timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("the hub went silent")
            .unwrap_or(None)?;
        Some(serde_json::from_str(&line).unwrap())
    }

    /// Sends a frame; a connection the hub has already closed just drops it.
    async fn send(&mut self, frame: &Value) {
        let mut line = serde_json::to_vec(frame).unwrap();
        line.push(b'\n');
        let _ = self.writer.write_all(&line).await;
    }

    /// Claims `name`. The hub answers with a `welcome`, unless this connection
    /// lost its earlier name first (a `bye`, replaced or kicked): then the racer
    /// starts over on a new connection.
    async fn claim(&mut self, hub: &TestHub, index: usize, name: &str) {
        self.send(&json!({"type": "sync", "clientName": name}))
            .await;
        let Some(frame) = self.next_frame().await else {
            panic!("closed without a bye while claiming {name}");
        };
        match frame["type"].as_str() {
            Some("welcome") if frame["clientName"] == name => {
                self.session = frame["id"].as_str().unwrap().to_owned();
                self.holds = Some(name.to_owned());
            }
            Some("bye") => {
                let reason = frame["reason"].as_str().unwrap();
                assert!(["replaced", "kicked"].contains(&reason), "{frame}");
                *self = Racer::connect(hub, index).await;
            }
            _ => panic!("unexpected {frame} while claiming {name}"),
        }
    }

    /// Reads what the hub sent before a ping's answer: the pong (true), or a
    /// `bye` and the end of the connection (false).
    async fn settle(&mut self) -> bool {
        self.send(&json!({"type": "ping"})).await;
        let Some(frame) = self.next_frame().await else {
            panic!("closed without a bye");
        };
        match frame["type"].as_str() {
            Some("pong") => true,
            Some("bye") => {
                self.holds = None;
                assert!(self.next_frame().await.is_none(), "frames after the bye");
                false
            }
            _ => panic!("unexpected {frame} while settling"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_renames_and_kicks_leave_at_most_one_holder_per_name() {
    const RACERS: usize = 50;
    const CLAIMS: usize = 100;
    const NAMES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
    let _turn = SERIAL.lock().await;
    let hub = Arc::new(TestHub::start(Config::default()).await);
    let racing = Arc::new(AtomicBool::new(true));

    // Watches the API while the race runs: no name is ever listed twice.
    let watcher = {
        let (hub, racing) = (Arc::clone(&hub), Arc::clone(&racing));
        tokio::spawn(async move {
            let mut snapshots = 0;
            while racing.load(Ordering::Relaxed) {
                let (status, list) = hub.get("/clients?named=true&limit=10000").await;
                assert_eq!(status, 200);
                let mut names: Vec<&str> = list["clients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|client| client["name"].as_str().unwrap())
                    .collect();
                let listed = names.len();
                names.sort_unstable();
                names.dedup();
                assert_eq!(names.len(), listed, "a name listed twice: {list}");
                snapshots += 1;
            }
            snapshots
        })
    };
    let kicker = {
        let (hub, racing) = (Arc::clone(&hub), Arc::clone(&racing));
        tokio::spawn(async move {
            let mut kicks = 0;
            for turn in 0.. {
                if !racing.load(Ordering::Relaxed) {
                    break;
                }
                let (status, _) = hub.delete(&format!("/clients/{}", NAMES[turn % 4])).await;
                assert!(status == 204 || status == 404, "kick answered {status}");
                kicks += usize::from(status == 204);
            }
            kicks
        })
    };
    let racers = (0..RACERS).map(|index| {
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            let mut racer = Racer::connect(&hub, index).await;
            for claim in 0..CLAIMS {
                // Each racer walks the names in its own order, so claims collide.
                let name = NAMES[(index * 7 + claim * (index % 3 + 1)) % NAMES.len()];
                racer.claim(&hub, index, name).await;
            }
            racer
        })
    });
    let mut racers: Vec<Racer> = join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    racing.store(false, Ordering::Relaxed);
    let snapshots = watcher.await.unwrap();
    let kicks = kicker.await.unwrap();

    // Once every racer has read all it was sent, believers and registry agree.
    let mut believers: HashMap<String, Vec<String>> = HashMap::new();
    for racer in &mut racers {
        if racer.settle().await
            && let Some(name) = &racer.holds
        {
            believers
                .entry(name.clone())
                .or_default()
                .push(racer.session.clone());
        }
    }
    for name in NAMES {
        let (status, view) = hub.get(&format!("/clients/{name}")).await;
        match believers.get(name).map(Vec::as_slice) {
            None => assert_eq!(status, 404, "{name} is held by no live racer: {view}"),
            Some([session]) => assert_eq!(view["id"], session.as_str(), "{name}"),
            Some(many) => panic!(
                "{name} is believed held by {} connections: {many:?}",
                many.len()
            ),
        }
    }
    eprintln!(
        "figure: name race: {RACERS} connections x {CLAIMS} claims on {} names, {kicks} kicks, \
         {snapshots} listings checked",
        NAMES.len()
    );
    drop(racers);
    until_registry_is_empty(&hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_clients_a_crowd_connecting_at_once_admits_exactly_the_limit() {
    const LIMIT: usize = 100;
    const CROWD: usize = 150;
    let _turn = SERIAL.lock().await;
    let hub = TestHub::start(Config {
        max_clients: LIMIT,
        ..Config::default()
    })
    .await;
    let mut events = hub.events();
    let crowd = (0..CROWD).map(|index| {
        let tcp_addr = hub.tcp_addr;
        tokio::spawn(async move {
            let mut client =
                TestClient::from_stream(connect_from(source_address(index), tcp_addr).await);
            client.send(&json!({"type": "ping"})).await;
            let first = client.recv().await;
            (client, first)
        })
    });
    let mut admitted = Vec::new();
    let mut refused = 0;
    for outcome in join_all(crowd).await {
        let (mut client, first) = outcome.unwrap();
        if first == json!({"type": "pong"}) {
            admitted.push(client);
        } else {
            assert_eq!(first, json!({"type": "bye", "reason": "server_full"}));
            client.expect_eof().await;
            refused += 1;
        }
    }
    assert_eq!((admitted.len(), refused), (LIMIT, CROWD - LIMIT));
    assert_eq!(hub.get("/clients").await.1["total"], LIMIT);
    // A place freed is a place taken.
    admitted.pop().unwrap().close().await;
    events
        .until(|event| matches!(event.kind, EventKind::Disconnected { .. }))
        .await;
    let mut late = TestClient::connect(&hub).await;
    late.ping().await;
    let mut refused_again = TestClient::connect(&hub).await;
    refused_again.expect_bye("server_full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_every_silent_client_and_spares_the_talkative_one() {
    const SILENT: usize = 300;
    let _turn = SERIAL.lock().await;
    let hub = TestHub::start(Config {
        idle_timeout: Some(Duration::from_secs(1)),
        ..Config::default()
    })
    .await;
    let mut talker = TestClient::synced(&hub, "talker").await;
    let silent = synced_clients(&hub, "silent-", SILENT).await;
    let byes = silent.into_iter().map(|mut client| async move {
        client.expect_bye("idle_timeout").await;
    });
    let all_gone = join_all(byes);
    tokio::pin!(all_gone);
    // The talker's own pace keeps it active while every silent client times out.
    let mut pace = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = &mut all_gone => break,
            _ = pace.tick() => talker.ping().await,
        }
    }
    let (_, list) = hub.get("/clients").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["clients"][0]["name"], "talker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_sockets_have_tcp_keepalive_and_no_delay() {
    let _turn = SERIAL.lock().await;
    let hub = TestHub::start(Config::default()).await;
    let _client = TestClient::synced(&hub, "kept-alive").await;
    let held = hub.registry.get("kept-alive").expect("registered");
    let socket = SockRef::from(held.socket().expect("a plain TCP client has its socket"));
    assert!(socket.keepalive().unwrap(), "SO_KEEPALIVE is off");
    assert_eq!(
        socket.tcp_keepalive_time().unwrap(),
        Duration::from_secs(60)
    );
    assert_eq!(
        socket.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(10)
    );
    assert!(socket.tcp_nodelay().unwrap(), "Nagle's delay is on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_have_no_delay() {
    let _turn = SERIAL.lock().await;
    let hub = TestHub::start(Config::default()).await;
    let mut caller = TcpStream::connect(hub.http_addr).await.unwrap();
    caller
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    timeout(PATIENCE, caller.read_exact(&mut answer))
        .await
        .expect("no answer")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // The hub runs in this process: find its end of the connection among our sockets.
    let hub_end = (hub.http_addr, caller.local_addr().unwrap());
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: the descriptor is only borrowed for the duration of the checks below, and
        // the tests in this file take turns, so no other test closes it meanwhile.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let socket = SockRef::from(&borrowed);
        let ends = socket.local_addr().ok().zip(socket.peer_addr().ok());
        let ends = ends.and_then(|(local, peer)| local.as_socket().zip(peer.as_socket()));
        if ends == Some(hub_end) {
            found = Some(socket.tcp_nodelay().unwrap());
        }
    }
    assert_eq!(
        found,
        Some(true),
        "the hub's end of the HTTP connection has Nagle's delay on"
    );
}
