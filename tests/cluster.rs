//! Cluster mode end to end: three hubs in this process on one real
//! `nats-server`, real TCP clients and real HTTP requests to each node.
//! The scenarios follow the cluster test plan: directed sends, kicks and
//! ack waits across nodes, unknown names, listings, replace and reject,
//! broadcasts, groups, bulk sends, a node leaving, and the broker restarting.

mod common;

use std::time::Duration;

use common::nats::NatsServer;
use common::{TestClient, TestHub};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tcphub::Config;
use tcphub::cluster::ClusterSettings;
use tcphub::cluster::broker::{Broker, BrokerOptions};
use tcphub::cluster::names::{Holder, Names};
use tcphub::cluster::nodes::{NodeRecord, Nodes};
use tcphub::config::DuplicateNames;
use tokio::time::{Instant, sleep};

/// Longest a condition polled across nodes may take to hold.
const PATIENCE: Duration = Duration::from_secs(15);

/// Short timers, so that liveness scenarios take seconds.
fn settings(server: &NatsServer) -> ClusterSettings {
    ClusterSettings {
        nats_urls: server.url(),
        node_ttl: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        rpc_timeout: Duration::from_secs(2),
        // Generous: the scenarios run side by side, and no scenario here
        // waits for a listing's timeout.
        list_timeout: Duration::from_secs(3),
        ..ClusterSettings::default()
    }
}

/// A node of the cluster named `name`.
async fn node(server: &NatsServer, name: &str, config: Config) -> TestHub {
    TestHub::start(Config {
        node_name: Some(name.to_owned()),
        cluster: Some(ClusterSettings {
            node_name: name.to_owned(),
            ..settings(server)
        }),
        ..config
    })
    .await
}

/// Three nodes, a, b and c, each seeing the other two.
async fn three_nodes(server: &NatsServer, config: Config) -> [TestHub; 3] {
    let a = node(server, "a", config.clone()).await;
    let b = node(server, "b", config.clone()).await;
    let c = node(server, "c", config).await;
    for hub in [&a, &b, &c] {
        wait_until(hub, "/nodes", |nodes| {
            nodes["nodes"].as_array().map_or(0, Vec::len) == 3
        })
        .await;
    }
    [a, b, c]
}

/// Polls `GET path` on `hub` until `holds` is true of its body.
async fn wait_until(hub: &TestHub, path: &str, holds: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = hub.get(path).await;
        if status == 200 && holds(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never held: last {status} {body}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// The node id of `hub`.
async fn node_id(hub: &TestHub) -> String {
    let (_, nodes) = hub.get("/nodes").await;
    let port = hub.http_addr.to_string();
    nodes["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["httpAddr"] == port.as_str()))
        .and_then(|n| n["id"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_on_one_node_is_reached_through_every_node() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let mut device = TestClient::synced(&a, "device-1").await;
    let a_id = node_id(&a).await;

    for (via, text) in [(&b, "via b"), (&c, "via c"), (&a, "via a")] {
        let (status, body) = via
            .post("/clients/device-1/send", json!({"message": text}))
            .await;
        assert_eq!(status, 202, "{body}");
        let frame = device.recv().await;
        assert_eq!(frame["message"], text);
        assert_eq!(
            frame["id"], body["id"],
            "the answer names the id the client got"
        );
        assert!(
            body["id"].as_str().unwrap_or_default().ends_with(&a_id),
            "ids carry the issuing node: {body}"
        );
    }
    for hub in [&a, &b, &c] {
        let (status, client) = hub.get("/clients/device-1").await;
        assert_eq!(status, 200, "{client}");
        assert_eq!(client["node"], a_id.as_str());
        assert_eq!(client["name"], "device-1");
    }
    // An ack wait held by the owner node.
    let ask = b.post(
        "/clients/device-1/send?wait=ack&timeout=5000",
        json!({"message": "ack me"}),
    );
    let answer = async {
        let frame = device.recv().await;
        device
            .send(&json!({"type": "ack", "id": frame["id"]}))
            .await;
        frame
    };
    let ((status, body), frame) = tokio::join!(ask, answer);
    assert_eq!((status, &body["acked"]), (200, &json!(true)), "{body}");
    assert_eq!(body["id"], frame["id"]);
    let (status, body) = c
        .post(
            "/clients/device-1/send?wait=ack&timeout=300",
            json!({"message": "x"}),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (504, &json!("ack_timeout")),
        "{body}"
    );
    assert_eq!(device.recv().await["message"], "x");

    // A kick through a third node closes it on its own node.
    let (status, _) = c.delete("/clients/device-1").await;
    assert_eq!(status, 204);
    device.expect_bye("kicked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_name_is_404_on_every_node_at_once() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    for hub in [&a, &b, &c] {
        let (status, body) = hub
            .post("/clients/nobody/send", json!({"message": 1}))
            .await;
        assert_eq!((status, &body["code"]), (404, &json!("client_not_found")));
        let (status, _) = hub.get("/clients/nobody").await;
        assert_eq!(status, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listings_page_through_every_node_once() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let mut clients = Vec::new();
    let mut want = Vec::new();
    for (hub, node) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        for n in 0..4 {
            let name = format!("{node}-dev-{n}");
            clients.push(TestClient::synced(hub, &name).await);
            want.push(name);
        }
        let mut unnamed = TestClient::connect(hub).await;
        unnamed.ping().await;
        clients.push(unnamed);
    }
    want.sort();
    for hub in [&a, &b, &c] {
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let (status, page) = hub
                .get(&format!("/clients?named=true&limit=5{after}"))
                .await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["total"], 12, "{page}");
            assert!(page.get("partial").is_none(), "{page}");
            for client in page["clients"].as_array().cloned().unwrap_or_default() {
                seen.push(client["name"].as_str().unwrap_or_default().to_owned());
            }
            match page["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, want, "every named client once");
        let (_, all) = hub.get("/clients?limit=0").await;
        assert_eq!(all["total"], 15);
        let (_, prefixed) = hub.get("/clients?prefix=b-").await;
        assert_eq!(prefixed["total"], 4);
    }
}

#[tokio::test]
async fn a_name_held_by_a_node_of_another_protocol_version_is_503_cluster_unavailable() {
    let server = NatsServer::start();
    let a = node(&server, "a", Config::default()).await;
    // A node of another release: live in the node table, holding `device-1`,
    // and refusing every call of this version, as such a node does.
    let options = BrokerOptions::new("newer", Duration::from_millis(500));
    let broker = Broker::connect(&server.url(), options).await.unwrap();
    let cluster = settings(&server);
    let newer = "newer-00000001";
    let record = NodeRecord {
        id: newer.to_owned(),
        name: "newer".to_owned(),
        http_addr: "127.0.0.1:1".to_owned(),
        started_at: 0,
        clients: 1,
    };
    Nodes::open(&broker, &cluster)
        .await
        .unwrap()
        .beat(&record)
        .await
        .unwrap();
    let names = Names::open(&broker, &cluster).await.unwrap();
    names
        .create("device-1", &Holder::new(newer, 1))
        .await
        .unwrap();
    let subject = format!("tcphub.{}.node.{newer}.rpc", cluster.cluster_name);
    let mut calls = broker.client().subscribe(subject).await.unwrap();
    broker.client().flush().await.unwrap();
    let client = broker.client().clone();
    tokio::spawn(async move {
        let refusal = json!({"error": {"code": "unsupported_version",
            "detail": "protocol version 2; this node speaks 3", "version": 3}});
        while let Some(call) = calls.next().await {
            if let Some(reply) = call.reply {
                let bytes = serde_json::to_vec(&refusal).unwrap();
                client.publish(reply, bytes.into()).await.unwrap();
            }
        }
    });

    let (status, body) = a
        .post("/clients/device-1/send", json!({"message": "hi"}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "cluster_unavailable", "{body}");
}

#[tokio::test]
async fn a_claim_that_landed_leaves_nothing_in_flight() {
    let server = NatsServer::start();
    let [a, b, _c] = three_nodes(&server, Config::default()).await;
    let in_flight = |hub: &TestHub| hub.registry.metrics().cluster_claims_in_flight.get();
    // A first claim, a rename (a second claim of the session), and a takeover
    // from another node: each has finished when its `welcome` comes.
    let mut device = TestClient::synced(&a, "device-1").await;
    assert_eq!(in_flight(&a), 0, "a first claim");
    device.sync("device-2").await;
    assert_eq!(in_flight(&a), 0, "a rename");
    let _newer = TestClient::synced(&b, "device-2").await;
    device.expect_bye("replaced").await;
    assert_eq!((in_flight(&a), in_flight(&b)), (0, 0), "a takeover");
    let exposed = b.metrics().await;
    assert!(
        exposed.contains("tcphub_cluster_claims_in_flight 0"),
        "{exposed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_sync_on_another_node_replaces_the_older_one() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let mut old = TestClient::synced(&a, "kiosk").await;
    let mut new = TestClient::synced(&b, "kiosk").await;
    old.expect_bye("replaced").await;
    let (status, _) = c
        .post("/clients/kiosk/send", json!({"message": "hi"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(new.recv().await["message"], "hi");
    let b_id = node_id(&b).await;
    wait_until(&a, "/clients/kiosk", |client| {
        client["node"] == b_id.as_str()
    })
    .await;
}

/// A node remembers who answered for a name it sent to; a name that moved
/// since (to another node, to a new session on the same node, or away) is
/// still reached, or 404, from that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_that_moved_is_followed_by_a_node_that_sent_to_it_before() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let send = |text: &'static str| c.post("/clients/meter/send", json!({"message": text}));

    let mut first = TestClient::synced(&a, "meter").await;
    for text in ["one", "two"] {
        assert_eq!(send(text).await.0, 202);
        assert_eq!(first.recv().await["message"], text);
    }
    let mut on_b = TestClient::synced(&b, "meter").await;
    first.expect_bye("replaced").await;
    assert_eq!(send("three").await.0, 202);
    assert_eq!(on_b.recv().await["message"], "three");

    let mut back_on_a = TestClient::synced(&a, "meter").await;
    on_b.expect_bye("replaced").await;
    assert_eq!(send("four").await.0, 202);
    assert_eq!(back_on_a.recv().await["message"], "four");

    back_on_a.close().await;
    wait_until_status(&a, "/clients/meter", 404).await;
    let (status, body) = send("five").await;
    assert_eq!(
        (status, &body["code"]),
        (404, &json!("client_not_found")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_reject_a_name_held_on_another_node_is_name_taken() {
    let server = NatsServer::start();
    let config = Config {
        duplicate_names: DuplicateNames::Reject,
        ..Config::default()
    };
    let [a, b, _c] = three_nodes(&server, config).await;
    let mut first = TestClient::synced(&a, "meter").await;
    let mut second = TestClient::connect(&b).await;
    second
        .send(&json!({"type": "sync", "clientName": "meter"}))
        .await;
    second.expect_error("name_taken").await;
    second.ping().await;
    b.expect_marker_next(&mut first, "meter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broadcast_through_one_node_reaches_every_client_once() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let mut clients = Vec::new();
    for (hub, node) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        for n in 0..3 {
            clients.push(TestClient::synced(hub, &format!("{node}{n}")).await);
        }
    }
    let mut ids = Vec::new();
    for round in 0..5 {
        let (status, body) = b.post("/broadcast", json!({"message": round})).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(
            (&body["recipients"], &body["queued"]),
            (&json!(9), &json!(9))
        );
        assert!(body.get("partial").is_none(), "{body}");
        ids.push(body["id"].clone());
    }
    for client in &mut clients {
        for (round, id) in ids.iter().enumerate() {
            let frame = client.recv().await;
            assert_eq!(
                (&frame["id"], &frame["message"], &frame["scope"]),
                (id, &json!(round), &json!("broadcast"))
            );
        }
    }
    // Each client got each broadcast once: the next frame is a fresh marker.
    for (n, client) in clients.iter_mut().enumerate() {
        let name = format!("{}{}", ["a", "b", "c"][n / 3], n % 3);
        c.expect_marker_next(client, &name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_and_bulk_sends_work_across_nodes() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let mut on_a = TestClient::connect(&a).await;
    on_a.send(&json!({"type": "sync", "clientName": "k-a", "groups": ["kiosks"]}))
        .await;
    assert_eq!(on_a.recv().await["type"], "welcome");
    let mut on_b = TestClient::connect(&b).await;
    on_b.send(&json!({"type": "sync", "clientName": "k-b", "groups": ["kiosks", "floor-2"]}))
        .await;
    assert_eq!(on_b.recv().await["type"], "welcome");

    let (_, groups) = c.get("/groups").await;
    assert_eq!(
        groups["groups"],
        json!([{"name": "floor-2", "members": 1}, {"name": "kiosks", "members": 2}])
    );
    let (_, kiosks) = c.get("/groups/kiosks").await;
    assert_eq!(kiosks["members"], 2);
    let (status, sent) = c.post("/groups/kiosks/send", json!({"message": "g"})).await;
    assert_eq!((status, &sent["recipients"]), (202, &json!(2)), "{sent}");
    for client in [&mut on_a, &mut on_b] {
        let frame = client.recv().await;
        assert_eq!(
            (&frame["group"], &frame["id"]),
            (&json!("kiosks"), &sent["id"])
        );
    }
    // A backend sets a group on a client of another node.
    let (status, set) = c
        .put("/clients/k-a/groups", json!({"groups": ["floor-2"]}))
        .await;
    assert_eq!(
        (status, &set["groups"]),
        (200, &json!(["floor-2"])),
        "{set}"
    );
    assert_eq!(
        on_a.recv().await,
        json!({"type": "groups", "groups": ["floor-2"]})
    );

    let (status, bulk) = c
        .post(
            "/send",
            json!({"messages": [
                {"to": ["k-a", "k-b", "ghost", "k-a"], "message": "bulk"},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{bulk}");
    let statuses: Vec<&str> = bulk["results"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["status"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, ["queued", "queued", "not_found", "queued"]);
    assert_eq!(on_a.recv().await["message"], "bulk");
    assert_eq!(on_b.recv().await["message"], "bulk");
    c.expect_marker_next(&mut on_a, "k-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_drains_frees_its_names_for_the_others() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let mut device = TestClient::synced(&c, "roamer").await;
    let c_id = node_id(&c).await;
    wait_until(&a, "/clients/roamer", |client| {
        client["node"] == c_id.as_str()
    })
    .await;
    c.stop().await;
    device.expect_bye("shutdown").await;
    // Gone from the table and the listings, and free for another node.
    let (status, _) = a.get("/clients/roamer").await;
    assert_eq!(status, 404);
    wait_until(&a, "/nodes", |nodes| {
        nodes["nodes"].as_array().map_or(0, Vec::len) == 2
    })
    .await;
    let mut back = TestClient::synced(&b, "roamer").await;
    a.expect_marker_next(&mut back, "roamer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_keeps_local_sends_and_the_names_come_back() {
    let mut server = NatsServer::start();
    let [a, b, _c] = three_nodes(&server, Config::default()).await;
    let mut device = TestClient::synced(&a, "survivor").await;
    server.restart();
    // Local clients never needed the broker.
    a.expect_marker_next(&mut device, "survivor").await;
    // Once reconnected and reconciled, the name is reachable from b again.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = b
            .post("/clients/survivor/send", json!({"message": "back"}))
            .await;
        if status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reachable: {status} {body}"
        );
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(device.recv().await["message"], "back");
}

/// A broker back without its storage (replaced, or its disk lost) has lost
/// the stored messages, but not the mailbox: the stream and the table of
/// what each name was given come back, so a message kept until acked and
/// delivered twice is marked `redelivered` the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_back_without_its_storage_keeps_marking_redeliveries() {
    let mut server = NatsServer::start();
    let [a, b, _c] = three_nodes(&server, Config::default()).await;
    let reconciled = a.registry.metrics().cluster_reconciliations.get();
    server.restart_without_storage();
    // Reconnected and reconciled: a store now reaches the new broker.
    let deadline = Instant::now() + PATIENCE;
    while a.registry.metrics().cluster_reconciliations.get() == reconciled {
        assert!(Instant::now() < deadline, "a never reconciled");
        sleep(Duration::from_millis(50)).await;
    }
    redelivered_until_acked(&a, &b, &a, "dev-4").await;
}

/// A node run as its own process, for the faults a process in this one cannot have.
struct NodeProcess {
    child: tokio::process::Child,
    tcp_addr: String,
}

impl NodeProcess {
    async fn start(server: &NatsServer, name: &str) -> NodeProcess {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tcphub"))
            .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--log-format", "json", "--node-name", name])
            .args(["--cluster-nats-url", &server.url()])
            .args(["--cluster-node-ttl", "2", "--cluster-heartbeat", "0.5"])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the hub binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut tcp_addr = String::new();
        let joined = async {
            while let Ok(Some(line)) = lines.next_line().await {
                let line: Value = serde_json::from_str(&line).unwrap_or_default();
                if line["message"] == "tcphub listening" {
                    tcp_addr = line["tcp"].as_str().unwrap_or_default().to_owned();
                }
                if line["message"] == "joined the cluster" {
                    return;
                }
            }
            panic!("the hub ended before joining the cluster");
        };
        tokio::time::timeout(PATIENCE, joined)
            .await
            .expect("the hub joins in time");
        NodeProcess { child, tcp_addr }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_s_names_are_free_at_once_and_swept_within_the_ttl() {
    let server = NatsServer::start();
    let mut doomed = NodeProcess::start(&server, "doomed").await;
    let b = node(
        &server,
        "b",
        Config {
            duplicate_names: DuplicateNames::Reject,
            ..Config::default()
        },
    )
    .await;
    let stream = tokio::net::TcpStream::connect(&doomed.tcp_addr)
        .await
        .expect("connects to the doomed node");
    let mut victim = TestClient::from_stream(stream);
    victim.sync("victim").await;
    wait_until(&b, "/clients/victim", |client| client["name"] == "victim").await;

    doomed.child.start_kill().expect("kill -9");
    doomed.child.wait().await.expect("reaped");
    // No wait for a timeout: the dead node has no subscription left.
    let (status, body) = b.post("/clients/victim/send", json!({"message": 1})).await;
    assert_eq!(
        (status, &body["code"]),
        (404, &json!("client_not_found")),
        "{body}"
    );
    // Even under reject the name is free: its holder's node is gone.
    let mut heir = TestClient::synced(&b, "victim").await;
    b.expect_marker_next(&mut heir, "victim").await;
    // The dead node leaves the node table, and its names are swept.
    wait_until(&b, "/nodes", |nodes| {
        nodes["nodes"].as_array().map_or(0, Vec::len) == 1
    })
    .await;
    let (_, list) = b.get("/clients").await;
    assert_eq!(list["total"], 1, "{list}");
    assert!(list.get("partial").is_none(), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_broker_stops_the_start_with_one_line_naming_it() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("nats://{}", closed.local_addr().expect("its address"));
    drop(closed);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--cluster-nats-url", &url])
        .output()
        .await
        .expect("the hub binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("tcphub: NATS broker unreachable at {url}: ")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_paused_past_the_ttl_gives_up_names_taken_meanwhile() {
    let server = NatsServer::start();
    let paused = NodeProcess::start(&server, "paused").await;
    let b = node(&server, "b", Config::default()).await;
    let stream = tokio::net::TcpStream::connect(&paused.tcp_addr)
        .await
        .expect("connects to the node to pause");
    let mut stale = TestClient::from_stream(stream);
    stale.sync("pump-3").await;
    wait_until(&b, "/clients/pump-3", |client| client["name"] == "pump-3").await;

    let pid = paused.child.id().expect("a running child") as i32;
    let signal = |sig| assert_eq!(send_signal(pid, sig), 0);
    signal(libc::SIGSTOP);
    wait_until(&b, "/nodes", |nodes| {
        nodes["nodes"].as_array().map_or(0, Vec::len) == 1
    })
    .await;
    // The device reconnects through another node while the first is paused.
    let mut fresh = TestClient::synced(&b, "pump-3").await;
    signal(libc::SIGCONT);
    // Back, the paused node learns the name moved and closes its stale socket.
    stale.expect_bye("replaced").await;
    b.expect_marker_next(&mut fresh, "pump-3").await;
}

/// Sends `signal` to process `pid` with the `kill` command (the crate
/// forbids unsafe code, so no `libc::kill`).
fn send_signal(pid: i32, signal: i32) -> i32 {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill runs");
    status.code().unwrap_or(-1)
}

/// Samples every node's own clients every 50 ms and records a violation when
/// `name` is held on two nodes at once for longer than 500 ms.
fn sample_holders(
    hubs: Vec<tcphub::Registry>,
    name: &'static str,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let violated = std::sync::Arc::new(AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&violated);
    let sampler = tokio::spawn(async move {
        let mut doubled_since: Option<Instant> = None;
        loop {
            let holders = hubs.iter().filter(|hub| hub.get(name).is_some()).count();
            match (holders > 1, doubled_since) {
                (true, None) => doubled_since = Some(Instant::now()),
                (true, Some(since)) if since.elapsed() > Duration::from_millis(500) => {
                    flag.store(true, Ordering::SeqCst);
                }
                (false, _) => doubled_since = None,
                _ => {}
            }
            sleep(Duration::from_millis(50)).await;
        }
    });
    (sampler, violated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_name_synced_at_once_on_three_nodes_leaves_one_holder() {
    const NAME: &str = "contended";
    let server = NatsServer::start();
    let nodes = three_nodes(&server, Config::default()).await;
    let registries = nodes.iter().map(|hub| hub.registry.clone()).collect();
    let (sampler, violated) = sample_holders(registries, NAME);
    for round in 0..20 {
        // Two on the first node: claims of one name on one node race too.
        let mut clients = Vec::new();
        for hub in [&nodes[0], &nodes[0], &nodes[1], &nodes[2]] {
            clients.push(TestClient::connect(hub).await);
        }
        let syncs = clients.iter_mut().map(|client| async move {
            client
                .send(&json!({"type": "sync", "clientName": NAME}))
                .await;
        });
        futures_util::future::join_all(syncs).await;
        // Every claim has finished once its client has its first frame:
        // `welcome`, or `bye` for a claim overtaken before it landed. Only
        // then can the name have settled (a claim still being written may
        // yet take it over).
        let mut firsts = Vec::new();
        for client in &mut clients {
            firsts.push(client.recv().await);
        }
        // Settled: one node holds the name, and every node's API names that node.
        let deadline = Instant::now() + PATIENCE;
        let survivor = loop {
            let holders: Vec<usize> = (0..3)
                .filter(|&n| nodes[n].registry.get(NAME).is_some())
                .collect();
            let mut answers = Vec::new();
            if let [only] = holders[..] {
                let id = node_id(&nodes[only]).await;
                let mut agreed = true;
                for hub in &nodes {
                    let (status, client) = hub.get(&format!("/clients/{NAME}")).await;
                    agreed &= status == 200 && client["node"] == id.as_str();
                    answers.push((status, client));
                }
                if agreed {
                    break only;
                }
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: never settled on one holder: held on {holders:?}, answers {answers:?}"
            );
            sleep(Duration::from_millis(20)).await;
        };
        // The survivor is reached through every node, exactly once per send,
        // after its own welcome; the others were told `bye` `replaced`.
        let holder_id = nodes[survivor].registry.get(NAME).map(|client| client.id());
        let mut winner = None;
        for (n, (client, first)) in clients.iter_mut().zip(firsts).enumerate() {
            let on = if n < 2 { 0 } else { n - 1 };
            if first["type"] == "welcome"
                && on == survivor
                && Some(&first["id"]) == holder_id.as_ref().map(|id| json!(id)).as_ref()
            {
                winner = Some(n);
            } else if first["type"] == "welcome" {
                client.expect_bye("replaced").await;
            } else {
                assert_eq!(
                    first,
                    json!({"type": "bye", "reason": "replaced"}),
                    "round {round}"
                );
            }
        }
        let winner = &mut clients
            [winner.unwrap_or_else(|| panic!("round {round}: no client holds the name"))];
        for (n, hub) in nodes.iter().enumerate() {
            let marker = format!("round {round} via node {n}");
            let (status, _) = hub
                .post(&format!("/clients/{NAME}/send"), json!({"message": marker}))
                .await;
            assert_eq!(status, 202, "round {round}");
            assert_eq!(winner.recv().await["message"], marker.as_str());
        }
        drop(clients);
        let deadline = Instant::now() + PATIENCE;
        while nodes.iter().any(|hub| !hub.registry.is_empty()) {
            assert!(Instant::now() < deadline, "round {round}: clients stayed");
            sleep(Duration::from_millis(20)).await;
        }
        // Released in the table too: a send finds nobody.
        let deadline = Instant::now() + PATIENCE;
        while nodes[round % 3]
            .post(&format!("/clients/{NAME}/send"), json!({"message": 0}))
            .await
            .0
            != 404
        {
            assert!(
                Instant::now() < deadline,
                "round {round}: the name stayed claimed"
            );
            sleep(Duration::from_millis(20)).await;
        }
    }
    sampler.abort();
    assert!(
        !violated.load(std::sync::atomic::Ordering::SeqCst),
        "a name was held on two nodes for more than 500 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_on_the_owner_node_is_503_client_backlogged_through_another() {
    let server = NatsServer::start();
    let config = Config {
        queue_capacity: 1,
        ..Config::default()
    };
    let [a, b, _c] = three_nodes(&server, config).await;
    let _never_reads = TestClient::synced(&a, "stuck").await;
    let big = "b".repeat(60_000);
    // The socket buffers absorb some messages; then one is queued; then the queue is full.
    let mut sent = 0;
    let body = loop {
        let (status, body) = b.post("/clients/stuck/send", json!({"message": big})).await;
        if status != 202 {
            break body;
        }
        sent += 1;
        assert!(sent < 10_000, "the queue never filled");
    };
    assert_eq!(
        (&body["status"], &body["code"]),
        (&json!(503), &json!("client_backlogged")),
        "{body}"
    );
    let (_, client) = b.get("/clients/stuck").await;
    assert_eq!(client["queueLen"], 1);
}

/// A TCP proxy between one node and the broker that can be made a black hole:
/// connections stay open and bytes are read, but nothing gets through, as on a
/// cut network.
struct CutCable {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl CutCable {
    async fn to(server: &NatsServer) -> CutCable {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a proxy port");
        let port = listener.local_addr().expect("its address").port();
        let upstream = format!("127.0.0.1:{}", server.port());
        let cut = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&cut);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_in, client_out) = client.into_split();
                let (broker_in, broker_out) = broker.into_split();
                for (mut from, mut to) in [(client_in, broker_out), (broker_in, client_out)] {
                    let cut = std::sync::Arc::clone(&flag);
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf).await {
                            if n == 0 {
                                return;
                            }
                            if !cut.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            }
        });
        CutCable { port, cut, task }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CutCable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_the_broker_serves_its_own_and_gives_up_names_taken_meanwhile() {
    let server = NatsServer::start();
    let cable = CutCable::to(&server).await;
    let a = node(&server, "a", Config::default()).await;
    let c = TestHub::start(Config {
        node_name: Some("c".into()),
        cluster: Some(ClusterSettings {
            node_name: "c".into(),
            nats_urls: cable.url(),
            ..settings(&server)
        }),
        ..Config::default()
    })
    .await;
    wait_until(&a, "/nodes", |nodes| {
        nodes["nodes"].as_array().map_or(0, Vec::len) == 2
    })
    .await;
    let mut stale = TestClient::synced(&c, "sensor").await;
    let mut local = TestClient::synced(&c, "local-only").await;
    wait_until(&a, "/clients/sensor", |client| client["name"] == "sensor").await;

    cable.set_cut(true);
    // C notices, and answers what needs the cluster with 503; its own clients still work.
    let unavailable = wait_until_status(&c, "/clients?limit=0", 503).await;
    assert_eq!(unavailable["code"], "cluster_unavailable", "{unavailable}");
    c.expect_marker_next(&mut local, "local-only").await;
    let (status, _) = c.get("/readyz").await;
    assert_eq!(status, 200, "readiness does not depend on the broker");
    // The others drop C after its ttl; the device reconnects through A.
    wait_until(&a, "/nodes", |nodes| {
        nodes["nodes"].as_array().map_or(0, Vec::len) == 1
    })
    .await;
    let mut moved = TestClient::synced(&a, "sensor").await;

    cable.set_cut(false);
    // Back, C learns the name moved: its stale socket gets bye replaced.
    stale.expect_bye("replaced").await;
    a.expect_marker_next(&mut moved, "sensor").await;
    c.expect_marker_next(&mut local, "local-only").await;
    wait_until(&a, "/clients/local-only", |client| {
        client["name"] == "local-only"
    })
    .await;
}

/// Polls `GET path` on `hub` until it answers `status`; the body then.
async fn wait_until_status(hub: &TestHub, path: &str, status: u16) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (got, body) = hub.get(path).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} never answered {status}: last {got} {body}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}
/// A direct `message` frame as a stored message arrives.
fn stored_frame(id: &Value, body: Value) -> Value {
    json!({"type": "message", "id": id, "scope": "direct", "message": body})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_stored_through_one_node_reaches_the_name_on_another() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let (status, body) = b
            .post("/clients/dev-1/send?ttl=60", json!({"message": {"n": n}}))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body, json!({"id": body["id"], "queued": 0, "stored": true}));
        ids.push(body["id"].clone());
    }
    for hub in [&a, &b, &c] {
        let (status, list) = hub.get("/mailboxes").await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["total"], 1);
        assert_eq!(list["mailboxes"][0]["name"], "dev-1");
        assert_eq!(list["mailboxes"][0]["pending"], 3);
        let (_, mailbox) = hub.get("/mailboxes/dev-1").await;
        let listed: Vec<&Value> = mailbox["messages"]
            .as_array()
            .map(|messages| messages.iter().map(|m| &m["id"]).collect())
            .unwrap_or_default();
        assert_eq!(listed, ids.iter().collect::<Vec<_>>(), "{mailbox}");
    }

    let mut device = TestClient::connect(&c).await;
    device.sync("dev-1").await;
    for (n, id) in (1..=3).zip(&ids) {
        assert_eq!(device.recv().await, stored_frame(id, json!({"n": n})));
    }
    let (status, live) = a
        .post("/clients/dev-1/send?ttl=60", json!({"message": "live"}))
        .await;
    assert_eq!(status, 202, "{live}");
    assert_eq!(live["stored"], false);
    assert_eq!(
        device.recv().await,
        stored_frame(&live["id"], json!("live"))
    );
    for hub in [&a, &b, &c] {
        wait_until(hub, "/mailboxes", |list| list["total"] == 0).await;
    }
    let delivered: u64 = [&a, &b, &c]
        .iter()
        .map(|hub| hub.registry.metrics().mailbox_delivered.get())
        .sum();
    assert_eq!(delivered, 3);
}

/// Stores a message for `name` through `store` until acked; a device named
/// `name` gets it on `first`, leaves without acking, and gets it again on
/// `again`, marked `redelivered`. That device, still connected, and the
/// answer to the store.
async fn redelivered_until_acked(
    store: &TestHub,
    first: &TestHub,
    again: &TestHub,
    name: &str,
) -> (TestClient, Value) {
    let (status, kept) = store
        .post(
            &format!("/clients/{name}/send?ttl=60&until=ack"),
            json!({"message": "keep me"}),
        )
        .await;
    assert_eq!(status, 202, "{kept}");
    assert_eq!(kept["stored"], true);

    let mut device = TestClient::synced(first, name).await;
    assert_eq!(
        device.recv().await,
        stored_frame(&kept["id"], json!("keep me"))
    );
    device.close().await;
    wait_until(store, "/clients", |list| list["total"] == 0).await;

    let mut device = TestClient::synced(again, name).await;
    let mut want = stored_frame(&kept["id"], json!("keep me"));
    want["redelivered"] = json!(true);
    assert_eq!(device.recv().await, want);
    (device, kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn until_ack_is_redelivered_on_another_node_until_acked() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let (mut second, kept) = redelivered_until_acked(&a, &b, &c, "dev-2").await;
    second.send(&json!({"type": "ack", "id": kept["id"]})).await;
    for hub in [&a, &b, &c] {
        wait_until(hub, "/mailboxes/dev-2", |mailbox| mailbox["pending"] == 0).await;
    }
    // Stored while the name is live on c: pushed at once, kept until acked.
    let (status, live) = b
        .post(
            "/clients/dev-2/send?ttl=60&until=ack",
            json!({"message": "now"}),
        )
        .await;
    assert_eq!(status, 202, "{live}");
    assert_eq!(live, json!({"id": live["id"], "queued": 1, "stored": true}));
    assert_eq!(second.recv().await, stored_frame(&live["id"], json!("now")));
    let (_, mailbox) = a.get("/mailboxes/dev-2").await;
    assert_eq!(mailbox["pending"], 1, "{mailbox}");
    second.send(&json!({"type": "ack", "id": live["id"]})).await;
    wait_until(&a, "/mailboxes/dev-2", |mailbox| mailbox["pending"] == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_mailbox_limits_answer_503_and_purges_reach_every_node() {
    let server = NatsServer::start();
    let config = Config {
        mailbox_capacity: 2,
        ..Config::default()
    };
    let [a, b, c] = three_nodes(&server, config).await;
    for hub in [&a, &b] {
        let (status, body) = hub
            .post("/clients/dev-3/send?ttl=60", json!({"message": "x"}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, full) = c
        .post("/clients/dev-3/send?ttl=60", json!({"message": "x"}))
        .await;
    assert_eq!(
        (status, &full["code"]),
        (503, &json!("mailbox_full")),
        "{full}"
    );
    assert_eq!(
        full["detail"],
        "the mailbox of \"dev-3\" holds 2 messages already; nothing was stored"
    );
    let (status, bulk) = a
        .post(
            "/send",
            json!({"messages": [{"to": ["dev-3", "dev-4"], "message": "b", "ttl": 60}]}),
        )
        .await;
    assert_eq!(status, 200, "{bulk}");
    assert_eq!(
        (&bulk["mailboxFull"], &bulk["stored"]),
        (&json!(1), &json!(1)),
        "{bulk}"
    );

    let (status, _) = c.delete("/mailboxes/dev-3").await;
    assert_eq!(status, 204);
    for hub in [&a, &b, &c] {
        let (_, mailbox) = hub.get("/mailboxes/dev-3").await;
        assert_eq!(
            mailbox,
            json!({"name": "dev-3", "pending": 0, "messages": []})
        );
        let (_, list) = hub.get("/mailboxes").await;
        assert_eq!(list["total"], 1, "only dev-4 is left: {list}");
        assert_eq!(list["mailboxes"][0]["name"], "dev-4");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_cluster_messages_are_removed_and_counted_once() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let (status, body) = a
        .post("/clients/dev-5/send?ttl=1", json!({"message": "short"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let (_, kept) = a
        .post("/clients/dev-5/send?ttl=60", json!({"message": "long"}))
        .await;
    wait_until(&b, "/mailboxes/dev-5", |mailbox| mailbox["pending"] == 1).await;
    let expired: u64 = [&a, &b, &c]
        .iter()
        .map(|hub| hub.registry.metrics().mailbox_expired.get())
        .sum();
    assert_eq!(expired, 1);
    let mut device = TestClient::synced(&c, "dev-5").await;
    assert_eq!(
        device.recv().await,
        stored_frame(&kept["id"], json!("long"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_message_outlives_the_node_that_stored_it() {
    let server = NatsServer::start();
    let [a, b, c] = three_nodes(&server, Config::default()).await;
    let (status, stored) = b
        .post(
            "/clients/dev-6/send?ttl=60",
            json!({"message": "still here"}),
        )
        .await;
    assert_eq!(status, 202, "{stored}");
    b.stop().await;
    wait_until(&a, "/nodes", |nodes| {
        nodes["nodes"].as_array().map_or(0, Vec::len) == 2
    })
    .await;
    let mut device = TestClient::synced(&a, "dev-6").await;
    assert_eq!(
        device.recv().await,
        stored_frame(&stored["id"], json!("still here"))
    );
    wait_until(&c, "/mailboxes", |list| list["total"] == 0).await;
}
