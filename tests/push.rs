//! Pushes reach the right sockets and only those: direct sends, broadcasts,
//! kicks, and many clients at once.

mod common;

use common::{TestClient, TestHub};
use futures_util::future::join_all;
use serde_json::json;
use tcphub::Config;
use tcphub::events::EventKind;

#[tokio::test]
async fn send_reaches_only_the_named_client() {
    let hub = TestHub::start(Config::default()).await;
    let mut one = TestClient::synced(&hub, "Client-1").await;
    let mut two = TestClient::synced(&hub, "Client-2").await;
    let (status, body) = hub
        .post("/clients/Client-1/send", json!({"message": {"led": "on"}}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(body, json!({"id": body["id"], "queued": 1}));
    let want =
        json!({"type": "message", "id": body["id"], "scope": "direct", "message": {"led": "on"}});
    assert_eq!(one.recv().await, want);
    hub.post("/clients/Client-2/send", json!({"message": "marker"}))
        .await;
    assert_eq!(two.recv().await["message"], "marker"); // so Client-1's message never reached Client-2
}

#[tokio::test]
async fn a_text_body_is_sent_as_a_string() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "t").await;
    let (status, body) = hub
        .post_raw(
            "/clients/t/send",
            "text/plain; charset=utf-8",
            "plain words",
        )
        .await;
    assert_eq!(status, 202);
    let want =
        json!({"type": "message", "id": body["id"], "scope": "direct", "message": "plain words"});
    assert_eq!(client.recv().await, want);
}

#[tokio::test]
async fn broadcast_reaches_every_client_once() {
    let hub = TestHub::start(Config::default()).await;
    let mut named = TestClient::synced(&hub, "named").await;
    let mut unnamed = TestClient::connect(&hub).await;
    unnamed.ping().await;
    let (status, body) = hub.post("/broadcast", json!({"message": [1, 2, 3]})).await;
    assert_eq!(status, 202);
    assert_eq!(
        body,
        json!({"id": body["id"], "recipients": 2, "queued": 2, "dropped": 0})
    );
    let want =
        json!({"type": "message", "id": body["id"], "scope": "broadcast", "message": [1, 2, 3]});
    assert_eq!(named.recv().await, want);
    assert_eq!(unnamed.recv().await, want);
    let (_, second) = hub.post("/broadcast", json!({"message": "next"})).await;
    assert_eq!(
        named.recv().await["id"],
        second["id"],
        "no duplicate of the first broadcast"
    );
}

#[tokio::test]
async fn kick_sends_bye_kicked_then_closes() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "victim").await;
    let mut events = hub.events();
    assert_eq!(hub.delete("/clients/victim").await.0, 204);
    client.expect_bye("kicked").await;
    let event = events
        .until(|e| matches!(e.kind, EventKind::Disconnected { .. }))
        .await;
    assert_eq!(event.kind, EventKind::Disconnected { reason: "kicked" });
    assert_eq!(hub.get("/clients/victim").await.0, 404);
    assert_eq!(hub.delete("/clients/victim").await.0, 404);
}

#[tokio::test]
async fn queued_messages_are_delivered_before_the_kick() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "k").await;
    let (_, first) = hub.post("/clients/k/send", json!({"message": 1})).await;
    assert_eq!(hub.delete("/clients/k").await.0, 204);
    assert_eq!(client.recv().await["id"], first["id"]);
    client.expect_bye("kicked").await;
}

#[tokio::test]
async fn five_hundred_clients_each_get_their_own_message_and_every_broadcast() {
    const CLIENTS: usize = 500;
    const BROADCASTS: usize = 3;
    let hub = TestHub::start(Config::default()).await;
    // Connect in waves, as real fleets reconnect: a burst of 500 at once can
    // overflow the listen backlog, which is the kernel's business, not the hub's.
    let mut clients = Vec::new();
    for wave in (0..CLIENTS).collect::<Vec<_>>().chunks(50) {
        let synced = wave.iter().map(|i| {
            let hub = &hub;
            async move { TestClient::synced(hub, &format!("c-{i}")).await }
        });
        clients.extend(join_all(synced).await);
    }
    assert_eq!(hub.get("/clients?limit=0").await.1["total"], CLIENTS);

    let mut direct_ids = Vec::new();
    for i in 0..CLIENTS {
        let (status, body) = hub
            .post(&format!("/clients/c-{i}/send"), json!({"message": i}))
            .await;
        assert_eq!(status, 202);
        direct_ids.push(body["id"].clone());
    }
    let mut broadcast_ids = Vec::new();
    for round in 0..BROADCASTS {
        let (status, body) = hub
            .post("/broadcast", json!({"message": {"round": round}}))
            .await;
        assert_eq!(status, 202);
        assert_eq!(body["recipients"], CLIENTS);
        assert_eq!(body["queued"], CLIENTS);
        broadcast_ids.push(body["id"].clone());
    }

    let mut events = hub.events();
    let checks = clients.into_iter().enumerate().map(|(i, mut client)| {
        let (direct, broadcasts) = (direct_ids[i].clone(), broadcast_ids.clone());
        async move {
            let frame = client.recv().await;
            assert_eq!(frame, json!({"type": "message", "id": direct, "scope": "direct", "message": i}));
            for (round, id) in broadcasts.iter().enumerate() {
                let frame = client.recv().await;
                let want = json!({"type": "message", "id": id, "scope": "broadcast", "message": {"round": round}});
                assert_eq!(frame, want);
            }
            client.close().await;
        }
    });
    join_all(checks).await;
    events.disconnections(CLIENTS).await;
    assert!(hub.registry.is_empty());
    assert_eq!(
        hub.get("/clients").await.1,
        json!({"total": 0, "clients": [], "next": null})
    );
}

#[tokio::test]
async fn a_name_claimed_by_many_connections_at_once_ends_with_one_holder() {
    const CLAIMANTS: usize = 50;
    let hub = TestHub::start(Config::default()).await;
    let mut clients = join_all((0..CLAIMANTS).map(|_| TestClient::connect(&hub))).await;
    let claim = json!({"type": "sync", "clientName": "contested"});
    join_all(clients.iter_mut().map(|client| client.send(&claim))).await;
    // Every claim is answered with a welcome, so after these the race is over.
    for client in &mut clients {
        assert_eq!(client.recv().await["type"], "welcome");
    }
    let (status, holder) = hub.get("/clients/contested").await;
    assert_eq!(status, 200);
    hub.post("/clients/contested/send", json!({"message": "you hold it"}))
        .await;
    let outcomes = join_all(clients.iter_mut().map(|client| client.recv_line())).await;
    let replaced = outcomes
        .iter()
        .filter(|line| line.as_deref() == Some(r#"{"type":"bye","reason":"replaced"}"#))
        .count();
    let holders = outcomes
        .iter()
        .filter(|line| {
            line.as_deref()
                .is_some_and(|line| line.contains("you hold it"))
        })
        .count();
    assert_eq!((replaced, holders), (CLAIMANTS - 1, 1), "{outcomes:?}");
    let (_, list) = hub.get("/clients?named=true").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["clients"][0]["id"], holder["id"]);
}
