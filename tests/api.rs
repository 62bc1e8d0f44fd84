//! The HTTP side of the contract: statuses, problem documents, paging and
//! filters, body rules, auth, and the OpenAPI document.

mod common;

use common::{TestClient, TestHub};
use serde_json::{Value, json};
use tcphub::Config;

fn problem(status: u16, code: &str, title: &str, detail: &str) -> Value {
    json!({
        "type": format!("urn:tcphub:problem:{code}"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    })
}

#[tokio::test]
async fn an_unknown_client_is_a_404_problem() {
    let hub = TestHub::start(Config::default()).await;
    let response = reqwest::get(hub.url("/clients/ghost")).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    let detail = "no live client is named \"ghost\"";
    assert_eq!(
        body,
        problem(404, "client_not_found", "Client not found", detail)
    );
    let (status, body) = hub.post("/clients/ghost/send", json!({"message": 1})).await;
    assert_eq!(
        (status, body),
        (
            404,
            problem(404, "client_not_found", "Client not found", detail)
        )
    );
}

#[tokio::test]
async fn get_one_client_shows_every_field() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    client.ping().await;
    let (status, body) = hub.get("/clients/Client-1").await;
    assert_eq!(status, 200);
    let fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "id",
        "name",
        "peer",
        "connectedAt",
        "lastActiveAt",
        "framesIn",
        "framesOut",
        "bytesIn",
        "bytesOut",
        "queueLen",
        "dropped",
        "groups",
        "node",
    ];
    want.sort_unstable();
    let mut fields = fields;
    fields.sort_unstable();
    assert_eq!(fields, want);
    assert_eq!(body["framesIn"], 2);
    assert_eq!(body["framesOut"], 2, "welcome and pong");
    assert_eq!(body["queueLen"], 0);
    common::assert_millis_utc(body["connectedAt"].as_str().unwrap());
    common::assert_millis_utc(body["lastActiveAt"].as_str().unwrap());
    let (_, list) = hub.get("/clients").await;
    common::assert_millis_utc(list["clients"][0]["connectedAt"].as_str().unwrap());
    assert!(body["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn list_pages_and_filters() {
    let hub = TestHub::start(Config::default()).await;
    let mut clients = Vec::new();
    for name in ["alpha-1", "alpha-2", "beta-1"] {
        clients.push(TestClient::synced(&hub, name).await);
    }
    let mut unnamed = TestClient::connect(&hub).await;
    unnamed.ping().await;

    let names = |body: &Value| -> Vec<Value> {
        body["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect()
    };
    let (status, all) = hub.get("/clients").await;
    assert_eq!(status, 200);
    assert_eq!(all["total"], 4);
    assert_eq!(
        names(&all),
        vec![
            json!("alpha-1"),
            json!("alpha-2"),
            json!("beta-1"),
            Value::Null
        ]
    );

    let (_, page) = hub.get("/clients?limit=2&offset=1").await;
    assert_eq!(
        (page["total"].clone(), names(&page)),
        (json!(4), vec![json!("alpha-2"), json!("beta-1")])
    );
    let (_, alpha) = hub.get("/clients?prefix=alpha-").await;
    assert_eq!(
        (alpha["total"].clone(), names(&alpha)),
        (json!(2), vec![json!("alpha-1"), json!("alpha-2")])
    );
    let (_, alpha_page) = hub.get("/clients?prefix=alpha-&offset=1&limit=5").await;
    assert_eq!(
        (alpha_page["total"].clone(), names(&alpha_page)),
        (json!(2), vec![json!("alpha-2")])
    );
    let (_, named) = hub.get("/clients?named=true").await;
    assert_eq!(named["total"], 3);
    let (_, anonymous) = hub.get("/clients?named=false").await;
    assert_eq!(
        (anonymous["total"].clone(), names(&anonymous)),
        (json!(1), vec![Value::Null])
    );
    let (_, count_only) = hub.get("/clients?limit=0").await;
    assert_eq!(count_only, json!({"total": 4, "clients": [], "next": null}));
}

/// Follows `next` from the first page of `path` to the last; the names seen.
async fn follow_pages(hub: &TestHub, path: &str, limit: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.map(|c| format!("&after={c}")).unwrap_or_default();
        let (status, page) = hub.get(&format!("{path}limit={limit}{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        let clients = page["clients"].as_array().cloned().unwrap_or_default();
        assert!(clients.len() <= limit);
        seen.extend(clients.iter().map(|c| c["name"].clone()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return seen,
        }
    }
}

#[tokio::test]
async fn list_pages_follow_the_next_cursor_unshifted_by_clients_leaving() {
    let hub = TestHub::start(Config::default()).await;
    let mut clients = Vec::new();
    for n in 0..7 {
        clients.push(TestClient::synced(&hub, &format!("p-{n}")).await);
    }
    let mut unnamed = TestClient::connect(&hub).await;
    unnamed.ping().await;
    let all: Vec<Value> = (0..7).map(|n| json!(format!("p-{n}"))).collect();
    let mut with_unnamed = all.clone();
    with_unnamed.push(Value::Null);
    assert_eq!(follow_pages(&hub, "/clients?", 3).await, with_unnamed);
    assert_eq!(follow_pages(&hub, "/clients?prefix=p-&", 2).await, all);
    assert_eq!(follow_pages(&hub, "/clients?named=true&", 7).await, all);

    // A page that ends exactly at the last match has no next.
    let (_, last) = hub.get("/clients?limit=8").await;
    assert_eq!(last["next"], Value::Null);

    // The first page is read, then a client on it leaves: the second page
    // starts where the first ended, none skipped.
    let (_, first) = hub.get("/clients?limit=3").await;
    let next = first["next"].as_str().unwrap_or_default().to_owned();
    let mut events = hub.events();
    clients.remove(0).close().await;
    events.disconnections(1).await;
    let (_, second) = hub.get(&format!("/clients?limit=3&after={next}")).await;
    let names: Vec<Value> = second["clients"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("p-3"), json!("p-4"), json!("p-5")]);
    assert_eq!(second["total"], 7);
    let (_, skipped) = hub
        .get(&format!("/clients?limit=1&offset=1&after={next}"))
        .await;
    assert_eq!(skipped["clients"][0]["name"], "p-4");

    for cursor in ["x", "-1", ""] {
        let (status, problem) = hub.get(&format!("/clients?after={cursor}")).await;
        assert_eq!(
            (status, &problem["code"]),
            (400, &json!("invalid_query")),
            "{cursor:?}"
        );
    }
}

#[tokio::test]
async fn nodes_lists_this_hub_and_every_client_names_it() {
    let hub = TestHub::start(Config {
        node_name: Some("hub-a".into()),
        ..Config::default()
    })
    .await;
    let _one = TestClient::synced(&hub, "one").await;
    let _two = TestClient::synced(&hub, "two").await;
    let (status, body) = hub.get("/nodes").await;
    assert_eq!(status, 200, "{body}");
    let nodes = body["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 1, "{body}");
    let node = &nodes[0];
    let id = node["id"].as_str().unwrap_or_default();
    let suffix = id.strip_prefix("hub-a-").unwrap_or_default();
    assert!(
        suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(node["name"], "hub-a");
    assert_eq!(node["httpAddr"], hub.http_addr.to_string());
    assert_eq!(node["clients"], 2);
    common::assert_millis_utc(node["startedAt"].as_str().unwrap_or_default());
    let (_, client) = hub.get("/clients/one").await;
    assert_eq!(client["node"], id);
    let (_, list) = hub.get("/clients").await;
    assert_eq!(list["clients"][1]["node"], id);
}

#[tokio::test]
async fn bad_list_queries_are_400_invalid_query() {
    let hub = TestHub::start(Config::default()).await;
    for query in [
        "limit=10001",
        "limit=-1",
        "limit=lots",
        "offset=x",
        "named=maybe",
    ] {
        let (status, body) = hub.get(&format!("/clients?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["code"], "invalid_query", "{query}: {body}");
    }
    assert_eq!(hub.get("/clients?limit=10000").await.0, 200);
}

#[tokio::test]
async fn an_unknown_query_parameter_is_400_invalid_query_naming_it() {
    let hub = TestHub::start(Config::default()).await;
    let (status, body) = hub.get("/clients?limt=5").await;
    let detail = "Failed to deserialize query string: limt: unknown field `limt`, \
                  expected one of `limit`, `offset`, `after`, `prefix`, `named`";
    assert_eq!(
        (status, body),
        (400, problem(400, "invalid_query", "Invalid query", detail))
    );
    let (status, body) = hub.get("/healthz?verbose=1").await;
    let detail =
        "Failed to deserialize query string: verbose: unknown field `verbose`, there are no fields";
    assert_eq!(
        (status, body),
        (400, problem(400, "invalid_query", "Invalid query", detail))
    );
}

#[tokio::test]
async fn every_endpoint_refuses_unknown_query_parameters_and_does_nothing() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::synced(&hub, "Client-1").await;
    let requests = [
        (reqwest::Method::GET, "/clients/Client-1?fields=all"),
        (reqwest::Method::DELETE, "/clients/Client-1?force=1"),
        (reqwest::Method::POST, "/clients/Client-1/send?wiat=ack"),
        (reqwest::Method::POST, "/broadcast?scope=all"),
        (reqwest::Method::GET, "/events?type=client.named"),
        (reqwest::Method::GET, "/readyz?x="),
        (reqwest::Method::GET, "/metrics?name=tcphub"),
        (reqwest::Method::GET, "/openapi.json?v=3"),
    ];
    for (method, path) in requests {
        let response = hub
            .request(method.clone(), path)
            .json(&json!({"message": "must not arrive"}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        let parameter = path.split(['?', '=']).nth(1).unwrap();
        assert_eq!(
            (status, &body["code"]),
            (400, &json!("invalid_query")),
            "{method} {path}"
        );
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("unknown field `{parameter}`")),
            "{method} {path}: {detail}"
        );
    }
    // Nothing was sent and nobody was kicked: the next frame is this marker.
    let (status, _) = hub
        .post("/clients/Client-1/send", json!({"message": "marker"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(client.recv().await["message"], "marker");
}

#[tokio::test]
async fn send_bodies_are_checked() {
    let hub = TestHub::start(Config {
        max_message_bytes: 100,
        ..Config::default()
    })
    .await;
    let _client = TestClient::synced(&hub, "c").await;
    let send = "/clients/c/send";

    let (status, body) = hub.post_raw(send, "application/json", "{not json").await;
    assert_eq!((status, body["code"].clone()), (400, json!("invalid_body")));
    let (status, body) = hub
        .post_raw(send, "application/json", r#"{"msg": 1}"#)
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!("invalid_body")));
    let (status, body) = hub.post_raw(send, "text/plain", vec![0xff, 0xfe]).await;
    assert_eq!((status, body["code"].clone()), (400, json!("invalid_body")));

    let (status, body) = hub.post_raw(send, "application/xml", "<m/>").await;
    assert_eq!(
        (status, body["code"].clone()),
        (415, json!("unsupported_media_type"))
    );
    let (status, _) = hub.post_raw(send, "", "no type").await;
    assert_eq!(status, 415);

    let (status, body) = hub.post(send, json!({"message": "x".repeat(101)})).await;
    assert_eq!(
        (status, body["code"].clone()),
        (413, json!("message_too_large"))
    );
    let (status, body) = hub.post_raw(send, "text/plain", "y".repeat(101)).await;
    assert_eq!(
        (status, body["code"].clone()),
        (413, json!("message_too_large"))
    );
    let (status, body) = hub
        .post_raw("/broadcast", "text/plain", "z".repeat(5000))
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (413, json!("message_too_large"))
    );
    let (status, _) = hub.post(send, json!({"message": "x".repeat(90)})).await;
    assert_eq!(status, 202, "a message within the limit is accepted");
}

#[tokio::test]
async fn a_full_queue_is_503_client_backlogged_with_nothing_queued() {
    let hub = TestHub::start(Config {
        queue_capacity: 1,
        ..Config::default()
    })
    .await;
    let _never_reads = TestClient::synced(&hub, "stuck").await;
    let big = "b".repeat(60_000);
    // The socket buffers absorb some messages; then one is queued; then the queue is full.
    let mut sent = 0;
    let body = loop {
        let (status, body) = hub
            .post("/clients/stuck/send", json!({"message": big}))
            .await;
        if status != 202 {
            assert_eq!(status, 503);
            break body;
        }
        sent += 1;
        assert!(sent < 10_000, "the queue never filled");
    };
    let detail = "the queue of client \"stuck\" is full; nothing was queued";
    assert_eq!(
        body,
        problem(503, "client_backlogged", "Client queue full", detail)
    );
    let (_, client) = hub.get("/clients/stuck").await;
    assert_eq!(client["queueLen"], 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let hub = TestHub::start(Config::default()).await;
    let (status, body) = hub.get("/nowhere").await;
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
    let (status, body) = hub.get("/broadcast").await;
    assert_eq!(
        (status, body["code"].clone()),
        (405, json!("method_not_allowed"))
    );
}

#[tokio::test]
async fn with_a_token_every_endpoint_but_the_probes_needs_it() {
    let config = Config {
        api_token: Some("s3cret".into()),
        ..Config::default()
    };
    let hub = TestHub::start(config).await;
    let http = reqwest::Client::new();
    for path in ["/clients", "/clients/x", "/metrics", "/openapi.json"] {
        let response = http.get(hub.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            problem(
                401,
                "unauthorized",
                "Unauthorized",
                "a valid bearer token is required"
            )
        );
        let wrong = http
            .get(hub.url(path))
            .bearer_auth("s3cre")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
    }
    let response = http
        .post(hub.url("/broadcast"))
        .json(&json!({"message": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http.get(hub.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        hub.get("/clients").await.0,
        200,
        "the harness sends the right token"
    );
    assert_eq!(hub.post("/broadcast", json!({"message": 1})).await.0, 202);
}

#[tokio::test]
async fn probes_and_metrics_answer() {
    let hub = TestHub::start(Config::default()).await;
    assert_eq!(hub.get("/healthz").await, (200, json!({"status": "ok"})));
    assert_eq!(hub.get("/readyz").await, (200, json!({"status": "ready"})));
    let mut client = TestClient::synced(&hub, "m").await;
    client.ping().await;
    let text = hub.metrics().await;
    for line in [
        "tcphub_clients_connected 1",
        "tcphub_clients_named 1",
        "tcphub_frames_in_total 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn requests_are_counted_by_route_pattern_method_and_status() {
    let hub = TestHub::start(Config {
        api_token: Some("s3cret".into()),
        ..Config::default()
    })
    .await;
    let mut client = TestClient::synced(&hub, "m").await;
    assert_eq!(
        hub.post("/clients/m/send", json!({"message": "hi"}))
            .await
            .0,
        202
    );
    assert_eq!(client.recv().await["message"], "hi");
    assert_eq!(
        hub.post("/clients/nobody/send", json!({"message": "hi"}))
            .await
            .0,
        404
    );
    let anonymous = reqwest::Client::new();
    let refused = anonymous.get(hub.url("/clients")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let invented = reqwest::Method::from_bytes(b"FROB").unwrap();
    let odd = hub.request(invented, "/clients").send().await.unwrap();
    assert_eq!(odd.status(), 405);
    let unrouted = hub
        .request(reqwest::Method::GET, "/nowhere")
        .send()
        .await
        .unwrap();
    assert_eq!(unrouted.status(), 404);

    let text = hub.metrics().await;
    let counted = |labels: &str| format!("tcphub_http_requests_total{{{labels}}} 1");
    for line in [
        counted(r#"route="/clients/{name}/send",method="POST",status="202""#),
        counted(r#"route="/clients/{name}/send",method="POST",status="404""#),
        counted(r#"route="/clients",method="GET",status="401""#),
        counted(r#"route="/clients",method="other",status="405""#),
        counted(r#"route="unmatched",method="GET",status="404""#),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let sends = r#"tcphub_http_request_duration_seconds_count{route="/clients/{name}/send",method="POST",status="202"} 1"#;
    assert!(
        text.lines().any(|l| l == sends),
        "missing {sends:?} in\n{text}"
    );
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one_and_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap();
    assert!(
        committed == tcphub::api::openapi_json(),
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
    let hub = TestHub::start(Config::default()).await;
    let served = reqwest::get(hub.url("/openapi.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, committed);
    let document: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/clients",
        "/clients/{name}",
        "/clients/{name}/send",
        "/broadcast",
        "/send",
        "/groups",
        "/groups/{group}",
        "/groups/{group}/send",
        "/clients/{name}/groups",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} is not documented"
        );
    }
    // What client generators need: a discriminated event union and the webhook.
    let event = &document["components"]["schemas"]["Event"];
    assert_eq!(event["discriminator"]["propertyName"], "type");
    assert_eq!(event["oneOf"].as_array().map(Vec::len), Some(10));
    let webhook = &document["webhooks"]["events"]["post"];
    assert_eq!(
        webhook["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/EventBatch"
    );
    assert_eq!(webhook["parameters"][0]["name"], "X-Tcphub-Signature");
}

#[test]
fn the_binary_refuses_a_public_api_without_a_token() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "0.0.0.0:0"])
        .env_remove("TCPHUB_API_TOKEN")
        .env_remove("TCPHUB_ALLOW_INSECURE_API")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without --api-token"), "{stderr}");
}
