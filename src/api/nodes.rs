//! `GET /nodes`: the hubs that serve this API's clients (on a single node, itself).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::directory::NodeView;

use super::problem::Problem;
use super::query::{NoParams, Params};
use super::{ApiError, AppState};

/// The live nodes.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    /// Every live node, this one included.
    pub nodes: Vec<NodeView>,
}

/// List the live nodes and how many clients each holds.
#[utoipa::path(
    get,
    path = "/nodes",
    operation_id = "list_nodes",
    tag = "operations",
    responses(
        (status = 200, description = "The live nodes", body = NodeList),
        (status = 400, description = "`invalid_query`: this endpoint takes no parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    _: Params<NoParams>,
) -> Result<Json<NodeList>, ApiError> {
    let nodes = state.directory.nodes().await?;
    Ok(Json(NodeList { nodes }))
}
