//! `POST /send`: many messages, each to one or more named clients, in one call.
//!
//! The whole request is checked before anything is sent: a malformed item is
//! 400 naming its index, an over-long message 413 naming its index, and more
//! recipients than `--max-bulk-recipients` in all 413 `too_many_recipients`.
//! Each item's message is serialized once however many recipients it has.

use axum::Json;
use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::registry::Delivery;

use super::problem::Problem;
use super::query::{NoParams, Params};
use super::{ApiError, AppState, json_body};

/// Body bytes allowed per allowed recipient, on top of one maximal message:
/// room for every recipient to have its own item with a small message.
const BODY_BYTES_PER_RECIPIENT: usize = 1024;

/// A bulk send: `{"messages": [BulkItem, ...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"messages": [
    {"to": "meter-1", "message": {"read": true}},
    {"to": ["meter-2", "meter-3"], "message": {"read": true}}
]}))]
pub struct BulkRequest {
    /// The messages to send, in order.
    pub messages: Vec<BulkItem>,
}

/// One message of a bulk send and who gets it.
// Only the OpenAPI document uses this type: items are read one at a time so
// that an error can name the item.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkItem {
    /// A client name, or an array of them (at least one).
    pub to: Recipients,
    /// The message: any JSON value, at most `--max-message-bytes` as JSON text.
    pub message: Value,
    /// Seconds the message stays deliverable. Accepted and ignored for now:
    /// a message reaches the clients that are live, at once, or nobody.
    #[schema(minimum = 0)]
    pub ttl: Option<u64>,
}

/// Who a bulk item goes to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Recipients {
    /// One client name.
    One(String),
    /// Several client names.
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem<'a> {
    to: Value,
    #[serde(borrow)]
    message: &'a RawValue,
    /// Read so that a malformed `ttl` is refused; delivery ignores it.
    #[serde(default, rename = "ttl")]
    _ttl: Option<u64>,
}

/// What became of every recipient of a bulk send.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "queued": 2, "stored": 0, "notFound": 1, "backlogged": 0,
    "results": [
        {"to": "meter-1", "id": "m7", "status": "queued"},
        {"to": "meter-2", "id": "m8", "status": "queued"},
        {"to": "meter-3", "id": "m8", "status": "not_found"}
    ]
}))]
pub struct BulkResult {
    /// Recipients whose message was queued on their live socket.
    pub queued: usize,
    /// Recipients whose message was kept for later delivery; always 0 (no mailbox yet).
    pub stored: usize,
    /// Recipients no live client is named after.
    pub not_found: usize,
    /// Recipients whose queue was full (nothing queued for them).
    pub backlogged: usize,
    /// One entry per recipient, in request order.
    pub results: Vec<BulkOutcome>,
}

/// What became of one recipient.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkOutcome {
    /// The recipient's name, as given.
    pub to: String,
    /// The id of its item's message (shared by the item's recipients).
    pub id: String,
    /// `queued`, `not_found` or `backlogged`.
    pub status: BulkStatus,
}

/// The status of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkStatus {
    /// Queued on its live socket.
    Queued,
    /// No live client has the name.
    NotFound,
    /// Its queue was full; nothing was queued.
    Backlogged,
}

impl From<Delivery> for BulkStatus {
    fn from(delivery: Delivery) -> BulkStatus {
        match delivery {
            Delivery::Queued => BulkStatus::Queued,
            // A mailbox would keep the message here, as `stored`.
            Delivery::NotFound => BulkStatus::NotFound,
            Delivery::Backlogged => BulkStatus::Backlogged,
        }
    }
}

/// A checked item, ready to send.
struct Item {
    to: Vec<String>,
    message: Value,
}

/// Send many messages, each to one or more named clients.
///
/// Each item arrives as an ordinary `direct` message; an item's recipients
/// share its message id. A name given twice in one item gets the message once,
/// and both mentions report its status. Items are sent in order, and an empty
/// `messages` sends nothing.
#[utoipa::path(
    post,
    path = "/send",
    operation_id = "send_bulk",
    tag = "clients",
    request_body(content = BulkRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What became of every recipient", body = BulkResult),
        (status = 400, description = "`invalid_body` (naming the item) or `invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`too_many_recipients`, or `message_too_large` (an item's message, or the whole body)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    _: Params<NoParams>,
    request: Request,
) -> Result<Json<BulkResult>, ApiError> {
    let max_message = state.config.max_message_bytes;
    let max_recipients = state.config.max_bulk_recipients;
    let limit = max_message.saturating_add(max_recipients.saturating_mul(BODY_BYTES_PER_RECIPIENT));
    let body = json_body::read(request, limit).await?;
    let raw: RawRequest<'_> = serde_json::from_slice(&body)
        .map_err(|err| ApiError::InvalidBody(format!("expected {{\"messages\": [...]}}: {err}")))?;
    let mut items = Vec::with_capacity(raw.messages.len());
    let mut recipients = 0usize;
    for (index, item) in raw.messages.iter().enumerate() {
        let item = check_item(index, item, max_message)?;
        recipients += item.to.len();
        if recipients > max_recipients {
            return Err(ApiError::TooManyRecipients(format!(
                "a bulk send may name at most {max_recipients} recipients in all"
            )));
        }
        items.push(item);
    }
    let registry = state.registry.clone();
    // Thousands of socket writes: keep them off the async workers.
    let sent = tokio::task::spawn_blocking(move || {
        items
            .into_iter()
            .map(|item| {
                let (id, outcomes) = registry.send_each(&item.to, &item.message);
                (item.to, id, outcomes)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|err| {
        tracing::error!(%err, "bulk send task failed");
        ApiError::Internal
    })?;
    let mut result = BulkResult {
        queued: 0,
        stored: 0,
        not_found: 0,
        backlogged: 0,
        results: Vec::with_capacity(recipients),
    };
    for (names, id, outcomes) in sent {
        for (to, outcome) in names.into_iter().zip(outcomes) {
            let status = BulkStatus::from(outcome);
            match status {
                BulkStatus::Queued => result.queued += 1,
                BulkStatus::NotFound => result.not_found += 1,
                BulkStatus::Backlogged => result.backlogged += 1,
            }
            result.results.push(BulkOutcome {
                to,
                id: id.clone(),
                status,
            });
        }
    }
    Ok(Json(result))
}

/// Reads item `index`, or says what is wrong with it.
fn check_item(index: usize, item: &RawValue, max_message: usize) -> Result<Item, ApiError> {
    let invalid = |detail: &dyn std::fmt::Display| {
        ApiError::InvalidBody(format!("messages[{index}]: {detail}"))
    };
    if !item.get().starts_with('{') {
        return Err(invalid(&"an item is an object {\"to\", \"message\"}"));
    }
    let raw: RawItem<'_> = serde_json::from_str(item.get()).map_err(|err| invalid(&err))?;
    let to = match raw.to {
        Value::String(name) => vec![name],
        Value::Array(names) if !names.is_empty() => names
            .into_iter()
            .map(|name| match name {
                Value::String(name) => Ok(name),
                _ => Err(invalid(&"to must be a name or an array of names")),
            })
            .collect::<Result<_, _>>()?,
        Value::Array(_) => return Err(invalid(&"to must name at least one client")),
        _ => return Err(invalid(&"to must be a name or an array of names")),
    };
    if raw.message.get().len() > max_message {
        return Err(ApiError::ItemTooLarge(index, max_message));
    }
    let message = serde_json::from_str(raw.message.get()).map_err(|err| invalid(&err))?;
    Ok(Item { to, message })
}
