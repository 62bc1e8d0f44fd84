//! Out of file descriptors: a new TCP client still gets `bye` `server_full`,
//! through the descriptor the accept loop keeps spare.
//!
//! The test takes every free descriptor of this process (which the in-process
//! hub shares), so it is alone in its test binary: another test's sockets
//! opening or closing meanwhile would change the count.

mod common;

use std::fs::File;

use common::{PATIENCE, TestClient, TestHub};
use tcphub::Config;

/// The exact frame a refused client gets.
const SERVER_FULL: &str = r#"{"type":"bye","reason":"server_full"}"#;

/// Expects exactly `bye` `server_full`, then the close.
async fn expect_server_full(client: &mut TestClient) {
    assert_eq!(client.recv_line().await.as_deref(), Some(SERVER_FULL));
    client.expect_eof().await;
}

#[tokio::test]
async fn with_no_descriptor_left_a_new_client_still_gets_server_full() {
    // A small limit keeps the number of files to open small.
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, 256, hard).unwrap();
    let hub = TestHub::start(Config::default()).await;
    let mut sentinel = TestClient::synced(&hub, "sentinel").await;

    // Take every free descriptor, then give one back for the test's own socket:
    // the hub has none left to accept it with but its spare.
    let mut hogs = Vec::new();
    let exhausted = loop {
        match File::open("/dev/null") {
            Ok(file) => hogs.push(file),
            Err(err) => break err,
        }
    };
    assert_eq!(exhausted.raw_os_error(), Some(libc::EMFILE));
    hogs.pop();
    for _ in 0..2 {
        let mut refused = TestClient::connect(&hub).await;
        expect_server_full(&mut refused).await;
        // Closing it frees the one descriptor again; the second round shows
        // the hub took its spare back after the first.
    }
    drop(hogs);

    let status = tokio::time::timeout(
        PATIENCE,
        reqwest::get(format!("http://{}/healthz", hub.http_addr)),
    )
    .await
    .expect("/healthz did not answer in time")
    .unwrap()
    .status();
    assert_eq!(status, 200);
    let metrics = hub.metrics().await;
    for line in [
        "tcphub_accept_errors_total 2",
        "tcphub_disconnections_total{reason=\"server_full\"} 2",
    ] {
        assert!(
            metrics.contains(&format!("\n{line}\n")),
            "{line}: {metrics}"
        );
    }
    sentinel.ping().await;
    hub.stop().await;
}
