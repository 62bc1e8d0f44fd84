//! The wire protocol of the TCP side: the frames clients send, the frames the hub
//! sends, and the rules for client names.
//!
//! This module knows JSON shapes only. It never sees bytes on a socket (that is
//! [`crate::codec`]) nor the registry.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest accepted client name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 128;

/// A frame a TCP client sends to the hub.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClientFrame {
    /// Registers or renames the connection: `{"type":"sync","clientName":"Client-1"}`.
    Sync {
        /// The name to register under.
        client_name: String,
        /// Free text, only logged.
        #[serde(default)]
        message: Option<Value>,
        /// Proof of the name, required with `--client-auth jwt` (never logged).
        #[serde(default)]
        token: Option<String>,
        /// When present, the connection's group set becomes exactly this list.
        #[serde(default)]
        groups: Option<Vec<String>>,
    },
    /// A message from the client to the hub; `clientName` is informational only.
    Info {
        /// Any JSON payload.
        #[serde(default)]
        message: Value,
    },
    /// `{"type":"ping"}`, answered by `pong`.
    Ping,
    /// Confirms a pushed message: `{"type":"ack","id":"<message id>"}`.
    Ack {
        /// The id of the acknowledged message.
        id: String,
    },
    /// Adds groups to the connection's set: `{"type":"join","groups":["floor-2"]}`.
    Join {
        /// The groups to join.
        groups: Vec<String>,
    },
    /// Removes groups from the connection's set: `{"type":"leave","groups":["floor-2"]}`.
    Leave {
        /// The groups to leave.
        groups: Vec<String>,
    },
}

/// The frame types a client may send, for telling `unknown_type` from `invalid_frame`.
const CLIENT_FRAME_TYPES: &[&str] = &["sync", "info", "ping", "ack", "join", "leave"];

impl ClientFrame {
    /// Interprets one decoded JSON value as a client frame.
    pub fn from_value(value: Value) -> Result<ClientFrame, FrameError> {
        let Some(kind) = value.get("type").and_then(Value::as_str) else {
            return Err(FrameError::new(
                ErrorCode::InvalidFrame,
                "a frame is a JSON object with a string \"type\"",
            ));
        };
        if !CLIENT_FRAME_TYPES.contains(&kind) {
            let detail = format!("unknown frame type {kind:?}");
            return Err(FrameError::new(ErrorCode::UnknownType, detail));
        }
        serde_json::from_value(value)
            .map_err(|err| FrameError::new(ErrorCode::InvalidFrame, err.to_string()))
    }
}

/// Why a client frame was refused: the code and text of the `error` frame to answer with.
#[derive(Debug, PartialEq)]
pub struct FrameError {
    /// The machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable text.
    pub detail: String,
}

impl FrameError {
    /// A refusal with the given code and detail.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> FrameError {
        FrameError {
            code,
            detail: detail.into(),
        }
    }
}

/// A frame the hub sends to a TCP client.
#[derive(Debug, PartialEq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum HubFrame<'a> {
    /// Confirms a `sync`.
    Welcome {
        /// The connection's session id.
        id: &'a str,
        /// The name now registered.
        client_name: &'a str,
        /// The group set, sorted; only when the `sync` carried `groups`.
        #[serde(skip_serializing_if = "Option::is_none")]
        groups: Option<&'a [Arc<str>]>,
    },
    /// A pushed message.
    Message {
        /// The message id.
        id: &'a str,
        /// Whether it went to one client, a group or all.
        scope: Scope,
        /// The group it was sent to, with scope `group` only.
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<&'a str>,
        /// The payload, as the HTTP caller gave it.
        message: &'a Value,
    },
    /// The connection's group set after a `join`, a `leave` or a change over HTTP.
    Groups {
        /// The set, sorted.
        groups: &'a [Arc<str>],
    },
    /// Answers `ping`.
    Pong,
    /// Refuses bad input; the connection stays open.
    Error {
        /// The machine-readable reason.
        code: ErrorCode,
        /// Human-readable text.
        detail: &'a str,
    },
    /// Sent right before the hub closes the connection.
    Bye {
        /// Why the hub closes it.
        reason: ByeReason,
    },
}

impl HubFrame<'_> {
    /// Compact JSON followed by `\n`, ready for the socket.
    pub fn encode(&self) -> bytes::Bytes {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|err| {
            // Serializing these types cannot fail: every map key is a string.
            unreachable!("hub frame serialization failed: {err}")
        });
        line.push(b'\n');
        line.into()
    }
}

/// The encoded `pong`, the same for every ping, so answering one allocates nothing.
pub const PONG_LINE: &[u8] = b"{\"type\":\"pong\"}\n";

/// How a pushed message was addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// To one client by name.
    Direct,
    /// To every live client.
    Broadcast,
    /// To the members of one group.
    Group,
}

/// The machine-readable reason in an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The bytes were not JSON.
    InvalidJson,
    /// Valid JSON that is not an object with a string `type`, or with wrong fields.
    InvalidFrame,
    /// A `type` the hub does not know.
    UnknownType,
    /// A name that breaks the name rules.
    InvalidName,
    /// The name is held by another connection and duplicates are rejected.
    NameTaken,
    /// Client authentication failed.
    Unauthorized,
    /// Group names that break the name rules, or more groups than a client may hold.
    InvalidGroups,
    /// The client's token does not allow a group it asked for.
    ForbiddenGroup,
    /// In a cluster, the name could not be claimed (the broker is out of
    /// reach); the connection stays unnamed and may retry.
    RegistryUnavailable,
}

/// Why the hub closes a connection, sent in the `bye` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByeReason {
    /// Disconnected through the HTTP API.
    Kicked,
    /// Another connection took its name.
    Replaced,
    /// The hub is shutting down.
    Shutdown,
    /// The hub holds `--max-clients` connections already.
    ServerFull,
    /// A frame exceeded `--max-frame-bytes`.
    FrameTooLarge,
    /// Nothing arrived for `--idle-timeout` seconds.
    IdleTimeout,
    /// Its outbound queue overflowed under `--slow-consumer=disconnect`.
    SlowConsumer,
    /// Client authentication failed.
    Unauthorized,
}

impl ByeReason {
    /// The reason as it appears on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ByeReason::Kicked => "kicked",
            ByeReason::Replaced => "replaced",
            ByeReason::Shutdown => "shutdown",
            ByeReason::ServerFull => "server_full",
            ByeReason::FrameTooLarge => "frame_too_large",
            ByeReason::IdleTimeout => "idle_timeout",
            ByeReason::SlowConsumer => "slow_consumer",
            ByeReason::Unauthorized => "unauthorized",
        }
    }
}

impl std::fmt::Display for ByeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a client name: 1–128 bytes of UTF-8, no control characters, no `/`.
pub fn validate_name(name: &str) -> Result<(), FrameError> {
    let problem = if name.is_empty() {
        "a name must not be empty"
    } else if name.len() > MAX_NAME_BYTES {
        "a name must be at most 128 bytes of UTF-8"
    } else if name.chars().any(char::is_control) {
        "a name must not contain control characters"
    } else if name.contains('/') {
        "a name must not contain '/'"
    } else {
        return Ok(());
    };
    Err(FrameError::new(ErrorCode::InvalidName, problem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_are_typed_by_their_type_field() {
        let sync = json!({"type":"sync","clientName":"Client-1","message":" hi "});
        assert_eq!(
            ClientFrame::from_value(sync),
            Ok(ClientFrame::Sync {
                client_name: "Client-1".into(),
                message: Some(json!(" hi ")),
                token: None,
                groups: None,
            })
        );
        assert_eq!(
            ClientFrame::from_value(json!({"type":"ping"})),
            Ok(ClientFrame::Ping)
        );
    }

    #[test]
    fn bad_frames_get_the_right_code() {
        let code = |v: Value| ClientFrame::from_value(v).map_err(|e| e.code);
        assert_eq!(code(json!([1, 2])), Err(ErrorCode::InvalidFrame));
        assert_eq!(code(json!({"type": 7})), Err(ErrorCode::InvalidFrame));
        assert_eq!(code(json!({"type": "sync"})), Err(ErrorCode::InvalidFrame));
        assert_eq!(code(json!({"type": "hello"})), Err(ErrorCode::UnknownType));
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(validate_name("Client-1").is_ok());
        assert!(validate_name(&"é".repeat(64)).is_ok());
        for bad in ["", "a/b", "tab\there", &"x".repeat(129)] {
            assert_eq!(
                validate_name(bad).map_err(|e| e.code),
                Err(ErrorCode::InvalidName)
            );
        }
    }

    #[test]
    fn hub_frames_encode_as_one_compact_line() {
        let frame = HubFrame::Welcome {
            id: "c1",
            client_name: "Client-1",
            groups: None,
        };
        assert_eq!(
            &frame.encode()[..],
            b"{\"type\":\"welcome\",\"id\":\"c1\",\"clientName\":\"Client-1\"}\n"
        );
        assert_eq!(&HubFrame::Pong.encode()[..], PONG_LINE);
        let bye = HubFrame::Bye {
            reason: ByeReason::FrameTooLarge,
        };
        assert_eq!(
            &bye.encode()[..],
            b"{\"type\":\"bye\",\"reason\":\"frame_too_large\"}\n"
        );
    }
}
