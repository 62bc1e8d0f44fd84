//! The offline mailbox: sends with `ttl` for absent names, delivery after
//! `welcome`, `until=ack` redelivery, expiry, limits, listing, the SQLite store
//! (and its start-up refusals), and durability across `kill -9` of the binary.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{PATIENCE, TestClient, TestHub};
use serde_json::{Value, json};
use tcphub::events::EventKind;
use tcphub::{Config, Hub};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// A fresh, empty directory for one test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tcphub-mailbox-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn message(id: &Value, body: Value) -> Value {
    json!({"type": "message", "id": id, "scope": "direct", "message": body})
}

/// The next frame must be `marker`, sent live now: nothing else was pending.
async fn expect_nothing_pending(hub: &TestHub, client: &mut TestClient, name: &str) {
    let (status, sent) = hub
        .post(
            &format!("/clients/{name}/send"),
            json!({"message": "marker"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(client.recv().await, message(&sent["id"], json!("marker")));
}

#[tokio::test]
async fn stored_messages_arrive_after_welcome_in_order_before_newer_ones() {
    let hub = TestHub::start(Config::default()).await;
    let (status, first) = hub
        .post("/clients/dev-1/send?ttl=60", json!({"message": {"n": 1}}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        first,
        json!({"id": first["id"], "queued": 0, "stored": true})
    );
    let (_, second) = hub
        .post("/clients/dev-1/send?ttl=60", json!({"message": {"n": 2}}))
        .await;
    let (status, gone) = hub
        .post("/clients/dev-1/send", json!({"message": "no ttl"}))
        .await;
    assert_eq!(
        (status, gone["code"].clone()),
        (404, json!("client_not_found"))
    );

    let mut client = TestClient::connect(&hub).await;
    client.sync("dev-1").await;
    assert_eq!(client.recv().await, message(&first["id"], json!({"n": 1})));
    assert_eq!(client.recv().await, message(&second["id"], json!({"n": 2})));
    let (status, live) = hub
        .post("/clients/dev-1/send?ttl=60", json!({"message": "live"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        live,
        json!({"id": live["id"], "queued": 1, "stored": false})
    );
    assert_eq!(client.recv().await, message(&live["id"], json!("live")));
    let (_, mailbox) = hub.get("/mailboxes/dev-1").await;
    assert_eq!(
        mailbox,
        json!({"name": "dev-1", "pending": 0, "messages": []})
    );
}

#[tokio::test]
async fn until_ack_is_redelivered_to_each_session_until_acked() {
    let hub = TestHub::start(Config::default()).await;
    let mut events = hub.events();
    let (status, sent) = hub
        .post(
            "/clients/dev/send?ttl=60&until=ack",
            json!({"message": "important"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(sent, json!({"id": sent["id"], "queued": 0, "stored": true}));

    let mut first = TestClient::synced(&hub, "dev").await;
    assert_eq!(first.recv().await, message(&sent["id"], json!("important")));
    first.close().await;
    events.disconnections(1).await;

    let mut second = TestClient::synced(&hub, "dev").await;
    let mut again = message(&sent["id"], json!("important"));
    again["redelivered"] = json!(true);
    assert_eq!(second.recv().await, again);
    second.send(&json!({"type": "ack", "id": sent["id"]})).await;
    events
        .until(|event| matches!(&event.kind, EventKind::Acked { message_id } if *message_id == sent["id"]))
        .await;
    let (_, mailbox) = hub.get("/mailboxes/dev").await;
    assert_eq!(mailbox["pending"], 0);
    second.close().await;
    events.disconnections(1).await;

    let mut third = TestClient::synced(&hub, "dev").await;
    expect_nothing_pending(&hub, &mut third, "dev").await;
}

#[tokio::test]
async fn until_ack_to_a_live_client_is_pushed_and_kept_until_the_ack() {
    let hub = TestHub::start(Config::default()).await;
    let mut events = hub.events();
    let mut client = TestClient::synced(&hub, "dev").await;
    let (status, sent) = hub
        .post("/clients/dev/send?ttl=60&until=ack", json!({"message": 7}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(sent, json!({"id": sent["id"], "queued": 1, "stored": true}));
    assert_eq!(client.recv().await, message(&sent["id"], json!(7)));
    let (_, mailbox) = hub.get("/mailboxes/dev").await;
    assert_eq!(mailbox["pending"], 1);
    assert_eq!(mailbox["messages"][0]["id"], sent["id"]);
    assert_eq!(mailbox["messages"][0]["untilAck"], true);
    client.send(&json!({"type": "ack", "id": sent["id"]})).await;
    events
        .until(|event| matches!(event.kind, EventKind::Acked { .. }))
        .await;
    let (_, mailbox) = hub.get("/mailboxes/dev").await;
    assert_eq!(mailbox["pending"], 0);
}

#[tokio::test]
async fn expired_messages_are_removed_counted_and_announced() {
    let hub = TestHub::start(Config::default()).await;
    let mut events = hub.events();
    let (_, sent) = hub
        .post("/clients/late/send?ttl=1", json!({"message": "stale"}))
        .await;
    let stored = events
        .until(|event| matches!(event.kind, EventKind::Stored { .. }))
        .await;
    assert_eq!(stored.name.as_deref(), Some("late"));
    assert_eq!(stored.client_id, None);
    let expired = events
        .until(|event| matches!(event.kind, EventKind::Expired { .. }))
        .await;
    assert_eq!(
        expired.kind,
        EventKind::Expired {
            message_id: sent["id"].as_str().unwrap().to_owned()
        }
    );
    assert_eq!(expired.name.as_deref(), Some("late"));
    let metrics = hub.metrics().await;
    assert!(
        metrics.contains("tcphub_mailbox_expired_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tcphub_mailbox_stored_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("tcphub_mailbox_messages 0\n"), "{metrics}");
    let mut client = TestClient::synced(&hub, "late").await;
    expect_nothing_pending(&hub, &mut client, "late").await;
}

#[tokio::test]
async fn delivery_is_announced_and_counted() {
    let hub = TestHub::start(Config::default()).await;
    let mut events = hub.events();
    let (_, sent) = hub
        .post("/clients/dev/send?ttl=60", json!({"message": 1}))
        .await;
    let mut client = TestClient::synced(&hub, "dev").await;
    assert_eq!(client.recv().await, message(&sent["id"], json!(1)));
    let delivered = events
        .until(|event| matches!(event.kind, EventKind::Delivered { .. }))
        .await;
    assert_eq!(
        delivered.kind,
        EventKind::Delivered {
            message_id: sent["id"].as_str().unwrap().to_owned(),
            redelivered: false
        }
    );
    assert!(delivered.client_id.is_some());
    assert!(
        hub.metrics()
            .await
            .contains("tcphub_mailbox_delivered_total 1\n")
    );
}

#[tokio::test]
async fn past_either_limit_nothing_is_stored() {
    let hub = TestHub::start(Config {
        mailbox_capacity: 2,
        mailbox_max_bytes: 10,
        ..Config::default()
    })
    .await;
    for n in 0..2 {
        let (status, _) = hub
            .post("/clients/a/send?ttl=60", json!({"message": n}))
            .await;
        assert_eq!(status, 202);
    }
    let (status, problem) = hub
        .post("/clients/a/send?ttl=60", json!({"message": 2}))
        .await;
    assert_eq!(
        (status, problem["code"].clone()),
        (503, json!("mailbox_full"))
    );
    let (status, problem) = hub
        .post(
            "/clients/b/send?ttl=60",
            json!({"message": "more than ten bytes"}),
        )
        .await;
    assert_eq!(
        (status, problem["code"].clone()),
        (503, json!("mailbox_full"))
    );
    let (_, list) = hub.get("/mailboxes").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["mailboxes"][0]["name"], "a");
    assert_eq!(list["mailboxes"][0]["pending"], 2);
}

#[tokio::test]
async fn mailboxes_are_listed_described_and_purged() {
    let hub = TestHub::start(Config::default()).await;
    for name in ["a-1", "a-2", "b"] {
        hub.post(
            &format!("/clients/{name}/send?ttl=60"),
            json!({"message": "hi"}),
        )
        .await;
    }
    let (status, list) = hub.get("/mailboxes?prefix=a-&limit=1&offset=1").await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 2);
    assert_eq!(list["mailboxes"].as_array().unwrap().len(), 1);
    assert_eq!(list["mailboxes"][0]["name"], "a-2");
    assert_eq!(list["mailboxes"][0]["pending"], 1);
    assert_eq!(list["mailboxes"][0]["bytes"], 4); // "hi", quoted
    common::assert_millis_utc(list["mailboxes"][0]["oldestAt"].as_str().unwrap());
    let (_, one) = hub.get("/mailboxes/b").await;
    let stored = &one["messages"][0];
    assert_eq!(stored["size"], 4);
    assert_eq!(stored["untilAck"], false);
    common::assert_millis_utc(stored["expiresAt"].as_str().unwrap());
    let (status, _) = hub.delete("/mailboxes/b").await;
    assert_eq!(status, 204);
    let (_, one) = hub.get("/mailboxes/b").await;
    assert_eq!(one, json!({"name": "b", "pending": 0, "messages": []}));
    let (status, problem) = hub.get("/mailboxes?color=red").await;
    assert_eq!(
        (status, problem["code"].clone()),
        (400, json!("invalid_query"))
    );
}

#[tokio::test]
async fn ttl_past_the_maximum_or_until_without_ttl_is_refused() {
    let hub = TestHub::start(Config {
        mailbox_max_ttl: Duration::from_secs(100),
        ..Config::default()
    })
    .await;
    for query in ["ttl=101", "ttl=0", "until=ack", "ttl=5&wait=ack"] {
        let (status, problem) = hub
            .post(&format!("/clients/x/send?{query}"), json!({"message": 1}))
            .await;
        assert_eq!(
            (status, problem["code"].clone()),
            (400, json!("invalid_query")),
            "{query}"
        );
    }
}

#[tokio::test]
async fn a_data_dir_keeps_messages_and_ids_across_restarts() {
    let dir = scratch_dir("restart");
    let config = || Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    };
    let hub = TestHub::start(config()).await;
    let (_, kept) = hub
        .post(
            "/clients/dev/send?ttl=60&until=ack",
            json!({"message": "kept"}),
        )
        .await;
    let (_, plain) = hub
        .post("/clients/dev/send?ttl=60", json!({"message": "plain"}))
        .await;
    hub.stop().await;

    let hub = TestHub::start(config()).await;
    let mut client = TestClient::synced(&hub, "dev").await;
    assert_eq!(client.recv().await, message(&kept["id"], json!("kept")));
    assert_eq!(client.recv().await, message(&plain["id"], json!("plain")));
    let (_, fresh) = hub
        .post("/clients/dev/send", json!({"message": "new"}))
        .await;
    assert!(
        fresh["id"] != kept["id"] && fresh["id"] != plain["id"],
        "{fresh}"
    );
    assert_eq!(client.recv().await, message(&fresh["id"], json!("new")));
    client.send(&json!({"type": "ack", "id": kept["id"]})).await;
    let mut events = hub.events();
    events
        .until(|event| matches!(event.kind, EventKind::Acked { .. }))
        .await;
    hub.stop().await;

    let hub = TestHub::start(config()).await;
    let mut client = TestClient::synced(&hub, "dev").await;
    expect_nothing_pending(&hub, &mut client, "dev").await;
    hub.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let dir = scratch_dir("newer");
    let db = rusqlite::Connection::open(dir.join("mailbox.db")).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let err = open_error(&dir);
    assert!(
        err.contains("schema version 99") && err.contains("mailbox.db"),
        "{err}"
    );
    assert!(!err.contains('\n'));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_version_1_database_is_migrated_and_keeps_its_messages() {
    let dir = scratch_dir("v1");
    let db = rusqlite::Connection::open(dir.join("mailbox.db")).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
        CREATE TABLE messages (
            number INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            body TEXT NOT NULL,
            stored_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            until_ack INTEGER NOT NULL
        );
        CREATE INDEX messages_by_name ON messages (name, number);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('boots', 1);
        INSERT INTO messages VALUES (7, 'dev', '{\"from\":\"v1\"}', 1, 9999999999999, 0);
        PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(db);

    let hub = TestHub::start(Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    })
    .await;
    let mut client = TestClient::synced(&hub, "dev").await;
    assert_eq!(
        client.recv().await,
        message(&json!("m7"), json!({"from": "v1"}))
    );
    hub.stop().await;

    let db = rusqlite::Connection::open(dir.join("mailbox.db")).unwrap();
    let version: i64 = db
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    let indexes: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'messages_by_name'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!((version, indexes), (2, 0));
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_database_is_refused_naming_the_file() {
    let dir = scratch_dir("corrupt");
    let file = dir.join("mailbox.db");
    std::fs::write(&file, vec![b'x'; 8192]).unwrap();
    let err = open_error(&dir);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("unreadable") && !err.contains('\n'), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_data_dir_that_cannot_be_written_is_refused() {
    // /proc refuses new files even to root, unlike a directory without write permission.
    let dir = PathBuf::from("/proc/self/tcphub-data");
    let err = open_error(&dir);
    assert!(
        err.starts_with("data dir /proc/self/tcphub-data is not writable: "),
        "{err}"
    );
}

fn open_error(dir: &std::path::Path) -> String {
    let config = Config {
        data_dir: Some(dir.to_path_buf()),
        ..Config::default()
    };
    match Hub::open(config) {
        Ok(_) => panic!("the hub opened {}", dir.display()),
        Err(err) => err.to_string(),
    }
}

/// The real binary on a data dir; killed (SIGKILL) when dropped.
struct Binary {
    child: Child,
    tcp_addr: String,
    http_addr: String,
}

impl Binary {
    async fn start(dir: &std::path::Path) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tcphub"))
            .args(["--log-format", "json", "--tcp-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .env_remove("TCPHUB_DATA_DIR")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut logs = BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = loop {
            let line = timeout(PATIENCE, logs.next_line())
                .await
                .expect("no log line in time")
                .unwrap()
                .expect("the hub exited before listening");
            let entry: Value = serde_json::from_str(&line).unwrap();
            if entry["message"] == "tcphub listening" {
                break entry;
            }
        };
        // Keep reading the log so the hub never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = logs.next_line().await {} });
        Binary {
            child,
            tcp_addr: listening["tcp"].as_str().unwrap().to_owned(),
            http_addr: listening["http"].as_str().unwrap().to_owned(),
        }
    }
}

#[tokio::test]
async fn every_stored_202_survives_kill_9_and_is_delivered_once() {
    const N: usize = 64;
    let dir = scratch_dir("crash");
    let mut hub = Binary::start(&dir).await;
    let http = reqwest::Client::new();
    let sends = (0..N).map(|n| {
        let request = http
            .post(format!("http://{}/clients/dev/send?ttl=600", hub.http_addr))
            .json(&json!({"message": n}));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 202);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["stored"], true);
            body["id"].as_str().unwrap().to_owned()
        }
    });
    let ids: BTreeSet<String> = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), N);
    hub.child.start_kill().unwrap();
    hub.child.wait().await.unwrap();

    let hub = Binary::start(&dir).await;
    let stream = tokio::net::TcpStream::connect(&hub.tcp_addr).await.unwrap();
    let mut client = TestClient::from_stream(stream);
    client.sync("dev").await;
    let mut delivered = BTreeSet::new();
    for _ in 0..N {
        let frame = client.recv().await;
        assert!(
            delivered.insert(frame["id"].as_str().unwrap().to_owned()),
            "twice: {frame}"
        );
    }
    assert_eq!(delivered, ids);
    let marker = http
        .post(format!("http://{}/clients/dev/send", hub.http_addr))
        .json(&json!({"message": "marker"}))
        .send()
        .await
        .unwrap();
    assert_eq!(marker.status(), 202);
    assert_eq!(client.recv().await["message"], "marker");
    drop(hub);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_drain_closes_the_database_with_its_removals_committed() {
    let dir = scratch_dir("drain");
    let mut hub = Binary::start(&dir).await;
    let http = reqwest::Client::new();
    let send = |query: &str| {
        http.post(format!("http://{}/clients/dev/send{query}", hub.http_addr))
            .json(&json!({"message": "once"}))
            .send()
    };
    let sent: Value = send("?ttl=600").await.unwrap().json().await.unwrap();
    let stream = tokio::net::TcpStream::connect(&hub.tcp_addr).await.unwrap();
    let mut client = TestClient::from_stream(stream);
    client.sync("dev").await;
    assert_eq!(client.recv().await, message(&sent["id"], json!("once")));

    // The delivery's removal is queued, not waited for: the drain commits it.
    let pid = hub.child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-s", "TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = timeout(PATIENCE, hub.child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit}");
    // SQLite removes the WAL once a closing connection has merged it.
    assert!(dir.join("mailbox.db").exists());
    assert!(
        !dir.join("mailbox.db-wal").exists(),
        "the database was not closed"
    );

    let hub = Binary::start(&dir).await;
    let stream = tokio::net::TcpStream::connect(&hub.tcp_addr).await.unwrap();
    let mut client = TestClient::from_stream(stream);
    client.sync("dev").await;
    let marker = reqwest::Client::new()
        .post(format!("http://{}/clients/dev/send", hub.http_addr))
        .json(&json!({"message": "marker"}))
        .send()
        .await
        .unwrap();
    assert_eq!(marker.status(), 202);
    assert_eq!(client.recv().await["message"], "marker");
    drop(hub);
    std::fs::remove_dir_all(&dir).unwrap();
}
