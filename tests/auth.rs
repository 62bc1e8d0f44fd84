//! Who gets in: with `--client-auth jwt` a `sync` needs a token for the name it
//! claims, so no client can take another's name; and secrets never leak, neither
//! into the logs nor through `GET /clients`.

mod common;

use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{PATIENCE, TestClient, TestHub};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tcphub::Config;
use tcphub::config::ClientAuthMode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

const SECRET: &str = "client-secret-for-tests";

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token as a backend mints one: HS256 under the shared secret, `sub` the name.
fn mint(name: &str, expires_in: i64, secret: &str) -> String {
    let claims = json!({"sub": name, "exp": unix_now() + expires_in});
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

async fn hub_with_client_auth() -> TestHub {
    TestHub::start(Config {
        client_auth: ClientAuthMode::Jwt,
        client_secret: Some(SECRET.into()),
        ..Config::default()
    })
    .await
}

async fn sync_with(client: &mut TestClient, name: &str, token: Option<&str>) {
    let mut frame = json!({"type": "sync", "clientName": name});
    if let Some(token) = token {
        frame["token"] = json!(token);
    }
    client.send(&frame).await;
}

/// Expects `error` `unauthorized`, then `bye` `unauthorized` and the close.
async fn expect_refused(client: &mut TestClient) {
    client.expect_error("unauthorized").await;
    client.expect_bye("unauthorized").await;
}

#[tokio::test]
async fn a_token_for_the_name_is_welcomed() {
    let hub = hub_with_client_auth().await;
    let mut client = TestClient::connect(&hub).await;
    let token = mint("Client-1", 60, SECRET);
    sync_with(&mut client, "Client-1", Some(&token)).await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["clientName"], "Client-1");
    let (status, _) = hub
        .post("/clients/Client-1/send", json!({"message": "hi"}))
        .await;
    assert_eq!(status, 202);
    assert_eq!(client.recv().await["message"], "hi");
}

#[tokio::test]
async fn a_sync_without_a_valid_token_is_refused_and_closed() {
    let hub = hub_with_client_auth().await;
    let other_secret = "not-the-secret";
    let cases = [
        ("no token", None),
        ("another name", Some(mint("Client-2", 60, SECRET))),
        ("expired", Some(mint("Client-1", -1, SECRET))),
        ("wrong secret", Some(mint("Client-1", 60, other_secret))),
        ("garbage", Some("e30.e30.AAAA".to_owned())),
    ];
    for (case, token) in cases {
        let mut events = hub.events();
        let mut client = TestClient::connect(&hub).await;
        sync_with(&mut client, "Client-1", token.as_deref()).await;
        expect_refused(&mut client).await;
        events.disconnections(1).await;
        assert_eq!(hub.get("/clients/Client-1").await.0, 404, "{case}");
    }
    assert_eq!(hub.get("/clients").await.1["total"], 0);
}

#[tokio::test]
async fn no_client_can_take_another_clients_name() {
    let hub = hub_with_client_auth().await;
    let mut owner = TestClient::connect(&hub).await;
    sync_with(&mut owner, "Client-1", Some(&mint("Client-1", 60, SECRET))).await;
    let owner_session = owner.recv().await["id"].clone();
    // An impostor holding a valid token of its own cannot use it for this name.
    let mut impostor = TestClient::connect(&hub).await;
    sync_with(
        &mut impostor,
        "Client-1",
        Some(&mint("Client-2", 60, SECRET)),
    )
    .await;
    expect_refused(&mut impostor).await;
    owner.ping().await;
    let (_, view) = hub.get("/clients/Client-1").await;
    assert_eq!(view["id"], owner_session);
    // A rename needs a token for the new name too.
    sync_with(&mut owner, "Client-3", None).await;
    expect_refused(&mut owner).await;
}

#[tokio::test]
async fn unauthenticated_connections_get_no_broadcasts() {
    let hub = hub_with_client_auth().await;
    let mut member = TestClient::connect(&hub).await;
    sync_with(&mut member, "member", Some(&mint("member", 60, SECRET))).await;
    assert_eq!(member.recv().await["type"], "welcome");
    let mut stranger = TestClient::connect(&hub).await;
    stranger.ping().await;
    let (_, report) = hub
        .post("/broadcast", json!({"message": "members only"}))
        .await;
    assert_eq!(report["recipients"], 1);
    assert_eq!(member.recv().await["message"], "members only");
    // The stranger's next frame answers its ping: the broadcast never reached it.
    stranger.ping().await;
}

#[tokio::test]
async fn without_client_auth_tokens_are_ignored() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = TestClient::connect(&hub).await;
    sync_with(&mut client, "Client-1", Some("anything")).await;
    assert_eq!(client.recv().await["type"], "welcome");
}

#[tokio::test]
async fn client_auth_without_a_secret_refuses_to_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args(["--client-auth", "jwt", "--tcp-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0"])
        .env_remove("TCPHUB_CLIENT_SECRET")
        .output();
    let output = timeout(PATIENCE, output).await.unwrap().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--client-secret"), "{stderr}");
}

#[tokio::test]
async fn secrets_never_reach_the_logs_or_the_client_list() {
    let api_token = "api-token-that-must-not-leak";
    let mut hub = Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--log-format", "json", "--client-auth", "jwt"])
        .env("TCPHUB_API_TOKEN", api_token)
        .env("TCPHUB_CLIENT_SECRET", SECRET)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(hub.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let listening = loop {
        let line = timeout(PATIENCE, log.next_line())
            .await
            .expect("the hub did not start")
            .unwrap()
            .expect("the hub exited");
        seen.push_str(&line);
        seen.push('\n');
        let entry: Value = serde_json::from_str(&line).unwrap_or_default();
        if entry["message"] == "tcphub listening" {
            break entry;
        }
    };
    let tcp: std::net::SocketAddr = listening["tcp"].as_str().unwrap().parse().unwrap();
    let http = listening["http"].as_str().unwrap().to_owned();

    let client_token = mint("Client-1", 60, SECRET);
    let stream = tokio::net::TcpStream::connect(tcp).await.unwrap();
    let mut client = TestClient::from_stream(stream);
    sync_with(&mut client, "Client-1", Some(&client_token)).await;
    assert_eq!(client.recv().await["type"], "welcome");
    let http_client = reqwest::Client::new();
    let listed = http_client
        .get(format!("http://{http}/clients"))
        .bearer_auth(api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed = listed.text().await.unwrap();
    assert!(listed.contains("Client-1"));
    assert!(
        !listed.contains(&client_token),
        "GET /clients shows a token"
    );
    let refused = http_client
        .get(format!("http://{http}/clients"))
        .bearer_auth("a-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // A refused sync, with its bad token, is logged at every level too.
    let mut intruder = TestClient::from_stream(tokio::net::TcpStream::connect(tcp).await.unwrap());
    let bad_token = mint("Client-1", 60, "guessed-secret");
    sync_with(&mut intruder, "Client-1", Some(&bad_token)).await;
    expect_refused(&mut intruder).await;

    hub.start_kill().unwrap();
    let mut rest = String::new();
    let mut stdout = log.into_inner();
    timeout(PATIENCE, stdout.read_to_string(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let mut stderr = String::new();
    let mut hub_stderr = hub.stderr.take().unwrap();
    timeout(PATIENCE, hub_stderr.read_to_string(&mut stderr))
        .await
        .unwrap()
        .unwrap();
    let logs = seen + &rest + &stderr;
    assert!(
        logs.contains("client refused"),
        "the trace log is too quiet to judge"
    );
    for secret in [
        api_token,
        SECRET,
        &client_token,
        &bad_token,
        "a-wrong-token",
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}
