//! Webhooks against a real HTTP receiver on loopback: signed batches of
//! events, retries of the same batch when the receiver fails, no retry when it
//! refuses, what a webhook that falls behind is told, and the last events of a
//! shutdown.

mod common;
#[path = "common/events.rs"]
mod follow;

use common::{TestClient, TestHub};
use follow::Receiver;
use serde_json::{Value, json};
use tcphub::Config;
use tcphub::webhooks::signature;

const SECRET: &str = "webhook-secret";

async fn hub_posting_to(receiver: &Receiver, event_buffer: usize) -> TestHub {
    TestHub::start(Config {
        webhook_urls: vec![receiver.url.clone()],
        webhook_secret: Some(SECRET.into()),
        event_buffer,
        ..Config::default()
    })
    .await
}

fn ids(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn events_arrive_in_signed_batches_in_order() {
    let mut receiver = Receiver::start(&[]).await;
    let hub = hub_posting_to(&receiver, 10_000).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    client
        .send(&json!({"type": "info", "message": {"temp": 21.5}}))
        .await;
    client.close().await;

    let want = [
        "client.connected",
        "client.named",
        "client.message",
        "client.disconnected",
    ];
    let mut events = Vec::new();
    while events.len() < want.len() {
        let delivery = receiver.next().await;
        assert_eq!(
            delivery.signature.as_deref(),
            Some(signature(SECRET.as_bytes(), &delivery.body).as_str()),
            "the signature is the HMAC-SHA256 of the exact body"
        );
        assert_ne!(
            delivery.signature,
            Some(signature(b"another secret", &delivery.body))
        );
        assert_eq!(delivery.content_type.as_deref(), Some("application/json"));
        let batch = delivery.json();
        assert_eq!(batch["missed"], 0);
        events.extend(batch["events"].as_array().unwrap().clone());
    }
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, want);
    assert_eq!(ids(&events), [1, 2, 3, 4]);
    assert_eq!(events[2]["message"], json!({"temp": 21.5}));
    assert_eq!(events[3]["reason"], "closed");
    assert!(
        events
            .iter()
            .all(|event| event["name"] == "Client-1" || event["type"] == "client.connected")
    );
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_batch_again_until_it_accepts_it() {
    let mut receiver = Receiver::start(&[503, 500]).await;
    let hub = hub_posting_to(&receiver, 10_000).await;
    let registry = hub.registry.clone();
    let client = TestClient::connect(&hub).await;

    let first = receiver.next().await;
    let second = receiver.next().await;
    let third = receiver.next().await;
    assert_eq!(
        [first.answered, second.answered, third.answered],
        [503, 500, 200]
    );
    for retry in [&second, &third] {
        assert_eq!(
            (&retry.body, &retry.signature),
            (&first.body, &first.signature)
        );
    }
    assert_eq!(first.types(), ["client.connected"]);

    // Later events go out after the retried batch, in order.
    client.close().await;
    assert_eq!(receiver.next().await.types(), ["client.disconnected"]);
    hub.stop().await;
    let metrics = registry.metrics().encode();
    for line in [
        "tcphub_webhook_retries_total 2\n",
        "tcphub_webhook_batches_total{outcome=\"delivered\"} 2\n",
    ] {
        assert!(metrics.contains(line), "no {line:?} in {metrics}");
    }
    assert!(!metrics.contains("outcome=\"failed\""), "{metrics}");
}

#[tokio::test]
async fn a_receiver_that_refuses_a_batch_is_not_asked_again() {
    let mut receiver = Receiver::start(&[400]).await;
    let hub = hub_posting_to(&receiver, 10_000).await;
    let registry = hub.registry.clone();
    let client = TestClient::connect(&hub).await;
    let refused = receiver.next().await;
    assert_eq!(
        (refused.answered, refused.types()),
        (400, vec!["client.connected".to_owned()])
    );
    client.close().await;
    // The next request carries the next event, not the refused batch again.
    assert_eq!(receiver.next().await.types(), ["client.disconnected"]);
    hub.stop().await;
    let metrics = registry.metrics().encode();
    for line in [
        "tcphub_webhook_retries_total 0\n",
        "tcphub_webhook_batches_total{outcome=\"failed\"} 1\n",
        "tcphub_webhook_batches_total{outcome=\"delivered\"} 1\n",
    ] {
        assert!(metrics.contains(line), "no {line:?} in {metrics}");
    }
}

#[tokio::test]
async fn a_webhook_that_falls_behind_drops_the_oldest_events_and_says_so() {
    let mut receiver = Receiver::gated().await;
    let hub = hub_posting_to(&receiver, 4).await;
    let registry = hub.registry.clone();
    let mut first = TestClient::connect(&hub).await;
    let held = receiver.next().await; // the hub now waits for this answer
    assert_eq!(held.types(), ["client.connected"]);

    // Meanwhile the hub goes on: 20 more events, far beyond the buffer of 4.
    for n in 0..20 {
        first.send(&json!({"type": "info", "message": n})).await;
    }
    first.ping().await;
    receiver.open_gate();

    let next = receiver.next().await.json();
    let events = next["events"].as_array().unwrap();
    assert_eq!(next["missed"], 16, "{next}");
    assert_eq!(ids(events), [18, 19, 20, 21], "the newest four remain");
    assert_eq!(events[3]["message"], 19);
    hub.stop().await;
    let metrics = registry.metrics().encode();
    assert!(
        metrics.contains("tcphub_webhook_events_dropped_total 16\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_disconnections_of_a_shutdown_are_delivered_before_the_hub_exits() {
    let mut receiver = Receiver::start(&[]).await;
    let hub = hub_posting_to(&receiver, 10_000).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    hub.begin_shutdown();
    client.expect_bye("shutdown").await;
    hub.stop().await;
    let events = receiver
        .events_until(&["client.connected", "client.named", "client.disconnected"])
        .await;
    let last = events.last().unwrap();
    assert_eq!(
        (&last["name"], &last["reason"]),
        (&json!("Client-1"), &json!("shutdown"))
    );
}
