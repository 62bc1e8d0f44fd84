//! The open-files limit: the client limit derived from it, and the HTTP
//! reserve it keeps (`tests/fd_exhausted.rs` runs out of descriptors).
//!
//! The in-process test lowers this test process's own soft limit; the other
//! runs the binary under a limit of its own.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use common::{PATIENCE, TestClient, TestHub};
use serde_json::Value;
use tcphub::Config;
use tcphub::fd_budget::OVERHEAD;
use tcphub::registry::Admission;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::timeout;

/// The open-files limit the in-process test runs under.
const OPEN_FILES: u64 = 256;
/// The HTTP reserve the in-process test configures.
const HTTP_RESERVE: usize = 16;
/// The exact frame a refused client gets.
const SERVER_FULL: &str = r#"{"type":"bye","reason":"server_full"}"#;

fn lower_open_files_limit() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, OPEN_FILES, hard).unwrap();
}

fn config() -> Config {
    Config {
        max_http_connections: HTTP_RESERVE,
        ..Config::default()
    }
}

/// Expects exactly `bye` `server_full`, then the close.
async fn expect_server_full(client: &mut TestClient) {
    assert_eq!(client.recv_line().await.as_deref(), Some(SERVER_FULL));
    client.expect_eof().await;
}

#[tokio::test]
async fn the_client_limit_comes_from_the_open_files_limit_and_past_it_clients_get_server_full() {
    lower_open_files_limit();
    let hub = TestHub::start(config()).await;
    let limit = usize::try_from(OPEN_FILES - OVERHEAD).unwrap() - HTTP_RESERVE;
    assert_eq!(limit, 208);
    assert_eq!(hub.registry.max_clients(), limit);
    assert!(
        hub.metrics()
            .await
            .contains(&format!("\ntcphub_clients_limit {limit}\n")),
        "the limit is exported"
    );

    // Socketless registrations take the places but no descriptor.
    let peer = SocketAddr::from(([127, 0, 0, 9], 4000));
    let held: Vec<_> = (1..limit)
        .map(|_| match hub.registry.connect(peer, None) {
            Admission::Admitted(registration) => registration,
            Admission::Refused(_) => panic!("refused below the limit"),
        })
        .collect();
    let mut last = TestClient::synced(&hub, "last-place").await;
    let mut refused = TestClient::connect(&hub).await;
    expect_server_full(&mut refused).await;
    last.ping().await;
    assert_eq!(hub.registry.len(), limit);
    drop(held);
    hub.stop().await;
}

#[tokio::test]
async fn under_a_small_limit_the_binary_fills_the_tcp_port_and_keeps_http_answering() {
    const LIMIT: u64 = 128;
    let mut command = Command::new(env!("CARGO_BIN_EXE_tcphub"));
    command
        .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: between fork and exec the child only makes the setrlimit call.
    unsafe {
        command.pre_exec(|| {
            rlimit::setrlimit(rlimit::Resource::NOFILE, LIMIT, LIMIT)?;
            Ok(())
        });
    }
    let mut hub = command.spawn().unwrap();
    let mut logs = BufReader::new(hub.stdout.take().unwrap()).lines();
    let mut next_log = async |message: &str| loop {
        let line = timeout(PATIENCE, logs.next_line())
            .await
            .expect("no log line in time")
            .unwrap()
            .expect("the hub's log ended");
        let entry: Value = serde_json::from_str(&line).unwrap();
        if entry["message"] == message {
            return entry;
        }
    };
    let budget = next_log("open files limit").await;
    let clients = (LIMIT - OVERHEAD) / 2;
    assert_eq!(
        (
            budget["open_files"].as_u64(),
            budget["http_reserve"].as_u64(),
            budget["clients"].as_u64()
        ),
        (Some(LIMIT), Some(LIMIT - OVERHEAD - clients), Some(clients))
    );
    let listening = next_log("tcphub listening").await;
    let (tcp, http) = (
        listening["tcp"].as_str().unwrap().to_owned(),
        listening["http"].as_str().unwrap().to_owned(),
    );

    let mut admitted = Vec::new();
    for n in 0..clients {
        let stream = TcpStream::connect(&tcp).await.unwrap();
        let mut client = TestClient::from_stream(stream);
        client.sync(&format!("device-{n}")).await;
        admitted.push(client);
    }
    let mut refused = TestClient::from_stream(TcpStream::connect(&tcp).await.unwrap());
    expect_server_full(&mut refused).await;

    // With the TCP port full, HTTP still has its reserve: fresh connections
    // (no pooling), several at once.
    let checks = (0..20).map(|_| {
        let url = format!("http://{http}/healthz");
        async move {
            let fresh = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            fresh
                .get(url)
                .send()
                .await
                .map(|response| response.status())
        }
    });
    let statuses = timeout(PATIENCE, futures_util::future::join_all(checks))
        .await
        .expect("/healthz did not answer in time");
    for status in statuses {
        assert_eq!(status.unwrap(), 200);
    }
    admitted[0].ping().await;
}
