//! Operational endpoints: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::problem::Problem;
use super::query::{NoParams, Params};
use super::{ApiError, AppState};

/// The committed OpenAPI document, served as is.
pub const OPENAPI_JSON: &str = include_str!("../../openapi/openapi.json");

/// The operational routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Status {
    /// `ok` from `/healthz`, `ready` from `/readyz`.
    pub status: Condition,
}

/// What a probe found.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// The process is alive.
    Ok,
    /// The hub is ready for traffic.
    Ready,
}

/// Liveness: the process is up. Needs no token.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Alive", body = Status),
        (status = 400, description = "`invalid_query`: this endpoint takes no parameters", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn healthz(_: Params<NoParams>) -> axum::Json<Status> {
    axum::Json(Status {
        status: Condition::Ok,
    })
}

/// Readiness: both listeners are bound and the hub is not draining. Needs no token.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 400, description = "`invalid_query`: this endpoint takes no parameters", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`draining`: shutting down", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(
    State(state): State<AppState>,
    _: Params<NoParams>,
) -> Result<axum::Json<Status>, ApiError> {
    if state.registry().is_shutting_down() {
        return Err(ApiError::Draining);
    }
    Ok(axum::Json(Status {
        status: Condition::Ready,
    }))
}

/// Prometheus metrics (OpenMetrics text format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        // Media type parameters are no part of a content key: the response's
        // `Content-Type` is `application/openmetrics-text; version=1.0.0; charset=utf-8`.
        (status = 200, description = "Metrics in the OpenMetrics 1.0.0 text format, UTF-8 \
                                      (`Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8`)",
         body = String, content_type = "application/openmetrics-text"),
        (status = 400, description = "`invalid_query`: this endpoint takes no parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn metrics(State(state): State<AppState>, _: Params<NoParams>) -> Response {
    let content_type =
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    (
        [(header::CONTENT_TYPE, content_type)],
        state.registry().metrics().encode(),
    )
        .into_response()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json"),
        (status = 400, description = "`invalid_query`: this endpoint takes no parameters", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn openapi(_: Params<NoParams>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI_JSON,
    )
        .into_response()
}
