//! The bytes of a cross-node call, without any I/O: the request envelope
//! (protocol version, deadline, body), the reply (an answer or a refusal),
//! and replies cut into chunks that fit the broker's payload limit and put
//! back together on the asking side.
//!
//! Request: `{"version":1,"deadline":<ms since epoch>,"body":<request>}`.
//! Reply: `{"ok":<response>}` or `{"error":{"code","detail","version"}}`, sent
//! with header `Tcphub-Node: <node id>` (a reply in one message to a call
//! addressed to one node goes without it: its asker knows who answers) and,
//! when cut in n > 1 chunks, `Tcphub-Chunk: <i>/<n>` on each (i from 0), in
//! order.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks; requests of any other are refused.
pub const VERSION: u32 = 1;
/// The largest reply, all chunks together, that a node sends or accepts.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// Room left in each message for its headers.
pub(crate) const HEADER_ROOM: usize = 1024;
/// The header naming the node that replies.
pub(crate) const NODE_HEADER: &str = "Tcphub-Node";
/// The header numbering a reply's chunks.
pub(crate) const CHUNK_HEADER: &str = "Tcphub-Chunk";

/// A request as sent.
#[derive(Serialize)]
pub(crate) struct RequestOut<'a, T> {
    pub(crate) version: u32,
    pub(crate) deadline: u64,
    pub(crate) body: &'a T,
}

#[derive(Deserialize)]
struct RequestIn<T> {
    version: u32,
    deadline: u64,
    body: T,
}

/// Just the version, to tell a newer peer from a broken one.
#[derive(Deserialize)]
struct Head {
    version: u32,
}

/// What a received request turned out to be.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded<T> {
    /// A request this build understands.
    Request { deadline: u64, body: T },
    /// A request of another protocol version.
    Unsupported(u32),
    /// Not a request at all, or a body that does not decode.
    Malformed(String),
}

/// Decodes a request: one parse when it is well formed, a second one only to
/// tell why it is not.
pub(crate) fn decode_request<T: DeserializeOwned>(bytes: &[u8]) -> Decoded<T> {
    match serde_json::from_slice::<RequestIn<T>>(bytes) {
        Ok(request) if request.version == VERSION => Decoded::Request {
            deadline: request.deadline,
            body: request.body,
        },
        Ok(request) => Decoded::Unsupported(request.version),
        Err(err) => match serde_json::from_slice::<Head>(bytes) {
            Ok(head) if head.version != VERSION => Decoded::Unsupported(head.version),
            _ => Decoded::Malformed(err.to_string()),
        },
    }
}

/// A reply: the answer, or why the request was refused.
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

    #[test]
    fn a_request_round_trips() {
        let bytes = serde_json::to_vec(&RequestOut {
            version: VERSION,
            deadline: 42,
            body: &json!({"name": "a"}),
        })
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            json!({"version": 1, "deadline": 42, "body": {"name": "a"}})
        );
        assert_eq!(
            decode_request::<serde_json::Value>(&bytes),
            Decoded::Request {
                deadline: 42,
                body: json!({"name": "a"})
            }
        );
    }

    #[test]
    fn another_version_is_unsupported_whatever_its_body() {
        let newer = br#"{"version":2,"deadline":1,"body":{"shape":"new"}}"#;
        assert_eq!(decode_request::<u32>(newer), Decoded::Unsupported(2));
        let older = br#"{"version":0,"deadline":1,"body":7}"#;
        assert_eq!(decode_request::<u32>(older), Decoded::Unsupported(0));
    }

    #[test]
    fn garbage_or_a_wrong_body_is_malformed() {
        for bad in [
            &b"not json"[..],
            br#"{"version":1,"deadline":1,"body":"text"}"#,
            br#"{"deadline":1,"body":7}"#,
        ] {
            assert!(
                matches!(decode_request::<u32>(bad), Decoded::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn replies_are_ok_or_error() {
        let ok = serde_json::to_value(Reply::Ok(&7)).unwrap();
        assert_eq!(ok, json!({"ok": 7}));
        let refused: Reply<u32> = Reply::Error(Refusal::new("bad_request", "x".to_owned()));
        assert_eq!(
            serde_json::to_value(&refused).unwrap(),
            json!({"error": {"code": "bad_request", "detail": "x", "version": 1}})
        );
        let unit: Reply<()> = serde_json::from_value(json!({"ok": null})).unwrap();
        assert!(matches!(unit, Reply::Ok(())));
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
