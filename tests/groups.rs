//! Groups over real sockets: `sync` with `groups`, `join` and `leave`, the
//! `groups` frame, group sends, the group endpoints, the jwt `groups` claim,
//! and what renames, replacements and disconnects do to membership.

mod common;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{TestClient, TestHub};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tcphub::Config;
use tcphub::config::ClientAuthMode;
use tcphub::events::EventKind;

/// Sends `sync` for `name` with `groups` and returns the answer.
async fn sync_with_groups(client: &mut TestClient, name: &str, groups: Value) -> Value {
    client
        .send(&json!({"type": "sync", "clientName": name, "groups": groups}))
        .await;
    client.recv().await
}

/// Sends `join` (or `leave`) and returns the answer.
async fn change(client: &mut TestClient, kind: &str, groups: Value) -> Value {
    client.send(&json!({"type": kind, "groups": groups})).await;
    client.recv().await
}

fn groups_frame(groups: &[&str]) -> Value {
    json!({"type": "groups", "groups": groups})
}

#[tokio::test]
async fn a_sync_with_groups_is_answered_by_a_welcome_with_the_sorted_set() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    let welcome = sync_with_groups(&mut client, "K1", json!(["kiosks", "floor-2", "kiosks"])).await;
    assert_eq!(
        welcome,
        json!({"type": "welcome", "id": welcome["id"], "clientName": "K1", "groups": ["floor-2", "kiosks"]})
    );
    let (status, view) = hub.get("/clients/K1").await;
    assert_eq!(status, 200);
    assert_eq!(view["groups"], json!(["floor-2", "kiosks"]));
    // An empty list empties the set; the welcome still reports it.
    let welcome = sync_with_groups(&mut client, "K1", json!([])).await;
    assert_eq!(welcome["groups"], json!([]));
    assert_eq!(
        hub.get("/groups").await.1,
        json!({"total": 0, "groups": []})
    );
}

#[tokio::test]
async fn a_rename_without_groups_keeps_them_and_its_welcome_has_none() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    sync_with_groups(&mut client, "old", json!(["g"])).await;
    client
        .send(&json!({"type": "sync", "clientName": "new"}))
        .await;
    let welcome = client.recv().await;
    assert_eq!(
        welcome,
        json!({"type": "welcome", "id": welcome["id"], "clientName": "new"})
    );
    let (status, body) = hub.post("/groups/g/send", json!({"message": 1})).await;
    assert_eq!((status, body["recipients"].clone()), (202, json!(1)));
    assert_eq!(client.recv().await["group"], "g");
    assert_eq!(hub.get("/clients/new").await.1["groups"], json!(["g"]));
}

#[tokio::test]
async fn join_and_leave_are_answered_with_the_set_even_for_unnamed_clients() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    assert_eq!(
        change(&mut client, "join", json!(["b", "a"])).await,
        groups_frame(&["a", "b"])
    );
    assert_eq!(
        change(&mut client, "join", json!(["a", "c"])).await,
        groups_frame(&["a", "b", "c"])
    );
    assert_eq!(
        change(&mut client, "leave", json!(["a", "never-joined"])).await,
        groups_frame(&["b", "c"])
    );
    assert_eq!(
        change(&mut client, "leave", json!([])).await,
        groups_frame(&["b", "c"])
    );
    let (_, list) = hub.get("/clients").await;
    assert_eq!(list["clients"][0]["name"], Value::Null);
    assert_eq!(list["clients"][0]["groups"], json!(["b", "c"]));
}

#[tokio::test]
async fn bad_group_names_and_too_many_groups_change_nothing() {
    let hub = TestHub::start(Config {
        max_groups_per_client: 2,
        ..Config::default()
    })
    .await;
    let mut client = TestClient::connect(&hub).await;
    assert_eq!(
        change(&mut client, "join", json!(["a"])).await,
        groups_frame(&["a"])
    );
    for bad in [json!(["ok", "a/b"]), json!([""]), json!(["b", "c"])] {
        client.send(&json!({"type": "join", "groups": bad})).await;
        client.expect_error("invalid_groups").await;
    }
    // A sync whose groups are refused registers nothing, not even the name.
    client
        .send(&json!({"type": "sync", "clientName": "X", "groups": ["x", "y", "z"]}))
        .await;
    client.expect_error("invalid_groups").await;
    assert_eq!(hub.get("/clients/X").await.0, 404);
    for malformed in [
        json!({"type": "join"}),
        json!({"type": "join", "groups": "a"}),
        json!({"type": "leave", "groups": [1]}),
    ] {
        client.send(&malformed).await;
        client.expect_error("invalid_frame").await;
    }
    assert_eq!(
        change(&mut client, "join", json!([])).await,
        groups_frame(&["a"])
    );
}

#[tokio::test]
async fn a_group_send_reaches_every_member_and_only_them() {
    let hub = TestHub::start(Config::default()).await;
    let mut one = TestClient::connect(&hub).await;
    sync_with_groups(&mut one, "one", json!(["floor-2"])).await;
    let mut unnamed = TestClient::connect(&hub).await;
    change(&mut unnamed, "join", json!(["floor-2", "kiosks"])).await;
    let mut other = TestClient::connect(&hub).await;
    sync_with_groups(&mut other, "other", json!(["floor-3"])).await;

    let (status, body) = hub
        .post("/groups/floor-2/send", json!({"message": {"led": "on"}}))
        .await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"id": id, "recipients": 2, "queued": 2, "dropped": 0})
    );
    let want = json!({"type": "message", "id": id, "scope": "group", "group": "floor-2", "message": {"led": "on"}});
    assert_eq!(one.recv().await, want);
    assert_eq!(unnamed.recv().await, want);
    hub.expect_marker_next(&mut other, "other").await;

    // text/plain works as for other sends, and a group nobody is in is no error.
    let (status, body) = hub
        .post_raw("/groups/kiosks/send", "text/plain", "hi")
        .await;
    assert_eq!((status, body["recipients"].clone()), (202, json!(1)));
    assert_eq!(unnamed.recv().await["message"], "hi");
    let (status, body) = hub.post("/groups/nobody/send", json!({"message": 1})).await;
    assert_eq!(status, 202);
    assert_eq!(
        body,
        json!({"id": body["id"], "recipients": 0, "queued": 0, "dropped": 0})
    );
    let metrics = hub.metrics().await;
    assert!(
        metrics.lines().any(|l| l == "tcphub_group_sends_total 3"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"tcphub_messages_queued_total{scope="group"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_group_endpoints_list_groups_and_members() {
    let hub = TestHub::start(Config::default()).await;
    let mut first = TestClient::connect(&hub).await;
    sync_with_groups(&mut first, "first", json!(["floor-1", "floor-2"])).await;
    let mut second = TestClient::connect(&hub).await;
    sync_with_groups(&mut second, "second", json!(["floor-2", "kiosks"])).await;

    let (status, all) = hub.get("/groups").await;
    assert_eq!(status, 200);
    assert_eq!(
        all,
        json!({"total": 3, "groups": [
            {"name": "floor-1", "members": 1},
            {"name": "floor-2", "members": 2},
            {"name": "kiosks", "members": 1}
        ]})
    );
    let (_, page) = hub.get("/groups?prefix=floor-&offset=1&limit=5").await;
    assert_eq!(
        page,
        json!({"total": 2, "groups": [{"name": "floor-2", "members": 2}]})
    );

    let (status, group) = hub.get("/groups/floor-2").await;
    assert_eq!(status, 200);
    assert_eq!(group["name"], "floor-2");
    assert_eq!(group["members"], 2);
    let names: Vec<&Value> = group["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, [&json!("first"), &json!("second")], "oldest first");
    assert_eq!(group["clients"][1]["groups"], json!(["floor-2", "kiosks"]));
    let (_, paged) = hub.get("/groups/floor-2?offset=1&limit=1").await;
    assert_eq!(paged["members"], 2);
    assert_eq!(paged["clients"].as_array().map(Vec::len), Some(1));
    assert_eq!(paged["clients"][0]["name"], "second");

    let (status, empty) = hub.get("/groups/nobody").await;
    assert_eq!(
        (status, empty),
        (200, json!({"name": "nobody", "members": 0, "clients": []}))
    );
    for bad in [
        "/groups?named=true",
        "/groups/floor-2?prefix=x",
        "/groups?limit=10001",
    ] {
        let (status, problem) = hub.get(bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(problem["code"], "invalid_query", "{bad}");
    }
}

#[tokio::test]
async fn put_replaces_a_named_clients_set_and_tells_the_client() {
    let hub = TestHub::start(Config {
        max_groups_per_client: 3,
        ..Config::default()
    })
    .await;
    let mut events = hub.events();
    let mut client = TestClient::synced(&hub, "dev").await;
    let (status, body) = hub
        .put("/clients/dev/groups", json!({"groups": ["b", "a", "b"]}))
        .await;
    assert_eq!((status, body), (200, json!({"groups": ["a", "b"]})));
    assert_eq!(client.recv().await, groups_frame(&["a", "b"]));
    let event = events
        .until(|e| matches!(e.kind, EventKind::Groups { .. }))
        .await;
    assert_eq!(
        event.kind,
        EventKind::Groups {
            groups: vec!["a".into(), "b".into()]
        }
    );
    assert_eq!(event.name.as_deref(), Some("dev"));

    // The same set again changes nothing, so the client is told nothing.
    let (status, _) = hub
        .put("/clients/dev/groups", json!({"groups": ["a", "b"]}))
        .await;
    assert_eq!(status, 200);
    hub.expect_marker_next(&mut client, "dev").await;

    let (status, problem) = hub
        .put("/clients/ghost/groups", json!({"groups": ["a"]}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(problem["code"], "client_not_found");
    for (body, code) in [
        (json!({"groups": ["a/b"]}), "invalid_groups"),
        (json!({"groups": ["w", "x", "y", "z"]}), "invalid_groups"),
        (json!({"groups": "a"}), "invalid_body"),
        (json!({"groups": [], "extra": 1}), "invalid_body"),
        (json!([]), "invalid_body"),
    ] {
        let (status, problem) = hub.put("/clients/dev/groups", body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(problem["code"], code, "{body}");
    }
    assert_eq!(hub.get("/clients/dev").await.1["groups"], json!(["a", "b"]));
}

#[tokio::test]
async fn replaced_and_disconnected_clients_leave_their_groups() {
    let hub = TestHub::start(Config::default()).await;
    let mut events = hub.events();
    let mut old = TestClient::connect(&hub).await;
    sync_with_groups(&mut old, "dev", json!(["g1"])).await;
    let mut new = TestClient::connect(&hub).await;
    let welcome = sync_with_groups(&mut new, "dev", json!(["g2"])).await;
    assert_eq!(welcome["groups"], json!(["g2"]));
    old.expect_bye("replaced").await;
    let mut member = TestClient::connect(&hub).await;
    change(&mut member, "join", json!(["g2"])).await;
    assert_eq!(
        hub.get("/groups").await.1,
        json!({"total": 1, "groups": [{"name": "g2", "members": 2}]})
    );
    member.close().await;
    events.disconnections(2).await;
    assert_eq!(
        hub.get("/groups").await.1,
        json!({"total": 1, "groups": [{"name": "g2", "members": 1}]})
    );
}

#[tokio::test]
async fn a_client_leaving_during_group_sends_gets_each_at_most_once() {
    const SENDS: usize = 40;
    const TOGGLES: usize = 200;
    let hub = TestHub::start(Config::default()).await;
    let mut steady = TestClient::synced(&hub, "steady").await;
    change(&mut steady, "join", json!(["g"])).await;
    let mut flaky = TestClient::synced(&hub, "flaky").await;
    // Join and leave back to back, while the sends run.
    let mut toggles = Vec::new();
    for i in 0..TOGGLES {
        let kind = if i % 2 == 0 { "join" } else { "leave" };
        toggles.extend(serde_json::to_vec(&json!({"type": kind, "groups": ["g"]})).unwrap());
        toggles.push(b'\n');
    }
    let sender = {
        let url = hub.url("/groups/g/send");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ids = HashSet::new();
            for i in 0..SENDS {
                let response = http.post(&url).json(&json!({"message": i})).send().await;
                let body: Value = response.unwrap().json().await.unwrap();
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            ids
        })
    };
    flaky.send_raw(&toggles).await;
    let sent = sender.await.unwrap();
    assert_eq!(sent.len(), SENDS);

    let mut answers = 0;
    let mut seen = HashSet::new();
    let mut note = |frame: &Value| {
        let id = frame["id"].as_str().unwrap().to_owned();
        assert!(sent.contains(&id), "{frame}");
        assert!(seen.insert(id), "delivered twice: {frame}");
    };
    while answers < TOGGLES {
        let frame = flaky.recv().await;
        match frame["type"].as_str() {
            Some("groups") => answers += 1,
            Some("message") => note(&frame),
            _ => panic!("unexpected {frame}"),
        }
    }
    // Group messages may still be on their way: read them up to a marker sent after all.
    let (status, _) = hub
        .post("/clients/flaky/send", json!({"message": "marker"}))
        .await;
    assert_eq!(status, 202);
    loop {
        let frame = flaky.recv().await;
        if frame["message"] == "marker" {
            break;
        }
        note(&frame);
    }
    let mut steady_ids = HashSet::new();
    for _ in 0..SENDS {
        let frame = steady.recv().await;
        assert!(steady_ids.insert(frame["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(steady_ids, sent);
    hub.expect_marker_next(&mut steady, "steady").await;
}

const SECRET: &str = "client-secret-for-tests";

/// A client token for `name`, with a `groups` claim when `groups` is given.
fn mint(name: &str, groups: Option<Value>) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let mut claims = json!({"sub": name, "exp": exp});
    if let Some(groups) = groups {
        claims["groups"] = groups;
    }
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

#[tokio::test]
async fn a_tokens_groups_claim_limits_what_its_client_may_join() {
    let hub = TestHub::start(Config {
        client_auth: ClientAuthMode::Jwt,
        client_secret: Some(SECRET.into()),
        ..Config::default()
    })
    .await;
    let token = mint("kiosk-1", Some(json!(["kiosks", "floor-*"])));
    let mut kiosk = TestClient::connect(&hub).await;
    // Before its sync, a connection has proved nothing and may join nothing.
    kiosk
        .send(&json!({"type": "join", "groups": ["kiosks"]}))
        .await;
    kiosk.expect_error("forbidden_group").await;
    // A sync asking for a group the claim does not allow registers nothing.
    kiosk
        .send(
            &json!({"type": "sync", "clientName": "kiosk-1", "token": token, "groups": ["admin"]}),
        )
        .await;
    kiosk.expect_error("forbidden_group").await;
    assert_eq!(hub.get("/clients/kiosk-1").await.0, 404);
    kiosk
        .send(&json!({"type": "sync", "clientName": "kiosk-1", "token": token, "groups": ["floor-2"]}))
        .await;
    assert_eq!(kiosk.recv().await["groups"], json!(["floor-2"]));
    assert_eq!(
        change(&mut kiosk, "join", json!(["kiosks", "floor-3"])).await,
        groups_frame(&["floor-2", "floor-3", "kiosks"])
    );
    kiosk
        .send(&json!({"type": "join", "groups": ["floor-9", "other"]}))
        .await;
    kiosk.expect_error("forbidden_group").await;
    assert_eq!(
        change(&mut kiosk, "leave", json!(["kiosks"])).await,
        groups_frame(&["floor-2", "floor-3"])
    );
    // The HTTP API is the operator: the claim does not bind it.
    let (status, body) = hub
        .put("/clients/kiosk-1/groups", json!({"groups": ["admin"]}))
        .await;
    assert_eq!((status, body), (200, json!({"groups": ["admin"]})));
    assert_eq!(kiosk.recv().await, groups_frame(&["admin"]));

    // No claim: any group.
    let mut free = TestClient::connect(&hub).await;
    let token = mint("free", None);
    free.send(&json!({"type": "sync", "clientName": "free", "token": token, "groups": ["admin"]}))
        .await;
    assert_eq!(free.recv().await["groups"], json!(["admin"]));
}
