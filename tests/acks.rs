//! Delivery acknowledgements: `POST /clients/{name}/send?wait=ack` answers 200
//! once the client acks, 504 when it does not in time or disconnects first,
//! and no wait outlives its request. Real sockets and real HTTP throughout.

mod common;
#[path = "common/events.rs"]
mod follow;

use std::time::{Duration, Instant};

use common::{PATIENCE, TestClient, TestHub};
use serde_json::{Value, json};
use tcphub::Config;
use tcphub::events::EventKind;
use tokio::task::JoinHandle;

fn ack_timeout(detail: &str) -> Value {
    json!({
        "type": "urn:tcphub:problem:ack_timeout",
        "title": "Not acknowledged in time",
        "status": 504,
        "detail": detail,
        "code": "ack_timeout",
    })
}

/// Starts `POST path` with a JSON message in the background.
fn post_in_background(hub: &TestHub, path: &str, message: Value) -> JoinHandle<(u16, Value)> {
    let request = hub
        .request(reqwest::Method::POST, path)
        .json(&json!({"message": message}));
    tokio::spawn(async move {
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

async fn answer(pending: JoinHandle<(u16, Value)>) -> (u16, Value) {
    tokio::time::timeout(PATIENCE, pending)
        .await
        .expect("no HTTP answer in time")
        .expect("the request task failed")
}

#[tokio::test]
async fn a_send_that_waits_answers_once_the_client_acks() {
    let hub = TestHub::start(Config::default()).await;
    let mut events = hub.events();
    let mut client = TestClient::synced(&hub, "Client-1").await;
    let pending = post_in_background(
        &hub,
        "/clients/Client-1/send?wait=ack",
        json!({"led": "on"}),
    );
    let pushed = client.recv().await;
    assert_eq!(
        pushed,
        json!({"type": "message", "id": pushed["id"], "scope": "direct", "message": {"led": "on"}})
    );
    client
        .send(&json!({"type": "ack", "id": pushed["id"]}))
        .await;
    assert_eq!(
        answer(pending).await,
        (200, json!({"id": pushed["id"], "acked": true}))
    );
    let acked = events
        .until(|event| matches!(event.kind, EventKind::Acked { .. }))
        .await;
    assert_eq!(
        (acked.name.as_deref(), &acked.kind),
        (
            Some("Client-1"),
            &EventKind::Acked {
                message_id: pushed["id"].as_str().unwrap().to_owned()
            }
        )
    );
    assert_eq!(hub.registry.acks_waiting(), 0);
}

#[tokio::test]
async fn a_send_nobody_acks_times_out_with_504_and_leaves_nothing_behind() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    let started = Instant::now();
    let pending = post_in_background(
        &hub,
        "/clients/Client-1/send?wait=ack&timeout=300",
        json!("ack me"),
    );
    let pushed = client.recv().await; // delivered, but the client stays silent
    let (status, body) = answer(pending).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let id = pushed["id"].as_str().unwrap();
    let detail = format!("\"Client-1\" did not acknowledge message {id} within 300 ms");
    assert_eq!((status, body), (504, ack_timeout(&detail)));
    assert_eq!(hub.registry.acks_waiting(), 0);

    // A late ack is still an ack (an event and a count), just nobody's answer.
    let mut events = hub.events();
    client.send(&json!({"type": "ack", "id": id})).await;
    let late = events
        .until(|event| matches!(event.kind, EventKind::Acked { .. }))
        .await;
    assert_eq!(
        late.kind,
        EventKind::Acked {
            message_id: id.to_owned()
        }
    );
    let metrics = hub.metrics().await;
    for line in [
        "tcphub_ack_waits_total{outcome=\"timeout\"} 1\n",
        "tcphub_acks_total 1\n",
    ] {
        assert!(metrics.contains(line), "no {line:?} in {metrics}");
    }
}

#[tokio::test]
async fn a_client_that_disconnects_fails_the_wait_at_once() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    // A minute of patience: only the disconnect can end this wait within PATIENCE.
    let pending = post_in_background(
        &hub,
        "/clients/Client-1/send?wait=ack&timeout=60000",
        json!("ack me"),
    );
    let pushed = client.recv().await;
    client.close().await;
    let id = pushed["id"].as_str().unwrap();
    let detail = format!("\"Client-1\" disconnected before acknowledging message {id}");
    assert_eq!(answer(pending).await, (504, ack_timeout(&detail)));
    assert_eq!(hub.registry.acks_waiting(), 0);
}

#[tokio::test]
async fn a_wait_for_a_client_that_is_kicked_ends_with_504() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    let pending = post_in_background(
        &hub,
        "/clients/Client-1/send?wait=ack&timeout=60000",
        json!("ack me"),
    );
    let pushed = client.recv().await;
    let (status, _) = hub.delete("/clients/Client-1").await;
    assert_eq!(status, 204);
    client.expect_bye("kicked").await;
    let (status, body) = answer(pending).await;
    assert_eq!(
        (status, &body["detail"]),
        (
            504,
            &json!(format!(
                "\"Client-1\" disconnected before acknowledging message {}",
                pushed["id"].as_str().unwrap()
            ))
        )
    );
    assert_eq!(hub.registry.acks_waiting(), 0);
}

#[tokio::test]
async fn only_the_addressed_client_can_ack_its_message() {
    let hub = TestHub::start(Config::default()).await;
    let mut addressed = TestClient::synced(&hub, "Client-1").await;
    let mut other = TestClient::synced(&hub, "Client-2").await;
    let pending = post_in_background(
        &hub,
        "/clients/Client-1/send?wait=ack&timeout=500",
        json!("for Client-1"),
    );
    let pushed = addressed.recv().await;
    other
        .send(&json!({"type": "ack", "id": pushed["id"]}))
        .await;
    other.ping().await;
    let (status, body) = answer(pending).await;
    assert_eq!((status, &body["code"]), (504, &json!("ack_timeout")));
}

#[tokio::test]
async fn an_abandoned_request_withdraws_its_wait() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    let pending = post_in_background(
        &hub,
        "/clients/Client-1/send?wait=ack&timeout=60000",
        json!("ack me"),
    );
    client.recv().await;
    assert_eq!(hub.registry.acks_waiting(), 1);
    pending.abort(); // the HTTP caller hangs up
    let _ = pending.await;
    // The hub notices the closed connection and drops the handler; a sentinel
    // request on a fresh connection cannot prove that, so wait for the count.
    let deadline = Instant::now() + PATIENCE;
    while hub.registry.acks_waiting() != 0 {
        assert!(Instant::now() < deadline, "the wait outlived its request");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn acks_for_ids_the_hub_never_issued_are_counted_and_ignored() {
    let hub = TestHub::start(Config::default()).await;
    let mut events = hub.events();
    let mut client = TestClient::synced(&hub, "Client-1").await;
    for bogus in ["m999999", "nonsense", "m0"] {
        client.send(&json!({"type": "ack", "id": bogus})).await;
    }
    let (status, sent) = hub
        .post("/clients/Client-1/send", json!({"message": "real"}))
        .await;
    assert_eq!(status, 202);
    client.recv().await;
    client.send(&json!({"type": "ack", "id": sent["id"]})).await;
    // The first ack event is the real one: the bogus acks published nothing.
    let first = events
        .until(|event| matches!(event.kind, EventKind::Acked { .. }))
        .await;
    assert_eq!(
        first.kind,
        EventKind::Acked {
            message_id: sent["id"].as_str().unwrap().to_owned()
        }
    );
    client.ping().await; // the connection carries on as before
    let metrics = hub.metrics().await;
    for line in ["tcphub_acks_unknown_total 3\n", "tcphub_acks_total 1\n"] {
        assert!(metrics.contains(line), "no {line:?} in {metrics}");
    }
}

#[tokio::test]
async fn wait_and_timeout_are_checked() {
    let hub = TestHub::start(Config::default()).await;
    let _client = TestClient::synced(&hub, "Client-1").await;
    for (query, detail) in [
        (
            "wait=receipt",
            "Failed to deserialize query string: wait: unknown variant `receipt`, expected `ack`",
        ),
        ("timeout=100", "timeout applies only with wait=ack"),
        (
            "wait=ack&timeout=0",
            "timeout must be 1 to 60000 milliseconds",
        ),
        (
            "wait=ack&timeout=60001",
            "timeout must be 1 to 60000 milliseconds",
        ),
    ] {
        let (status, body) = hub
            .post(
                &format!("/clients/Client-1/send?{query}"),
                json!({"message": 1}),
            )
            .await;
        assert_eq!(
            (status, &body["code"], &body["detail"]),
            (400, &json!("invalid_query"), &json!(detail)),
            "{query}"
        );
    }
    let (status, body) = hub
        .post("/clients/Client-9/send?wait=ack", json!({"message": 1}))
        .await;
    assert_eq!((status, &body["code"]), (404, &json!("client_not_found")));
    assert_eq!(hub.registry.acks_waiting(), 0);
}

#[tokio::test]
async fn clients_that_never_ack_keep_getting_plain_sends() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    let (status, body) = hub
        .post(
            "/clients/Client-1/send",
            json!({"message": "no ack needed"}),
        )
        .await;
    assert_eq!(
        (status, body.clone()),
        (202, json!({"id": body["id"], "queued": 1}))
    );
    assert_eq!(client.recv().await["message"], "no ack needed");
    assert_eq!(hub.registry.acks_waiting(), 0);
}
