//! The seed article's clients work unmodified: first their exact byte stream
//! (so this needs no Node), then the real scripts under Node.

mod common;

use std::process::Stdio;

use common::{PATIENCE, TestClient, TestHub};
use serde_json::{Value, json};
use tcphub::Config;
use tcphub::events::EventKind;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

#[tokio::test]
async fn the_articles_byte_stream_registers_and_is_counted() {
    let hub = TestHub::start(Config::default()).await;
    let mut events = hub.events();
    let mut client = TestClient::connect(&hub).await;
    // JSON.stringify output, written with no trailing newline, as the article's client does.
    client
        .send_raw(br#"{"type":"sync","clientName":"Client-1","message":" Synchronize basic information "}"#)
        .await;
    let welcome = client.recv().await;
    assert_eq!(
        welcome,
        json!({"type": "welcome", "id": welcome["id"], "clientName": "Client-1"})
    );
    client
        .send_raw(br#"{"type":"info","clientName":"Client-1","message":"1111"}"#)
        .await;
    let said = events
        .until(|event| matches!(event.kind, EventKind::Message { .. }))
        .await;
    assert_eq!(
        said.kind,
        EventKind::Message {
            message: json!("1111")
        }
    );
    assert_eq!(said.name.as_deref(), Some("Client-1"));
    let (_, listed) = hub.get("/clients/Client-1").await;
    assert_eq!(listed["framesIn"], 2);
}

/// One of the article's client scripts, running under Node.
struct NodeClient {
    name: &'static str,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl NodeClient {
    fn spawn(hub: &TestHub, script: &str, name: &'static str) -> NodeClient {
        let path = format!("{}/tests/seed/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg(path)
            .env("HUB_PORT", hub.tcp_addr.port().to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed to run the article's clients");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        NodeClient {
            name,
            child,
            stdout,
        }
    }

    /// The next frame the script printed as received from the hub.
    async fn received(&mut self) -> Value {
        let marker = format!("{} Received the information from the server : ", self.name);
        loop {
            let line = timeout(PATIENCE, self.stdout.next_line())
                .await
                .expect("the Node client printed nothing in time")
                .unwrap()
                .expect("the Node client exited");
            if let Some(frame) = line.strip_prefix(&marker) {
                return serde_json::from_str(frame)
                    .unwrap_or_else(|err| panic!("{frame:?}: {err}"));
            }
        }
    }
}

#[tokio::test]
async fn the_articles_node_clients_work_unmodified() {
    let hub = TestHub::start(Config::default()).await;
    let mut events = hub.events();
    let mut one = NodeClient::spawn(&hub, "client1.js", "Client-1");
    let mut two = NodeClient::spawn(&hub, "client2.js", "Client-2");
    for client in [&mut one, &mut two] {
        assert_eq!(client.received().await["type"], "welcome");
    }
    let (_, listed) = hub.get("/clients?named=true").await;
    let mut names: Vec<_> = listed["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    names.sort_by_key(|name| name.to_string());
    assert_eq!(names, vec![json!("Client-1"), json!("Client-2")]);

    for client in [&mut one, &mut two] {
        let path = format!("/clients/{}/send", client.name);
        let (status, body) = hub
            .post(&path, json!({"message": format!("for {}", client.name)}))
            .await;
        assert_eq!(status, 202);
        let want = json!({"type": "message", "id": body["id"], "scope": "direct", "message": format!("for {}", client.name)});
        assert_eq!(client.received().await, want);
    }
    let (_, body) = hub.post("/broadcast", json!({"message": "to both"})).await;
    assert_eq!(body["recipients"], 2);
    let want =
        json!({"type": "message", "id": body["id"], "scope": "broadcast", "message": "to both"});
    assert_eq!(one.received().await, want);
    assert_eq!(two.received().await, want);

    // Each script sends one `info` three seconds after connecting.
    let mut said = Vec::new();
    while said.len() < 2 {
        let event = events
            .until(|event| matches!(event.kind, EventKind::Message { .. }))
            .await;
        said.push((event.name.as_deref().map(str::to_owned), event.kind.clone()));
    }
    said.sort_by_key(|(name, _)| name.clone());
    assert_eq!(
        said,
        vec![
            (
                Some("Client-1".to_owned()),
                EventKind::Message {
                    message: json!("1111")
                }
            ),
            (
                Some("Client-2".to_owned()),
                EventKind::Message {
                    message: json!("222")
                }
            ),
        ]
    );
    for name in ["Client-1", "Client-2"] {
        assert_eq!(
            hub.get(&format!("/clients/{name}")).await.1["framesIn"],
            2,
            "{name}"
        );
    }
    let _ = one.child.kill().await;
    let _ = two.child.kill().await;
}
