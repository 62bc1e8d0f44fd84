//! `POST /send` over real sockets: per-recipient results in request order,
//! one message id per item, duplicates, storing with `ttl`, limits and
//! malformed items.

mod common;

use common::{TestClient, TestHub};
use serde_json::json;
use tcphub::Config;

#[tokio::test]
async fn each_recipient_gets_its_items_message_and_a_result_in_request_order() {
    let hub = TestHub::start(Config::default()).await;
    let mut one = TestClient::synced(&hub, "m1").await;
    let mut two = TestClient::synced(&hub, "m2").await;
    let mut three = TestClient::synced(&hub, "m3").await;
    let (status, body) = hub
        .post(
            "/send",
            json!({"messages": [
                {"to": "m1", "message": {"read": 1}},
                {"to": ["m2", "ghost", "m3", "m2"], "message": "all", "ttl": 30},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let first = body["results"][0]["id"].clone();
    let second = body["results"][1]["id"].clone();
    let stored = body["results"][2]["id"].clone();
    assert_ne!(first, second);
    assert_ne!(stored, second, "a stored copy has its own id");
    assert_eq!(
        body,
        json!({
            "queued": 4, "stored": 1, "notFound": 0, "backlogged": 0, "mailboxFull": 0,
            "results": [
                {"to": "m1", "id": first, "status": "queued"},
                {"to": "m2", "id": second, "status": "queued"},
                {"to": "ghost", "id": stored, "status": "stored"},
                {"to": "m3", "id": second, "status": "queued"},
                {"to": "m2", "id": second, "status": "queued"},
            ]
        })
    );
    assert_eq!(
        one.recv().await,
        json!({"type": "message", "id": first, "scope": "direct", "message": {"read": 1}})
    );
    let want = json!({"type": "message", "id": second, "scope": "direct", "message": "all"});
    assert_eq!(three.recv().await, want);
    // Named twice in one item, delivered once.
    assert_eq!(two.recv().await, want);
    hub.expect_marker_next(&mut two, "m2").await;

    let metrics = hub.metrics().await;
    for line in [
        r#"tcphub_bulk_recipients_total{status="queued"} 4"#,
        r#"tcphub_bulk_recipients_total{status="stored"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn an_empty_list_sends_nothing() {
    let hub = TestHub::start(Config::default()).await;
    let (status, body) = hub.post("/send", json!({"messages": []})).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"queued": 0, "stored": 0, "notFound": 0, "backlogged": 0, "mailboxFull": 0, "results": []})
        )
    );
}

#[tokio::test]
async fn a_full_queue_is_reported_backlogged() {
    let hub = TestHub::start(Config {
        queue_capacity: 1,
        ..Config::default()
    })
    .await;
    // A client registered without a socket never drains its queue.
    let tcphub::registry::Admission::Admitted(stuck) =
        hub.registry.connect("127.0.0.1:1".parse().unwrap(), None)
    else {
        panic!("not admitted");
    };
    hub.registry.sync(stuck.client(), "stuck").unwrap();
    let (status, body) = hub
        .post(
            "/send",
            json!({"messages": [
                {"to": "stuck", "message": 1},
                {"to": "stuck", "message": 2},
            ]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["queued"].clone(), body["backlogged"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(body["results"][1]["status"], "backlogged");
}

#[tokio::test]
async fn more_recipients_than_allowed_is_413_and_sends_nothing() {
    let hub = TestHub::start(Config {
        max_bulk_recipients: 3,
        ..Config::default()
    })
    .await;
    let mut client = TestClient::synced(&hub, "a").await;
    let (status, problem) = hub
        .post(
            "/send",
            json!({"messages": [
                {"to": ["a", "b"], "message": 1},
                {"to": ["a", "b"], "message": 2},
            ]}),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(problem["code"], "too_many_recipients");
    hub.expect_marker_next(&mut client, "a").await;
    let (status, _) = hub
        .post(
            "/send",
            json!({"messages": [{"to": ["a", "b", "c"], "message": 1}]}),
        )
        .await;
    assert_eq!(status, 200, "exactly the limit is allowed");
}

#[tokio::test]
async fn a_malformed_item_is_400_naming_its_index_and_sends_nothing() {
    let hub = TestHub::start(Config {
        max_message_bytes: 16,
        ..Config::default()
    })
    .await;
    let mut client = TestClient::synced(&hub, "a").await;
    let good = json!({"to": "a", "message": 1});
    for bad in [
        json!({"message": 1}),
        json!({"to": 7, "message": 1}),
        json!({"to": [], "message": 1}),
        json!({"to": ["a", 1], "message": 1}),
        json!({"to": "a"}),
        json!({"to": "a", "message": 1, "ttl": "soon"}),
        json!({"to": "a", "message": 1, "extra": true}),
        json!(["a", 1]),
    ] {
        let (status, problem) = hub.post("/send", json!({"messages": [good, bad]})).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(problem["code"], "invalid_body", "{bad}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.starts_with("messages[1]: "), "{bad}: {detail}");
    }
    let (status, problem) = hub
        .post(
            "/send",
            json!({"messages": [good, {"to": "a", "message": "x".repeat(20)}]}),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(
        problem["detail"],
        "messages[1]: the message is larger than 16 bytes"
    );
    assert_eq!(problem["code"], "message_too_large");
    for body in [
        json!({}),
        json!({"messages": {}}),
        json!([]),
        json!({"messages": [], "x": 1}),
    ] {
        let (status, problem) = hub.post("/send", body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(problem["code"], "invalid_body", "{body}");
    }
    let (status, problem) = hub.post_raw("/send", "text/plain", "hi").await;
    assert_eq!(
        (status, problem["code"].clone()),
        (415, json!("unsupported_media_type"))
    );
    // Nothing from the refused requests reached the client.
    hub.expect_marker_next(&mut client, "a").await;
}

#[tokio::test]
async fn with_ttl_absent_names_get_a_stored_copy_each_delivered_on_their_next_sync() {
    let hub = TestHub::start(Config::default()).await;
    let mut live = TestClient::synced(&hub, "live").await;
    let (status, body) = hub
        .post(
            "/send",
            json!({"messages": [
                {"to": ["away-1", "live", "away-2", "away-1"], "message": {"cfg": 7}, "ttl": 60},
                {"to": "away-3", "message": "not kept"},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().cloned().unwrap_or_default();
    let statuses: Vec<&str> = results
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["stored", "queued", "stored", "stored", "not_found"]
    );
    assert_eq!(
        (&body["queued"], &body["stored"], &body["notFound"]),
        (&json!(1), &json!(3), &json!(1))
    );
    let away_1 = results[0]["id"].clone();
    let away_2 = results[2]["id"].clone();
    // Named twice, stored once: both mentions report the same copy.
    assert_eq!(results[3]["id"], away_1);
    assert_ne!(away_1, away_2);
    assert_ne!(away_1, results[1]["id"]);
    assert_eq!(
        live.recv().await,
        json!({"type": "message", "id": results[1]["id"], "scope": "direct", "message": {"cfg": 7}})
    );

    let (_, mailbox) = hub.get("/mailboxes/away-1").await;
    assert_eq!(mailbox["pending"], 1, "{mailbox}");
    let mut away = TestClient::connect(&hub).await;
    away.sync("away-1").await;
    assert_eq!(
        away.recv().await,
        json!({"type": "message", "id": away_1, "scope": "direct", "message": {"cfg": 7}})
    );
    hub.expect_marker_next(&mut away, "away-1").await;
    let (_, mailbox) = hub.get("/mailboxes/away-3").await;
    assert_eq!(
        mailbox["pending"], 0,
        "without ttl nothing is stored: {mailbox}"
    );
}

#[tokio::test]
async fn a_copy_a_full_mailbox_refuses_is_reported_as_mailbox_full() {
    let hub = TestHub::start(Config {
        mailbox_capacity: 1,
        ..Config::default()
    })
    .await;
    let (status, body) = hub
        .post(
            "/send",
            json!({"messages": [
                {"to": "away", "message": 1, "ttl": 60},
                {"to": "away", "message": 2, "ttl": 60},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["stored"], &body["mailboxFull"]),
        (&json!(1), &json!(1)),
        "{body}"
    );
    assert_eq!(body["results"][1]["status"], "mailbox_full");
}

#[tokio::test]
async fn a_ttl_out_of_range_is_refused_naming_the_item_and_nothing_is_sent() {
    let hub = TestHub::start(Config {
        mailbox_max_ttl: std::time::Duration::from_secs(100),
        ..Config::default()
    })
    .await;
    let mut live = TestClient::synced(&hub, "live").await;
    for ttl in [json!(0), json!(101), json!("60")] {
        let (status, problem) = hub
            .post(
                "/send",
                json!({"messages": [
                    {"to": "live", "message": "first"},
                    {"to": "away", "message": "x", "ttl": ttl},
                ]}),
            )
            .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["code"], "invalid_body");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with("messages[1]:"), "{detail}");
    }
    hub.expect_marker_next(&mut live, "live").await;
}
