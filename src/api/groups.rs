//! `GET /groups`, `GET /groups/{group}`, `POST /groups/{group}/send` and
//! `PUT /clients/{name}/groups`.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::directory::ClientView;
use crate::groups;

use super::broadcast::BroadcastResult;
use super::clients::path_name;
use super::problem::{MessageEnvelope, Problem, SendBody};
use super::query::Params;
use super::{ApiError, AppState, Coverage, json_body};

/// Largest page the group endpoints return.
const MAX_LIMIT: usize = 10_000;
/// Page size when none is asked for.
const DEFAULT_LIMIT: usize = 1000;

/// A group and how many live clients are in it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"name": "floor-2", "members": 12}))]
pub struct GroupSummary {
    /// The group's name.
    pub name: String,
    /// Live clients in it.
    pub members: usize,
}

/// A page of groups with members, by name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    /// Groups matching the filter, on all pages.
    pub total: usize,
    /// This page, by name.
    pub groups: Vec<GroupSummary>,
    /// In a cluster, the nodes that did not answer in time.
    #[serde(flatten)]
    pub coverage: Coverage,
}

/// A group and a page of its members.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    /// The group's name.
    pub name: String,
    /// Live clients in it, on all pages (0 for a group nobody is in).
    pub members: usize,
    /// This page of them: node by node, each node's oldest connection first.
    pub clients: Vec<ClientView>,
    /// In a cluster, the nodes that did not answer in time.
    #[serde(flatten)]
    pub coverage: Coverage,
}

/// A client's group set: `{"groups": [...]}` and nothing else.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"groups": ["floor-2", "kiosks"]}))]
pub struct GroupSet {
    /// Group names (the client-name rules apply), sorted in answers.
    pub groups: Vec<String>,
}

/// Filters and paging for `GET /groups`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupListParams {
    /// Page size, 0 to 10000 (default 1000).
    #[param(minimum = 0, maximum = 10000)]
    pub limit: Option<usize>,
    /// Matches to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<usize>,
    /// Only groups whose name starts with this.
    pub prefix: Option<String>,
}

/// Paging for `GET /groups/{group}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 0 to 10000 (default 1000).
    #[param(minimum = 0, maximum = 10000)]
    pub limit: Option<usize>,
    /// Members to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<usize>,
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be at most {MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

/// List the groups that have live members, by name.
#[utoipa::path(
    get,
    path = "/groups",
    operation_id = "list_groups",
    tag = "groups",
    params(GroupListParams),
    responses(
        (status = 200, description = "A page of groups", body = GroupList),
        (status = 400, description = "`invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Params(params): Params<GroupListParams>,
) -> Result<Json<GroupList>, ApiError> {
    let limit = page_limit(params.limit)?;
    let prefix = params.prefix.unwrap_or_default();
    let page = state
        .directory
        .groups(&prefix, params.offset.unwrap_or(0), limit)
        .await?;
    let groups = page
        .groups
        .into_iter()
        .map(|(name, members)| GroupSummary { name, members })
        .collect();
    Ok(Json(GroupList {
        total: page.total,
        groups,
        coverage: Coverage::without(page.missing_nodes),
    }))
}

/// One group and its members, oldest first. A group nobody is in has 0 members.
#[utoipa::path(
    get,
    path = "/groups/{group}",
    operation_id = "get_group",
    tag = "groups",
    params(("group" = String, Path, description = "The group's name"), PageParams),
    responses(
        (status = 200, description = "The group", body = GroupView),
        (status = 400, description = "`invalid_path` or `invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    group: Result<Path<String>, PathRejection>,
    Params(params): Params<PageParams>,
) -> Result<Json<GroupView>, ApiError> {
    let name = path_name(group)?;
    let limit = page_limit(params.limit)?;
    let page = state
        .directory
        .group_members(&name, params.offset.unwrap_or(0), limit)
        .await?;
    Ok(Json(GroupView {
        name,
        members: page.total,
        clients: page.clients,
        coverage: Coverage::without(page.missing_nodes),
    }))
}

/// Push a message to every member of a group.
///
/// The message is serialized once and arrives with `"scope":"group"` and the
/// group's name. A group nobody is in is not an error: 0 recipients.
#[utoipa::path(
    post,
    path = "/groups/{group}/send",
    operation_id = "send_to_group",
    tag = "groups",
    params(("group" = String, Path, description = "The group's name")),
    request_body(
        description = "`{\"message\": <any JSON>}`, or any text/plain body (sent as a string), \
                       as for `POST /broadcast`.",
        content(
            (MessageEnvelope = "application/json", example = json!({"message": {"led": "on"}})),
            (String = "text/plain", example = "hello floor 2")
        )
    ),
    responses(
        (status = 202, description = "Queued for every member", body = BroadcastResult),
        (status = 400, description = "`invalid_body`, `invalid_path` or `invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`message_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    group: Result<Path<String>, PathRejection>,
    _: Params<super::query::NoParams>,
    SendBody(message): SendBody,
) -> Result<(StatusCode, Json<BroadcastResult>), ApiError> {
    let group = path_name(group)?;
    let reach = state.directory.send_to_group(group, message).await?;
    Ok((StatusCode::ACCEPTED, Json(BroadcastResult::from(reach))))
}

/// Replace a named client's group set; the client gets a `groups` frame when it changes.
#[utoipa::path(
    put,
    path = "/clients/{name}/groups",
    operation_id = "set_client_groups",
    tag = "groups",
    params(("name" = String, Path, description = "The client's registered name")),
    request_body(content = GroupSet, content_type = "application/json"),
    responses(
        (status = 200, description = "The client's set, sorted", body = GroupSet),
        (status = 400, description = "`invalid_groups`, `invalid_body`, `invalid_path` or `invalid_query`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`client_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`message_too_large`: the body is over `--max-message-bytes`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_for_client(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    _: Params<super::query::NoParams>,
    request: Request,
) -> Result<Json<GroupSet>, ApiError> {
    let name = path_name(name)?;
    let body = json_body::read(request, state.config.max_message_bytes).await?;
    let GroupSet { groups } = serde_json::from_slice(&body).map_err(|err| {
        ApiError::InvalidBody(format!("expected {{\"groups\": [<name>, ...]}}: {err}"))
    })?;
    let groups =
        groups::parse_names(&groups).map_err(|err| ApiError::InvalidGroups(err.to_string()))?;
    let groups = state.directory.set_groups_of(&name, groups).await?;
    Ok(Json(GroupSet { groups }))
}
