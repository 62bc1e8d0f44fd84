//! `GET /mailboxes`, `GET /mailboxes/{name}` and `DELETE /mailboxes/{name}`:
//! the messages stored for names, and purging them.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::mailbox::at_ms;
use crate::time_format::rfc3339;

use super::problem::Problem;
use super::query::{NoParams, Params};
use super::{ApiError, AppState};

/// Largest page `GET /mailboxes` returns.
const MAX_LIMIT: usize = 10_000;
/// Page size when none is asked for.
const DEFAULT_LIMIT: usize = 1000;

/// A name with stored messages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"name": "Client-1", "pending": 2, "bytes": 28, "oldestAt": "2026-11-25T18:40:30.120Z"}))]
pub struct MailboxSummary {
    /// The name the messages are for.
    pub name: String,
    /// Messages stored for it.
    pub pending: usize,
    /// Bytes of their JSON text.
    pub bytes: u64,
    /// When the oldest of them was stored (RFC 3339 UTC with milliseconds).
    #[schema(format = DateTime)]
    pub oldest_at: String,
}

/// A page of names with stored messages, in name order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MailboxList {
    /// Names matching the filter, on all pages.
    pub total: usize,
    /// This page.
    pub mailboxes: Vec<MailboxSummary>,
}

/// Filters and paging for `GET /mailboxes`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MailboxParams {
    /// Page size, 0 to 10000 (default 1000).
    #[param(minimum = 0, maximum = 10000)]
    pub limit: Option<usize>,
    /// Matches to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<usize>,
    /// Only names starting with this.
    pub prefix: Option<String>,
}

/// One stored message, without its content.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredMessage {
    /// The message id, as the client receives it.
    pub id: String,
    /// Bytes of its JSON text.
    pub size: u64,
    /// When it was stored.
    #[schema(format = DateTime)]
    pub stored_at: String,
    /// When it expires unless delivered (or acked) first.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Kept until the client acks it.
    pub until_ack: bool,
}

/// The messages stored for one name, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Client-1", "pending": 1, "messages": [{
    "id": "m43", "size": 14, "storedAt": "2026-11-25T18:40:30.120Z",
    "expiresAt": "2026-11-25T19:40:30.120Z", "untilAck": false
}]}))]
pub struct Mailbox {
    /// The name.
    pub name: String,
    /// Messages stored for it.
    pub pending: usize,
    /// The messages, oldest first.
    pub messages: Vec<StoredMessage>,
}

/// List the names that have stored messages.
#[utoipa::path(
    get,
    path = "/mailboxes",
    operation_id = "list_mailboxes",
    tag = "mailboxes",
    params(MailboxParams),
    responses(
        (status = 200, description = "A page of mailboxes", body = MailboxList),
        (status = 400, description = "`invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`cluster_unavailable`: in a cluster, the broker cannot be reached", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Params(params): Params<MailboxParams>,
) -> Result<Json<MailboxList>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be at most {MAX_LIMIT}"
        )));
    }
    let (total, page) = state
        .directory
        .mailboxes(
            params.prefix.as_deref().unwrap_or(""),
            params.offset.unwrap_or(0),
            limit,
        )
        .await?;
    let mailboxes = page
        .into_iter()
        .map(|summary| MailboxSummary {
            name: summary.name.to_string(),
            pending: summary.pending,
            bytes: summary.bytes,
            oldest_at: rfc3339(at_ms(summary.oldest_ms)),
        })
        .collect();
    Ok(Json(MailboxList { total, mailboxes }))
}

/// The messages stored for one name (an empty mailbox has `pending` 0).
#[utoipa::path(
    get,
    path = "/mailboxes/{name}",
    operation_id = "get_mailbox",
    tag = "mailboxes",
    params(("name" = String, Path, description = "The name the messages are stored for")),
    responses(
        (status = 200, description = "The mailbox", body = Mailbox),
        (status = 400, description = "`invalid_path` or `invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`cluster_unavailable`: in a cluster, the broker cannot be reached", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    _: Params<NoParams>,
) -> Result<Json<Mailbox>, ApiError> {
    let name = path_name(name)?;
    let messages: Vec<StoredMessage> = state
        .directory
        .mailbox(&name)
        .await?
        .into_iter()
        .map(|stored| StoredMessage {
            id: stored.id,
            size: stored.size,
            stored_at: rfc3339(at_ms(stored.stored_at_ms)),
            expires_at: rfc3339(at_ms(stored.expires_at_ms)),
            until_ack: stored.until_ack,
        })
        .collect();
    Ok(Json(Mailbox {
        name,
        pending: messages.len(),
        messages,
    }))
}

/// Remove every message stored for one name.
#[utoipa::path(
    delete,
    path = "/mailboxes/{name}",
    operation_id = "purge_mailbox",
    tag = "mailboxes",
    params(("name" = String, Path, description = "The name the messages are stored for")),
    responses(
        (status = 204, description = "Purged (or was empty)"),
        (status = 400, description = "`invalid_path` or `invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`cluster_unavailable`: in a cluster, the broker cannot be reached", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn purge(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    _: Params<NoParams>,
) -> Result<StatusCode, ApiError> {
    let name = path_name(name)?;
    state.directory.purge_mailbox(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn path_name(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    name.map(|Path(name)| name)
        .map_err(|err| ApiError::InvalidPath(err.body_text()))
}
