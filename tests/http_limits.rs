//! The HTTP server's limits and its end: header and idle timeouts, the caps on
//! connections and event streams, and a drain that ends whatever HTTP clients do.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{PATIENCE, TestClient, TestHub};
use serde_json::json;
use tcphub::Config;
use tcphub::events::EventKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Longer than any test: a limit set to this never fires.
const NEVER: Duration = Duration::from_secs(600);

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n";
/// The same, asking the hub to close the connection after answering.
const HEALTHZ_ONCE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n";

async fn connect(addr: SocketAddr) -> TcpStream {
    timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

/// Reads until `ending` has arrived; returns everything read.
async fn read_until(stream: &mut TcpStream, ending: &[u8]) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !received
        .windows(ending.len())
        .any(|window| window == ending)
    {
        let n = timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("no answer in time")
            .expect("read failed");
        assert!(
            n > 0,
            "closed after {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&chunk[..n]);
    }
    received
}

/// One `GET /healthz` on `stream`, answered 200, the connection kept open.
async fn healthz(stream: &mut TcpStream) {
    stream.write_all(HEALTHZ).await.unwrap();
    let answer = read_until(stream, b"{\"status\":\"ok\"}").await;
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"), "{answer:?}");
}

/// Expects the hub to close `stream` (EOF, or a reset for a refused connection).
async fn expect_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("the hub did not close the connection in time");
    if let Ok(n) = read {
        assert_eq!(
            n,
            0,
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// A `GET /events` reader with a tiny receive window that never reads past the
/// response head, and enough events for it that most stay unsent in the hub.
async fn stalled_event_reader(hub: &TestHub) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(hub.http_addr).await.unwrap();
    reader
        .write_all(b"GET /events HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut reader, b": following").await;
    let mut events = hub.events();
    let mut talker = TestClient::synced(hub, "talker").await;
    let big = "e".repeat(60_000);
    const MESSAGES: usize = 200; // 12 MB: more than the socket buffers hold
    for _ in 0..MESSAGES {
        talker.send(&json!({"type": "info", "message": big})).await;
    }
    for _ in 0..MESSAGES {
        events
            .until(|event| matches!(event.kind, EventKind::Message { .. }))
            .await;
    }
    reader
}

fn draining_config() -> Config {
    Config {
        shutdown_grace: Duration::from_secs(1),
        http_header_timeout: NEVER,
        http_idle_timeout: NEVER,
        ..Config::default()
    }
}

#[tokio::test]
async fn a_drain_with_a_stalled_event_reader_ends_within_the_grace() {
    let hub = TestHub::start(draining_config()).await;
    let mut reader = stalled_event_reader(&hub).await;
    hub.stop().await;
    let mut rest = Vec::new();
    // What the hub sent before cutting the stream, then the close.
    let _ = timeout(PATIENCE, reader.read_to_end(&mut rest))
        .await
        .expect("the event stream was not closed");
}

#[tokio::test]
async fn a_drain_with_half_sent_requests_ends_within_the_grace() {
    let hub = TestHub::start(draining_config()).await;
    let mut half_head = connect(hub.http_addr).await;
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n")
        .await
        .unwrap();
    let mut half_body = connect(hub.http_addr).await;
    half_body
        .write_all(
            b"POST /broadcast HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"message\":",
        )
        .await
        .unwrap();
    // Both are in the hub's hands once a later request on another connection is answered.
    healthz(&mut connect(hub.http_addr).await).await;
    hub.stop().await;
    expect_closed(&mut half_head).await;
    expect_closed(&mut half_body).await;
}

#[tokio::test]
async fn readiness_answers_503_until_a_drain_held_open_by_a_slow_reader_ends() {
    let hub = TestHub::start(Config {
        shutdown_grace: NEVER,
        ..draining_config()
    })
    .await;
    let _reader = stalled_event_reader(&hub).await;
    hub.begin_shutdown();
    // Past the TCP drain, the HTTP server closes connections after one answer
    // (`connection: close`) but keeps its listener open for the probes.
    // A new connection each time: a pooled one may close as a request goes out.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let response = loop {
        let response = client
            .get(hub.url("/readyz"))
            .send()
            .await
            .expect("/readyz refused during the drain");
        if response
            .headers()
            .get("connection")
            .is_some_and(|v| v == "close")
        {
            break response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drain never reached HTTP"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "draining");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let hub = TestHub::start(Config {
        http_idle_timeout: Duration::from_secs(1),
        http_header_timeout: NEVER,
        ..Config::default()
    })
    .await;
    let mut idle = connect(hub.http_addr).await;
    healthz(&mut idle).await;
    expect_closed(&mut idle).await;
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    let hub = TestHub::start(Config {
        http_header_timeout: Duration::from_secs(1),
        http_idle_timeout: NEVER,
        ..Config::default()
    })
    .await;
    let mut slow = connect(hub.http_addr).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: hu")
        .await
        .unwrap();
    expect_closed(&mut slow).await;
    // A connection that is answered stays open (the idle timeout is long)...
    let mut answered = connect(hub.http_addr).await;
    healthz(&mut answered).await;
    healthz(&mut answered).await;
    // ...until a head it starts later stalls: the header timeout applies
    // after a request too, not only to a new connection.
    answered
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hu")
        .await
        .unwrap();
    expect_closed(&mut answered).await;
}

#[tokio::test]
async fn past_max_http_connections_new_ones_are_closed_until_one_ends() {
    let hub = TestHub::start(Config {
        max_http_connections: 4,
        ..Config::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut connection = connect(hub.http_addr).await;
        healthz(&mut connection).await;
        open.push(connection);
    }
    let mut fifth = connect(hub.http_addr).await;
    // The write may already fail: the hub closed the connection at once.
    let _ = fifth.write_all(HEALTHZ).await;
    expect_closed(&mut fifth).await;
    healthz(&mut open[0]).await;
    drop(open.pop());
    // The hub notices the close on its own time: retry until it has.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut next = connect(hub.http_addr).await;
        let _ = next.write_all(HEALTHZ_ONCE).await;
        let mut answer = Vec::new();
        let _ = timeout(PATIENCE, next.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 200 OK\r\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room made by the close"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn past_max_event_streams_events_answers_503_too_many_streams() {
    let hub = TestHub::start(Config {
        max_event_streams: 1,
        ..Config::default()
    })
    .await;
    let follow = || async {
        timeout(
            PATIENCE,
            hub.request(reqwest::Method::GET, "/events").send(),
        )
        .await
        .expect("no answer in time")
        .expect("GET /events failed")
    };
    let first = follow().await;
    assert_eq!(first.status(), 200);
    let refused = follow().await;
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        (body["code"].clone(), body["status"].clone()),
        (json!("too_many_streams"), json!(503))
    );
    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let next = follow().await;
        if next.status() == 200 {
            break;
        }
        assert_eq!(next.status(), 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's slot was never freed"
        );
        tokio::task::yield_now().await;
    }
}
