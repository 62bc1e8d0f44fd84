//! Limits and lifecycle: shutdown drains, the client cap, slow consumers, idle clients.

mod common;

use std::time::Duration;

use common::{TestClient, TestHub};
use serde_json::json;
use tcphub::Config;
use tcphub::config::SlowConsumer;

#[tokio::test]
async fn shutdown_flushes_queued_messages_then_says_bye_to_everyone() {
    let hub = TestHub::start(Config::default()).await;
    let mut one = TestClient::synced(&hub, "one").await;
    let mut two = TestClient::connect(&hub).await;
    two.ping().await;
    let (_, sent) = hub
        .post("/clients/one/send", json!({"message": "last words"}))
        .await;
    hub.begin_shutdown();
    assert_eq!(one.recv().await["id"], sent["id"]);
    one.expect_bye("shutdown").await;
    two.expect_bye("shutdown").await;
    hub.stop().await;
}

#[tokio::test]
async fn readiness_turns_503_while_draining() {
    let hub = TestHub::start(Config::default()).await;
    // A client that never reads keeps the drain going for the grace period.
    let stuck = TestClient::synced(&hub, "stuck").await;
    let big = "x".repeat(60_000);
    while hub
        .registry
        .get("stuck")
        .is_some_and(|client| client.queue_len() == 0)
    {
        hub.post("/clients/stuck/send", json!({"message": big}))
            .await;
    }
    hub.begin_shutdown();
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    let (status, body) = loop {
        let (status, body) = hub.get("/readyz").await;
        if status != 200 || tokio::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::task::yield_now().await;
    };
    assert_eq!((status, body["code"].clone()), (503, json!("draining")));
    drop(stuck);
}

#[tokio::test]
async fn past_max_clients_a_new_connection_gets_bye_server_full() {
    let hub = TestHub::start(Config {
        max_clients: 2,
        ..Config::default()
    })
    .await;
    let mut first = TestClient::synced(&hub, "first").await;
    let _second = TestClient::synced(&hub, "second").await;
    let mut third = TestClient::connect(&hub).await;
    third.expect_bye("server_full").await;
    assert_eq!(hub.get("/clients").await.1["total"], 2);
    first.ping().await;
    let mut events = hub.events();
    first.close().await;
    events.disconnections(1).await;
    let mut fourth = TestClient::connect(&hub).await;
    fourth.sync("fourth").await;
}

/// Fills `name`'s socket buffers and queue by broadcasting big messages until one is dropped.
async fn broadcast_until_dropped(hub: &TestHub) -> serde_json::Value {
    let big = "d".repeat(60_000);
    for _ in 0..10_000 {
        let (status, body) = hub.post("/broadcast", json!({"message": big})).await;
        assert_eq!(status, 202);
        if body["dropped"] != 0 {
            return body;
        }
    }
    panic!("no broadcast was ever dropped");
}

#[tokio::test]
async fn a_slow_consumer_loses_messages_and_others_do_not() {
    let hub = TestHub::start(Config {
        queue_capacity: 4,
        ..Config::default()
    })
    .await;
    let _slow = TestClient::synced(&hub, "slow").await;
    let report = broadcast_until_dropped(&hub).await;
    assert_eq!(
        (report["recipients"].clone(), report["dropped"].clone()),
        (json!(1), json!(1))
    );
    let (_, slow) = hub.get("/clients/slow").await;
    assert_eq!(
        (slow["dropped"].clone(), slow["queueLen"].clone()),
        (json!(1), json!(4))
    );
    let mut fast = TestClient::synced(&hub, "fast").await;
    let (_, body) = hub.post("/broadcast", json!({"message": "small"})).await;
    assert_eq!(body["recipients"], 2);
    assert_eq!(body["dropped"], 1);
    assert_eq!(fast.recv().await["id"], body["id"]);
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_under_the_disconnect_policy() {
    let config = Config {
        queue_capacity: 4,
        slow_consumer: SlowConsumer::Disconnect,
        ..Config::default()
    };
    let hub = TestHub::start(config).await;
    let mut slow = TestClient::synced(&hub, "slow").await;
    broadcast_until_dropped(&hub).await;
    assert_eq!(
        hub.get("/clients/slow").await.0,
        404,
        "removed from the registry at once"
    );
    // It still gets everything that was queued, then the bye.
    loop {
        let frame = slow.recv().await;
        if frame["type"] == "bye" {
            assert_eq!(frame, json!({"type": "bye", "reason": "slow_consumer"}));
            break;
        }
        assert_eq!(frame["type"], "message");
    }
    slow.expect_eof().await;
}

#[tokio::test]
async fn a_silent_client_gets_bye_idle_timeout_and_a_talking_one_stays() {
    let config = Config {
        idle_timeout: Some(Duration::from_secs(1)),
        ..Config::default()
    };
    let hub = TestHub::start(config).await;
    let mut silent = TestClient::synced(&hub, "silent").await;
    let mut talker = TestClient::synced(&hub, "talker").await;
    let keep_talking = async {
        loop {
            talker.ping().await;
            tokio::time::sleep(Duration::from_millis(200)).await; // the talker's pace, not a sync point
        }
    };
    tokio::select! {
        () = silent.expect_bye("idle_timeout") => {}
        () = keep_talking => unreachable!(),
    }
    assert_eq!(hub.get("/clients/talker").await.0, 200);
}
