//! `GET /clients`, `GET|DELETE /clients/{name}` and `POST /clients/{name}/send`
//! (which may wait for the client's acknowledgement).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

use crate::directory::{ClientView, Cursor};
use crate::mailbox::delivery::Keep;
use crate::registry::ListQuery;

use super::problem::{MessageEnvelope, Problem, SendBody};
use super::query::{NoParams, Params};
use super::{ApiError, AppState, Coverage};

/// Largest page `GET /clients` returns.
const MAX_LIMIT: usize = 10_000;
/// Page size when none is asked for.
const DEFAULT_LIMIT: usize = 1000;
/// How long `wait=ack` waits when no `timeout` is given, in milliseconds.
const DEFAULT_ACK_TIMEOUT_MS: u64 = 5000;
/// The longest `wait=ack` may wait, in milliseconds.
const MAX_ACK_TIMEOUT_MS: u64 = 60_000;

/// A page of live clients.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClientList {
    /// Clients matching the filters, on all pages.
    pub total: usize,
    /// This page, oldest connection first.
    pub clients: Vec<ClientView>,
    /// Pass as `after` to get the page that follows; null on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
    /// In a cluster, the nodes that did not answer in time.
    #[serde(flatten)]
    pub coverage: Coverage,
}

/// Filters and paging for `GET /clients`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 0 to 10000 (default 1000).
    #[param(minimum = 0, maximum = 10000)]
    pub limit: Option<usize>,
    /// Matches to skip (default 0), after `after` if it is given.
    #[param(minimum = 0)]
    pub offset: Option<usize>,
    /// Start after this cursor: the `next` of the previous page. Deep pages
    /// cost what the first costs, and clients that connect or leave meanwhile
    /// do not shift the pages.
    pub after: Option<String>,
    /// Only clients whose name starts with this.
    pub prefix: Option<String>,
    /// Only named (`true`) or unnamed (`false`) clients.
    pub named: Option<bool>,
}

/// A pushed message was queued (or stored).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "m43", "queued": 1}))]
pub struct Queued {
    /// The message id, as the client receives it.
    pub id: String,
    /// 1 when it went on the live client's queue; 0 when it was only stored.
    #[schema(maximum = 1)]
    pub queued: usize,
    /// With `ttl`: whether it is in the name's mailbox (absent without `ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<bool>,
}

/// Whether `POST /clients/{name}/send` waits for the client's `ack`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SendParams {
    /// `ack`: answer 200 once the client acknowledges the message with
    /// `{"type":"ack","id":"<message id>"}`, or 504 `ack_timeout`.
    pub wait: Option<Wait>,
    /// With `wait=ack`: milliseconds to wait, 1 to 60000 (default 5000).
    #[param(minimum = 1, maximum = 60000)]
    pub timeout: Option<u64>,
    /// Seconds to store the message for when no live client holds the name
    /// (1 to `--mailbox-max-ttl`): it is then delivered on the name's next `sync`.
    #[param(minimum = 1)]
    pub ttl: Option<u64>,
    /// With `ttl`: `ack` keeps the message stored, also for a live client,
    /// until the client acks its id; each new session of the name gets it again.
    pub until: Option<Until>,
}

/// How long a stored message is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Until {
    /// Until the client's `ack` of it (or its `ttl`).
    Ack,
}

/// What a send waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Wait {
    /// The client's `ack` of the message.
    Ack,
}

/// The client acknowledged the pushed message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "m43", "acked": true}))]
pub struct Acked {
    /// The message id, as the client received it.
    pub id: String,
    /// Always true.
    pub acked: bool,
}

/// List live clients, oldest first.
#[utoipa::path(
    get,
    path = "/clients",
    operation_id = "list_clients",
    tag = "clients",
    params(ListParams),
    responses(
        (status = 200, description = "A page of live clients", body = ClientList),
        (status = 400, description = "`invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Params(params): Params<ListParams>,
) -> Result<Json<ClientList>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be at most {MAX_LIMIT}"
        )));
    }
    let after = params
        .after
        .as_deref()
        .map(str::parse::<Cursor>)
        .transpose()
        .map_err(|err| ApiError::InvalidQuery(err.to_string()))?;
    let query = ListQuery {
        prefix: params.prefix,
        named: params.named,
        after: None,
        offset: params.offset.unwrap_or(0),
        limit,
    };
    let page = state.directory.list(&query, after.as_ref()).await?;
    Ok(Json(ClientList {
        total: page.total,
        clients: page.clients,
        next: page.next,
        coverage: Coverage::without(page.missing_nodes),
    }))
}

/// One live client by name.
#[utoipa::path(
    get,
    path = "/clients/{name}",
    operation_id = "get_client",
    tag = "clients",
    params(("name" = String, Path, description = "The client's registered name")),
    responses(
        (status = 200, description = "The client", body = ClientView),
        (status = 400, description = "`invalid_path` or `invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`client_not_found`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    _: Params<NoParams>,
) -> Result<Json<ClientView>, ApiError> {
    let name = path_name(name)?;
    Ok(Json(state.directory.get(&name).await?))
}

/// Push a message to one client by name.
///
/// `202` means queued on the client's live socket, not yet read by the client.
/// With `wait=ack`, the answer waits until the client acknowledges the message
/// (`200`), or says that it did not in time or disconnected first (`504`).
#[utoipa::path(
    post,
    path = "/clients/{name}/send",
    operation_id = "send_to_client",
    tag = "clients",
    params(("name" = String, Path, description = "The client's registered name"), SendParams),
    request_body(
        description = "`{\"message\": <any JSON>}`, or any text/plain body (sent as a string). \
                       The `--max-message-bytes` limit counts a text/plain body's raw bytes, \
                       and the JSON text of `message` as sent (not the whole JSON body).",
        content(
            (MessageEnvelope = "application/json", example = json!({"message": {"led": "on"}})),
            (String = "text/plain", example = "hello Client-1")
        )
    ),
    responses(
        (status = 200, description = "With `wait=ack`: the client acknowledged it", body = Acked),
        (status = 202, description = "Queued for the client", body = Queued),
        (status = 400, description = "`invalid_body`, `invalid_path` or `invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`client_not_found` (without `ttl`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`message_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`client_backlogged`: its queue is full, nothing was queued; \
                                       `mailbox_full`: with `ttl`, a mailbox limit or the disk is full, nothing was stored", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "`ack_timeout`: with `wait=ack`, no ack in time, or the client disconnected first", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    Params(params): Params<SendParams>,
    SendBody(message): SendBody,
) -> Result<Response, ApiError> {
    let name = path_name(name)?;
    let directory = &state.directory;
    let max_ttl = directory.registry().mailbox().max_ttl();
    let sent = match (keep(&params, max_ttl)?, ack_patience(&params)?) {
        (Some(keep), _) => directory.send_or_store(&name, &message, keep).await?,
        (None, Some(patience)) => {
            let id = directory
                .send_awaiting_ack(&name, &message, patience)
                .await?;
            return Ok(Json(Acked { id, acked: true }).into_response());
        }
        (None, None) => directory.send(&name, &message).await?,
    };
    let queued = Queued {
        id: sent.id,
        queued: sent.queued,
        stored: sent.stored,
    };
    Ok((StatusCode::ACCEPTED, Json(queued)).into_response())
}

/// How a send stores its message: `None` without `ttl`.
fn keep(params: &SendParams, max_ttl: Duration) -> Result<Option<Keep>, ApiError> {
    let Some(ttl) = params.ttl else {
        return match params.until {
            Some(Until::Ack) => Err(ApiError::InvalidQuery(
                "until=ack applies only with ttl".into(),
            )),
            None => Ok(None),
        };
    };
    if params.wait.is_some() || params.timeout.is_some() {
        return Err(ApiError::InvalidQuery(
            "ttl does not combine with wait or timeout".into(),
        ));
    }
    let max = max_ttl.as_secs();
    if !(1..=max).contains(&ttl) {
        return Err(ApiError::InvalidQuery(format!(
            "ttl must be 1 to {max} seconds"
        )));
    }
    Ok(Some(Keep {
        ttl: Duration::from_secs(ttl),
        until_ack: params.until == Some(Until::Ack),
    }))
}

/// How long a send waits for its ack: `None` without `wait=ack`.
fn ack_patience(params: &SendParams) -> Result<Option<Duration>, ApiError> {
    match (params.wait, params.timeout) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(ApiError::InvalidQuery(
            "timeout applies only with wait=ack".into(),
        )),
        (Some(Wait::Ack), Some(ms)) if !(1..=MAX_ACK_TIMEOUT_MS).contains(&ms) => {
            Err(ApiError::InvalidQuery(format!(
                "timeout must be 1 to {MAX_ACK_TIMEOUT_MS} milliseconds"
            )))
        }
        (Some(Wait::Ack), ms) => Ok(Some(Duration::from_millis(
            ms.unwrap_or(DEFAULT_ACK_TIMEOUT_MS),
        ))),
    }
}

/// Disconnect a client: it gets `bye` `kicked` after what is already queued.
#[utoipa::path(
    delete,
    path = "/clients/{name}",
    operation_id = "kick_client",
    tag = "clients",
    params(("name" = String, Path, description = "The client's registered name")),
    responses(
        (status = 204, description = "Disconnected"),
        (status = 400, description = "`invalid_path` or `invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`client_not_found`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn kick(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    _: Params<NoParams>,
) -> Result<StatusCode, ApiError> {
    let name = path_name(name)?;
    state.directory.kick(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn path_name(name: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    name.map(|Path(name)| name)
        .map_err(|err| ApiError::InvalidPath(err.body_text()))
}
