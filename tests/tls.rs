//! TLS on both listeners (`--tls-cert`/`--tls-key`), with a certificate made by
//! the test: the TCP protocol and the HTTP API work through it, frames for a TLS
//! client are queued and flushed by its task under the same limits as plain
//! ones, plaintext gets nowhere, and `tcphub healthcheck` asks over TLS.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{PATIENCE, TestHub};
use serde_json::{Value, json};
use tcphub::Config;
use tcphub::events::EventKind;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

/// A certificate for `localhost`, made for one test, and its PEM files.
struct Certificate {
    der: CertificateDer<'static>,
    pem: String,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Certificate {
    fn generate() -> Certificate {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "tcphub-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        let pem = made.cert.pem();
        std::fs::write(&cert_file, &pem).unwrap();
        std::fs::write(&key_file, made.key_pair.serialize_pem()).unwrap();
        Certificate {
            der: made.cert.der().clone(),
            pem,
            cert_file,
            key_file,
        }
    }

    fn config(&self) -> Config {
        Config {
            tls_cert: Some(self.cert_file.clone()),
            tls_key: Some(self.key_file.clone()),
            ..Config::default()
        }
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    fn https(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        if let Some(dir) = self.cert_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A TCP client of the hub over TLS, reading newline-delimited frames.
struct TlsClient {
    lines: BufReader<ReadHalf<TlsStream<TcpStream>>>,
    writer: WriteHalf<TlsStream<TcpStream>>,
}

impl TlsClient {
    async fn connect(hub: SocketAddr, certificate: &Certificate) -> TlsClient {
        let tcp = TcpStream::connect(hub).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = timeout(PATIENCE, certificate.connector().connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake");
        let (reader, writer) = tokio::io::split(stream);
        TlsClient {
            lines: BufReader::new(reader),
            writer,
        }
    }

    async fn send(&mut self, frame: &Value) {
        let mut line = serde_json::to_vec(frame).unwrap();
        line.push(b'\n');
        self.writer.write_all(&line).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    async fn recv_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = timeout(PATIENCE, self.lines.read_line(&mut line))
            .await
            .expect("no frame arrived in time")
            .expect("read from hub");
        (n > 0).then(|| line.trim_end().to_owned())
    }

    async fn recv(&mut self) -> Value {
        let line = self
            .recv_line()
            .await
            .expect("the hub closed the connection");
        serde_json::from_str(&line).unwrap()
    }

    async fn sync(&mut self, name: &str) {
        self.send(&json!({"type": "sync", "clientName": name}))
            .await;
        let welcome = self.recv().await;
        assert_eq!(
            (welcome["type"].as_str(), welcome["clientName"].as_str()),
            (Some("welcome"), Some(name))
        );
    }

    async fn ping(&mut self) {
        self.send(&json!({"type": "ping"})).await;
        assert_eq!(self.recv().await, json!({"type": "pong"}));
    }

    async fn expect_bye(&mut self, reason: &str) {
        assert_eq!(self.recv().await, json!({"type": "bye", "reason": reason}));
        assert_eq!(self.recv_line().await, None, "frames after the bye");
    }
}

async fn https_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = timeout(PATIENCE, request.send())
        .await
        .expect("no HTTPS answer in time")
        .expect("HTTPS request");
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_protocol_and_the_api_work_over_tls() {
    let certificate = Certificate::generate();
    let hub = TestHub::start(certificate.config()).await;
    let https = certificate.https();
    let api = |path: &str| format!("https://localhost:{}{path}", hub.http_addr.port());

    let mut client = TlsClient::connect(hub.tcp_addr, &certificate).await;
    client.sync("Client-1").await;
    client.ping().await;
    let (status, listed) = https_json(&https, reqwest::Method::GET, api("/clients"), None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["clients"][0]["name"], "Client-1");

    let (status, queued) = https_json(
        &https,
        reqwest::Method::POST,
        api("/clients/Client-1/send"),
        Some(json!({"message": {"led": "on"}})),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        client.recv().await,
        json!({"type": "message", "id": queued["id"], "scope": "direct", "message": {"led": "on"}})
    );
    let (_, report) = https_json(
        &https,
        reqwest::Method::POST,
        api("/broadcast"),
        Some(json!({"message": "all"})),
    )
    .await;
    assert_eq!(report["recipients"], 1);
    assert_eq!(client.recv().await["id"], report["id"]);

    let (status, _) = https_json(
        &https,
        reqwest::Method::DELETE,
        api("/clients/Client-1"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    client.expect_bye("kicked").await;
}

#[tokio::test]
async fn large_messages_reach_a_tls_client_whole_and_in_order() {
    let certificate = Certificate::generate();
    let hub = TestHub::start(certificate.config()).await;
    let mut client = TlsClient::connect(hub.tcp_addr, &certificate).await;
    client.sync("big").await;
    // Far more than one batch and one TLS record, queued before the client reads.
    let messages: Vec<String> = (0..40)
        .map(|i| format!("{i}:{}", "x".repeat(60_000)))
        .collect();
    let mut ids = Vec::new();
    for message in &messages {
        let id = hub
            .registry
            .send_to("big", &json!(message))
            .expect("queued");
        ids.push(id);
    }
    for (id, message) in ids.iter().zip(&messages) {
        let frame = client.recv().await;
        assert_eq!(
            (&frame["id"], &frame["message"]),
            (&json!(id), &json!(message))
        );
    }
    client.ping().await;
    let held = hub.registry.get("big").unwrap();
    assert_eq!(held.queue_len(), 0);
    assert!(
        held.socket().is_none(),
        "a TLS client is never written to directly"
    );
}

#[tokio::test]
async fn a_tls_client_that_never_reads_is_bounded_by_its_queue_and_closed_after_the_grace() {
    let certificate = Certificate::generate();
    let hub = TestHub::start(Config {
        queue_capacity: 8,
        shutdown_grace: Duration::from_secs(1),
        ..certificate.config()
    })
    .await;
    let _stuck = {
        let mut client = TlsClient::connect(hub.tcp_addr, &certificate).await;
        client.sync("stuck").await;
        client
    };
    let mut fast = TlsClient::connect(hub.tcp_addr, &certificate).await;
    fast.sync("fast").await;
    let large = json!("s".repeat(60_000));
    let mut accepted = 0;
    while hub.registry.send_to("stuck", &large).is_ok() {
        accepted += 1;
        assert!(accepted < 10_000, "the queue never filled");
    }
    let held = hub.registry.get("stuck").unwrap();
    assert_eq!(held.queue_len(), 8, "the queue holds its capacity, no more");
    // Others are served meanwhile.
    fast.ping().await;
    let mut events = hub.events();
    hub.registry
        .kick("stuck", tcphub::protocol::ByeReason::Kicked)
        .unwrap();
    // It cannot take its bye; after the grace period it is closed anyway.
    events
        .until(|event| matches!(event.kind, EventKind::Disconnected { .. }))
        .await;
    assert_eq!(hub.registry.len(), 1);
    fast.ping().await;
}

#[tokio::test]
async fn oversize_frames_and_shutdown_say_bye_over_tls() {
    let certificate = Certificate::generate();
    let hub = TestHub::start(Config {
        max_frame_bytes: 1024,
        ..certificate.config()
    })
    .await;
    let mut oversize = TlsClient::connect(hub.tcp_addr, &certificate).await;
    oversize
        .writer
        .write_all(format!("{{\"type\":\"info\",\"message\":\"{}", "x".repeat(2048)).as_bytes())
        .await
        .unwrap();
    oversize.writer.flush().await.unwrap();
    oversize.expect_bye("frame_too_large").await;

    let mut client = TlsClient::connect(hub.tcp_addr, &certificate).await;
    client.sync("last").await;
    hub.begin_shutdown();
    client.expect_bye("shutdown").await;
    hub.stop().await;
}

#[tokio::test]
async fn plaintext_gets_nowhere_on_tls_listeners() {
    let certificate = Certificate::generate();
    let hub = TestHub::start(certificate.config()).await;
    let mut sentinel = TlsClient::connect(hub.tcp_addr, &certificate).await;
    sentinel.sync("sentinel").await;

    // The hub answers with a TLS alert at most, never a frame, and hangs up.
    let answer = timeout(PATIENCE, async {
        let mut stream = TcpStream::connect(hub.tcp_addr).await.unwrap();
        stream
            .write_all(b"{\"type\":\"sync\",\"clientName\":\"plain\"}\n{\"type\":\"ping\"}\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        // A reset is as good an ending as a close.
        let _ = stream.read_to_end(&mut answer).await;
        answer
    })
    .await
    .expect("the hub kept a plaintext connection open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains("welcome") && !answer.contains("pong"),
        "{answer}"
    );
    assert_eq!(hub.registry.len(), 1, "only the sentinel");

    let plain_http = reqwest::Client::new()
        .get(format!("http://{}/healthz", hub.http_addr))
        .send()
        .await;
    assert!(
        plain_http.map_or(true, |response| !response.status().is_success()),
        "the API answered plaintext HTTP"
    );
    let https = certificate.https();
    let url = format!("https://localhost:{}/healthz", hub.http_addr.port());
    assert_eq!(
        https_json(&https, reqwest::Method::GET, url, None).await.0,
        200
    );
    sentinel.ping().await;
}

#[tokio::test]
async fn a_missing_or_broken_certificate_stops_the_hub_from_starting() {
    let certificate = Certificate::generate();
    std::fs::write(&certificate.key_file, "not a key").unwrap();
    let hub = tcphub::Hub::new(certificate.config());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let outcome = timeout(PATIENCE, hub.serve(tcp, http, shutdown))
        .await
        .expect("serve returned no error");
    let err = outcome.expect_err("started with a broken key");
    assert!(err.to_string().contains("key.pem"), "{err}");
}

/// Runs `tcphub healthcheck` against `http_addr`, over TLS when `tls_cert` is given.
async fn healthcheck(http_addr: SocketAddr, tls_cert: Option<&Path>) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tcphub"));
    command
        .args(["healthcheck", "--http-addr", &http_addr.to_string()])
        .env_remove("TCPHUB_HTTP_ADDR")
        .env_remove("TCPHUB_TLS_CERT");
    if let Some(cert) = tls_cert {
        command.arg("--tls-cert").arg(cert);
    }
    timeout(PATIENCE, command.output())
        .await
        .expect("the health check hung")
        .unwrap()
}

#[tokio::test]
async fn the_healthcheck_asks_over_tls_trusting_exactly_the_hubs_certificate() {
    let certificate = Certificate::generate();
    let hub = TestHub::start(certificate.config()).await;

    let pinned = healthcheck(hub.http_addr, Some(&certificate.cert_file)).await;
    assert!(pinned.status.success(), "{pinned:?}");

    let stranger = Certificate::generate();
    let refused = healthcheck(hub.http_addr, Some(&stranger.cert_file)).await;
    assert!(!refused.status.success(), "another certificate was trusted");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("TLS handshake with"), "{why}");

    let plain = healthcheck(hub.http_addr, None).await;
    assert!(!plain.status.success(), "plain HTTP passed against TLS");
}

#[tokio::test]
async fn the_healthcheck_asks_plain_http_without_a_certificate() {
    let hub = TestHub::start(Config::default()).await;
    let answered = healthcheck(hub.http_addr, None).await;
    assert!(answered.status.success(), "{answered:?}");
}
