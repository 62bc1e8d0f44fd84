//! `POST /broadcast`: push one message to every live client.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::directory::Reach;

use super::problem::{MessageEnvelope, Problem, SendBody};
use super::query::{NoParams, Params};
use super::{ApiError, AppState, Coverage};

/// What a broadcast or a group send reached.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": "m42", "recipients": 3, "queued": 3, "dropped": 0}))]
pub struct BroadcastResult {
    /// The message id, as the clients receive it.
    pub id: String,
    /// Live clients (or group members) when it was sent.
    pub recipients: usize,
    /// Clients that accepted it (written at once or queued).
    pub queued: usize,
    /// Clients whose queue was full.
    pub dropped: usize,
    /// In a cluster, the nodes that did not answer in time.
    #[serde(flatten)]
    pub coverage: Coverage,
}

impl From<Reach> for BroadcastResult {
    fn from(reach: Reach) -> BroadcastResult {
        let report = reach.report;
        BroadcastResult {
            id: report.id,
            recipients: report.recipients,
            queued: report.queued,
            dropped: report.dropped,
            coverage: Coverage::without(reach.missing_nodes),
        }
    }
}

/// Push a message to every live client.
///
/// The message is serialized once. `202` means queued on each live socket, not
/// yet read by the clients.
#[utoipa::path(
    post,
    path = "/broadcast",
    tag = "clients",
    request_body(
        description = "`{\"message\": <any JSON>}`, or any text/plain body (sent as a string). \
                       The `--max-message-bytes` limit counts a text/plain body's raw bytes, \
                       and the JSON text of `message` as sent (not the whole JSON body).",
        content(
            (MessageEnvelope = "application/json", example = json!({"message": {"led": "on"}})),
            (String = "text/plain", example = "hello everyone")
        )
    ),
    responses(
        (status = 202, description = "Queued for every live client", body = BroadcastResult),
        (status = 400, description = "`invalid_body` or `invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`message_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn broadcast(
    State(state): State<AppState>,
    _: Params<NoParams>,
    SendBody(message): SendBody,
) -> Result<(StatusCode, Json<BroadcastResult>), ApiError> {
    let reach = state.directory.broadcast(message).await?;
    Ok((StatusCode::ACCEPTED, Json(BroadcastResult::from(reach))))
}
