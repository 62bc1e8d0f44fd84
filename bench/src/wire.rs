//! The wire side of every target: how a subscriber registers and decodes what it is pushed
//! (tcphub frames, NATS, RESP pub/sub, MQTT 3.1.1), and how a publisher triggers a push
//! (tcphub's HTTP API, NATS PUB, Redis PUBLISH, MQTT PUBLISH at QoS 0).
//! Scenarios see only `ClientConn`, `Publisher`, `Scope` and payload bytes.

use std::cell::RefCell;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use crate::http::HttpConn;

/// The server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// tcphub: TCP frames per docs/PROTOCOL.md, pushes via its HTTP API.
    Tcphub,
    /// The Node seed design (bench/seed-server): same frames and HTTP API as tcphub.
    Seed,
    /// nats-server: SUB to a broadcast subject and a per-client subject, PUB to trigger.
    Nats,
    /// redis-server: SUBSCRIBE to a broadcast channel and a per-client channel, PUBLISH to trigger.
    Redis,
    /// mosquitto: MQTT 3.1.1 SUBSCRIBE at QoS 0 to a broadcast topic and a per-client topic.
    Mqtt,
}

impl Target {
    /// Whether pushes are triggered over tcphub's HTTP API rather than the broker's own protocol.
    pub fn uses_http(self) -> bool {
        matches!(self, Target::Tcphub | Target::Seed)
    }
}

/// The subject, channel or topic every subscriber listens on for broadcasts.
const BROADCAST_CHANNEL: &str = "all";

/// The name a client registers with; also its per-client subject, channel or topic.
pub fn client_name(index: usize) -> String {
    format!("c-{index}")
}

/// Whether a delivery was a broadcast or addressed to this client alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Sent to every client.
    Broadcast,
    /// Sent to one client by name.
    Direct,
    /// Sent to a group the client is in (tcphub only).
    Group,
}

/// One decoded unit from the server.
enum Event<'a> {
    /// The server confirmed the registration (welcome, PONG, last subscribe reply, SUBACK).
    Registered,
    /// A pushed message.
    Delivery { scope: Scope, payload: &'a [u8] },
    /// A NATS keep-alive that must be answered with PONG.
    Ping,
    /// The server refused or closed the session (tcphub `error`/`bye`, MQTT refusal, NATS -ERR).
    Refused(String),
    /// Anything else the protocol sends that the bench does not need (INFO, +OK, pong).
    Other,
}

thread_local! {
    // One read buffer per runtime thread, so an idle subscriber holds no buffer of its own.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

/// A registered subscriber connection.
pub struct ClientConn {
    target: Target,
    stream: TcpStream,
    /// The tail of a unit split across reads; empty (and unallocated) almost always.
    partial: Vec<u8>,
}

/// Why a subscriber's read loop ended.
pub enum Ended {
    /// The server closed the connection.
    Closed,
    /// The server refused or said goodbye; the text says how.
    Refused(String),
}

impl ClientConn {
    /// Connects from `source` (so thousands of clients do not exhaust one address's ports),
    /// registers as `name` (in `groups`, tcphub only), and returns once the server has
    /// confirmed the registration.
    pub async fn register(
        target: Target,
        server: SocketAddr,
        source: IpAddr,
        name: &str,
        groups: &[String],
    ) -> Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("bind {source}"))?;
        let stream = socket
            .connect(server)
            .await
            .with_context(|| format!("connect {server} from {source}"))?;
        stream.set_nodelay(true)?;
        let mut conn = ClientConn {
            target,
            stream,
            partial: Vec::new(),
        };
        conn.stream.write_all(&hello(target, name, groups)?).await?;
        let mut registered = false;
        while !registered {
            let mut refused = None;
            let open = conn
                .pump(&mut |event| match event {
                    Event::Registered => registered = true,
                    Event::Refused(why) => refused = Some(why),
                    _ => {}
                })
                .await?;
            if let Some(why) = refused {
                bail!("{name} refused: {why}");
            }
            if !open {
                bail!("{name}: server closed the connection before confirming the registration");
            }
        }
        Ok(conn)
    }

    /// Hands every delivery to `on_delivery` until the server closes or refuses the session.
    pub async fn read_deliveries(
        mut self,
        mut on_delivery: impl FnMut(Scope, &[u8]) + Send,
    ) -> Result<Ended> {
        loop {
            let mut refused = None;
            let open = self
                .pump(&mut |event| match event {
                    Event::Delivery { scope, payload } => on_delivery(scope, payload),
                    Event::Refused(why) => refused = Some(why),
                    _ => {}
                })
                .await?;
            if let Some(why) = refused {
                return Ok(Ended::Refused(why));
            }
            if !open {
                return Ok(Ended::Closed);
            }
        }
    }

    /// Reads once, decodes every complete unit, answers keep-alives; false once the peer closed.
    async fn pump(&mut self, on_event: &mut (dyn FnMut(Event) + Send)) -> Result<bool> {
        let mut pings = 0;
        let target = self.target;
        let partial = &mut self.partial;
        let stream = &mut self.stream;
        // `poll_read` (unlike `try_read`) forgets the socket's readiness after a short read,
        // so one delivery costs one `recv`, not a second one that finds nothing.
        let read = poll_fn(|cx| {
            SCRATCH.with(|scratch| -> Poll<Result<usize>> {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Ready(Ok(())) => {}
                }
                let n = buf.filled().len();
                let mut on = |event: Event| {
                    if matches!(event, Event::Ping) {
                        pings += 1;
                    }
                    on_event(event);
                };
                Poll::Ready(decode_into(target, partial, &scratch[..n], &mut on).map(|()| n))
            })
        })
        .await?;
        for _ in 0..pings {
            self.stream.write_all(b"PONG\r\n").await?;
        }
        Ok(read != 0)
    }
}

/// Decodes `fresh` bytes after what `partial` kept of the previous read, and keeps the
/// incomplete tail for the next one.
fn decode_into(
    target: Target,
    partial: &mut Vec<u8>,
    fresh: &[u8],
    on: &mut dyn FnMut(Event),
) -> Result<()> {
    if partial.is_empty() {
        let used = decode(target, fresh, on)?;
        partial.extend_from_slice(&fresh[used..]);
    } else {
        partial.extend_from_slice(fresh);
        let used = decode(target, partial, on)?;
        partial.drain(..used);
        if partial.is_empty() {
            *partial = Vec::new();
        }
    }
    Ok(())
}

/// The bytes a subscriber sends right after connecting to register under `name`, and in
/// `groups` (which only tcphub has).
fn hello(target: Target, name: &str, groups: &[String]) -> Result<Vec<u8>> {
    if !groups.is_empty() && target != Target::Tcphub {
        bail!("only tcphub has groups");
    }
    Ok(match target {
        Target::Tcphub if !groups.is_empty() => {
            let sync = serde_json::json!({"type": "sync", "clientName": name, "groups": groups});
            format!("{sync}\n").into_bytes()
        }
        Target::Tcphub | Target::Seed => format!("{{\"type\":\"sync\",\"clientName\":\"{name}\"}}\n").into_bytes(),
        // The PING makes the server answer PONG after it has applied both SUBs.
        Target::Nats => format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"{name}\"}}\r\nSUB {BROADCAST_CHANNEL} 1\r\nSUB {name} 2\r\nPING\r\n"
        )
        .into_bytes(),
        Target::Redis => resp_command(&["SUBSCRIBE", BROADCAST_CHANNEL, name]),
        Target::Mqtt => {
            let mut bytes = mqtt_connect(name);
            bytes.extend(mqtt_subscribe(&[BROADCAST_CHANNEL, name]));
            bytes
        }
    })
}

/// Decodes every complete unit at the front of `buf`; returns how many bytes were used.
fn decode(target: Target, buf: &[u8], on: &mut dyn FnMut(Event)) -> Result<usize> {
    match target {
        Target::Tcphub | Target::Seed => decode_json_lines(buf, on),
        Target::Nats => decode_nats(buf, on),
        Target::Redis => decode_resp(buf, on),
        Target::Mqtt => decode_mqtt(buf, on),
    }
}

/// A hub → client frame of tcphub (docs/PROTOCOL.md §1), borrowing from the read buffer.
#[derive(Deserialize)]
struct HubFrame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    scope: Option<&'a str>,
    message: Option<&'a str>,
}

fn decode_json_lines(buf: &[u8], on: &mut dyn FnMut(Event)) -> Result<usize> {
    let mut used = 0;
    while let Some(end) = buf[used..].iter().position(|&b| b == b'\n') {
        let line = &buf[used..used + end];
        used += end + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let frame: HubFrame = serde_json::from_slice(line)
            .with_context(|| format!("unexpected frame {}", String::from_utf8_lossy(line)))?;
        match (frame.kind, frame.scope, frame.message) {
            ("welcome", _, _) => on(Event::Registered),
            ("message", Some(scope), Some(message)) => {
                let scope = match scope {
                    "broadcast" => Scope::Broadcast,
                    "direct" => Scope::Direct,
                    "group" => Scope::Group,
                    other => bail!("unknown scope {other}"),
                };
                on(Event::Delivery {
                    scope,
                    payload: message.as_bytes(),
                })
            }
            ("error" | "bye", _, _) => {
                on(Event::Refused(String::from_utf8_lossy(line).into_owned()))
            }
            _ => on(Event::Other),
        }
    }
    Ok(used)
}

fn decode_nats(buf: &[u8], on: &mut dyn FnMut(Event)) -> Result<usize> {
    let mut used = 0;
    while let Some(end) = find_crlf(&buf[used..]) {
        let line = &buf[used..used + end];
        let after_line = used + end + 2;
        if let Some(args) = line.strip_prefix(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let fields: Vec<&[u8]> = args
                .split(|&b| b == b' ')
                .filter(|f| !f.is_empty())
                .collect();
            let (Some(subject), Some(size)) = (fields.first(), fields.last()) else {
                bail!("malformed NATS MSG line");
            };
            let size: usize = std::str::from_utf8(size)?.parse()?;
            if buf.len() < after_line + size + 2 {
                break;
            }
            let payload = &buf[after_line..after_line + size];
            let scope = if *subject == BROADCAST_CHANNEL.as_bytes() {
                Scope::Broadcast
            } else {
                Scope::Direct
            };
            on(Event::Delivery { scope, payload });
            used = after_line + size + 2;
            continue;
        }
        if line == b"PONG" {
            on(Event::Registered);
        } else if line == b"PING" {
            on(Event::Ping);
        } else if line.starts_with(b"-ERR") {
            on(Event::Refused(String::from_utf8_lossy(line).into_owned()));
        } else {
            on(Event::Other);
        }
        used = after_line;
    }
    Ok(used)
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// One RESP value: enough of RESP2 for pub/sub pushes and subscribe replies.
enum Resp<'a> {
    Bulk(&'a [u8]),
    Integer(i64),
    Array(Vec<Resp<'a>>),
    Error(&'a [u8]),
    Simple,
}

/// Parses one RESP value at the front of `buf`: `Ok(None)` when incomplete.
fn parse_resp(buf: &[u8]) -> Result<Option<(Resp<'_>, usize)>> {
    let Some(end) = find_crlf(buf) else {
        return Ok(None);
    };
    let Some((&kind, rest)) = buf[..end].split_first() else {
        bail!("empty RESP line")
    };
    let after = end + 2;
    let number = || -> Result<i64> { Ok(std::str::from_utf8(rest)?.parse()?) };
    Ok(Some(match kind {
        b'+' => (Resp::Simple, after),
        b'-' => (Resp::Error(rest), after),
        b':' => (Resp::Integer(number()?), after),
        b'$' => {
            let len = usize::try_from(number()?).map_err(|_| anyhow!("null bulk string"))?;
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            (Resp::Bulk(&buf[after..after + len]), after + len + 2)
        }
        b'*' => {
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..number()? {
                let Some((item, used)) = parse_resp(&buf[at..])? else {
                    return Ok(None);
                };
                items.push(item);
                at += used;
            }
            (Resp::Array(items), at)
        }
        other => bail!("unexpected RESP type byte {other:#x}"),
    }))
}

fn decode_resp(buf: &[u8], on: &mut dyn FnMut(Event)) -> Result<usize> {
    let mut used = 0;
    while let Some((value, len)) = parse_resp(&buf[used..])? {
        used += len;
        match value {
            Resp::Array(items) => match items.as_slice() {
                [Resp::Bulk(b"message"), Resp::Bulk(channel), Resp::Bulk(payload)] => {
                    let scope = if *channel == BROADCAST_CHANNEL.as_bytes() {
                        Scope::Broadcast
                    } else {
                        Scope::Direct
                    };
                    on(Event::Delivery { scope, payload })
                }
                // The reply to the second channel of our one SUBSCRIBE confirms both.
                [Resp::Bulk(b"subscribe"), _, Resp::Integer(2)] => on(Event::Registered),
                _ => on(Event::Other),
            },
            Resp::Error(text) => on(Event::Refused(String::from_utf8_lossy(text).into_owned())),
            _ => on(Event::Other),
        }
    }
    Ok(used)
}

/// Encodes a command as a RESP array of bulk strings.
fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n{arg}\r\n", arg.len()).into_bytes());
    }
    out
}

fn mqtt_remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn mqtt_packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    mqtt_remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn mqtt_string(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// CONNECT, MQTT 3.1.1, clean session, keep-alive off (so idle clients send nothing).
fn mqtt_connect(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    mqtt_string("MQTT", &mut body);
    body.extend_from_slice(&[4, 0x02, 0, 0]);
    mqtt_string(client_id, &mut body);
    mqtt_packet(0x10, &body)
}

/// SUBSCRIBE (packet id 1) to every topic at QoS 0.
fn mqtt_subscribe(topics: &[&str]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for topic in topics {
        mqtt_string(topic, &mut body);
        body.push(0);
    }
    mqtt_packet(0x82, &body)
}

/// PUBLISH at QoS 0 (no packet id, no acknowledgement).
fn mqtt_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + topic.len() + payload.len());
    mqtt_string(topic, &mut body);
    body.extend_from_slice(payload);
    mqtt_packet(0x30, &body)
}

/// Splits one MQTT packet off the front of `buf`: `Some((first byte, body, total length))`.
fn split_mqtt_packet(buf: &[u8]) -> Result<Option<(u8, &[u8], usize)>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut at = 1;
    for shift in 0..4 {
        let Some(&byte) = buf.get(at) else {
            return Ok(None);
        };
        at += 1;
        len |= usize::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok((buf.len() >= at + len).then(|| (first, &buf[at..at + len], at + len)));
        }
    }
    bail!("MQTT remaining length over 4 bytes")
}

fn decode_mqtt(buf: &[u8], on: &mut dyn FnMut(Event)) -> Result<usize> {
    let mut used = 0;
    while let Some((first, body, len)) = split_mqtt_packet(&buf[used..])? {
        used += len;
        match first >> 4 {
            2 if body.get(1) != Some(&0) => on(Event::Refused(format!(
                "CONNACK return code {:?}",
                body.get(1)
            ))),
            3 => {
                if first & 0x06 != 0 {
                    bail!("PUBLISH at QoS > 0 although every subscription is QoS 0");
                }
                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let topic = &body[2..2 + topic_len];
                let scope = if topic == BROADCAST_CHANNEL.as_bytes() {
                    Scope::Broadcast
                } else {
                    Scope::Direct
                };
                on(Event::Delivery {
                    scope,
                    payload: &body[2 + topic_len..],
                })
            }
            9 if body[2..].contains(&0x80) => on(Event::Refused("SUBACK failure".into())),
            9 => on(Event::Registered),
            _ => on(Event::Other),
        }
    }
    Ok(used)
}

/// The connection that triggers pushes: an HTTP keep-alive connection for tcphub and the
/// seed design, a plain publishing client for the brokers.
pub enum Publisher {
    /// `POST /broadcast` and `POST /clients/{name}/send`.
    Http(HttpConn),
    /// `PUB` with verbose off: the broker sends nothing back.
    Nats(TcpStream),
    /// `PUBLISH`, whose integer reply (the receiver count) is read before the next one.
    Redis(BufReader<TcpStream>),
    /// `PUBLISH` at QoS 0: nothing comes back.
    Mqtt(TcpStream),
}

impl Publisher {
    /// Connects publisher number `index` (MQTT needs a distinct client id per connection).
    pub async fn connect(
        target: Target,
        server: SocketAddr,
        http: SocketAddr,
        index: usize,
    ) -> Result<Self> {
        if target.uses_http() {
            return Ok(Publisher::Http(HttpConn::connect(http).await?));
        }
        let stream = TcpStream::connect(server)
            .await
            .with_context(|| format!("publisher connect {server}"))?;
        stream.set_nodelay(true)?;
        Ok(match target {
            Target::Nats => {
                let mut stream = stream;
                stream
                    .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
                    .await?;
                Publisher::Nats(stream)
            }
            Target::Redis => Publisher::Redis(BufReader::new(stream)),
            Target::Mqtt => {
                let mut stream = stream;
                stream
                    .write_all(&mqtt_connect(&format!("publisher-{index}")))
                    .await?;
                let mut connack = [0u8; 4];
                tokio::io::AsyncReadExt::read_exact(&mut stream, &mut connack).await?;
                if connack != [0x20, 2, 0, 0] {
                    bail!("MQTT publisher refused: {connack:?}");
                }
                Publisher::Mqtt(stream)
            }
            Target::Tcphub | Target::Seed => unreachable!("HTTP targets returned above"),
        })
    }

    /// Pushes `payload` to every subscriber.
    pub async fn broadcast(&mut self, payload: &str) -> Result<()> {
        self.publish(None, payload).await
    }

    /// Pushes `payload` to the one subscriber registered as `name`.
    pub async fn direct(&mut self, name: &str, payload: &str) -> Result<()> {
        self.publish(Some(name), payload).await
    }

    async fn publish(&mut self, name: Option<&str>, payload: &str) -> Result<()> {
        let channel = name.unwrap_or(BROADCAST_CHANNEL);
        match self {
            Publisher::Http(http) => {
                let path = match name {
                    Some(name) => format!("/clients/{name}/send"),
                    None => "/broadcast".to_owned(),
                };
                let body = serde_json::to_vec(&serde_json::json!({ "message": payload }))?;
                let (status, reply) = http.post_json(&path, &body).await?;
                if status != 202 {
                    bail!("POST {path}: {status} {}", String::from_utf8_lossy(&reply));
                }
            }
            Publisher::Nats(stream) => {
                let frame = format!("PUB {channel} {}\r\n{payload}\r\n", payload.len());
                stream.write_all(frame.as_bytes()).await?;
            }
            Publisher::Redis(stream) => {
                stream
                    .get_mut()
                    .write_all(&resp_command(&["PUBLISH", channel, payload]))
                    .await?;
                let mut reply = String::new();
                stream.read_line(&mut reply).await?;
                if !reply.starts_with(':') {
                    bail!("PUBLISH {channel}: {}", reply.trim_end());
                }
            }
            Publisher::Mqtt(stream) => {
                stream
                    .write_all(&mqtt_publish(channel, payload.as_bytes()))
                    .await?
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliveries(target: Target, wire: &[u8]) -> (Vec<(Scope, Vec<u8>)>, usize) {
        let mut out = Vec::new();
        let used = decode(target, wire, &mut |event| {
            if let Event::Delivery { scope, payload } = event {
                out.push((scope, payload.to_vec()))
            }
        })
        .unwrap();
        (out, used)
    }

    #[test]
    fn json_lines_stop_at_a_split_frame() {
        let wire = b"{\"type\":\"message\",\"id\":\"1\",\"scope\":\"direct\",\"message\":\"hi\"}\n{\"type\":\"mes";
        let (got, used) = deliveries(Target::Tcphub, wire);
        assert_eq!(got, vec![(Scope::Direct, b"hi".to_vec())]);
        assert_eq!(&wire[used..], b"{\"type\":\"mes");
    }

    #[test]
    fn group_messages_are_deliveries_in_group_scope() {
        let wire = b"{\"type\":\"message\",\"id\":\"m3\",\"scope\":\"group\",\"group\":\"b-1\",\"message\":\"hi\"}\n";
        let (got, used) = deliveries(Target::Tcphub, wire);
        assert_eq!(got, vec![(Scope::Group, b"hi".to_vec())]);
        assert_eq!(used, wire.len());
    }

    #[test]
    fn nats_msg_waits_for_its_whole_payload() {
        let wire = b"INFO {}\r\nMSG all 1 5\r\nhello\r\nMSG c-1 2 3\r\nab";
        let (got, used) = deliveries(Target::Nats, wire);
        assert_eq!(got, vec![(Scope::Broadcast, b"hello".to_vec())]);
        assert_eq!(&wire[used..], b"MSG c-1 2 3\r\nab");
    }

    #[test]
    fn resp_message_push_is_decoded_and_a_split_one_kept() {
        let wire = b"*3\r\n$7\r\nmessage\r\n$3\r\nc-7\r\n$2\r\nhi\r\n*3\r\n$7\r\nmessage\r\n$3\r\nall\r\n$2\r\nh";
        let (got, used) = deliveries(Target::Redis, wire);
        assert_eq!(got, vec![(Scope::Direct, b"hi".to_vec())]);
        assert_eq!(used, 34);
    }

    #[test]
    fn mqtt_publish_round_trips_through_the_decoder() {
        let payload = vec![b'x'; 300]; // a two-byte remaining length
        let mut wire = mqtt_publish("all", &payload);
        wire.extend(mqtt_publish("c-3", b"hi"));
        wire.pop();
        let (got, used) = deliveries(Target::Mqtt, &wire);
        assert_eq!(got, vec![(Scope::Broadcast, payload)]);
        assert_eq!(used, 3 + 2 + 3 + 300);
    }
}
