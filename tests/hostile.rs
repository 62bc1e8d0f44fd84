//! Hostile clients, one test each: random bytes, endless frames, slowloris,
//! invalid UTF-8, deep nesting, names at and past the limits, huge and malformed
//! HTTP bodies, odd names in paths. Each gets the documented answer, and a
//! sentinel client proves that the hub still serves everyone else.

mod common;
#[path = "common/sentinel.rs"]
mod sentinel;

use common::{PATIENCE, TestClient, TestHub};
use sentinel::{Sentinel, pseudo_random_bytes, raw_http, raw_http_then_eof};
use serde_json::{Value, json};
use tcphub::Config;
use tcphub::protocol::MAX_NAME_BYTES;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

const MAX_FRAME_BYTES: usize = 65536;

/// Error codes the hub may answer garbage with, the connection staying open.
const GARBAGE_ERRORS: [&str; 3] = ["invalid_json", "invalid_frame", "unknown_type"];

/// A hub with the default limits and a sentinel already served once.
async fn hub_with_sentinel() -> (TestHub, Sentinel) {
    let hub = TestHub::start(Config::default()).await;
    let mut sentinel = Sentinel::join(&hub, "sentinel").await;
    sentinel.assert_served(&hub).await;
    (hub, sentinel)
}

/// How a connection fed garbage ended.
#[derive(Debug, PartialEq)]
enum Ending {
    /// It answered a final ping: the connection survived.
    Pong,
    /// The hub closed it with `bye` `frame_too_large`.
    FrameTooLarge,
}

#[tokio::test]
async fn a_megabyte_of_random_bytes_gets_only_documented_answers() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let stream = TcpStream::connect(hub.tcp_addr).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    // Read while writing, as a client would: the hub answers as it goes.
    let answers = tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        let mut errors = 0usize;
        loop {
            let line = timeout(PATIENCE, lines.next_line())
                .await
                .expect("the hub went silent")
                .expect("read from the hub")
                .expect("the hub closed the connection without a bye");
            let frame: Value = serde_json::from_str(&line).expect("a JSON frame");
            match frame["type"].as_str() {
                Some("pong") => return (Ending::Pong, errors),
                Some("bye") => {
                    assert_eq!(frame["reason"], "frame_too_large");
                    let eof = timeout(PATIENCE, lines.next_line()).await.unwrap();
                    assert!(matches!(eof, Ok(None)), "bytes after the bye: {eof:?}");
                    return (Ending::FrameTooLarge, errors);
                }
                Some("error") => {
                    let code = frame["code"].as_str().unwrap_or_default();
                    assert!(GARBAGE_ERRORS.contains(&code), "unexpected {frame}");
                    errors += 1;
                }
                _ => panic!("unexpected frame {frame}"),
            }
        }
    });
    let garbage = pseudo_random_bytes(0x5eed, 1 << 20);
    // Then a frame limit's worth of newlines, which either completes whatever the
    // garbage left open (ending in a ping) or pushes it past the frame limit.
    let mut tail = vec![b'\n'; MAX_FRAME_BYTES + 1];
    tail.extend_from_slice(b"{\"type\":\"ping\"}\n");
    let mut closed_by_hub = false;
    for chunk in garbage.chunks(16 * 1024).chain([tail.as_slice()]) {
        if writer.write_all(chunk).await.is_err() {
            closed_by_hub = true;
            break;
        }
    }
    let mut events = hub.events();
    let (ending, errors) = timeout(PATIENCE, answers).await.unwrap().unwrap();
    assert!(
        !closed_by_hub || ending == Ending::FrameTooLarge,
        "the hub closed the connection without saying why"
    );
    assert!(errors > 0, "a megabyte of garbage drew no error at all");
    sentinel.assert_served(&hub).await;
    if ending == Ending::FrameTooLarge {
        drop(writer);
        events.disconnections(1).await;
        assert_eq!(hub.get("/clients").await.1["total"], 1, "only the sentinel");
    }
}

#[tokio::test]
async fn a_frame_that_never_ends_is_cut_at_the_limit_and_no_one_else_notices() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let mut endless = TestClient::connect(&hub).await;
    endless.send_raw(b"{\"type\":\"info\",\"message\":\"").await;
    // Up to the limit the hub keeps waiting for the rest; others are served.
    endless.send_raw(&vec![b'x'; MAX_FRAME_BYTES - 64]).await;
    sentinel.assert_served(&hub).await;
    endless.send_raw(&[b'x'; 128]).await;
    endless.expect_bye("frame_too_large").await;
    sentinel.assert_served(&hub).await;
}

#[tokio::test]
async fn slowloris_one_byte_at_a_time_is_served_and_so_is_everyone_else() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let mut slow = TestClient::connect(&hub).await;
    let frame = br#"{"type":"sync","clientName":"slowloris","message":"one byte at a time"}"#;
    // Each byte waits for a full round trip of another client: the hub is never
    // held up by a frame that trickles in.
    for byte in frame {
        slow.send_raw(&[*byte]).await;
        sentinel.assert_served(&hub).await;
    }
    let welcome = slow.recv().await;
    assert_eq!(welcome["clientName"], "slowloris");
    let (status, client) = hub.get("/clients/slowloris").await;
    assert_eq!(status, 200);
    assert_eq!(client["bytesIn"], frame.len());
}

#[tokio::test]
async fn invalid_utf8_is_invalid_json_and_the_connection_stays() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let mut client = TestClient::connect(&hub).await;
    client
        .send_raw(b"{\"type\":\"sync\",\"clientName\":\"caf\xc3\x28\"}\n")
        .await;
    client.expect_error("invalid_json").await;
    client.send_raw(b"\xff\xfe\xfd\n").await;
    client.expect_error("invalid_json").await;
    // An overlong encoding of '/' and a lone surrogate, each inside a string.
    client
        .send_raw(b"{\"type\":\"info\",\"message\":\"\xc0\xaf\"}\n")
        .await;
    client.expect_error("invalid_json").await;
    client
        .send_raw(b"{\"type\":\"info\",\"message\":\"\xed\xa0\x80\"}\n")
        .await;
    client.expect_error("invalid_json").await;
    client.ping().await;
    assert_eq!(hub.get("/clients?named=true").await.1["total"], 1);
    sentinel.assert_served(&hub).await;
}

#[tokio::test]
async fn garbage_is_skipped_up_to_the_newline_even_when_it_arrives_in_pieces() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let mut client = TestClient::connect(&hub).await;
    client.send_raw(b"garbage ").await;
    client.expect_error("invalid_json").await;
    // Still on the bad line: this ping is part of the garbage and is skipped.
    client.send_raw(b"{\"type\":\"ping\"} more garbage").await;
    sentinel.assert_served(&hub).await;
    client.send_raw(b"\n").await;
    client.ping().await;
    sentinel.assert_served(&hub).await;
}

#[tokio::test]
async fn json_nested_ten_thousand_deep_is_invalid_json_not_a_crash() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let mut client = TestClient::connect(&hub).await;
    let depth = 10_000;
    let arrays = format!("{}{}\n", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}null{}\n", "{\"a\":".repeat(depth), "}".repeat(depth));
    let in_a_frame = format!(
        "{{\"type\":\"info\",\"message\":{}{}}}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    for deep in [&arrays, &objects, &in_a_frame] {
        assert!(deep.len() <= MAX_FRAME_BYTES, "within the frame limit");
        client.send_raw(deep.as_bytes()).await;
        let detail = client.expect_error("invalid_json").await;
        assert!(detail.contains("recursion"), "{detail}");
    }
    client.ping().await;
    sentinel.assert_served(&hub).await;
}

#[tokio::test]
async fn nesting_past_the_parsers_limit_is_refused_before_the_frame_ends() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let mut client = TestClient::connect(&hub).await;
    // No closing bracket and no newline: the hub answers at the 128th level,
    // without waiting for the rest or holding it.
    client.send_raw("[".repeat(10_000).as_bytes()).await;
    assert_eq!(
        client.recv().await,
        json!({
            "type": "error",
            "code": "invalid_json",
            "detail": "recursion limit exceeded: nested deeper than 127 levels"
        })
    );
    sentinel.assert_served(&hub).await;
    assert_eq!(hub.registry.metrics().inbound_pending_bytes.get(), 0);
    // The rest of the line is skipped; the next line is served.
    client.send_raw(b"]]]\n").await;
    client.ping().await;
}

#[tokio::test]
async fn names_at_the_limits_are_accepted_and_reachable_over_http() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let at_limit = [
        "x".repeat(MAX_NAME_BYTES),
        "é".repeat(MAX_NAME_BYTES / 2),
        "😀".repeat(MAX_NAME_BYTES / 4),
        "a b?c#d%e&f=g+h".to_owned(),
        " ".to_owned(),
    ];
    for name in &at_limit {
        let mut client = TestClient::synced(&hub, name).await;
        let path = format!("/clients/{}", percent_encode(name));
        let (status, body) = hub.get(&path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        assert_eq!(body["name"], name.as_str());
        let (status, _) = hub
            .post(&format!("{path}/send"), json!({"message": "hi"}))
            .await;
        assert_eq!(status, 202);
        assert_eq!(client.recv().await["message"], "hi");
    }
    sentinel.assert_served(&hub).await;
}

#[tokio::test]
async fn names_past_the_limits_get_invalid_name_and_change_nothing() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let mut client = TestClient::synced(&hub, "before").await;
    let past_limit = [
        "x".repeat(MAX_NAME_BYTES + 1),
        // 127 ASCII bytes and a two-byte character: 129 bytes in 128 characters.
        format!("{}é", "x".repeat(MAX_NAME_BYTES - 1)),
        "x".repeat(1 << 15),
        String::new(),
        "a/b".to_owned(),
        "/".to_owned(),
        "nul\u{0}".to_owned(),
        "line\nbreak".to_owned(),
        "del\u{7f}".to_owned(),
        "c1\u{85}control".to_owned(),
    ];
    for name in &past_limit {
        client
            .send(&json!({"type": "sync", "clientName": name}))
            .await;
        client.expect_error("invalid_name").await;
    }
    // Not a string at all: the frame is malformed, not the name.
    for name in [json!(7), json!(null), json!(["a"])] {
        client
            .send(&json!({"type": "sync", "clientName": name}))
            .await;
        client.expect_error("invalid_frame").await;
    }
    let (_, listed) = hub.get("/clients?named=true").await;
    let names: Vec<&str> = listed["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sentinel", "before"]);
    client.ping().await;
    sentinel.assert_served(&hub).await;
}

#[tokio::test]
async fn odd_names_in_paths_are_decoded_or_refused_never_a_server_error() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let mut client = TestClient::synced(&hub, "é 1").await;
    // Percent-encoded UTF-8 is decoded before the lookup.
    let (status, body) = hub.get("/clients/%C3%A9%201").await;
    assert_eq!((status, body["name"].as_str()), (200, Some("é 1")));
    // Percent-encoded bytes that are not UTF-8 cannot be a name.
    for path in ["/clients/%FF", "/clients/%C3%28", "/clients/%ED%A0%80/send"] {
        let (status, body) = if path.ends_with("/send") {
            hub.post(path, json!({"message": 1})).await
        } else {
            hub.get(path).await
        };
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "invalid_path", "{path}: {body}");
    }
    // An encoded slash decodes to a name no client can hold.
    let (status, body) = hub.get("/clients/a%2Fb").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("client_not_found"))
    );
    let (status, _) = hub.delete("/clients/%00").await;
    assert_eq!(status, 404);
    // Raw bytes that are not UTF-8 in the request line.
    let (status, _) = raw_http(
        hub.http_addr,
        b"GET /clients/\xff\xfe HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!((400..500).contains(&status), "status {status}");
    client.ping().await;
    sentinel.assert_served(&hub).await;
}

#[tokio::test]
async fn huge_http_bodies_are_413_and_nothing_is_sent() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let max = Config::default().max_message_bytes;
    let huge_text = "x".repeat(8 << 20);
    let (status, body) = hub
        .post_raw("/broadcast", "text/plain", huge_text.clone())
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("message_too_large"))
    );
    let (status, body) = hub
        .post_raw("/clients/sentinel/send", "text/plain", "x".repeat(max + 1))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("message_too_large"))
    );
    // A JSON message one byte over the limit, its envelope aside.
    let message = Value::String("x".repeat(max - 1));
    assert_eq!(serde_json::to_string(&message).unwrap().len(), max + 1);
    let (status, body) = hub
        .post("/clients/sentinel/send", json!({ "message": message }))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("message_too_large"))
    );
    // A body streamed without a length is cut off at the limit too.
    let mut chunked = b"POST /broadcast HTTP/1.1\r\nHost: hub\r\nContent-Type: text/plain\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for _ in 0..64 {
        chunked.extend_from_slice(b"10000\r\n");
        chunked.extend_from_slice(&[b'x'; 0x10000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, _) = raw_http(hub.http_addr, &chunked).await;
    assert_eq!(status, 413);
    // The sentinel's next frame is its own round trip: nothing above reached it.
    sentinel.assert_served(&hub).await;
}

#[tokio::test]
async fn malformed_http_bodies_are_400_or_415_and_nothing_is_sent() {
    let (hub, mut sentinel) = hub_with_sentinel().await;
    let deep = format!(
        "{{\"message\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let bad_json: [&[u8]; 8] = [
        b"",
        b"{",
        b"[1]",
        b"{\"msg\":1}",
        b"{\"message\":1,\"extra\":2}",
        b"{\"message\":1}{\"message\":2}",
        b"{\"message\":\"\xff\"}",
        deep.as_bytes(),
    ];
    for body in bad_json {
        let (status, problem) = hub
            .post_raw("/clients/sentinel/send", "application/json", body.to_vec())
            .await;
        assert_eq!(
            status,
            400,
            "{:?}: {problem}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(problem["code"], "invalid_body");
    }
    let (status, problem) = hub
        .post_raw("/broadcast", "text/plain", b"caf\xc3\x28".to_vec())
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_body"))
    );
    for content_type in ["application/xml", "", "multipart/form-data; boundary=x"] {
        let (status, problem) = hub
            .post_raw("/broadcast", content_type, "{\"message\":1}")
            .await;
        assert_eq!(status, 415, "{content_type:?}");
        assert_eq!(problem["code"], "unsupported_media_type");
    }
    // Broken HTTP framing: a body shorter than its Content-Length, then EOF...
    let truncated = b"POST /broadcast HTTP/1.1\r\nHost: hub\r\nContent-Type: text/plain\r\n\
                      Content-Length: 100\r\nConnection: close\r\n\r\nshort";
    let (status, problem) = raw_http_then_eof(hub.http_addr, truncated).await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem.contains("invalid_body"), "{problem}");
    // ...a malformed chunk size, and a request line that is not HTTP.
    let (status, _) = raw_http(
        hub.http_addr,
        b"POST /broadcast HTTP/1.1\r\nHost: hub\r\nContent-Type: text/plain\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = raw_http(hub.http_addr, b"\x16\x03\x01 garbage\r\n\r\n").await;
    assert_eq!(status, 400);
    sentinel.assert_served(&hub).await;
}

/// Percent-encodes everything but unreserved characters, as a careful client does.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
