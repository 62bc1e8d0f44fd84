//! Cluster mode's NATS layer against a real `nats-server` (one per test):
//! the broker connection and its state, the name table's compare-and-set
//! operations, the live-node table's expiry, and cross-node calls.
//!
//! Runs against whatever `NATS_SERVER_BIN` names (test-all.sh runs it on the
//! current release and on 2.10, the oldest supported line).

mod common;

use std::time::{Duration, SystemTime};

use common::PATIENCE;
use common::nats::NatsServer;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tcphub::cluster::broker::{Broker, BrokerOptions, BrokerState, ConnectError};
use tcphub::cluster::names::{Claim, Holder, NameEntry, Names};
use tcphub::cluster::nodes::{NodeRecord, Nodes, new_node_id};
use tcphub::cluster::rpc::{Gathered, Rpc, RpcError, Server};
use tcphub::cluster::{ClusterSettings, epoch_millis};
use tokio::time::{Instant, timeout};

/// Short timers, so expiry tests take about a second.
fn settings(server: &NatsServer) -> ClusterSettings {
    ClusterSettings {
        cluster_name: "test".to_owned(),
        node_name: "n".to_owned(),
        nats_urls: server.url(),
        node_ttl: Duration::from_secs(1),
        heartbeat: Duration::from_millis(200),
        ..ClusterSettings::default()
    }
}

async fn connect(server: &NatsServer) -> Broker {
    let options = BrokerOptions::new("test", Duration::from_millis(100));
    timeout(PATIENCE, Broker::connect(&server.url(), options))
        .await
        .expect("connect timed out")
        .expect("connect")
}

async fn names(server: &NatsServer) -> (Broker, Names) {
    let broker = connect(server).await;
    let names = Names::open(&broker, &settings(server)).await.unwrap();
    (broker, names)
}

fn holder(node: &str, session: u64) -> Holder {
    Holder::new(node, session)
}

#[tokio::test]
async fn an_unreachable_broker_at_start_is_one_line_naming_the_urls() {
    // Two ports that were free a moment ago: nothing listens there.
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let urls = format!(
        "nats://127.0.0.1:{},nats://127.0.0.1:{}",
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port()
    );
    drop((a, b));
    let options = BrokerOptions::new("test", Duration::from_secs(1));
    let err = timeout(PATIENCE, Broker::connect(&urls, options))
        .await
        .expect("a refused connection must fail fast")
        .expect_err("nothing listens");
    assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
    let line = err.to_string();
    assert!(
        line.starts_with(&format!("NATS broker unreachable at {urls}: ")),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line:?}");
}

#[tokio::test]
async fn the_broker_state_follows_a_paused_server_and_its_return() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let mut state = broker.watch_state();
    assert_eq!(broker.state(), BrokerState::Connected);

    server.pause();
    timeout(
        PATIENCE,
        state.wait_for(|s| *s == BrokerState::Disconnected),
    )
    .await
    .expect("a silent broker was not noticed")
    .unwrap();
    assert_eq!(broker.state(), BrokerState::Disconnected);
    // Calls fail at once rather than waiting for a broker that is gone.
    let rpc = Rpc::new(&broker, "test", "a-00000000");
    let err = rpc
        .request::<_, Value>("b-00000000", &json!(1), PATIENCE)
        .await
        .unwrap_err();
    assert_eq!(err, RpcError::Broker("broker unreachable".to_owned()));

    server.resume();
    timeout(PATIENCE, state.wait_for(|s| *s == BrokerState::Connected))
        .await
        .expect("the broker's return was not noticed")
        .unwrap();
}

#[tokio::test]
async fn a_taken_over_name_is_never_released_by_its_old_holder() {
    let server = NatsServer::start();
    let (_broker, names) = names(&server).await;
    // Node B has its own connection and opens the bucket node A created.
    let (_broker_b, names_b) = self::names(&server).await;
    let (a, b) = (holder("a-00000001", 1), holder("b-00000002", 7));

    let Claim::Created { revision: first } = names.create("dev-1", &a).await.unwrap() else {
        panic!("a free name must be created");
    };
    assert_eq!(names.get("dev-1").await.unwrap(), Some((a.clone(), first)));
    // A retried claim by the same session finds its own write.
    assert_eq!(
        names.create("dev-1", &a).await.unwrap(),
        Claim::Created { revision: first }
    );
    assert_eq!(
        names_b.create("dev-1", &b).await.unwrap(),
        Claim::Held {
            holder: a.clone(),
            revision: first
        }
    );

    let second = names_b
        .take_over("dev-1", &b, first)
        .await
        .unwrap()
        .unwrap();
    assert!(second > first);
    assert_eq!(names.get("dev-1").await.unwrap(), Some((b.clone(), second)));
    // The old holder disconnects and releases what it believes it holds: no effect.
    assert!(!names.release("dev-1", first).await.unwrap());
    assert_eq!(names.get("dev-1").await.unwrap(), Some((b.clone(), second)));
    // A takeover that expects a stale revision loses.
    let c = holder("c-00000003", 9);
    assert_eq!(names.take_over("dev-1", &c, first).await.unwrap(), None);

    assert!(names_b.release("dev-1", second).await.unwrap());
    assert_eq!(names.get("dev-1").await.unwrap(), None);
    assert!(!names.release("dev-1", second).await.unwrap());
    // Free again, over the delete marker.
    assert!(matches!(
        names.create("dev-1", &c).await.unwrap(),
        Claim::Created { .. }
    ));
}

#[tokio::test]
async fn of_two_takeovers_from_one_revision_exactly_one_wins() {
    let server = NatsServer::start();
    let (_broker, names) = names(&server).await;
    let Claim::Created { revision } = names.create("x", &holder("a-1", 1)).await.unwrap() else {
        panic!("a free name must be created");
    };
    let (b, c) = (holder("b-1", 2), holder("c-1", 3));
    let (by_b, by_c) = tokio::join!(
        names.take_over("x", &b, revision),
        names.take_over("x", &c, revision)
    );
    let (by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
    let (winner, won) = match (by_b, by_c) {
        (Some(won), None) => (b, won),
        (None, Some(won)) => (c, won),
        other => panic!("exactly one takeover must win, got {other:?}"),
    };
    assert_eq!(names.get("x").await.unwrap(), Some((winner, won)));
}

#[tokio::test]
async fn names_that_are_not_valid_keys_are_encoded_never_refused() {
    let server = NatsServer::start();
    let (_broker, names) = names(&server).await;
    let odd = [
        "with space",
        "ünïcödé ✓ 日本",
        "a.b",
        ".",
        "*",
        ">",
        "a.*.>",
        "=-_",
    ];
    let mut want = Vec::new();
    for (session, name) in (1..).zip(odd) {
        let holder = holder("a-1", session);
        let Claim::Created { revision } = names.create(name, &holder).await.unwrap() else {
            panic!("{name:?} must be created");
        };
        assert_eq!(
            names.get(name).await.unwrap(),
            Some((holder.clone(), revision))
        );
        want.push(NameEntry {
            name: name.to_owned(),
            holder,
            revision,
        });
    }
    // `*` and `>` are not wildcards here: each name is its own key.
    assert_eq!(names.get("a.b.c").await.unwrap(), None);
    // A released name drops out of the listing.
    let released = want.pop().unwrap();
    assert!(
        names
            .release(&released.name, released.revision)
            .await
            .unwrap()
    );

    let mut entries = names.entries().await.unwrap();
    entries.sort_by_key(|entry| entry.revision);
    assert_eq!(entries, want);
}

#[tokio::test]
async fn nodes_that_stop_beating_disappear_after_the_ttl() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let settings = settings(&server);
    let nodes = Nodes::open(&broker, &settings).await.unwrap();
    let record = |name: &str| NodeRecord {
        id: new_node_id(name),
        name: name.to_owned(),
        http_addr: "127.0.0.1:8080".to_owned(),
        started_at: epoch_millis(SystemTime::now()),
        clients: 0,
    };
    let (a, b, c) = (record("a"), record("b"), record("c"));
    for node in [&a, &b, &c] {
        nodes.beat(node).await.unwrap();
    }
    let mut all = vec![a.clone(), b.clone(), c.clone()];
    all.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(nodes.live().await.unwrap(), all);

    // C says goodbye: gone at once.
    nodes.remove(&c.id).await.unwrap();
    let mut live = vec![a.clone(), b.clone()];
    live.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(nodes.live().await.unwrap(), live);

    // A keeps beating, B falls silent: B expires, A stays.
    let a = NodeRecord { clients: 5, ..a };
    let waited = Instant::now();
    let live = loop {
        nodes.beat(&a).await.unwrap();
        let live = nodes.live().await.unwrap();
        if !live.iter().any(|node| node.id == b.id) {
            break live;
        }
        assert!(waited.elapsed() < PATIENCE, "B never expired: {live:?}");
        tokio::time::sleep(settings.heartbeat).await;
    };
    assert_eq!(live, [a]);
}

#[tokio::test]
async fn buckets_lost_in_a_broker_restart_are_created_again() {
    let mut server = NatsServer::start();
    let (broker, names) = names(&server).await;
    let nodes = Nodes::open(&broker, &settings(&server)).await.unwrap();
    let a = holder("a-1", 1);
    assert!(matches!(
        names.create("dev", &a).await.unwrap(),
        Claim::Created { .. }
    ));

    let mut state = broker.watch_state();
    state.borrow_and_update();
    server.restart();
    timeout(PATIENCE, state.changed())
        .await
        .expect("the restart was not noticed")
        .unwrap();
    timeout(PATIENCE, state.wait_for(|s| *s == BrokerState::Connected))
        .await
        .expect("no reconnection")
        .unwrap();

    // Memory storage: the buckets went with the server, and come back as
    // soon as the broker does, before any operation needs them.
    let js = broker.jetstream(PATIENCE);
    for bucket in ["tcphub_test_names", "tcphub_test_nodes"] {
        let waited = Instant::now();
        while js.get_key_value(bucket).await.is_err() {
            assert!(waited.elapsed() < PATIENCE, "{bucket} was not recreated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(names.get("dev").await.unwrap(), None);
    let b = holder("b-1", 2);
    let Claim::Created { revision } = names.create("dev", &b).await.unwrap() else {
        panic!("the name must be free after the restart");
    };
    assert_eq!(names.get("dev").await.unwrap(), Some((b, revision)));
    let record = NodeRecord {
        id: "a-1".to_owned(),
        name: "a".to_owned(),
        http_addr: "127.0.0.1:1".to_owned(),
        started_at: 1,
        clients: 0,
    };
    nodes.beat(&record).await.unwrap();
    assert_eq!(nodes.live().await.unwrap(), [record]);
}

#[tokio::test]
async fn a_bucket_deleted_under_a_live_connection_is_created_by_the_next_operation() {
    let server = NatsServer::start();
    let (broker, names) = names(&server).await;
    let a = holder("a-1", 1);
    assert!(matches!(
        names.create("dev", &a).await.unwrap(),
        Claim::Created { .. }
    ));
    broker
        .jetstream(PATIENCE)
        .delete_key_value("tcphub_test_names")
        .await
        .unwrap();

    let b = holder("b-1", 2);
    let Claim::Created { revision } = names.create("dev", &b).await.unwrap() else {
        panic!("the name must be free in the new bucket");
    };
    assert_eq!(names.get("dev").await.unwrap(), Some((b, revision)));
}

/// A request of the test protocol: answered with `text` repeated `times`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Echo {
    text: String,
    times: usize,
}

fn echo(text: &str) -> Echo {
    Echo {
        text: text.to_owned(),
        times: 1,
    }
}

/// Serves `node.<id>.rpc` and `all.echo` for node `id`, answering
/// `"<id>: <text>"`, until the test ends.
async fn echo_node(broker: &Broker, id: &str) -> Rpc {
    let rpc = Rpc::new(broker, "test", id);
    answer_each(rpc.serve_node().await.unwrap(), id);
    answer_each(rpc.serve_all("echo").await.unwrap(), id);
    // Both subscriptions are registered once the broker has seen a round trip.
    broker.client().flush().await.unwrap();
    rpc
}

fn answer_each(mut server: Server<Echo>, id: &str) {
    let id = id.to_owned();
    tokio::spawn(async move {
        while let Some(incoming) = server.next().await {
            let text = format!(
                "{id}: {}",
                incoming.request.text.repeat(incoming.request.times)
            );
            server.answer(incoming.reply, &text).await.unwrap();
        }
    });
}

#[tokio::test]
async fn a_request_reaches_its_node_and_a_big_answer_comes_back_whole() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let asker = Rpc::new(&broker, "test", "a-1");
    echo_node(&broker, "b-1").await;

    let reply: String = asker.request("b-1", &echo("hi"), PATIENCE).await.unwrap();
    assert_eq!(reply, "b-1: hi");

    // Over what is packed with other answers, under one message: sent bare, alone.
    let sizable = Echo {
        text: "0123456789".to_owned(),
        times: 10_000,
    };
    let reply: String = asker.request("b-1", &sizable, PATIENCE).await.unwrap();
    assert_eq!(reply.len(), "b-1: ".len() + 100_000);

    // Three times the broker's payload limit: sent in chunks, received whole.
    let big = Echo {
        text: "0123456789".to_owned(),
        times: 300_000,
    };
    let reply: String = asker.request("b-1", &big, PATIENCE).await.unwrap();
    assert!(
        reply == format!("b-1: {}", big.text.repeat(big.times)),
        "the big reply came back changed"
    );
}

#[tokio::test]
async fn a_request_bigger_than_one_message_is_refused_before_sending() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let asker = Rpc::new(&broker, "test", "a-1");
    let err = asker
        .request::<_, String>("b-1", &"x".repeat(2 * 1024 * 1024), PATIENCE)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RpcError::TooLarge {
                what: "request",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_request_to_a_node_nobody_serves_fails_at_once_with_no_responders() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let asker = Rpc::new(&broker, "test", "a-1");
    // An hour's timeout: only the broker's immediate answer ends this within PATIENCE.
    let question = echo("?");
    let asked = asker.request::<_, String>("gone-1", &question, Duration::from_secs(3600));
    let err = timeout(PATIENCE, asked)
        .await
        .expect("no-responders must not wait for the timeout")
        .unwrap_err();
    assert_eq!(err, RpcError::NoResponders);
}

#[tokio::test]
async fn scatter_collects_every_node_and_names_the_missing_one() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let asker = echo_node(&broker, "a-1").await;
    echo_node(&broker, "b-1").await;

    let expected = ["a-1", "b-1"].map(str::to_owned);
    let all: Gathered<String> = asker
        .scatter("echo", &echo("list"), &expected, Instant::now() + PATIENCE)
        .await
        .unwrap();
    let mut replies = all.replies;
    replies.sort();
    assert_eq!(
        replies,
        [
            ("a-1".to_owned(), "a-1: list".to_owned()),
            ("b-1".to_owned(), "b-1: list".to_owned())
        ]
    );
    assert_eq!(all.missing, Vec::<String>::new());

    // c-1 is expected but serves nothing: reported missing at the deadline.
    let expected = ["a-1", "b-1", "c-1"].map(str::to_owned);
    let deadline = Instant::now() + Duration::from_millis(300);
    let some: Gathered<String> = asker
        .scatter("echo", &echo("again"), &expected, deadline)
        .await
        .unwrap();
    assert_eq!(some.replies.len(), 2, "{:?}", some.replies);
    assert_eq!(some.missing, ["c-1"]);

    // Nobody serves the verb: every expected node is missing, at once.
    let none: Gathered<String> = timeout(
        PATIENCE,
        asker.scatter(
            "nobody",
            &echo("?"),
            &expected,
            Instant::now() + Duration::from_secs(3600),
        ),
    )
    .await
    .expect("no-responders must end a scatter at once")
    .unwrap();
    assert_eq!(none.replies, []);
    assert_eq!(none.missing, expected);
}

#[tokio::test]
async fn calls_made_together_share_one_message_each_way_and_each_gets_its_own_answer() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let asker = Rpc::new(&broker, "test", "a-1");
    echo_node(&broker, "b-1").await;
    // The first call subscribes the asker's inbox; the ones after it go out together.
    let first: String = asker
        .request("b-1", &echo("first"), PATIENCE)
        .await
        .unwrap();
    assert_eq!(first, "b-1: first");
    let mut requests = broker
        .client()
        .subscribe("tcphub.test.node.b-1.rpc")
        .await
        .unwrap();
    let mut replies = broker.client().subscribe("_INBOX.>").await.unwrap();
    broker.client().flush().await.unwrap();

    // On this test's single thread every call is queued before the sending task runs.
    let questions: Vec<Echo> = (0..100).map(|i| echo(&format!("call {i}"))).collect();
    let calls = questions
        .iter()
        .map(|question| asker.request::<_, String>("b-1", question, PATIENCE));
    let answers = timeout(PATIENCE, futures_util::future::join_all(calls))
        .await
        .expect("the calls were not all answered");
    for (question, answer) in questions.iter().zip(answers) {
        assert_eq!(answer.unwrap(), format!("b-1: {}", question.text));
    }

    let request = timeout(PATIENCE, requests.next()).await.unwrap().unwrap();
    let request: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(request["calls"].as_array().map(Vec::len), Some(100));
    let reply = timeout(PATIENCE, replies.next()).await.unwrap().unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["replies"].as_array().map(Vec::len), Some(100));
    // Nothing else went either way.
    broker.client().flush().await.unwrap();
    assert!(requests.next().now_or_never().is_none());
    assert!(replies.next().now_or_never().is_none());
}

#[tokio::test]
async fn a_request_of_another_version_or_garbage_is_refused_and_counted() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let rpc = echo_node(&broker, "b-1").await;
    let stats = rpc.stats();
    let subject = "tcphub.test.node.b-1.rpc";
    let deadline = epoch_millis(SystemTime::now() + PATIENCE);
    let raw = async |payload: Value| -> Value {
        let bytes = match payload {
            Value::String(text) => text.into_bytes(),
            value => serde_json::to_vec(&value).unwrap(),
        };
        let reply = timeout(PATIENCE, broker.client().request(subject, bytes.into()))
            .await
            .expect("no refusal in time")
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    };
    let call = |id: u64, body: Value| json!({"id": id, "deadline": deadline, "body": body});

    let newer =
        raw(json!({"version": 3, "calls": [call(1, json!({"text": "hi", "times": 1}))]})).await;
    assert_eq!(
        newer,
        json!({"error": {"code": "unsupported_version",
            "detail": "protocol version 3; this node speaks 2", "version": 2}})
    );
    let garbage = raw(json!("{not json")).await;
    assert_eq!(garbage["error"]["code"], "bad_request", "{garbage}");
    // A call that does not decode is refused alone; the one beside it is answered.
    let mixed = raw(json!({"version": 2, "calls": [
        call(7, json!(7)),
        call(8, json!({"text": "beside", "times": 1}))
    ]}))
    .await;
    assert_eq!(mixed["replies"][0]["id"], 7, "{mixed}");
    assert_eq!(
        mixed["replies"][0]["reply"]["error"]["code"], "bad_request",
        "{mixed}"
    );
    assert_eq!(
        mixed["replies"][1],
        json!({"id": 8, "reply": {"ok": "b-1: beside"}})
    );
    assert_eq!(stats.refused_version(), 1);
    assert_eq!(stats.refused_malformed(), 2);

    // The server goes on serving.
    let ok =
        raw(json!({"version": 2, "calls": [call(9, json!({"text": "still", "times": 1}))]})).await;
    assert_eq!(
        ok,
        json!({"replies": [{"id": 9, "reply": {"ok": "b-1: still"}}]})
    );
}

#[tokio::test]
async fn a_request_past_its_deadline_is_dropped_and_counted() {
    let server = NatsServer::start();
    let broker = connect(&server).await;
    let rpc = Rpc::new(&broker, "test", "b-1");
    let mut serving = rpc.serve_node::<Echo>().await.unwrap();
    broker.client().flush().await.unwrap();

    let subject = "tcphub.test.node.b-1.rpc";
    let late = json!({"version": 2, "calls": [{"id": 1, "deadline": 1, "body": {"text": "late", "times": 1}}]});
    let inbox = broker.client().new_inbox();
    broker
        .client()
        .publish_with_reply(subject, inbox, serde_json::to_vec(&late).unwrap().into())
        .await
        .unwrap();
    let asker = Rpc::new(&broker, "test", "a-1");
    let on_time = echo("on time");
    let ask = asker.request::<_, String>("b-1", &on_time, PATIENCE);
    let serve = async {
        // From one publisher, in order: the late request came first.
        let incoming = serving.next().await.unwrap();
        assert_eq!(incoming.request, on_time);
        incoming.reply.send(&"served").await.unwrap();
    };
    let (answer, ()) = timeout(PATIENCE, async { tokio::join!(ask, serve) })
        .await
        .expect("the on-time request was not served");
    assert_eq!(answer.unwrap(), "served");
    assert_eq!(rpc.stats().expired(), 1);
}
