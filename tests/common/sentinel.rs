//! Helpers for hostile-input and load tests: a sentinel client that proves the hub
//! still serves everyone else, a deterministic byte generator, and raw HTTP.

#![allow(dead_code)] // each test binary uses a different part of these helpers
use std::net::SocketAddr;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{PATIENCE, TestClient, TestHub};

/// A named client that must keep being served whatever other clients do.
pub struct Sentinel {
    name: String,
    client: TestClient,
    rounds: u64,
}

impl Sentinel {
    /// Connects and registers `name`.
    pub async fn join(hub: &TestHub, name: &str) -> Sentinel {
        Sentinel {
            name: name.to_owned(),
            client: TestClient::synced(hub, name).await,
            rounds: 0,
        }
    }

    /// Proves the hub still serves this client: a ping is answered, and a message
    /// pushed over HTTP arrives with the id the API returned.
    pub async fn assert_served(&mut self, hub: &TestHub) {
        self.rounds += 1;
        self.client.ping().await;
        let message = json!({"sentinel": self.rounds});
        let (status, queued) = hub
            .post(
                &format!("/clients/{}/send", self.name),
                json!({ "message": message }),
            )
            .await;
        assert_eq!(status, 202, "the sentinel could not be reached: {queued}");
        let frame = self.client.recv().await;
        assert_eq!(
            frame,
            json!({"type": "message", "id": queued["id"], "scope": "direct", "message": message})
        );
    }
}

/// A deterministic stream of pseudo-random bytes (xorshift64*), so a failing
/// input can be reproduced from its seed.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends raw bytes as an HTTP request and returns the status code and body of
/// the answer (the request should ask for `Connection: close`).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    exchange(addr, request, false).await
}

/// Like [`raw_http`], but the client closes its side once the request is sent,
/// as a client that gives up in the middle of a body does.
pub async fn raw_http_then_eof(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    exchange(addr, request, true).await
}

async fn exchange(addr: SocketAddr, request: &[u8], eof: bool) -> (u16, String) {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.expect("connect to the API");
        let (mut reader, mut writer) = stream.into_split();
        // Write and read at once: the server may answer (and close) before it has
        // read the whole request, and what it answered is what counts.
        let request = request.to_vec();
        let (answered, wait_for_answer) = tokio::sync::oneshot::channel::<()>();
        let writing = tokio::spawn(async move {
            let _ = writer.write_all(&request).await;
            if eof {
                let _ = writer.shutdown().await;
            }
            // Dropping the write half would close it: keep it until the answer is in.
            let _ = wait_for_answer.await;
        });
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer).await;
        drop(answered);
        writing.await.expect("the writer task");
        answer
    };
    let answer = timeout(PATIENCE, exchange)
        .await
        .expect("no HTTP answer in time");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}
