//! `GET /events`: every kind of event reaches a follower with what it carries,
//! filters, resumption with `Last-Event-ID`, a follower that falls behind, and
//! the end of the stream at shutdown. Real sockets and real HTTP throughout.

mod common;
#[path = "common/events.rs"]
mod follow;

use std::net::SocketAddr;

use common::{TestClient, TestHub};
use follow::{Follower, SseEvent};
use serde_json::{Value, json};
use tcphub::Config;
use tcphub::registry::Admission;
use tokio::net::TcpStream;

/// An event's data without its time, after checking that the time is RFC 3339 UTC
/// with milliseconds.
fn timeless(event: &SseEvent) -> Value {
    let mut data = event.data.clone();
    let time = data
        .as_object_mut()
        .and_then(|fields| fields.remove("time"))
        .unwrap_or_else(|| panic!("no time in {}", event.data));
    common::assert_millis_utc(time.as_str().expect("time is a string"));
    data
}

/// Checks that `event` is the SSE form of an event with the given fields.
fn assert_event(event: &SseEvent, id: u64, fields: Value) {
    let mut want = fields;
    want["id"] = json!(id);
    let kind = want["type"].as_str().unwrap().to_owned();
    assert_eq!(
        (event.id, &event.event, timeless(event)),
        (Some(id), &kind, want)
    );
}

#[tokio::test]
async fn every_kind_of_event_reaches_a_follower_with_what_it_carries() {
    let hub = TestHub::start(Config {
        queue_capacity: 1,
        ..Config::default()
    })
    .await;
    let mut follower = Follower::open(&hub, "/events", None).await;

    let stream = TcpStream::connect(hub.tcp_addr).await.unwrap();
    let peer = stream.local_addr().unwrap().to_string();
    let mut client = TestClient::from_stream(stream);
    let session = client.sync("Client-1").await;
    client.sync("Client-2").await;
    let info = json!({"type": "info", "clientName": "Client-2", "message": {"temp": 21.5}});
    client.send(&info).await;
    let (status, sent) = hub
        .post("/clients/Client-2/send", json!({"message": "hi"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(client.recv().await["id"], sent["id"]);
    client.send(&json!({"type": "ack", "id": sent["id"]})).await;
    client.ping().await;

    // A client without a socket only queues, so a queue of one overflows on the
    // second send: that drop is the `message.dropped` event.
    let quiet_peer = SocketAddr::from(([127, 0, 0, 9], 4000));
    let Admission::Admitted(quiet) = hub.registry.connect(quiet_peer, None) else {
        panic!("the hub refused a client");
    };
    let quiet_session = quiet.client().id();
    hub.registry.sync(quiet.client(), "Quiet").unwrap();
    let (first, _) = hub.post("/clients/Quiet/send", json!({"message": 1})).await;
    let (second, refused) = hub.post("/clients/Quiet/send", json!({"message": 2})).await;
    assert_eq!((first, second), (202, 503), "{refused}");
    drop(quiet);
    let (status, _) = hub.delete("/clients/Client-2").await;
    assert_eq!(status, 204);

    let about = |session: &str, name: Value, peer: &str, fields: Value| {
        let mut event = json!({"clientId": session, "name": name, "peer": peer});
        event
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        event
    };
    let quiet_peer = quiet_peer.to_string();
    let dropped_id = format!(
        "m{}",
        sent["id"].as_str().unwrap()[1..].parse::<u64>().unwrap() + 2
    );
    let want = [
        about(
            &session,
            Value::Null,
            &peer,
            json!({"type": "client.connected"}),
        ),
        about(
            &session,
            json!("Client-1"),
            &peer,
            json!({"type": "client.named", "oldName": null}),
        ),
        about(
            &session,
            json!("Client-2"),
            &peer,
            json!({"type": "client.named", "oldName": "Client-1"}),
        ),
        about(
            &session,
            json!("Client-2"),
            &peer,
            json!({"type": "client.message", "message": {"temp": 21.5}}),
        ),
        about(
            &session,
            json!("Client-2"),
            &peer,
            json!({"type": "client.acked", "messageId": sent["id"]}),
        ),
        about(
            &quiet_session,
            Value::Null,
            &quiet_peer,
            json!({"type": "client.connected"}),
        ),
        about(
            &quiet_session,
            json!("Quiet"),
            &quiet_peer,
            json!({"type": "client.named", "oldName": null}),
        ),
        about(
            &quiet_session,
            json!("Quiet"),
            &quiet_peer,
            json!({"type": "message.dropped", "messageId": dropped_id}),
        ),
        about(
            &quiet_session,
            json!("Quiet"),
            &quiet_peer,
            json!({"type": "client.disconnected", "reason": "closed"}),
        ),
        about(
            &session,
            json!("Client-2"),
            &peer,
            json!({"type": "client.disconnected", "reason": "kicked"}),
        ),
    ];
    let first_id = follower.next().await;
    let first = first_id.id.expect("an event id");
    assert_event(&first_id, first, want[0].clone());
    for (offset, fields) in want.into_iter().enumerate().skip(1) {
        assert_event(&follower.next().await, first + offset as u64, fields);
    }
}

#[tokio::test]
async fn disconnections_say_why() {
    let hub = TestHub::start(Config {
        max_frame_bytes: 1024,
        ..Config::default()
    })
    .await;
    let mut follower = Follower::open(&hub, "/events?types=client.disconnected", None).await;
    let reason = |event: SseEvent| {
        (
            event.event,
            event.data["name"].clone(),
            event.data["reason"].clone(),
        )
    };
    let gone = |name: Value, why: &str| ("client.disconnected".to_owned(), name, json!(why));

    let mut first = TestClient::synced(&hub, "Dup").await;
    let mut second = TestClient::synced(&hub, "Dup").await;
    first.expect_bye("replaced").await;
    assert_eq!(
        reason(follower.next().await),
        gone(json!("Dup"), "replaced")
    );

    let mut oversized = TestClient::connect(&hub).await;
    let too_long = json!({"type": "info", "message": "x".repeat(2048)});
    oversized.send(&too_long).await;
    oversized.expect_bye("frame_too_large").await;
    assert_eq!(
        reason(follower.next().await),
        gone(Value::Null, "frame_too_large")
    );

    second.ping().await;
    second.close().await;
    assert_eq!(reason(follower.next().await), gone(json!("Dup"), "closed"));
}

#[tokio::test]
async fn types_and_name_select_what_a_follower_gets() {
    let hub = TestHub::start(Config::default()).await;
    let path = "/events?types=client.named,client.disconnected&name=Client-2";
    let mut follower = Follower::open(&hub, path, None).await;
    let mut events = hub.events();

    let mut one = TestClient::synced(&hub, "Client-1").await;
    let mut two = TestClient::synced(&hub, "Client-2").await;
    for client in [&mut one, &mut two] {
        client
            .send(&json!({"type": "info", "message": "filtered out"}))
            .await;
        client.ping().await;
    }
    one.close().await;
    events.disconnections(1).await;
    two.close().await;

    // Client-1's rename and disconnection came first: they were filtered out,
    // and so were both info messages and Client-2's connection.
    let named = follower.next().await;
    assert_eq!(
        (named.event.as_str(), &named.data["name"]),
        ("client.named", &json!("Client-2"))
    );
    let gone = follower.next().await;
    assert_eq!(
        (gone.event.as_str(), &gone.data["name"], gone.id),
        (
            "client.disconnected",
            &json!("Client-2"),
            Some(named.id.unwrap() + 4)
        )
    );
}

#[tokio::test]
async fn unknown_types_and_malformed_ids_are_refused() {
    let hub = TestHub::start(Config::default()).await;
    let (status, body) =
        Follower::refused(&hub, "/events?types=client.named,client.sneezed", None).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_query");
    assert_eq!(
        body["detail"],
        "unknown event type \"client.sneezed\"; the types are client.connected, client.named, \
         client.disconnected, client.message, message.dropped, client.acked, client.groups, \
         message.stored, message.delivered, message.expired"
    );
    let mut stream = TcpStream::connect(hub.http_addr).await.unwrap();
    let request = "GET /events HTTP/1.0\r\nLast-Event-ID: yesterday\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(answer.contains(r#""code":"invalid_header""#), "{answer}");
}

#[tokio::test]
async fn the_event_stream_needs_the_token_when_one_is_set() {
    let hub = TestHub::start(Config {
        api_token: Some("letmein".into()),
        ..Config::default()
    })
    .await;
    let anonymous = reqwest::get(hub.url("/events")).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let mut follower = Follower::open(&hub, "/events", None).await; // with the token
    TestClient::connect(&hub).await;
    assert_eq!(follower.next().await.event, "client.connected");
}

#[tokio::test]
async fn a_follower_resumes_after_its_last_event_id() {
    let hub = TestHub::start(Config::default()).await;
    let mut follower = Follower::open(&hub, "/events", None).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    assert_eq!(follower.next().await.event, "client.connected");
    let named = follower.next().await;
    assert_eq!(named.event, "client.named");
    drop(follower);

    // What happens while nobody follows is kept for the follower's return.
    let mut events = hub.events();
    client
        .send(&json!({"type": "info", "message": "while you were away"}))
        .await;
    client.close().await;
    events.disconnections(1).await;

    let last_seen = named.id.unwrap();
    let mut follower = Follower::open(&hub, "/events", Some(last_seen)).await;
    let missed_message = follower.next().await;
    assert_eq!(
        (missed_message.id, missed_message.data["message"].clone()),
        (Some(last_seen + 1), json!("while you were away"))
    );
    let missed_goodbye = follower.next().await;
    assert_eq!(
        (missed_goodbye.id, missed_goodbye.event.as_str()),
        (Some(last_seen + 2), "client.disconnected")
    );
    // Then the stream goes on live, with nothing twice and nothing skipped.
    TestClient::connect(&hub).await;
    let live = follower.next().await;
    assert_eq!(
        (live.id, live.event.as_str()),
        (Some(last_seen + 3), "client.connected")
    );
}

#[tokio::test]
async fn resuming_from_beyond_the_buffer_says_how_many_events_were_lost() {
    let hub = TestHub::start(Config {
        event_buffer: 3,
        ..Config::default()
    })
    .await;
    // The hub keeps events from the first follower on.
    drop(Follower::open(&hub, "/events", None).await);
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        // Each name is published before its welcome: events 1 to 6 exist after this.
        clients.push(TestClient::synced(&hub, name).await);
    }

    let mut follower = Follower::open(&hub, "/events", Some(1)).await;
    let lost = follower.next().await;
    assert_eq!(
        lost,
        SseEvent {
            id: None,
            event: "events.missed".into(),
            data: json!({"type": "events.missed", "missed": 2}),
        }
    );
    for id in 4..=6 {
        assert_eq!(follower.next().await.id, Some(id));
    }
}

#[tokio::test]
async fn a_follower_that_falls_behind_is_told_how_many_it_missed_and_never_slows_the_hub() {
    const FLOOD: u64 = 1000;
    let hub = TestHub::start(Config {
        event_buffer: 16,
        ..Config::default()
    })
    .await;
    // A follower that reads nothing for now, behind a tiny TCP window.
    let mut follower = Follower::open_with_small_window(&hub, "/events", 4096).await;
    let mut client = TestClient::synced(&hub, "Chatty").await;
    let padding = "x".repeat(16 * 1024);
    for n in 0..FLOOD {
        client
            .send(&json!({"type": "info", "message": {"n": n, "padding": padding}}))
            .await;
    }
    client
        .send(&json!({"type": "info", "message": "last"}))
        .await;
    // The hub took all of that (and still answers HTTP) while the follower read nothing.
    client.ping().await;
    let (status, body) = hub.get("/clients/Chatty").await;
    assert_eq!((status, &body["name"]), (200, &json!("Chatty")));

    let (mut received, mut missed) = (0, 0);
    loop {
        let event = follower.next().await;
        if event.event == "events.missed" {
            missed += event.data["missed"].as_u64().unwrap();
            continue;
        }
        received += 1;
        if event.data["message"] == "last" {
            break;
        }
    }
    assert!(missed > 0, "the follower never fell behind");
    // connected + named + the flood + last: each either received or counted as missed
    assert_eq!(received + missed, FLOOD + 3);
    let metrics = hub.metrics().await;
    assert!(
        metrics.contains(&format!("tcphub_events_missed_total {missed}\n")),
        "{metrics}"
    );
}

#[tokio::test]
async fn followers_get_the_last_disconnections_then_the_stream_ends_at_shutdown() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    let mut follower = Follower::open(&hub, "/events?types=client.disconnected", None).await;
    hub.begin_shutdown();
    client.expect_bye("shutdown").await;
    let last = follower.next().await;
    assert_eq!(
        (&last.data["name"], &last.data["reason"]),
        (&json!("Client-1"), &json!("shutdown"))
    );
    follower.expect_end().await;
    hub.stop().await;
}
