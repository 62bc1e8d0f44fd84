//! Limits on what TCP clients send in: a client past its rate is read no
//! further until the rate allows (and loses nothing), and unfinished frames are
//! capped across all clients. Each test proves that other clients are served.

mod common;

use std::time::Duration;

use common::{PATIENCE, TestClient, TestHub};
use serde_json::json;
use tcphub::Config;
use tcphub::Registry;
use tcphub::throttle::InboundRate;
use tokio::time::Instant;

/// Yields until `holds` does, failing after [`PATIENCE`]: for state the hub
/// changes without an event (metrics).
async fn until(registry: &Registry, what: &str, holds: impl Fn(&Registry) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !holds(registry) {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_flooder_is_throttled_loses_nothing_and_others_are_served_meanwhile() {
    let hub = TestHub::start(Config {
        client_rate: InboundRate {
            frames_per_sec: 100,
            bytes_per_sec: 0,
            burst: Duration::from_secs(1),
        },
        ..Config::default()
    })
    .await;
    let mut flooder = TestClient::synced(&hub, "flooder").await;
    // Four seconds' worth of the rate at once, then a ping.
    let frames = 400;
    let mut flood = Vec::new();
    for n in 0..frames {
        flood.extend_from_slice(format!("{{\"type\":\"info\",\"message\":{n}}}\n").as_bytes());
    }
    flood.extend_from_slice(b"{\"type\":\"ping\"}\n");
    flooder.send_raw(&flood).await;
    until(&hub.registry, "the flooder is throttled", |registry| {
        registry.metrics().inbound_throttled.get() > 0
    })
    .await;

    // While the flooder waits for its rate, a newcomer is welcomed and reached.
    let mut polite = TestClient::synced(&hub, "polite").await;
    let (status, queued) = hub
        .post("/clients/polite/send", json!({"message": "hello"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        polite.recv().await,
        json!({"type": "message", "id": queued["id"], "scope": "direct", "message": "hello"})
    );

    // Throttling is backpressure: every frame is handled, the ping last.
    assert_eq!(flooder.recv().await, json!({"type": "pong"}));
    let (status, listed) = hub.get("/clients/flooder").await;
    assert_eq!(status, 200);
    assert_eq!(listed["framesIn"], 1 + frames + 1);
    let sync = json!({"type": "sync", "clientName": "flooder"}).to_string();
    let sent = sync.len() + 1 + flood.len();
    assert_eq!(listed["bytesIn"].as_u64(), Some(sent as u64));
    let metrics = hub.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("tcphub_inbound_throttled_total ")
                && line != "tcphub_inbound_throttled_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_a_rate_a_client_is_never_throttled() {
    let hub = TestHub::start(Config {
        client_rate: InboundRate {
            frames_per_sec: 0,
            bytes_per_sec: 0,
            burst: Duration::ZERO,
        },
        ..Config::default()
    })
    .await;
    let mut client = TestClient::synced(&hub, "busy").await;
    let flood = "{\"type\":\"info\",\"message\":0}\n".repeat(5000);
    client.send_raw(flood.as_bytes()).await;
    client.ping().await;
    assert_eq!(hub.registry.metrics().inbound_throttled.get(), 0);
}

#[tokio::test]
async fn past_the_pending_cap_the_growing_frame_is_refused_and_a_small_one_is_not() {
    let hub = TestHub::start(Config {
        max_pending_bytes: 4096,
        ..Config::default()
    })
    .await;
    let pending = |registry: &Registry| registry.metrics().inbound_pending_bytes.get();
    let mut small = TestClient::connect(&hub).await;
    let small_head = b"{\"type\":\"sync\",\"clientName\":\"sm";
    small.send_raw(small_head).await;
    until(&hub.registry, "the small frame is held", |registry| {
        pending(registry) == small_head.len() as i64
    })
    .await;

    let mut large = TestClient::connect(&hub).await;
    large.send_raw(b"{\"type\":\"info\",\"message\":\"").await;
    large.send_raw(&[b'x'; 8192]).await;
    large.expect_bye("frame_too_large").await;
    assert_eq!(pending(&hub.registry), small_head.len() as i64);
    assert_eq!(hub.registry.metrics().inbound_pending_refused.get(), 1);

    small.send_raw(b"all\"}\n").await;
    let welcome = small.recv().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["clientName"], "small");
    assert_eq!(pending(&hub.registry), 0);
    let metrics = hub.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|line| line == "tcphub_inbound_pending_refused_total 1"),
        "{metrics}"
    );
}
