//! The bytes of cross-node calls, without any I/O: request messages (a
//! batch of calls, each with its id and deadline), reply messages (a batch of
//! answers by call id, or one refusal of a whole request message), and
//! replies cut into chunks that fit the broker's payload limit and put back
//! together on the asking side.
//!
//! Calls and answers travel in batches because under load the broker, and
//! each node's side of it, then handle one message for many calls, not one
//! for each; a call made alone goes alone, at once. A node replies to every
//! request message as soon as it has taken it (with the answers ready by
//! then, possibly none): its asker holds further calls to it until then.
//!
//! Request: `{"version":2,"calls":[{"id":<u64>,"deadline":<ms since epoch>,"body":<request>},...]}`,
//! with a reply subject. Reply, to that subject:
//! `{"replies":[{"id":<u64>,"reply":{"ok":<response>}|{"error":<refusal>}},...]}`,
//! or `{"error":<refusal>}` when the node refuses the whole message (another
//! version, not a batch of calls). A reply names its node in header
//! `Tcphub-Node` when the request went to every node (its asker tells the
//! answers apart by it). An answer over [`PACKED_MAX`] (a listing) goes
//! alone, its bare reply (`{"ok":<response>}`) to `<reply subject>.<id>`, so
//! that the asker passes it to its call unread; one too big for a message is
//! cut in n > 1 chunks with `Tcphub-Chunk: <i>/<n>` on each (i from 0), in
//! order.

use std::collections::HashMap;
use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The protocol version this build speaks; requests of any other are refused.
pub const VERSION: u32 = 2;
/// The largest reply, all chunks together, that a node sends or accepts.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// Room left in each message for its headers.
pub(crate) const HEADER_ROOM: usize = 1024;
/// The header naming the node that replies.
pub(crate) const NODE_HEADER: &str = "Tcphub-Node";
/// The header numbering a reply's chunks.
pub(crate) const CHUNK_HEADER: &str = "Tcphub-Chunk";
/// The bytes of a request message around its calls, at most.
pub(crate) const MESSAGE_ROOM: usize = 32;
/// The bytes of one call around its body, at most.
pub(crate) const CALL_ROOM: usize = 72;

/// A call on its way out, its body already encoded.
#[derive(Debug, Serialize)]
pub(crate) struct CallOut {
    pub(crate) id: u64,
    pub(crate) deadline: u64,
    pub(crate) body: Box<RawValue>,
}

impl CallOut {
    /// Its bytes in a request message, at most.
    pub(crate) fn size(&self) -> usize {
        self.body.get().len() + CALL_ROOM
    }
}

#[derive(Serialize)]
struct MessageOut<'a> {
    version: u32,
    calls: &'a [&'a CallOut],
}

/// One request message carrying `calls`.
pub(crate) fn encode_calls(calls: &[&CallOut]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&MessageOut {
        version: VERSION,
        calls,
    })
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    version: u32,
    #[serde(borrow)]
    calls: Vec<CallIn<'a>>,
}

#[derive(Deserialize)]
struct CallIn<'a> {
    id: u64,
    deadline: u64,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// Just the version, to tell a newer peer from a broken one.
#[derive(Deserialize)]
struct Head {
    version: u32,
}

/// One call of a received request message.
#[derive(Debug, PartialEq)]
pub(crate) struct Call<T> {
    pub(crate) id: u64,
    pub(crate) deadline: u64,
    /// The request, or why its body does not decode (that call alone is refused).
    pub(crate) body: Result<T, String>,
}

/// What a received request message turned out to be.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded<T> {
    /// Calls of this version.
    Calls(Vec<Call<T>>),
    /// A message of another protocol version.
    Unsupported(u32),
    /// Not a request message at all.
    Malformed(String),
}

/// Decodes a request message: one parse when it is well formed, a second one
/// only to tell why it is not.
pub(crate) fn decode_calls<T: DeserializeOwned>(bytes: &[u8]) -> Decoded<T> {
    match serde_json::from_slice::<MessageIn>(bytes) {
        Ok(message) if message.version == VERSION => Decoded::Calls(
            message
                .calls
                .into_iter()
                .map(|call| Call {
                    id: call.id,
                    deadline: call.deadline,
                    body: serde_json::from_str(call.body.get()).map_err(|err| err.to_string()),
                })
                .collect(),
        ),
        Ok(message) => Decoded::Unsupported(message.version),
        Err(err) => match serde_json::from_slice::<Head>(bytes) {
            Ok(head) if head.version != VERSION => Decoded::Unsupported(head.version),
            _ => Decoded::Malformed(err.to_string()),
        },
    }
}

/// A reply to one call: the answer, or why the call was refused. Also, as
/// `Error`, the refusal of a whole request message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Reply<R> {
    Ok(R),
    Error(Refusal),
}

/// Why a node refused a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// `unsupported_version`, `bad_request` or `too_large`.
    pub code: String,
    /// For a person reading the log.
    pub detail: String,
    /// The protocol version the refusing node speaks.
    pub version: u32,
}

impl Refusal {
    /// A refusal with `code` and `detail`, from this version.
    pub(crate) fn new(code: &str, detail: String) -> Refusal {
        Refusal {
            code: code.to_owned(),
            detail,
            version: VERSION,
        }
    }
}

/// The largest reply packed with others; a bigger one goes alone.
pub(crate) const PACKED_MAX: usize = 64 * 1024;
/// The bytes of an answer in a reply message around its reply, at most.
const ANSWER_ROOM: usize = 40;

/// One call's reply, encoded, and the call's id.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) id: u64,
    /// A [`Reply`] as JSON.
    pub(crate) reply: Vec<u8>,
}

impl Answer {
    /// The answer `reply` to call `id`.
    pub(crate) fn encode<R: Serialize>(
        id: u64,
        reply: &Reply<R>,
    ) -> Result<Answer, serde_json::Error> {
        Ok(Answer {
            id,
            reply: serde_json::to_vec(reply)?,
        })
    }

    /// Its bytes in a reply message, at most.
    pub(crate) fn size(&self) -> usize {
        self.reply.len() + ANSWER_ROOM
    }
}

/// Answers gathered into one reply message.
#[derive(Debug)]
pub(crate) struct Pack {
    bytes: Vec<u8>,
    answers: usize,
}

const PACK_OPEN: &[u8] = br#"{"replies":["#;
const PACK_CLOSE: &[u8] = b"]}";

impl Pack {
    /// A reply message with no answer yet.
    pub(crate) fn new() -> Pack {
        Pack {
            bytes: PACK_OPEN.to_vec(),
            answers: 0,
        }
    }

    /// Adds `answer`, as `{"id":<id>,"reply":<reply>}`.
    pub(crate) fn push(&mut self, answer: &Answer) {
        if self.answers > 0 {
            self.bytes.push(b',');
        }
        // Writing to a Vec cannot fail.
        let _ = write!(self.bytes, r#"{{"id":{},"reply":"#, answer.id);
        self.bytes.extend_from_slice(&answer.reply);
        self.bytes.push(b'}');
        self.answers += 1;
    }

    /// How many answers it holds.
    pub(crate) fn answers(&self) -> usize {
        self.answers
    }

    /// Its size once finished, with `answer` added, at most.
    pub(crate) fn size_with(&self, answer: &Answer) -> usize {
        self.bytes.len() + 1 + answer.size() + PACK_CLOSE.len()
    }

    /// The reply message.
    pub(crate) fn finish(mut self) -> Bytes {
        self.bytes.extend_from_slice(PACK_CLOSE);
        Bytes::from(self.bytes)
    }
}

#[derive(Deserialize)]
struct ReplyIn<'a> {
    #[serde(borrow, default)]
    replies: Option<Vec<AnswerIn<'a>>>,
    #[serde(default)]
    error: Option<Refusal>,
}

#[derive(Deserialize)]
struct AnswerIn<'a> {
    id: u64,
    #[serde(borrow)]
    reply: &'a RawValue,
}

/// What a received reply message holds.
#[derive(Debug, PartialEq)]
pub(crate) enum Answers {
    /// Each call's reply, a [`Reply`] as JSON (a slice of the message), by id.
    Each(Vec<(u64, Bytes)>),
    /// Every call of the request message was refused.
    Refused(Refusal),
}

/// Decodes a reply message.
pub(crate) fn decode_answers(bytes: &Bytes) -> Result<Answers, String> {
    let reply: ReplyIn = serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
    match (reply.replies, reply.error) {
        (Some(answers), None) => Ok(Answers::Each(
            answers
                .into_iter()
                .map(|answer| (answer.id, bytes.slice_ref(answer.reply.get().as_bytes())))
                .collect(),
        )),
        (None, Some(refusal)) => Ok(Answers::Refused(refusal)),
        _ => Err("a reply holds either replies or an error".to_owned()),
    }
}

/// `bytes` cut into pieces of at most `max` bytes, each with its chunk
/// header value (`None` when one piece is enough, the usual case).
pub(crate) fn chunks(bytes: Bytes, max: usize) -> Vec<(Option<String>, Bytes)> {
    let max = max.max(1);
    if bytes.len() <= max {
        return vec![(None, bytes)];
    }
    let count = bytes.len().div_ceil(max);
    (0..count)
        .map(|i| {
            let end = ((i + 1) * max).min(bytes.len());
            (Some(format!("{i}/{count}")), bytes.slice(i * max..end))
        })
        .collect()
}

/// Replies being put back together, one per replying node.
#[derive(Debug, Default)]
pub(crate) struct Assembly {
    partial: HashMap<String, Partial>,
}

#[derive(Debug)]
struct Partial {
    next: usize,
    count: usize,
    bytes: BytesMut,
}

impl Assembly {
    /// Adds one message from `node`: the whole reply once its last chunk is
    /// in, `None` while chunks are missing, or an error for chunks out of
    /// order, malformed or adding up past [`MAX_REPLY_BYTES`] (the node's
    /// partial reply is dropped).
    pub(crate) fn add(
        &mut self,
        node: &str,
        chunk: Option<&str>,
        payload: Bytes,
    ) -> Option<Result<Bytes, String>> {
        let Some(chunk) = chunk else {
            return Some(Ok(payload));
        };
        let result = self.add_chunk(node, chunk, payload);
        if result.is_some() {
            self.partial.remove(node);
        }
        result
    }

    fn add_chunk(
        &mut self,
        node: &str,
        chunk: &str,
        payload: Bytes,
    ) -> Option<Result<Bytes, String>> {
        let Some((index, count)) = parse_chunk(chunk) else {
            return Some(Err(format!("malformed chunk header {chunk:?}")));
        };
        let partial = self.partial.entry(node.to_owned()).or_insert(Partial {
            next: 0,
            count,
            bytes: BytesMut::new(),
        });
        if index != partial.next || count != partial.count {
            return Some(Err(format!(
                "chunk {chunk} out of order (expected {}/{})",
                partial.next, partial.count
            )));
        }
        if partial.bytes.len() + payload.len() > MAX_REPLY_BYTES {
            return Some(Err(format!("reply larger than {MAX_REPLY_BYTES} bytes")));
        }
        partial.bytes.extend_from_slice(&payload);
        partial.next += 1;
        if partial.next < partial.count {
            return None;
        }
        Some(Ok(std::mem::take(&mut partial.bytes).freeze()))
    }
}

/// `i/n` with `i < n`.
fn parse_chunk(header: &str) -> Option<(usize, usize)> {
    let (index, count) = header.split_once('/')?;
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (index < count).then_some((index, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(id: u64, body: serde_json::Value) -> CallOut {
        CallOut {
            id,
            deadline: 42,
            body: serde_json::value::to_raw_value(&body).unwrap(),
        }
    }

    #[test]
    fn calls_round_trip_in_one_message() {
        let (a, b) = (call(1, json!({"name": "a"})), call(2, json!("b")));
        let bytes = encode_calls(&[&a, &b]).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            json!({"version": 2, "calls": [
                {"id": 1, "deadline": 42, "body": {"name": "a"}},
                {"id": 2, "deadline": 42, "body": "b"}
            ]})
        );
        assert!(bytes.len() <= MESSAGE_ROOM + a.size() + b.size());
        assert_eq!(
            decode_calls::<serde_json::Value>(&bytes),
            Decoded::Calls(vec![
                Call {
                    id: 1,
                    deadline: 42,
                    body: Ok(json!({"name": "a"}))
                },
                Call {
                    id: 2,
                    deadline: 42,
                    body: Ok(json!("b"))
                },
            ])
        );
    }

    #[test]
    fn the_room_kept_per_call_fits_the_largest_numbers() {
        let widest = CallOut {
            id: u64::MAX,
            deadline: u64::MAX,
            body: serde_json::value::to_raw_value(&0).unwrap(),
        };
        let bytes = encode_calls(&[&widest]).unwrap();
        assert!(
            bytes.len() <= MESSAGE_ROOM + widest.size(),
            "{}",
            bytes.len()
        );
    }

    #[test]
    fn another_version_is_unsupported_whatever_its_shape() {
        let newer = br#"{"version":3,"calls":[{"shape":"new"}]}"#;
        assert_eq!(decode_calls::<u32>(newer), Decoded::Unsupported(3));
        let older = br#"{"version":1,"deadline":1,"body":7}"#;
        assert_eq!(decode_calls::<u32>(older), Decoded::Unsupported(1));
    }

    #[test]
    fn garbage_is_malformed_and_a_wrong_body_fails_its_call_alone() {
        for bad in [
            &b"not json"[..],
            br#"{"deadline":1,"calls":[]}"#,
            br#"{"version":2,"calls":[{"id":1,"body":7}]}"#,
        ] {
            assert!(
                matches!(decode_calls::<u32>(bad), Decoded::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mixed = br#"{"version":2,"calls":[{"id":1,"deadline":5,"body":"text"},
            {"id":2,"deadline":5,"body":7}]}"#;
        let Decoded::Calls(calls) = decode_calls::<u32>(mixed) else {
            panic!("not decoded as calls");
        };
        assert!(calls[0].body.is_err());
        assert_eq!(calls[1].body, Ok(7));
    }

    #[test]
    fn answers_pack_into_one_reply_and_come_apart_by_id() {
        let mut pack = Pack::new();
        let first = Answer::encode(7, &Reply::Ok(&"seven")).unwrap();
        let refusal: Reply<()> = Reply::Error(Refusal::new("bad_request", "x".to_owned()));
        let second = Answer::encode(u64::MAX, &refusal).unwrap();
        pack.push(&first);
        assert_eq!(pack.answers(), 1);
        let size = pack.size_with(&second);
        pack.push(&second);
        let bytes = pack.finish();
        assert!(bytes.len() <= size, "{} over {size}", bytes.len());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            json!({"replies": [
                {"id": 7, "reply": {"ok": "seven"}},
                {"id": u64::MAX, "reply": {"error": {"code": "bad_request", "detail": "x", "version": 2}}}
            ]})
        );
        let Ok(Answers::Each(answers)) = decode_answers(&bytes) else {
            panic!("not decoded as answers");
        };
        assert_eq!(answers[0], (7, Bytes::from_static(br#"{"ok":"seven"}"#)));
        assert_eq!(answers[1].0, u64::MAX);
        let seven: Reply<String> = serde_json::from_slice(&answers[0].1).unwrap();
        assert!(matches!(seven, Reply::Ok(text) if text == "seven"));
    }

    #[test]
    fn a_refused_message_and_garbage_are_told_apart() {
        let refused: Reply<()> = Reply::Error(Refusal::new("unsupported_version", "v".to_owned()));
        let bytes = Bytes::from(serde_json::to_vec(&refused).unwrap());
        assert_eq!(
            decode_answers(&bytes),
            Ok(Answers::Refused(Refusal::new(
                "unsupported_version",
                "v".to_owned()
            )))
        );
        for bad in [&b"{not json"[..], b"{}"] {
            let bad = Bytes::copy_from_slice(bad);
            assert!(decode_answers(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_small_reply_is_one_unnumbered_chunk() {
        let parts = chunks(Bytes::from_static(b"abc"), 3);
        assert_eq!(parts, [(None, Bytes::from_static(b"abc"))]);
    }

    #[test]
    fn chunks_reassemble_per_node_even_interleaved() {
        let a = chunks(Bytes::from_static(b"0123456789"), 4);
        let b = chunks(Bytes::from_static(b"abcdefg"), 4);
        assert_eq!(a.len(), 3);
        assert_eq!(a[2], (Some("2/3".to_owned()), Bytes::from_static(b"89")));
        let mut assembly = Assembly::default();
        let mut done = Vec::new();
        let (mut a, mut b) = (a.into_iter(), b.into_iter());
        loop {
            let (x, y) = (a.next(), b.next());
            if x.is_none() && y.is_none() {
                break;
            }
            for (node, part) in [("a", x), ("b", y)] {
                if let Some((header, bytes)) = part
                    && let Some(whole) = assembly.add(node, header.as_deref(), bytes)
                {
                    done.push((node, whole.unwrap()));
                }
            }
        }
        assert_eq!(
            done,
            [
                ("b", Bytes::from_static(b"abcdefg")),
                ("a", Bytes::from_static(b"0123456789"))
            ]
        );
    }

    #[test]
    fn a_chunk_out_of_order_fails_that_reply() {
        let mut assembly = Assembly::default();
        assert_eq!(
            assembly.add("a", Some("0/3"), Bytes::from_static(b"x")),
            None
        );
        assert!(matches!(
            assembly.add("a", Some("2/3"), Bytes::new()),
            Some(Err(_))
        ));
        assert!(matches!(
            assembly.add("a", Some("1/0"), Bytes::new()),
            Some(Err(_))
        ));
        // A fresh reply from the same node starts over.
        assert_eq!(
            assembly.add("a", None, Bytes::from_static(b"y")),
            Some(Ok(Bytes::from_static(b"y")))
        );
    }
}
