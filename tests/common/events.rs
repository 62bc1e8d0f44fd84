//! Test helpers for the event stream and webhooks: a raw server-sent-events
//! reader of `GET /events`, and a real webhook receiver on loopback that
//! records every request and can fail or hold the first ones.
//!
//! Include with `#[path = "common/events.rs"] mod follow;` after `mod common;`.

#![allow(dead_code)] // each test binary uses a different part of these helpers

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::timeout;

use crate::common::{PATIENCE, TestHub};

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `id:` field, if any.
    pub id: Option<u64>,
    /// The `event:` field.
    pub event: String,
    /// The `data:` field, parsed as JSON.
    pub data: Value,
}

/// A follower of `GET /events` over a raw HTTP/1.0 connection, so that the test
/// decides when (and whether) the response body is read.
pub struct Follower {
    reader: BufReader<TcpStream>,
}

impl Follower {
    /// Follows `path` (e.g. `/events?types=client.named`), resuming after
    /// `last_event_id` if given; returns once the hub has answered 200, which
    /// means the subscription is in place.
    pub async fn open(hub: &TestHub, path: &str, last_event_id: Option<u64>) -> Follower {
        let stream = timeout(PATIENCE, TcpStream::connect(hub.http_addr))
            .await
            .expect("connect timed out")
            .expect("connect to the HTTP API");
        Follower::over(stream, hub, path, last_event_id).await
    }

    /// Like [`Follower::open`], over a socket with a receive buffer of `bytes`,
    /// so that a follower that stops reading falls behind quickly.
    pub async fn open_with_small_window(hub: &TestHub, path: &str, bytes: u32) -> Follower {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let stream = timeout(PATIENCE, socket.connect(hub.http_addr))
            .await
            .expect("connect timed out")
            .expect("connect to the HTTP API");
        Follower::over(stream, hub, path, None).await
    }

    async fn over(
        mut stream: TcpStream,
        hub: &TestHub,
        path: &str,
        last_event_id: Option<u64>,
    ) -> Follower {
        let status = request(&mut stream, hub, path, last_event_id).await;
        let mut follower = Follower {
            reader: BufReader::new(stream),
        };
        let head = follower.head().await;
        assert_eq!(status, 200, "GET {path} answered {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{head}"
        );
        follower
    }

    /// `GET path` as a follower would, for requests the hub refuses: the status
    /// and the JSON body.
    pub async fn refused(hub: &TestHub, path: &str, last_event_id: Option<u64>) -> (u16, Value) {
        let mut stream = TcpStream::connect(hub.http_addr).await.unwrap();
        let status = request(&mut stream, hub, path, last_event_id).await;
        let mut follower = Follower {
            reader: BufReader::new(stream),
        };
        follower.head().await;
        let body = follower.rest().await;
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}")),
        )
    }

    /// The next event, skipping comments; fails at EOF or after [`PATIENCE`].
    pub async fn next(&mut self) -> SseEvent {
        timeout(PATIENCE, self.next_or_end())
            .await
            .expect("no event arrived in time")
            .expect("the event stream ended")
    }

    /// The next event, or `None` when the hub ends the stream.
    pub async fn next_or_end(&mut self) -> Option<SseEvent> {
        let (mut id, mut event, mut data) = (None, None, String::new());
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await.expect("read event") == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_empty() {
                    continue; // a comment block, or keep-alive
                }
                let data = serde_json::from_str(&data)
                    .unwrap_or_else(|err| panic!("data {data:?} is not JSON: {err}"));
                let event = event.expect("every event names its type");
                return Some(SseEvent { id, event, data });
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.parse().expect("numeric event id")),
                "event" => event = Some(value.to_owned()),
                "data" => data.push_str(value),
                other => panic!("unexpected SSE field {other:?}"),
            }
        }
    }

    /// Expects the hub to end the stream with no further event.
    pub async fn expect_end(&mut self) {
        let end = timeout(PATIENCE, self.next_or_end())
            .await
            .expect("the stream did not end in time");
        assert_eq!(end, None, "expected the end of the stream");
    }

    async fn head(&mut self) -> String {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = timeout(PATIENCE, self.reader.read_line(&mut line))
                .await
                .expect("no response head in time")
                .expect("read response head");
            assert!(n > 0, "the connection closed inside the response head");
            if line == "\r\n" {
                return head;
            }
            head.push_str(&line);
        }
    }

    async fn rest(&mut self) -> String {
        let mut body = String::new();
        timeout(
            PATIENCE,
            tokio::io::AsyncReadExt::read_to_string(&mut self.reader, &mut body),
        )
        .await
        .expect("no body in time")
        .expect("read body");
        body
    }
}

/// Writes an HTTP/1.0 GET (so the body is not chunked) and reads the status.
async fn request(
    stream: &mut TcpStream,
    hub: &TestHub,
    path: &str,
    last_event_id: Option<u64>,
) -> u16 {
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n", hub.http_addr);
    if let Some(id) = last_event_id {
        request.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    if let Some(token) = &hub.token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut status_line = [0u8; 12];
    timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_exact(stream, &mut status_line),
    )
    .await
    .expect("no answer in time")
    .expect("read status line");
    let status = std::str::from_utf8(&status_line[9..12]).unwrap();
    status.parse().expect("a status code")
}

/// A webhook POST as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The `X-Tcphub-Signature` header, if any.
    pub signature: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The raw body, exactly as signed.
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Delivery {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The `type` of each event in the batch.
    pub fn types(&self) -> Vec<String> {
        self.json()["events"]
            .as_array()
            .expect("an events array")
            .iter()
            .map(|event| event["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// A webhook receiver on 127.0.0.1 that answers each POST with the next
/// scripted status (then 200) and reports every request.
pub struct Receiver {
    /// Where the hub should POST.
    pub url: reqwest::Url,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    gate: Arc<Semaphore>,
}

#[derive(Clone)]
struct ReceiverState {
    script: Arc<Mutex<VecDeque<u16>>>,
    deliveries: mpsc::UnboundedSender<Delivery>,
    gate: Arc<Semaphore>,
}

impl Receiver {
    /// A receiver that answers the first requests with `statuses`, then 200.
    pub async fn start(statuses: &[u16]) -> Receiver {
        Receiver::serve(statuses, Semaphore::MAX_PERMITS).await
    }

    /// A receiver that answers nothing until [`Receiver::open_gate`] is called.
    pub async fn gated() -> Receiver {
        Receiver::serve(&[], 0).await
    }

    async fn serve(statuses: &[u16], permits: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (sender, deliveries) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(permits));
        let state = ReceiverState {
            script: Arc::new(Mutex::new(statuses.iter().copied().collect())),
            deliveries: sender,
            gate: Arc::clone(&gate),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook").parse().unwrap(),
            deliveries,
            gate,
        }
    }

    /// Lets every held and future request through.
    pub fn open_gate(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// The next request the hub made; fails after [`PATIENCE`].
    pub async fn next(&mut self) -> Delivery {
        timeout(PATIENCE, self.deliveries.recv())
            .await
            .expect("no webhook request arrived in time")
            .expect("the receiver stopped")
    }

    /// Gathers requests until their events include every type in `types`, in
    /// order; returns all events seen.
    pub async fn events_until(&mut self, types: &[&str]) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let seen: Vec<&str> = events
                .iter()
                .map(|event: &Value| event["type"].as_str().unwrap())
                .collect();
            let mut wanted = types.iter().peekable();
            for kind in &seen {
                if wanted.peek() == Some(&kind) {
                    wanted.next();
                }
            }
            if wanted.peek().is_none() {
                return events;
            }
            let delivery = self.next().await;
            events.extend(delivery.json()["events"].as_array().unwrap().clone());
        }
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answered = state.script.lock().unwrap().pop_front().unwrap_or(200);
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let delivery = Delivery {
        signature: header("x-tcphub-signature"),
        content_type: header("content-type"),
        body,
        answered,
    };
    let _ = state.deliveries.send(delivery);
    // Reported before the answer, so a test can act while the hub waits for it.
    let _permit = state.gate.acquire().await.unwrap();
    StatusCode::from_u16(answered).unwrap()
}
