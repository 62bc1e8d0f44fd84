//! The real `tcphub` binary as a child process: start-up, JSON logs, the drain
//! on SIGTERM, the second signal, and configuration errors.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{PATIENCE, TestClient};
use serde_json::{Value, json};
use tcphub::fd_budget::FdBudget;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

const TOKEN: &str = "t0ken-that-must-never-be-logged";

/// A running hub binary with JSON logs on stdout.
struct Process {
    child: Child,
    logs: Lines<BufReader<ChildStdout>>,
    tcp_addr: String,
    http_addr: String,
    /// The open-files limit the hub reported raising itself to.
    open_files: u64,
    /// The most clients the hub reported it admits.
    clients_limit: usize,
    /// Every log line before `tcphub listening`.
    start_up: Vec<Value>,
}

impl Process {
    async fn start(extra: &[&str]) -> Process {
        Process::start_logging("info", extra).await
    }

    /// Starts the hub with `RUST_LOG` set to `filter`.
    async fn start_logging(filter: &str, extra: &[&str]) -> Process {
        let loopback = ["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"];
        let args = [&loopback[..], &["--api-token", TOKEN], extra].concat();
        Process::start_with(filter, &args).await
    }

    /// Starts the hub with exactly `args` (plus JSON logs).
    async fn start_with(filter: &str, args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tcphub"))
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", filter)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let logs = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut process = Process {
            child,
            logs,
            tcp_addr: String::new(),
            http_addr: String::new(),
            open_files: 0,
            clients_limit: 0,
            start_up: Vec::new(),
        };
        let mut start_up = Vec::new();
        let listening = process
            .log_until(|line| {
                start_up.push(line.clone());
                line["message"] == "tcphub listening"
            })
            .await;
        let limit = start_up
            .iter()
            .find(|line| line["message"] == "open files limit")
            .expect("the open files limit is logged before listening");
        process.open_files = limit["open_files"].as_u64().unwrap();
        let budget = FdBudget::new(process.open_files, 100_000, 1000);
        assert_eq!(limit["http_reserve"].as_u64(), Some(budget.http_reserve));
        assert_eq!(limit["clients"], json!(budget.clients));
        process.clients_limit = budget.clients;
        process.start_up = start_up;
        process.tcp_addr = listening["tcp"].as_str().unwrap().to_owned();
        process.http_addr = listening["http"].as_str().unwrap().to_owned();
        process
    }

    /// The next log line for which `wanted` holds; every line must be JSON without the token.
    async fn log_until(&mut self, mut wanted: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let line = timeout(PATIENCE, self.logs.next_line())
                .await
                .expect("no log line in time")
                .unwrap()
                .expect("the hub's log ended");
            assert!(!line.contains(TOKEN), "the API token was logged: {line}");
            let entry: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("log line {line:?} is not JSON: {err}"));
            if wanted(&entry) {
                return entry;
            }
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn http(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("http://{}{path}", self.http_addr))
            .bearer_auth(TOKEN)
    }

    /// Sends big messages to `name`, which does not read, until more than
    /// `backlog` of them wait in its queue; returns the ids of all sent.
    async fn fill_queue(&self, name: &str, backlog: u64) -> Vec<Value> {
        let big = "q".repeat(60_000);
        let mut sent = Vec::new();
        loop {
            let send = self
                .http(reqwest::Method::POST, &format!("/clients/{name}/send"))
                .await;
            let response = send.json(&json!({"message": big})).send().await.unwrap();
            assert_eq!(response.status(), 202);
            sent.push(response.json::<Value>().await.unwrap()["id"].clone());
            let lookup = self
                .http(reqwest::Method::GET, &format!("/clients/{name}"))
                .await;
            let client: Value = lookup.send().await.unwrap().json().await.unwrap();
            if client["queueLen"].as_u64().unwrap() > backlog {
                return sent;
            }
        }
    }

    async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let status = timeout(within, self.child.wait())
            .await
            .expect("the hub did not exit in time")
            .unwrap();
        status.code()
    }
}

/// The resident set size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn connect(addr: &str) -> TestClient {
    TestClient::from_stream(TcpStream::connect(addr).await.unwrap())
}

#[tokio::test]
async fn start_up_logs_the_addresses_and_the_client_capacity() {
    let mut hub = Process::start(&[]).await;
    assert!(hub.tcp_addr.starts_with("127.0.0.1:") && hub.http_addr.starts_with("127.0.0.1:"));
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard: u64 = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(4))
        .and_then(|hard| hard.parse().ok())
        .unwrap();
    assert_eq!(
        hub.open_files, hard,
        "the soft limit is raised to the hard limit"
    );
    let metrics = hub
        .http(reqwest::Method::GET, "/metrics")
        .await
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported = format!("\ntcphub_clients_limit {}\n", hub.clients_limit);
    assert!(metrics.contains(&exported), "{metrics}");
    hub.signal("TERM");
    assert_eq!(hub.exit_code(PATIENCE).await, Some(0));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args([
            "--tcp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--max-clients",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success(), "--max-clients 0 is refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim(), "tcphub: --max-clients must be at least 1");
}

#[tokio::test]
async fn debug_logs_each_request_with_its_route_and_status() {
    let mut hub = Process::start_logging("debug", &[]).await;
    let response = hub
        .http(reqwest::Method::GET, "/clients/nobody")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let logged = hub.log_until(|line| line["message"] == "request").await;
    assert_eq!(
        (
            logged["level"].clone(),
            logged["method"].clone(),
            logged["route"].clone(),
            logged["status"].clone()
        ),
        (
            json!("DEBUG"),
            json!("GET"),
            json!("/clients/{name}"),
            json!(404)
        )
    );
    assert!(logged["micros"].is_u64(), "{logged}");
}

#[tokio::test]
async fn text_logs_into_a_pipe_carry_no_colour_codes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--log-format", "text"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = timeout(PATIENCE, logs.next_line())
        .await
        .expect("no log line in time")
        .unwrap()
        .expect("the hub closed its output");
    assert!(first.contains("open files limit"), "{first:?}");
    assert!(!first.contains('\u{1b}'), "escape codes in {first:?}");
}

#[tokio::test]
async fn logs_are_json_with_session_peer_and_name_and_never_the_token() {
    let mut hub = Process::start(&[]).await;
    let mut client = connect(&hub.tcp_addr).await;
    let id = client.sync("logged").await;
    let mut before_named = Vec::new();
    let named = hub
        .log_until(|line| {
            before_named.push(line["message"].clone());
            line["message"] == "client named"
        })
        .await;
    assert_eq!(
        (
            named["level"].clone(),
            named["session"].clone(),
            named["name"].clone()
        ),
        (json!("INFO"), json!(id), json!("logged"))
    );
    assert!(named["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        !before_named.contains(&json!("client connected")),
        "a bare connection is logged at debug only: {before_named:?}"
    );
    let response = hub
        .http(reqwest::Method::GET, "/clients")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    client.close().await;
    let gone = hub
        .log_until(|line| line["message"] == "client disconnected")
        .await;
    assert_eq!(
        (
            gone["session"].clone(),
            gone["name"].clone(),
            gone["reason"].clone()
        ),
        (json!(id), json!("logged"), json!("closed"))
    );
    hub.signal("TERM");
    hub.log_until(|line| line["message"] == "shutdown complete")
        .await;
    assert_eq!(hub.exit_code(PATIENCE).await, Some(0));
}

#[tokio::test]
async fn sigterm_drains_queued_messages_then_says_bye_and_exits_zero() {
    let mut hub = Process::start(&["--shutdown-grace", "30"]).await;
    let mut reader = connect(&hub.tcp_addr).await;
    reader.sync("reader").await;
    // Queue more than the socket buffers hold, so the drain has work to do.
    let sent = hub.fill_queue("reader", 2).await;
    hub.signal("TERM");
    hub.log_until(|line| line["message"] == "shutting down: draining clients")
        .await;
    let ready = hub
        .http(reqwest::Method::GET, "/readyz")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        TcpStream::connect(&hub.tcp_addr).await.is_err(),
        "the TCP listener still accepts"
    );
    for id in &sent {
        let frame = reader.recv().await;
        assert_eq!(
            (frame["type"].clone(), frame["id"].clone()),
            (json!("message"), id.clone())
        );
    }
    reader.expect_bye("shutdown").await;
    assert_eq!(hub.exit_code(PATIENCE).await, Some(0));
}

#[tokio::test]
async fn sigterm_with_a_stalled_event_reader_exits_zero_within_the_grace() {
    let grace = 2;
    let mut hub = Process::start(&[
        "--shutdown-grace",
        &grace.to_string(),
        "--http-header-timeout",
        "600",
        "--http-idle-timeout",
        "600",
    ])
    .await;
    // A follower that reads the response head, then nothing: a tiny receive
    // window and megabytes of events leave most of them unsent in the hub.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket
        .connect(hub.http_addr.parse().unwrap())
        .await
        .unwrap();
    let request =
        format!("GET /events HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    reader.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.windows(11).any(|window| window == b": following") {
        let mut chunk = [0u8; 1024];
        let n = timeout(PATIENCE, reader.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the event stream closed");
        head.extend_from_slice(&chunk[..n]);
    }
    let mut talker = connect(&hub.tcp_addr).await;
    talker.sync("talker").await;
    let big = "e".repeat(60_000);
    for _ in 0..200 {
        talker.send(&json!({"type": "info", "message": big})).await;
    }
    talker.ping().await;
    hub.signal("TERM");
    let cut = hub
        .log_until(|line| line["message"] == "shutdown grace ran out: HTTP connections cut short")
        .await;
    assert_eq!(
        (cut["connections"].clone(), cut["streams"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        hub.exit_code(Duration::from_secs(grace + 5)).await,
        Some(0),
        "exits within the grace, plus a margin"
    );
    drop(reader);
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let mut hub = Process::start(&["--shutdown-grace", "600"]).await;
    let mut stuck = connect(&hub.tcp_addr).await;
    stuck.sync("stuck").await;
    hub.fill_queue("stuck", 0).await;
    hub.signal("TERM");
    hub.log_until(|line| line["message"] == "shutting down: draining clients")
        .await;
    hub.signal("INT");
    assert_eq!(
        hub.exit_code(PATIENCE).await,
        Some(1),
        "exits at once, not after the 600 s grace"
    );
}

#[tokio::test]
async fn memory_goes_back_to_the_system_after_a_burst() {
    const MIB: u64 = 1024;
    let mut hub = Process::start(&["--max-message-bytes", "1048576"]).await;
    let pid = hub.child.id().unwrap();
    let message = json!({"message": "m".repeat(1_000_000)});
    let mut hoarder = connect(&hub.tcp_addr).await;
    hoarder.sync("hoarder").await;
    let send = || async {
        let response = hub
            .http(reqwest::Method::POST, "/clients/hoarder/send")
            .await
            .json(&message)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    };
    // One message first, so the baseline includes what serving one costs.
    send().await;
    hoarder.recv().await;
    let baseline = rss_kib(pid);
    // The hoarder does not read: 48 messages of 1 MB stay in the hub.
    for _ in 0..48 {
        send().await;
    }
    let peak = rss_kib(pid);
    assert!(
        peak > baseline + 32 * MIB,
        "the burst took {baseline} KiB to only {peak} KiB"
    );
    drop(hoarder);
    hub.log_until(|line| line["message"] == "client disconnected")
        .await;
    let freed = tokio::time::Instant::now();
    let mut now = rss_kib(pid);
    while now > baseline + baseline / 5 {
        assert!(
            freed.elapsed() < PATIENCE,
            "RSS stayed at {now} KiB (baseline {baseline} KiB, peak {peak} KiB)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = rss_kib(pid);
    }
    println!(
        "figure: RSS {baseline} KiB before, {peak} KiB after queueing 48 MB, \
         {now} KiB {} ms after the client left",
        freed.elapsed().as_millis()
    );
}

#[test]
fn configuration_errors_fail_fast_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args(["--tcp-addr", &port, "--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "tcphub: cannot listen for TCP clients on {port}: "
        )),
        "{stderr}"
    );

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args(["--tcp-addr", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid value 'not-an-address'"));
}

/// Runs the binary with `args` and no `TCPHUB_*` settings from the environment.
async fn run_binary(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args(args)
        .env_remove("TCPHUB_HTTP_ADDR")
        .env_remove("TCPHUB_TLS_CERT")
        .output();
    timeout(PATIENCE, output)
        .await
        .expect("the binary hung")
        .unwrap()
}

#[tokio::test]
async fn healthcheck_heeds_flags_given_before_it_and_refuses_others() {
    let hub = Process::start(&[]).await;
    let addr = hub.http_addr.as_str();
    let before = run_binary(&["--http-addr", addr, "healthcheck"]).await;
    assert_eq!(before.status.code(), Some(0), "{before:?}");
    let after = run_binary(&["healthcheck", "--http-addr", addr]).await;
    assert_eq!(after.status.code(), Some(0), "{after:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap().to_string();
    drop(closed);
    let down = run_binary(&["--http-addr", &nobody, "healthcheck"]).await;
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        stderr.starts_with(&format!("tcphub: cannot connect to {nobody}")),
        "{stderr}"
    );

    let ignored = run_binary(&["--max-clients", "5", "healthcheck"]).await;
    assert_eq!(ignored.status.code(), Some(2), "{ignored:?}");
    let stderr = String::from_utf8_lossy(&ignored.stderr);
    assert!(
        stderr.contains("--max-clients has no effect on `tcphub healthcheck`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn host_names_resolve_for_both_listeners_and_localhost_needs_no_token() {
    let args = ["--tcp-addr", "localhost:0", "--http-addr", "localhost:0"];
    let mut hub = Process::start_with("info", &args).await;
    assert!(hub.tcp_addr.starts_with("127.0.0.1:"), "{}", hub.tcp_addr);
    assert!(hub.http_addr.starts_with("127.0.0.1:"), "{}", hub.http_addr);
    let mut client = connect(&hub.tcp_addr).await;
    client.sync("Client-1").await;
    let url = format!("http://{}/clients/Client-1", hub.http_addr);
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "no token is needed on loopback");
    hub.signal("TERM");
    assert_eq!(hub.exit_code(PATIENCE).await, Some(0));
}

#[tokio::test]
async fn an_open_api_is_warned_about_once_at_start() {
    let warning =
        "the HTTP API answers every host that reaches it, without a token (--allow-insecure-api)";
    let warnings = |hub: &Process| {
        hub.start_up
            .iter()
            .filter(|line| line["message"] == warning)
            .cloned()
            .collect::<Vec<_>>()
    };
    let args = ["--tcp-addr", "127.0.0.1:0", "--http-addr", "0.0.0.0:0"];
    let open = Process::start_with("info", &[&args[..], &["--allow-insecure-api"]].concat()).await;
    let logged = warnings(&open);
    assert_eq!(logged.len(), 1, "{:?}", open.start_up);
    assert_eq!(logged[0]["level"], "WARN");
    assert!(logged[0]["http"].as_str().unwrap().starts_with("0.0.0.0:"));

    let guarded = Process::start(&[]).await;
    assert_eq!(
        warnings(&guarded),
        Vec::<Value>::new(),
        "warned with a token"
    );
}

#[tokio::test]
async fn text_logs_show_names_as_plain_values() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--log-format", "text"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line_with = async |text: &str| loop {
        let line = timeout(PATIENCE, logs.next_line())
            .await
            .expect("no log line in time")
            .unwrap()
            .expect("the hub closed its output");
        if line.contains(text) {
            return line;
        }
    };
    let listening = next_line_with("tcphub listening").await;
    let tcp_addr = listening
        .split_whitespace()
        .find_map(|field| field.strip_prefix("tcp="))
        .expect("the TCP address is logged")
        .to_owned();
    let mut client = connect(&tcp_addr).await;
    client.sync("Client-1").await;
    client.close().await;
    let gone = next_line_with("client disconnected").await;
    assert!(gone.contains(" name=Client-1 "), "{gone}");
    assert!(!gone.contains("Some("), "{gone}");
}
