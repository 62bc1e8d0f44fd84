//! The TCP side of the contract: framing, `sync`/`welcome`, names, duplicates,
//! `ping`, `info`, and every error code, over real sockets.

mod common;

use common::{TestClient, TestHub};
use serde_json::json;
use tcphub::Config;
use tcphub::config::DuplicateNames;

#[tokio::test]
async fn back_to_back_objects_without_separator_are_two_frames() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    client
        .send_raw(br#"{"type":"sync","clientName":"Client-1"}{"type":"ping"}"#)
        .await;
    let welcome = client.recv().await;
    assert_eq!(
        welcome,
        json!({"type": "welcome", "id": welcome["id"], "clientName": "Client-1"})
    );
    assert_eq!(client.recv().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn an_object_split_over_many_writes_is_one_frame() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    let frame = br#"{"type":"sync","clientName":"Split"}"#;
    for byte in frame {
        client.send_raw(&[*byte]).await;
    }
    let welcome = client.recv().await;
    assert_eq!(welcome["clientName"], "Split");
}

#[tokio::test]
async fn newline_delimited_frames_are_answered_in_order() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    client
        .send_raw(b"{\"type\":\"ping\"}\n{\"type\":\"sync\",\"clientName\":\"N\"}\r\n\n{\"type\":\"ping\"}\n")
        .await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));
    assert_eq!(client.recv().await["type"], "welcome");
    assert_eq!(client.recv().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn invalid_json_gets_an_error_and_the_connection_resyncs_at_the_newline() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    client
        .send_raw(b"this is {not json {\"type\":\"ping\"}\n{\"type\":\"ping\"}\n")
        .await;
    client.expect_error("invalid_json").await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn json_that_is_not_a_frame_gets_invalid_frame() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    for bad in [
        &b"[1,2]\n"[..],
        b"{\"no\":\"type\"}\n",
        b"{\"type\":3}\n",
        b"{\"type\":\"sync\"}\n",
        b"\"text\"\n",
    ] {
        client.send_raw(bad).await;
        client.expect_error("invalid_frame").await;
    }
    client.ping().await;
}

#[tokio::test]
async fn an_unknown_type_gets_unknown_type() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    client
        .send(&json!({"type": "subscribe", "topic": "x"}))
        .await;
    let detail = client.expect_error("unknown_type").await;
    assert!(detail.contains("subscribe"), "{detail}");
    client.ping().await;
}

#[tokio::test]
async fn an_oversize_frame_gets_bye_frame_too_large_then_close() {
    let config = Config {
        max_frame_bytes: 1024,
        ..Config::default()
    };
    let hub = TestHub::start(config).await;
    let mut bystander = TestClient::synced(&hub, "bystander").await;
    let mut client = TestClient::connect(&hub).await;
    let huge = format!("{{\"type\":\"info\",\"message\":\"{}\"}}", "x".repeat(2000));
    client.send_raw(huge.as_bytes()).await;
    client.expect_bye("frame_too_large").await;
    bystander.ping().await;
}

#[tokio::test]
async fn a_frame_that_never_ends_is_cut_at_the_limit() {
    let config = Config {
        max_frame_bytes: 1024,
        ..Config::default()
    };
    let hub = TestHub::start(config).await;
    let mut client = TestClient::connect(&hub).await;
    client.send_raw(b"{\"type\":\"info\",\"message\":\"").await;
    client.send_raw(&[b'y'; 1100]).await;
    client.expect_bye("frame_too_large").await;
}

#[tokio::test]
async fn sync_registers_the_name_and_answers_welcome() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    client
        .send(&json!({"type": "sync", "clientName": "Client-1", "message": "hello"}))
        .await;
    let welcome = client.recv().await;
    let id = welcome["id"].as_str().unwrap();
    assert_eq!(
        welcome,
        json!({"type": "welcome", "id": id, "clientName": "Client-1"})
    );
    let (status, body) = hub.get("/clients/Client-1").await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id);
    assert_eq!(body["name"], "Client-1");
}

#[tokio::test]
async fn a_second_sync_renames_the_connection() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "old").await;
    let id = client.sync("new").await;
    assert_eq!(hub.get("/clients/old").await.0, 404);
    let (status, body) = hub.get("/clients/new").await;
    assert_eq!((status, body["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(hub.get("/clients").await.1["total"], 1);
}

#[tokio::test]
async fn ping_gets_pong() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    client.send(&json!({"type": "ping"})).await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn info_frames_are_counted_and_get_no_reply() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "talker").await;
    client
        .send(&json!({"type": "info", "clientName": "someone-else", "message": {"t": 21.5}}))
        .await;
    client
        .send(&json!({"type": "info", "message": "1111"}))
        .await;
    client.ping().await; // the next frame after the infos is the pong: they got no reply
    let (_, body) = hub.get("/clients/talker").await;
    assert_eq!(body["framesIn"], 4, "sync, two infos and the ping: {body}");
}

#[tokio::test]
async fn bad_names_get_invalid_name_and_the_connection_stays_as_it_was() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "good").await;
    let too_long = "n".repeat(129);
    for bad in ["", "a/b", "line\nbreak", "nul\u{0}", too_long.as_str()] {
        client
            .send(&json!({"type": "sync", "clientName": bad}))
            .await;
        client.expect_error("invalid_name").await;
    }
    assert_eq!(hub.get("/clients/good").await.0, 200);
    let longest = "é".repeat(64); // 128 bytes of UTF-8
    client.sync(&longest).await;
}

#[tokio::test]
async fn a_duplicate_name_replaces_the_older_connection_by_default() {
    let hub = TestHub::start(Config::default()).await;
    let mut older = TestClient::synced(&hub, "dup").await;
    let mut newer = TestClient::connect(&hub).await;
    let newer_id = newer.sync("dup").await;
    older.expect_bye("replaced").await;
    let (_, body) = hub.get("/clients/dup").await;
    assert_eq!(body["id"], newer_id.as_str());
}

#[tokio::test]
async fn a_duplicate_name_is_refused_under_the_reject_policy() {
    let config = Config {
        duplicate_names: DuplicateNames::Reject,
        ..Config::default()
    };
    let hub = TestHub::start(config).await;
    let mut holder = TestClient::synced(&hub, "dup").await;
    let holder_id = hub.get("/clients/dup").await.1["id"].clone();
    let mut late = TestClient::connect(&hub).await;
    late.send(&json!({"type": "sync", "clientName": "dup"}))
        .await;
    late.expect_error("name_taken").await;
    assert_eq!(hub.get("/clients/dup").await.1["id"], holder_id);
    let (_, unnamed) = hub.get("/clients?named=false").await;
    assert_eq!(
        unnamed["total"], 1,
        "the late connection stays unnamed: {unnamed}"
    );
    holder.ping().await;
}

#[tokio::test]
async fn an_unnamed_client_is_listed_and_receives_broadcasts() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    client.ping().await;
    let (_, list) = hub.get("/clients").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["clients"][0]["name"], serde_json::Value::Null);
    let (status, body) = hub.post("/broadcast", json!({"message": "to all"})).await;
    assert_eq!(status, 202);
    let want =
        json!({"type": "message", "id": body["id"], "scope": "broadcast", "message": "to all"});
    assert_eq!(client.recv().await, want);
}

#[tokio::test]
async fn one_clients_bad_input_does_not_disturb_another() {
    let hub = TestHub::start(Config {
        max_frame_bytes: 256,
        ..Config::default()
    })
    .await;
    let mut good = TestClient::synced(&hub, "good").await;
    let mut bad = TestClient::connect(&hub).await;
    bad.send_raw(b"\xff\xfe garbage\n{\"type\":\"nope\"}\n")
        .await;
    bad.expect_error("invalid_json").await;
    bad.expect_error("unknown_type").await;
    // Unfinished and past the limit (300 brackets would be too deep first).
    let endless = format!("{{\"type\":\"info\",\"message\":\"{}", "x".repeat(300));
    bad.send_raw(endless.as_bytes()).await;
    bad.expect_bye("frame_too_large").await;
    let (status, body) = hub
        .post("/clients/good/send", json!({"message": "still here"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(good.recv().await["id"], body["id"]);
}
