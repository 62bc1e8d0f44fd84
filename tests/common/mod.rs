//! The test harness: a real hub in-process on loopback port 0, real TCP clients
//! and a real HTTP client. Every wait is bounded by [`PATIENCE`] and fails the
//! test with a message when it runs out. [`nats`] runs a real `nats-server`
//! for the cluster tests.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod nats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tcphub::events::{Event, EventKind};
use tcphub::{Config, Hub, Registry};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// How long any single wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Prints the hubs' logs beside a failing test's output when `RUST_LOG` asks
/// for them (`RUST_LOG=tcphub=debug cargo test ...`).
fn log_if_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A hub serving both listeners on 127.0.0.1 ephemeral ports; dropping it shuts it down.
pub struct TestHub {
    /// Where TCP clients connect.
    pub tcp_addr: SocketAddr,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The hub's registry, for assertions and event subscriptions.
    pub registry: Registry,
    /// Sent as the bearer token on every request, when set.
    pub token: Option<String>,
    http: reqwest::Client,
    shutdown: CancellationToken,
    served: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestHub {
    /// Starts a hub with `config` (its addresses are replaced by ephemeral ones).
    pub async fn start(config: Config) -> TestHub {
        log_if_asked();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_addr = tcp.local_addr().unwrap();
        let http_addr = http.local_addr().unwrap();
        let token = config.api_token.clone();
        let hub = Hub::open(Config {
            tcp_addr,
            http_addr,
            ..config
        })
        .unwrap();
        let registry = hub.registry().clone();
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(hub.serve(tcp, http, shutdown.clone()));
        TestHub {
            tcp_addr,
            http_addr,
            registry,
            token,
            http: reqwest::Client::new(),
            shutdown,
            served: Some(served),
        }
    }

    /// The URL of `path` on the HTTP API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http_addr, path)
    }

    /// A request builder carrying the hub's token, if any.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// `GET path`: status and JSON body (`Value::Null` when empty or not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        send(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    /// `POST path` with a raw body and content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let request = self
            .request(reqwest::Method::POST, path)
            .header("content-type", content_type)
            .body(body);
        send(request).await
    }

    /// Sends the client named `name` a marker over HTTP and expects it as its
    /// very next frame: whatever the test expected not to arrive did not.
    pub async fn expect_marker_next(&self, client: &mut TestClient, name: &str) {
        let (status, _) = self
            .post(
                &format!("/clients/{name}/send"),
                serde_json::json!({"message": "marker"}),
            )
            .await;
        assert_eq!(status, 202);
        assert_eq!(client.recv().await["message"], "marker");
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// The `/metrics` text (with the token, if any).
    pub async fn metrics(&self) -> String {
        let response = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.expect("metrics text")
    }

    /// A subscription to the hub's events from now on.
    pub fn events(&self) -> Events {
        Events(self.registry.events().subscribe())
    }

    /// Starts the drain, as SIGTERM does.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts the hub down and waits until `serve` has returned.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let served = self.served.take().unwrap();
        let result = timeout(PATIENCE, served)
            .await
            .expect("the hub did not stop in time");
        result.unwrap().unwrap();
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = timeout(PATIENCE, request.send())
        .await
        .expect("no HTTP answer in time")
        .expect("HTTP request failed");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("HTTP body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A subscription to hub events.
pub struct Events(broadcast::Receiver<Arc<Event>>);

impl Events {
    /// The next event for which `wanted` holds, skipping others.
    pub async fn until(&mut self, mut wanted: impl FnMut(&Event) -> bool) -> Arc<Event> {
        let wait = async {
            loop {
                let event = self.0.recv().await.expect("event stream ended or lagged");
                if wanted(&event) {
                    return event;
                }
            }
        };
        timeout(PATIENCE, wait)
            .await
            .expect("the expected event did not come in time")
    }

    /// Waits for `count` disconnections.
    pub async fn disconnections(&mut self, count: usize) {
        for _ in 0..count {
            self.until(|event| matches!(event.kind, EventKind::Disconnected { .. }))
                .await;
        }
    }
}

/// A raw TCP client of the hub that reads newline-delimited frames.
pub struct TestClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl TestClient {
    /// Connects to the hub (unnamed).
    pub async fn connect(hub: &TestHub) -> TestClient {
        let stream = timeout(PATIENCE, TcpStream::connect(hub.tcp_addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        TestClient::from_stream(stream)
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream) -> TestClient {
        stream.set_nodelay(true).unwrap();
        let (reader, writer) = stream.into_split();
        TestClient {
            reader: BufReader::new(reader),
            writer,
        }
    }

    /// Connects and registers `name`; returns after the `welcome`.
    pub async fn synced(hub: &TestHub, name: &str) -> TestClient {
        let mut client = TestClient::connect(hub).await;
        client.sync(name).await;
        client
    }

    /// Sends `sync` for `name` and checks the `welcome`; returns the session id.
    pub async fn sync(&mut self, name: &str) -> String {
        self.send(&serde_json::json!({"type": "sync", "clientName": name}))
            .await;
        let welcome = self.recv().await;
        assert_eq!(
            welcome["type"], "welcome",
            "expected a welcome, got {welcome}"
        );
        assert_eq!(welcome["clientName"], name);
        welcome["id"].as_str().expect("welcome id").to_owned()
    }

    /// Writes a frame as one compact JSON line.
    pub async fn send(&mut self, frame: &Value) {
        let mut line = serde_json::to_vec(frame).unwrap();
        line.push(b'\n');
        self.send_raw(&line).await;
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write to hub");
    }

    /// The next frame; fails on EOF, bad JSON or timeout.
    pub async fn recv(&mut self) -> Value {
        let line = self
            .recv_line()
            .await
            .expect("the hub closed the connection");
        serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("frame {line:?} is not JSON: {err}"))
    }

    /// The next line, or `None` at EOF.
    pub async fn recv_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = timeout(PATIENCE, self.reader.read_line(&mut line))
            .await
            .expect("no frame arrived in time")
            .expect("read from hub");
        if n == 0 {
            return None;
        }
        assert!(
            line.ends_with('\n'),
            "frame {line:?} does not end in a newline"
        );
        Some(line.trim_end_matches('\n').to_owned())
    }

    /// Expects the hub to close the connection with nothing more to read.
    pub async fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        timeout(PATIENCE, self.reader.read_to_end(&mut rest))
            .await
            .expect("the hub did not close the connection in time")
            .expect("read to EOF");
        assert!(
            rest.is_empty(),
            "unexpected bytes before EOF: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Expects a `bye` with `reason`, then EOF.
    pub async fn expect_bye(&mut self, reason: &str) {
        assert_eq!(
            self.recv().await,
            serde_json::json!({"type": "bye", "reason": reason})
        );
        self.expect_eof().await;
    }

    /// Expects an `error` frame with `code`; returns its detail.
    pub async fn expect_error(&mut self, code: &str) -> String {
        let frame = self.recv().await;
        assert_eq!(
            frame["type"], "error",
            "expected an error frame, got {frame}"
        );
        assert_eq!(frame["code"], code, "got {frame}");
        frame["detail"].as_str().expect("error detail").to_owned()
    }

    /// Round-trips a ping: every frame sent before it has been handled.
    pub async fn ping(&mut self) {
        self.send_raw(b"{\"type\":\"ping\"}\n").await;
        assert_eq!(self.recv().await, serde_json::json!({"type": "pong"}));
    }

    /// Closes the write side (the hub sees EOF).
    pub async fn close(mut self) {
        self.writer.shutdown().await.expect("shutdown");
    }
}

/// Panics unless `time` is RFC 3339 UTC with exactly three fraction digits,
/// like `2026-11-25T18:40:20.080Z`.
pub fn assert_millis_utc(time: &str) {
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999Z", "{time:?}");
}
