//! The HTTP API: the route table, bearer-token auth, request metrics and tracing.
//!
//! Handlers are thin: they extract, call the [`Registry`], and map the result.
//! The API never touches sockets. The OpenAPI document is generated from these
//! handlers and types ([`ApiDoc`]).

pub mod broadcast;
pub mod clients;
pub mod dashboard;
pub mod events;
pub mod ops;
pub mod problem;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::config::Config;
use crate::metrics::HttpLabels;
use crate::registry::Registry;

pub use problem::{ApiError, Problem};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The live clients.
    pub registry: Registry,
    /// The hub's settings (token, message size limit).
    pub config: Arc<Config>,
}

impl AppState {
    /// State for a router over `registry`.
    pub fn new(registry: Registry, config: Arc<Config>) -> AppState {
        AppState { registry, config }
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/clients", get(clients::list))
        .route(
            "/clients/{name}",
            get(clients::get_one).delete(clients::kick),
        )
        .route("/clients/{name}/send", post(clients::send))
        .route("/broadcast", post(broadcast::broadcast))
        .route("/events", get(events::follow))
        .merge(ops::routes())
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Paths anyone may read: the probes, and the dashboard's static files (they
/// hold no data; the page asks for the token before calling the API).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || dashboard::PATHS.contains(&path)
}

/// Rejects requests without the configured bearer token (when one is set).
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = state.config.api_token.as_deref() else {
        return next.run(request).await;
    };
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let authorized =
        presented.is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(token.as_bytes())));
    if !authorized {
        return ApiError::Unauthorized.into_response();
    }
    next.run(request).await
}

/// Counts each request by route, method and status, with its latency.
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().to_string();
    let response = next.run(request).await;
    let labels = HttpLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    let metrics = state.registry.metrics();
    metrics.http_requests.get_or_create(&labels).inc();
    metrics
        .http_latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The OpenAPI 3.1 description of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tcphub",
        description = "Reach devices and programs that hold raw TCP connections to the hub: \
                       list them, push messages to one by name or to all, disconnect them.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        clients::list,
        clients::get_one,
        clients::send,
        clients::kick,
        broadcast::broadcast,
        events::follow,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(
        crate::events::Event,
        events::EventsMissed,
        crate::webhooks::EventBatch
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "clients", description = "Live TCP clients and pushes to them"),
        (name = "events", description = "What happens in the hub, as server-sent events \
                                          (webhooks receive the same events as an EventBatch)"),
        (name = "operations", description = "Health, readiness, metrics and this document")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI document as pretty JSON with a trailing newline, as committed in
/// `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let mut json = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}
