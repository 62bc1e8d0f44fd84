//! `POST /send`: many messages, each to one or more named clients, in one call.
//!
//! The whole request is checked before anything is sent: a malformed item is
//! 400 naming its index, an over-long message 413 naming its index, and more
//! recipients than `--max-bulk-recipients` in all 413 `too_many_recipients`.
//! Each item's message is serialized once however many recipients it has.

use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::directory::{BulkItem as Item, BulkStatus};
use crate::mailbox::delivery::Keep;

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
    /// Seconds (1 to `--mailbox-max-ttl`) to store the message for recipients
    /// with no live client: each such recipient's copy is stored under its own
    /// id and delivered on the name's next `sync`, as for a direct send with `ttl`.
    #[schema(minimum = 1)]
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
    #[serde(default)]
    ttl: Option<u64>,
}

/// What became of every recipient of a bulk send.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "queued": 2, "stored": 0, "notFound": 1, "backlogged": 0, "mailboxFull": 0,
    "results": [
        {"to": "meter-1", "id": "m7", "status": "queued"},
        {"to": "meter-2", "id": "m8", "status": "queued"},
        {"to": "meter-3", "id": "m8", "status": "not_found"}
    ]
}))]
pub struct BulkResult {
    /// Recipients whose message was queued on their live socket.
    pub queued: usize,
    /// Recipients with no live client whose message was stored (items with `ttl`).
    pub stored: usize,
    /// Recipients no live client is named after.
    pub not_found: usize,
    /// Recipients whose queue was full (nothing queued for them).
    pub backlogged: usize,
    /// Recipients of items with `ttl` whose copy a full mailbox refused (nothing stored).
    pub mailbox_full: usize,
    /// One entry per recipient, in request order.
    pub results: Vec<BulkOutcome>,
}

/// What became of one recipient.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkOutcome {
    /// The recipient's name, as given.
    pub to: String,
    /// The id of its item's message, shared by the item's recipients; a
    /// stored copy has its own.
    pub id: String,
    /// What became of it.
    pub status: BulkStatus,
}

/// Send many messages, each to one or more named clients.
///
/// Each item arrives as an ordinary `direct` message; an item's recipients
/// share its message id. With a `ttl`, an item's recipients that have no live
/// client get it stored, each copy under its own id (`stored`). A name given
/// twice in one item gets the message once,
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
    let max_ttl = state.directory.registry().mailbox().max_ttl().as_secs();
    let limit = max_message.saturating_add(max_recipients.saturating_mul(BODY_BYTES_PER_RECIPIENT));
    let body = json_body::read(request, limit).await?;
    let raw: RawRequest<'_> = serde_json::from_slice(&body)
        .map_err(|err| ApiError::InvalidBody(format!("expected {{\"messages\": [...]}}: {err}")))?;
    let mut items = Vec::with_capacity(raw.messages.len());
    let mut recipients = 0usize;
    for (index, item) in raw.messages.iter().enumerate() {
        let item = check_item(index, item, max_message, max_ttl)?;
        recipients += item.to.len();
        if recipients > max_recipients {
            return Err(ApiError::TooManyRecipients(format!(
                "a bulk send may name at most {max_recipients} recipients in all"
            )));
        }
        items.push(item);
    }
    let names: Vec<Vec<String>> = items.iter().map(|item| item.to.clone()).collect();
    let outcomes = state.directory.send_bulk(items).await?;
    let mut result = BulkResult {
        queued: 0,
        stored: 0,
        not_found: 0,
        backlogged: 0,
        mailbox_full: 0,
        results: Vec::with_capacity(recipients),
    };
    for (to, outcome) in names.into_iter().flatten().zip(outcomes) {
        *match outcome.status {
            BulkStatus::Queued => &mut result.queued,
            BulkStatus::Stored => &mut result.stored,
            BulkStatus::NotFound => &mut result.not_found,
            BulkStatus::Backlogged => &mut result.backlogged,
            BulkStatus::MailboxFull => &mut result.mailbox_full,
        } += 1;
        result.results.push(BulkOutcome {
            to,
            id: outcome.id,
            status: outcome.status,
        });
    }
    Ok(Json(result))
}

/// Reads item `index`, or says what is wrong with it.
fn check_item(
    index: usize,
    item: &RawValue,
    max_message: usize,
    max_ttl: u64,
) -> Result<Item, ApiError> {
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
    let keep = match raw.ttl {
        None => None,
        Some(ttl) if (1..=max_ttl).contains(&ttl) => Some(Keep {
            ttl: Duration::from_secs(ttl),
            until_ack: false,
        }),
        Some(_) => return Err(invalid(&format!("ttl must be 1 to {max_ttl} seconds"))),
    };
    Ok(Item { to, message, keep })
}
