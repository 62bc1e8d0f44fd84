//! The gate in front of every route: the bearer-token check, then the request's
//! metrics (route, method, status, latency) and, at debug level, its log line.
//!
//! One concrete tower layer: a request costs no boxed future, no clone of the
//! router's service and no label strings, which matters on the direct-send
//! path, where the HTTP round trip is most of the work.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready as ready_future};
use pin_project_lite::pin_project;
use subtle::ConstantTimeEq;
use tower::{Layer, Service};
use tracing::debug;

use super::{ApiError, AppState, dashboard};
use crate::metrics::{HttpLabels, RouteLabel};
use crate::registry::Registry;

/// Wraps every route in a [`Guard`].
#[derive(Debug, Clone)]
pub struct GuardLayer {
    state: AppState,
}

impl GuardLayer {
    /// A gate checking `state`'s token and counting into its metrics.
    pub fn new(state: AppState) -> GuardLayer {
        GuardLayer { state }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            state: self.state.clone(),
        }
    }
}

/// Refuses requests without the configured bearer token (when one is set),
/// and records every request, refused or not.
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    state: AppState,
}

impl<S> Guard<S> {
    fn authorized(&self, request: &Request) -> bool {
        let Some(token) = self.state.config.api_token.as_deref() else {
            return true;
        };
        if is_public(request.uri().path()) {
            return true;
        }
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|presented| bool::from(presented.as_bytes().ct_eq(token.as_bytes())))
    }
}

/// Paths anyone may read: the probes, and the dashboard's static files (they
/// hold no data; the page asks for the token before calling the API).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || dashboard::PATHS.contains(&path)
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Guarded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let route = RouteLabel::new(request.extensions().get::<MatchedPath>().cloned());
        let method = method_label(request.method());
        let response = if self.authorized(&request) {
            Either::Right(self.inner.call(request))
        } else {
            Either::Left(ready_future(Ok(ApiError::Unauthorized.into_response())))
        };
        Guarded {
            response,
            route,
            method,
            started,
            registry: self.state.registry().clone(),
        }
    }
}

/// The method as a metric label. Methods outside the standard set share one
/// label, so that a client inventing methods cannot grow the metrics.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pin_project! {
    /// A request on its way through the [`Guard`]: counted when its response is ready.
    pub struct Guarded<F> {
        #[pin]
        response: Either<Ready<Result<Response, Infallible>>, F>,
        route: RouteLabel,
        method: &'static str,
        started: Instant,
        registry: Registry,
    }
}

impl<F> Future for Guarded<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.response.poll(cx));
        let labels = HttpLabels {
            route: std::mem::take(this.route),
            method: this.method,
            status: response.status().as_u16(),
        };
        let took = this.started.elapsed();
        debug!(
            method = labels.method,
            route = labels.route.as_str(),
            status = labels.status,
            micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            "request"
        );
        let metrics = this.registry.metrics();
        metrics.http_requests.get_or_create(&labels).inc();
        metrics
            .http_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        Poll::Ready(Ok(response))
    }
}
