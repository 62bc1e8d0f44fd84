//! Errors of the HTTP API as RFC 9457 problem details, and the body extractor
//! for pushed messages (JSON or plain text, size-checked).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::directory::Failure;

use super::AppState;

/// Room for the `{"message": ...}` envelope around a JSON message.
const ENVELOPE_BYTES: usize = 1024;

/// An RFC 9457 problem document with the machine-readable `code` extension.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:tcphub:problem:client_not_found",
    "title": "Client not found",
    "status": 404,
    "detail": "no live client is named \"Client-9\"",
    "code": "client_not_found"
}))]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:tcphub:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:tcphub:problem:[a-z_]+$")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 100, maximum = 599)]
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The machine-readable reason.
    pub code: ProblemCode,
}

/// The machine-readable reason of a problem, one per kind of [`ApiError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    /// 404: no live client has the name.
    ClientNotFound,
    /// 503: the client's queue is full; nothing was queued.
    ClientBacklogged,
    /// 413: the message exceeds `--max-message-bytes`.
    MessageTooLarge,
    /// 400: the body could not be read as a send body.
    InvalidBody,
    /// 415: neither `application/json` nor `text/plain`.
    UnsupportedMediaType,
    /// 400: a query parameter is unknown, malformed or out of range.
    InvalidQuery,
    /// 400: a path parameter could not be decoded.
    InvalidPath,
    /// 400: a request header is malformed.
    InvalidHeader,
    /// 400: group names that break the name rules, or too many groups.
    InvalidGroups,
    /// 413: a bulk send names more recipients than `--max-bulk-recipients`.
    TooManyRecipients,
    /// 504: the client did not acknowledge the message in time, or disconnected first.
    AckTimeout,
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 503: the hub is shutting down.
    Draining,
    /// 503: `--max-event-streams` streams are already open.
    TooManyStreams,
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint does not take this method.
    MethodNotAllowed,
    /// 503: a mailbox limit (or the disk) is full; nothing was stored.
    MailboxFull,
    /// 503: the cluster's broker cannot be reached and the answer needs it.
    ClusterUnavailable,
    /// 503: the node holding the name did not answer in time.
    NodeUnreachable,
    /// 500: a fault inside the hub.
    Internal,
}

impl ProblemCode {
    /// The code as it appears in `code` and at the end of `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::ClientNotFound => "client_not_found",
            ProblemCode::ClientBacklogged => "client_backlogged",
            ProblemCode::MessageTooLarge => "message_too_large",
            ProblemCode::InvalidBody => "invalid_body",
            ProblemCode::UnsupportedMediaType => "unsupported_media_type",
            ProblemCode::InvalidQuery => "invalid_query",
            ProblemCode::InvalidPath => "invalid_path",
            ProblemCode::InvalidHeader => "invalid_header",
            ProblemCode::InvalidGroups => "invalid_groups",
            ProblemCode::TooManyRecipients => "too_many_recipients",
            ProblemCode::AckTimeout => "ack_timeout",
            ProblemCode::Unauthorized => "unauthorized",
            ProblemCode::Draining => "draining",
            ProblemCode::TooManyStreams => "too_many_streams",
            ProblemCode::NotFound => "not_found",
            ProblemCode::MethodNotAllowed => "method_not_allowed",
            ProblemCode::MailboxFull => "mailbox_full",
            ProblemCode::ClusterUnavailable => "cluster_unavailable",
            ProblemCode::NodeUnreachable => "node_unreachable",
            ProblemCode::Internal => "internal",
        }
    }
}

/// Every way an API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No live client has the name.
    #[error("no live client is named {0:?}")]
    ClientNotFound(String),
    /// The client's queue is full.
    #[error("the queue of client {0:?} is full; nothing was queued")]
    ClientBacklogged(String),
    /// The message exceeds `--max-message-bytes`.
    #[error("the message is larger than {0} bytes")]
    MessageTooLarge(usize),
    /// The body could not be read as a send body.
    #[error("{0}")]
    InvalidBody(String),
    /// Neither `application/json` nor `text/plain`.
    #[error("send bodies are application/json ({{\"message\": ...}}) or text/plain")]
    UnsupportedMediaType,
    /// A query parameter is malformed or out of range.
    #[error("{0}")]
    InvalidQuery(String),
    /// A path parameter could not be decoded.
    #[error("{0}")]
    InvalidPath(String),
    /// A request header is malformed.
    #[error("{0}")]
    InvalidHeader(String),
    /// Group names that break the name rules, or too many groups.
    #[error("{0}")]
    InvalidGroups(String),
    /// A bulk send names more recipients than allowed.
    #[error("{0}")]
    TooManyRecipients(String),
    /// A bulk item's message exceeds `--max-message-bytes`.
    #[error("messages[{0}]: the message is larger than {1} bytes")]
    ItemTooLarge(usize, usize),
    /// A JSON body longer than the endpoint takes.
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The client did not acknowledge the message in time, or disconnected first.
    #[error("{0}")]
    AckTimeout(String),
    /// Missing or wrong bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The hub is shutting down.
    #[error("the hub is shutting down")]
    Draining,
    /// `--max-event-streams` streams are open.
    #[error("{0} event streams are open, the most this hub serves at once; retry later")]
    TooManyStreams(usize),
    /// No such route.
    #[error("no such endpoint")]
    NotFound,
    /// The route exists but not with this method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// A mailbox limit or the disk is full; nothing was stored.
    #[error("{0}")]
    MailboxFull(String),
    /// The cluster's broker cannot be reached and the answer needs it.
    #[error("{0}")]
    ClusterUnavailable(String),
    /// The node holding the name did not answer in time.
    #[error("{0}")]
    NodeUnreachable(String),
    /// A fault inside the hub; logged where it happens, never detailed to callers.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Status, code and title of each kind of error: the one place they are decided.
    fn parts(&self) -> (StatusCode, ProblemCode, &'static str) {
        match self {
            ApiError::ClientNotFound(_) => (
                StatusCode::NOT_FOUND,
                ProblemCode::ClientNotFound,
                "Client not found",
            ),
            ApiError::MailboxFull(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemCode::MailboxFull,
                "Mailbox full",
            ),
            ApiError::NodeUnreachable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemCode::NodeUnreachable,
                "Node unreachable",
            ),
            ApiError::ClusterUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemCode::ClusterUnavailable,
                "Cluster unavailable",
            ),
            ApiError::ClientBacklogged(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemCode::ClientBacklogged,
                "Client queue full",
            ),
            ApiError::MessageTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::MessageTooLarge,
                "Message too large",
            ),
            ApiError::InvalidBody(_) => (
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidBody,
                "Invalid body",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ProblemCode::UnsupportedMediaType,
                "Unsupported media type",
            ),
            ApiError::InvalidQuery(_) => (
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidQuery,
                "Invalid query",
            ),
            ApiError::InvalidPath(_) => (
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidPath,
                "Invalid path",
            ),
            ApiError::InvalidHeader(_) => (
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidHeader,
                "Invalid header",
            ),
            ApiError::InvalidGroups(_) => (
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidGroups,
                "Invalid groups",
            ),
            ApiError::TooManyRecipients(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::TooManyRecipients,
                "Too many recipients",
            ),
            ApiError::ItemTooLarge(..) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::MessageTooLarge,
                "Message too large",
            ),
            ApiError::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::MessageTooLarge,
                "Body too large",
            ),
            ApiError::AckTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                ProblemCode::AckTimeout,
                "Not acknowledged in time",
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                ProblemCode::Unauthorized,
                "Unauthorized",
            ),
            ApiError::Draining => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemCode::Draining,
                "Shutting down",
            ),
            ApiError::TooManyStreams(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ProblemCode::TooManyStreams,
                "Too many event streams",
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, ProblemCode::NotFound, "Not found"),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ProblemCode::Internal,
                "Internal error",
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ProblemCode::MethodNotAllowed,
                "Method not allowed",
            ),
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let (status, code, title) = self.parts();
        Problem {
            kind: format!("urn:tcphub:problem:{}", code.as_str()),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code,
        }
    }
}

/// Each way a directory verb fails is one kind of problem.
impl From<Failure> for ApiError {
    fn from(failure: Failure) -> ApiError {
        match failure {
            Failure::NotFound(name) => ApiError::ClientNotFound(name),
            Failure::Backlogged(name) => ApiError::ClientBacklogged(name),
            Failure::AckTimeout(detail) => ApiError::AckTimeout(detail),
            Failure::MailboxFull(detail) => ApiError::MailboxFull(detail),
            Failure::InvalidGroups(detail) => ApiError::InvalidGroups(detail),
            Failure::ClusterUnavailable => ApiError::ClusterUnavailable(failure.to_string()),
            Failure::NodeUnreachable(_) => ApiError::NodeUnreachable(failure.to_string()),
            Failure::Internal => ApiError::Internal,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, ApiError::Unauthorized) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A message to push, from a JSON `{"message": ...}` body or a `text/plain` body.
#[derive(Debug)]
pub struct SendBody(pub Value);

/// A JSON send body: `{"message": <any JSON>}` and nothing else.
// Only the OpenAPI document uses this type: bodies are read by `SendBody`, which
// keeps the message raw so that its size is checked before it is parsed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": {"led": "on"}}))]
pub struct MessageEnvelope {
    /// The message to push: any JSON value. Its size against
    /// `--max-message-bytes` is the length of its JSON text as sent.
    pub message: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    message: &'a RawValue,
}

impl FromRequest<AppState> for SendBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<SendBody, ApiError> {
        let max = state.config.max_message_bytes;
        let kind = BodyKind::of(&request)?;
        let limit = match kind {
            BodyKind::Json => max + ENVELOPE_BYTES,
            BodyKind::Text => max,
        };
        let body = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|err| unreadable_body(err, max))?;
        match kind {
            BodyKind::Text => text_message(body),
            BodyKind::Json => json_message(&body, max),
        }
    }
}

/// A body that could not be read: too long, or broken (bad chunked encoding, or
/// shorter than its `Content-Length`).
pub(super) fn unreadable_body(err: axum::Error, max: usize) -> ApiError {
    let cause = err.into_inner();
    if cause.is::<http_body_util::LengthLimitError>() {
        ApiError::MessageTooLarge(max)
    } else {
        ApiError::InvalidBody(format!("the body could not be read: {cause}"))
    }
}

pub(super) enum BodyKind {
    /// `application/json`.
    Json,
    /// `text/plain`.
    Text,
}

impl BodyKind {
    pub(super) fn of(request: &Request) -> Result<BodyKind, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(BodyKind::Json),
            "text/plain" => Ok(BodyKind::Text),
            _ => Err(ApiError::UnsupportedMediaType),
        }
    }
}

fn text_message(body: Bytes) -> Result<SendBody, ApiError> {
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::InvalidBody("a text/plain body must be UTF-8".into()))?;
    Ok(SendBody(Value::String(text)))
}

fn json_message(body: &[u8], max: usize) -> Result<SendBody, ApiError> {
    let expected = |err: &dyn std::fmt::Display| {
        ApiError::InvalidBody(format!("expected {{\"message\": <any JSON>}}: {err}"))
    };
    // serde reads a struct from an array too (`[1]` as `{"message": 1}`); only
    // the object form is the documented body.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(expected(&"the body is not a JSON object"));
    }
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|err| expected(&err))?;
    if envelope.message.get().len() > max {
        return Err(ApiError::MessageTooLarge(max));
    }
    let message = serde_json::from_str(envelope.message.get())
        .map_err(|err| ApiError::InvalidBody(err.to_string()))?;
    Ok(SendBody(message))
}
