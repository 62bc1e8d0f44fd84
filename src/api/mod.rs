//! The HTTP API: the route table, bearer-token auth, request metrics and logs.
//!
//! Handlers are thin: they extract, call the [`Directory`], and map the result.
//! The API never touches sockets. The OpenAPI document is generated from these
//! handlers and types ([`ApiDoc`]).

pub mod broadcast;
pub mod bulk;
pub mod clients;
mod coverage;
pub mod dashboard;
mod doc;
pub mod events;
pub mod groups;
mod guard;
mod json_body;
pub mod mailboxes;
pub mod nodes;
pub mod ops;
pub mod problem;
mod query;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post, put};
use tokio::sync::Semaphore;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::config::Config;
use crate::directory::Directory;
use crate::registry::Registry;
use doc::{Constants, DefaultProblem, EventUnion, Webhook};

pub use coverage::Coverage;
pub use problem::{ApiError, Problem};

/// What every handler can reach; one reference count to clone, as the
/// `State` extractor does for every request.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The way to every client.
    pub directory: Directory,
    /// The hub's settings (token, message size limit).
    pub config: Arc<Config>,
    /// One permit per `/events` stream that may open (`--max-event-streams`).
    event_streams: Arc<Semaphore>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// State for a router over `directory`.
    pub fn new(directory: Directory, config: Arc<Config>) -> AppState {
        let event_streams = Arc::new(Semaphore::new(
            config.max_event_streams.min(Semaphore::MAX_PERMITS),
        ));
        AppState(Arc::new(Shared {
            directory,
            config,
            event_streams,
        }))
    }

    /// This node's registry: its own clients, events, metrics and mailbox.
    pub fn registry(&self) -> &Registry {
        self.directory.registry()
    }

    /// How many `/events` streams are open.
    pub fn open_event_streams(&self) -> usize {
        self.config
            .max_event_streams
            .saturating_sub(self.event_streams.available_permits())
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
        .route("/clients/{name}/groups", put(groups::set_for_client))
        .route("/broadcast", post(broadcast::broadcast))
        .route("/send", post(bulk::send))
        .route("/groups", get(groups::list))
        .route("/groups/{group}", get(groups::get_one))
        .route("/groups/{group}/send", post(groups::send))
        .route("/events", get(events::follow))
        .route("/nodes", get(nodes::list))
        .route("/mailboxes", get(mailboxes::list))
        .route(
            "/mailboxes/{name}",
            get(mailboxes::get_one).delete(mailboxes::purge),
        )
        .merge(ops::routes())
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(guard::GuardLayer::new(state.clone()))
        .with_state(state)
}

/// The OpenAPI 3.1 description of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tcphub",
        description = "Reach devices and programs that hold raw TCP connections to the hub: \
                       list them, push messages to one by name, to many, to a group or to all, disconnect them.\n\n\
                       Every endpoint refuses a query parameter it does not take with 400 \
                       `invalid_query` naming it, as send bodies refuse unknown JSON members \
                       with 400 `invalid_body`. Times are RFC 3339 in UTC with exactly three \
                       fraction digits: `2026-11-25T18:40:30.120Z`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")
    ),
    servers((url = "http://127.0.0.1:8080", description = "The default `--http-addr` (https with `--tls-cert`)")),
    paths(
        clients::list,
        clients::get_one,
        clients::send,
        clients::kick,
        broadcast::broadcast,
        bulk::send,
        groups::list,
        groups::get_one,
        groups::send,
        groups::set_for_client,
        events::follow,
        mailboxes::list,
        mailboxes::get_one,
        mailboxes::purge,
        nodes::list,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(
        crate::events::Event,
        events::EventsMissed,
        clients::Wait,
        clients::Until,
        crate::webhooks::EventBatch
    )),
    modifiers(&BearerAuth, &EventUnion, &Constants, &DefaultProblem, &Webhook),
    security(("bearer" = [])),
    tags(
        (name = "clients", description = "Live TCP clients and pushes to them"),
        (name = "groups", description = "Named sets of clients, and pushes to every member"),
        (name = "mailboxes", description = "Messages stored for names with no live client, or until acked"),
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
