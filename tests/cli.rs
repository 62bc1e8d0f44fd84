//! The operator subcommands of the real `tcphub` binary against a hub running
//! in-process: tokens the hub accepts, a device client that acks and
//! reconnects, the HTTP API commands with text and `--json` output, errors
//! with exit status 1, bad usage with 2, and completion scripts.

mod common;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{PATIENCE, TestClient, TestHub};
use serde_json::{Value, json};
use tcphub::Config;
use tcphub::config::ClientAuthMode;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::time::timeout;

/// The binary with no `TCPHUB_*` settings inherited from the environment.
fn tcphub(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tcphub"));
    command.args(args).kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TCPHUB_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs the binary to its end.
async fn run(args: &[&str]) -> Output {
    let output = tcphub(args).output();
    timeout(PATIENCE, output)
        .await
        .expect("the binary hung")
        .unwrap()
}

/// Runs an API command against `hub`.
async fn api(hub: &TestHub, args: &[&str]) -> Output {
    let url = format!("http://{}", hub.http_addr);
    run(&[args, &["--api-url", &url]].concat()).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The one JSON line a successful `--json` command printed.
fn json_out(output: &Output) -> Value {
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(output);
    assert_eq!(text.lines().count(), 1, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{text:?}: {err}"))
}

/// A long-running subcommand (`client`, `events`) whose output is read line by line.
struct Running {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    err: Lines<BufReader<ChildStderr>>,
}

impl Running {
    fn spawn(args: &[&str]) -> Running {
        let mut child = tcphub(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        let err = BufReader::new(child.stderr.take().unwrap()).lines();
        Running { child, out, err }
    }

    /// `tcphub client NAME` connected to `hub`, plus `extra`.
    fn client(hub: &TestHub, name: &str, extra: &[&str]) -> Running {
        let connect = hub.tcp_addr.to_string();
        Running::spawn(&[&["client", name, "--connect", &connect], extra].concat())
    }

    /// The next line on stdout, as JSON.
    async fn frame(&mut self) -> Value {
        let line = timeout(PATIENCE, self.out.next_line())
            .await
            .expect("no line in time")
            .unwrap()
            .expect("stdout ended");
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("{line:?}: {err}"))
    }

    /// The next line on stdout, as text.
    async fn line(&mut self) -> String {
        timeout(PATIENCE, self.out.next_line())
            .await
            .expect("no line in time")
            .unwrap()
            .expect("stdout ended")
    }

    /// Reads stderr up to a line starting with `start`.
    async fn note(&mut self, start: &str) -> String {
        loop {
            let line = timeout(PATIENCE, self.err.next_line())
                .await
                .expect("no note in time")
                .unwrap()
                .unwrap_or_else(|| panic!("stderr ended before {start:?}"));
            if line.starts_with(start) {
                return line;
            }
        }
    }

    /// Sends SIGTERM and returns the exit status.
    async fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-s", "TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        self.exit_code().await
    }

    async fn exit_code(&mut self) -> Option<i32> {
        let status = timeout(PATIENCE, self.child.wait())
            .await
            .expect("the command did not exit in time")
            .unwrap();
        status.code()
    }
}

/// Expects a `welcome` for `name`; returns its session id.
fn welcome_id(frame: &Value, name: &str) -> String {
    assert_eq!(frame["type"], "welcome", "{frame}");
    assert_eq!(frame["clientName"], name, "{frame}");
    frame["id"].as_str().unwrap().to_owned()
}

fn jwt_hub_config() -> Config {
    Config {
        client_auth: ClientAuthMode::Jwt,
        client_secret: Some("k3y".into()),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_token_minted_by_tcphub_token_lets_tcphub_client_in() {
    let hub = TestHub::start(jwt_hub_config()).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let minted = json_out(
        &run(&[
            "token",
            "dev-1",
            "--client-secret",
            "k3y",
            "--ttl",
            "120",
            "--groups",
            "lights,doors",
            "--json",
        ])
        .await,
    );
    let token = minted["token"].as_str().unwrap().to_owned();
    let exp = minted["exp"].as_u64().unwrap();
    assert!((now + 120..=now + 121).contains(&exp), "{minted}");
    assert_eq!(minted, json!({"token": token, "sub": "dev-1", "exp": exp}));

    let bare = run(&["token", "dev-1", "--client-secret", "k3y"]).await;
    assert_eq!(bare.status.code(), Some(0));
    assert_eq!(stdout(&bare).trim_end().split('.').count(), 3, "a JWT");

    let mut client = Running::client(&hub, "dev-1", &["--token", &token, "--groups", "lights"]);
    welcome_id(&client.frame().await, "dev-1");
    assert_eq!(client.terminate().await, Some(0));

    // The same token for another name is refused, and the client gives up.
    let mut other = Running::client(&hub, "dev-2", &["--token", &token]);
    assert_eq!(other.frame().await["code"], "unauthorized");
    assert_eq!(
        other.frame().await,
        json!({"type": "bye", "reason": "unauthorized"})
    );
    assert_eq!(other.exit_code().await, Some(1));
    assert_eq!(
        other.note("tcphub:").await,
        "tcphub: the hub said bye: unauthorized"
    );
}

#[tokio::test]
async fn tcphub_client_acks_a_send_that_waits_for_the_ack() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = Running::client(&hub, "dev-1", &["--ack"]);
    welcome_id(&client.frame().await, "dev-1");
    let sent = api(
        &hub,
        &["send", "dev-1", r#"{"led":"on"}"#, "--wait-ack", "--json"],
    )
    .await;
    let acked = json_out(&sent);
    let id = acked["id"].clone();
    assert_eq!(acked, json!({"id": id, "acked": true}));
    assert_eq!(
        client.frame().await,
        json!({"type": "message", "id": id, "scope": "direct", "message": {"led": "on"}})
    );

    let text = api(&hub, &["send", "dev-1", "not json"]).await;
    assert_eq!(text.status.code(), Some(0), "{text:?}");
    let queued = client.frame().await;
    assert_eq!(queued["message"], "not json");
    assert_eq!(
        stdout(&text),
        format!("{} queued for dev-1\n", queued["id"].as_str().unwrap())
    );
    assert_eq!(client.terminate().await, Some(0));
}

#[tokio::test]
async fn tcphub_client_reconnects_after_a_kick() {
    let hub = TestHub::start(Config::default()).await;
    let mut client = Running::client(&hub, "dev-1", &[]);
    let first = welcome_id(&client.frame().await, "dev-1");
    let kicked = api(&hub, &["kick", "dev-1"]).await;
    assert_eq!(kicked.status.code(), Some(0), "{kicked:?}");
    assert_eq!(stdout(&kicked), "kicked dev-1\n");
    assert_eq!(
        client.frame().await,
        json!({"type": "bye", "reason": "kicked"})
    );
    client.note("reconnecting in 0.5 s").await;
    let second = welcome_id(&client.frame().await, "dev-1");
    assert_ne!(first, second, "a new session");
    let again = api(&hub, &["kick", "dev-1", "--json"]).await;
    assert_eq!(json_out(&again), json!({"name": "dev-1", "kicked": true}));
    assert_eq!(client.terminate().await, Some(0));
}

#[tokio::test]
async fn tcphub_clients_lists_and_filters_in_text_and_json() {
    let hub = TestHub::start(Config::default()).await;
    let _one = TestClient::synced(&hub, "dev-1").await;
    let _two = TestClient::synced(&hub, "dev-2").await;
    let _other = TestClient::synced(&hub, "sensor").await;
    let mut unnamed = TestClient::connect(&hub).await;
    unnamed.ping().await;

    let all = json_out(&api(&hub, &["clients", "--json"]).await);
    assert_eq!(all["total"], 4);
    let names: Vec<&Value> = all["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|client| &client["name"])
        .collect();
    assert_eq!(
        names,
        [
            &json!("dev-1"),
            &json!("dev-2"),
            &json!("sensor"),
            &Value::Null
        ]
    );
    let (_, direct) = hub.get("/clients?prefix=dev").await;
    let listed = json_out(&api(&hub, &["clients", "--prefix", "dev", "--json"]).await);
    assert_eq!(listed, direct, "the API's answer, as it is");
    let named = json_out(&api(&hub, &["clients", "--named", "--json"]).await);
    assert_eq!(named["total"], 3);

    let text = api(&hub, &["clients", "--prefix", "dev"]).await;
    assert_eq!(text.status.code(), Some(0));
    let text = stdout(&text);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "ID", "PEER", "CONNECTED", "QUEUE", "DROPPED"]
    );
    assert!(lines[1].starts_with("dev-1  "), "{text}");
    assert!(lines[2].starts_with("dev-2  "), "{text}");
    assert_eq!(lines[3], "2 of 2 clients");
}

#[tokio::test]
async fn tcphub_broadcast_reaches_every_client() {
    let hub = TestHub::start(Config::default()).await;
    let mut one = TestClient::synced(&hub, "dev-1").await;
    let mut two = TestClient::synced(&hub, "dev-2").await;
    let body = json_out(&api(&hub, &["broadcast", "[1,2]", "--json"]).await);
    let id = body["id"].clone();
    assert_eq!(
        body,
        json!({"id": id, "recipients": 2, "queued": 2, "dropped": 0})
    );
    let want = json!({"type": "message", "id": id, "scope": "broadcast", "message": [1, 2]});
    assert_eq!(one.recv().await, want);
    assert_eq!(two.recv().await, want);

    let text = api(&hub, &["broadcast", "hello everyone"]).await;
    let frame = one.recv().await;
    assert_eq!(frame["message"], "hello everyone");
    assert_eq!(
        stdout(&text),
        format!(
            "{} queued for 2 of 2 clients (0 dropped)\n",
            frame["id"].as_str().unwrap()
        )
    );
}

#[tokio::test]
async fn tcphub_events_follows_the_stream_one_event_per_line() {
    let hub = TestHub::start(Config::default()).await;
    let url = format!("http://{}", hub.http_addr);
    let mut json_events = Running::spawn(&[
        "events",
        "--types",
        "client.named,client.disconnected",
        "--json",
        "--api-url",
        &url,
    ]);
    json_events.note("following ").await;
    let mut text_events = Running::spawn(&["events", "--types", "client.named", "--api-url", &url]);
    text_events.note("following ").await;

    let client = TestClient::synced(&hub, "dev-1").await;
    let named = json_events.frame().await;
    assert_eq!(
        (&named["type"], &named["name"], &named["oldName"]),
        (&json!("client.named"), &json!("dev-1"), &Value::Null)
    );
    client.close().await;
    let gone = json_events.frame().await;
    assert_eq!(
        (&gone["type"], &gone["name"], &gone["reason"]),
        (
            &json!("client.disconnected"),
            &json!("dev-1"),
            &json!("closed")
        )
    );
    let line = text_events.line().await;
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_eq!(
        (fields[1], fields[2], fields[5]),
        ("client.named", "dev-1", "oldName=null")
    );
    assert_eq!(json_events.terminate().await, Some(0));
    assert_eq!(text_events.terminate().await, Some(0));
}

#[tokio::test]
async fn problems_exit_one_with_their_detail_and_bad_usage_exits_two() {
    let hub = TestHub::start(Config {
        api_token: Some("s3cret".into()),
        ..Config::default()
    })
    .await;
    let missing = api(&hub, &["send", "nobody", "hi", "--api-token", "s3cret"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing),
        "tcphub: no live client is named \"nobody\"\n"
    );
    assert_eq!(stdout(&missing), "");

    let as_json = api(&hub, &["kick", "nobody", "--api-token", "s3cret", "--json"]).await;
    assert_eq!(as_json.status.code(), Some(1));
    let problem: Value = serde_json::from_str(&stdout(&as_json)).unwrap();
    assert_eq!(
        problem,
        json!({
            "type": "urn:tcphub:problem:client_not_found",
            "title": "Client not found",
            "status": 404,
            "detail": "no live client is named \"nobody\"",
            "code": "client_not_found",
        })
    );

    let no_token = api(&hub, &["clients"]).await;
    assert_eq!(no_token.status.code(), Some(1));
    assert!(stderr(&no_token).starts_with("tcphub: "), "{no_token:?}");
    assert_eq!(stderr(&no_token).lines().count(), 1, "{no_token:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap();
    drop(closed);
    let refused = run(&["clients", "--api-url", &format!("http://{nobody}")]).await;
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with(&format!(
            "tcphub: cannot connect to the API at http://{nobody}/: "
        )),
        "{message}"
    );

    for usage in [
        &["send", "dev-1"][..],
        &["token", "dev-1"],
        &["token", "dev-1", "--client-secret", ""],
        &["completions", "tcsh"],
        &["clients", "--api-url", "not a url"],
        &["--max-clients", "5", "clients"],
    ] {
        let output = run(usage).await;
        assert_eq!(output.status.code(), Some(2), "{usage:?}: {output:?}");
    }
    assert_eq!(run(&["send", "--help"]).await.status.code(), Some(0));
}

#[tokio::test]
async fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = run(&["completions", shell]).await;
        assert_eq!(output.status.code(), Some(0), "{shell}: {output:?}");
        let script = stdout(&output);
        for word in ["tcphub", "broadcast", "api-url", "wait-ack"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
}

/// A self-signed certificate for `localhost` in a directory of its own.
struct Certificate {
    dir: PathBuf,
}

impl Certificate {
    fn generate() -> Certificate {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "tcphub-cli-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), made.key_pair.serialize_pem()).unwrap();
        Certificate { dir }
    }

    fn cert(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn client_and_api_commands_speak_tls_trusting_the_given_certificate() {
    let certificate = Certificate::generate();
    let hub = TestHub::start(Config {
        tls_cert: Some(certificate.dir.join("cert.pem")),
        tls_key: Some(certificate.dir.join("key.pem")),
        ..Config::default()
    })
    .await;
    let connect = format!("localhost:{}", hub.tcp_addr.port());
    let cert = certificate.cert();
    let mut client = Running::spawn(&["client", "dev-1", "--connect", &connect, "--tls-ca", &cert]);
    welcome_id(&client.frame().await, "dev-1");
    let url = format!("https://localhost:{}", hub.http_addr.port());
    let listed = run(&["clients", "--json", "--api-url", &url, "--tls-ca", &cert]).await;
    assert_eq!(json_out(&listed)["clients"][0]["name"], "dev-1");
    let untrusted = run(&["clients", "--api-url", &url]).await;
    assert_eq!(untrusted.status.code(), Some(1), "{untrusted:?}");
    assert_eq!(client.terminate().await, Some(0));
}

#[tokio::test]
async fn tcphub_groups_and_group_send_reach_the_members_only() {
    let hub = TestHub::start(Config::default()).await;
    let mut kiosk = TestClient::connect(&hub).await;
    kiosk
        .send(&json!({"type": "sync", "clientName": "kiosk-1", "groups": ["floor-2"]}))
        .await;
    assert_eq!(kiosk.recv().await["groups"], json!(["floor-2"]));
    let mut other = TestClient::synced(&hub, "meter-1").await;

    let listed = json_out(&api(&hub, &["groups", "--json"]).await);
    assert_eq!(
        listed,
        json!({"total": 1, "groups": [{"name": "floor-2", "members": 1}]})
    );
    assert_eq!(
        stdout(&api(&hub, &["groups", "--prefix", "floor"]).await),
        "floor-2 1\n1 of 1 group\n"
    );

    let sent = json_out(
        &api(
            &hub,
            &["group-send", "floor-2", "{\"screen\":\"off\"}", "--json"],
        )
        .await,
    );
    let id = sent["id"].clone();
    assert_eq!(
        sent,
        json!({"id": id, "recipients": 1, "queued": 1, "dropped": 0})
    );
    assert_eq!(
        kiosk.recv().await,
        json!({"type": "message", "id": id, "scope": "group", "group": "floor-2",
               "message": {"screen": "off"}})
    );
    // The non-member got nothing: its next frame is the answer to its ping.
    other.ping().await;
}

#[tokio::test]
async fn tcphub_send_with_ttl_stores_and_mailboxes_lists_and_purges() {
    let hub = TestHub::start(Config::default()).await;
    let stored = api(&hub, &["send", "away-1", "hello", "--ttl", "60"]).await;
    assert_eq!(stored.status.code(), Some(0), "{stored:?}");
    let id = stdout(&stored)
        .strip_suffix(" stored for away-1\n")
        .unwrap_or_else(|| panic!("{:?}", stdout(&stored)))
        .to_owned();

    let listed = json_out(&api(&hub, &["mailboxes", "--json"]).await);
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["mailboxes"][0]["name"], "away-1");
    assert_eq!(listed["mailboxes"][0]["pending"], 1);
    let text = stdout(&api(&hub, &["mailboxes", "--prefix", "away"]).await);
    assert!(
        text.starts_with("away-1 1 pending since ") && text.ends_with("\n1 of 1 mailbox\n"),
        "{text}"
    );

    let purged = api(&hub, &["purge", "away-1"]).await;
    assert_eq!(stdout(&purged), "purged the mailbox of away-1\n");
    assert_eq!(
        json_out(&api(&hub, &["mailboxes", "--json"]).await),
        json!({"total": 0, "mailboxes": []})
    );
    // Purged before anyone came: the name's first session gets nothing stored.
    let mut back = TestClient::synced(&hub, "away-1").await;
    back.ping().await;
    assert!(id.starts_with('m'), "{id}");

    let usage = run(&["send", "away-1", "x", "--until-ack"]).await;
    assert_eq!(usage.status.code(), Some(2), "--until-ack needs --ttl");
}
