//! The operator dashboard: `GET /`, its scripts and its stylesheet, embedded in the binary.
//!
//! The files are static and hold no data: the page reads and drives the hub through the
//! same HTTP API as any other caller, with the same bearer token, so these routes need
//! no state and no auth. They are sent with `Cache-Control: no-cache` so that a browser
//! never runs a page from an older build against a newer API.

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const CHART_JS: &str = include_str!("dashboard/chart.js");
const FEED_JS: &str = include_str!("dashboard/feed.js");
const MAILBOXES_JS: &str = include_str!("dashboard/mailboxes.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Only the page's own files may run or style it, and it talks only to this origin.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE_PATH: &str = "/";
const SCRIPT_PATH: &str = "/dashboard/app.js";
const CHART_PATH: &str = "/dashboard/chart.js";
const FEED_PATH: &str = "/dashboard/feed.js";
const MAILBOXES_PATH: &str = "/dashboard/mailboxes.js";
const STYLESHEET_PATH: &str = "/dashboard/style.css";

/// Every path [`routes`] serves. None holds data, so the API's bearer auth lets them through.
pub const PATHS: [&str; 6] = [
    PAGE_PATH,
    SCRIPT_PATH,
    CHART_PATH,
    FEED_PATH,
    MAILBOXES_PATH,
    STYLESHEET_PATH,
];

/// The dashboard's routes: the page, its script modules and its stylesheet.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PAGE_PATH, get(index))
        .route(SCRIPT_PATH, get(|| script(APP_JS)))
        .route(CHART_PATH, get(|| script(CHART_JS)))
        .route(FEED_PATH, get(|| script(FEED_JS)))
        .route(MAILBOXES_PATH, get(|| script(MAILBOXES_JS)))
        .route(STYLESHEET_PATH, get(stylesheet))
}

async fn index() -> impl IntoResponse {
    (
        [(CONTENT_SECURITY_POLICY, PAGE_POLICY)],
        asset(HTML, INDEX_HTML),
    )
}

async fn script(body: &'static str) -> impl IntoResponse {
    asset(JAVASCRIPT, body)
}

async fn stylesheet() -> impl IntoResponse {
    asset(CSS, STYLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, &'static str); 3] = [
        (CONTENT_TYPE, content_type),
        (CACHE_CONTROL, "no-cache"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn fetch(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = routes::<()>().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn each_file_is_served_with_its_type_and_no_cache() {
        let served = [
            (HTML, INDEX_HTML),
            (JAVASCRIPT, APP_JS),
            (JAVASCRIPT, CHART_JS),
            (JAVASCRIPT, FEED_JS),
            (JAVASCRIPT, MAILBOXES_JS),
            (CSS, STYLE_CSS),
        ];
        for (path, (content_type, body)) in PATHS.into_iter().zip(served) {
            let (status, headers, served) = fetch(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert_eq!(served, body, "{path}");
        }
    }

    #[tokio::test]
    async fn the_page_loads_only_its_own_files() {
        let (_, headers, page) = fetch("/").await;
        assert_eq!(headers[CONTENT_SECURITY_POLICY], PAGE_POLICY);
        assert!(page.contains(r#"<script type="module" src="/dashboard/app.js"></script>"#));
        for module in ["./chart.js", "./feed.js", "./mailboxes.js"] {
            assert!(APP_JS.contains(&format!("from '{module}';")), "{module}");
        }
        assert!(page.contains(r#"<link rel="stylesheet" href="/dashboard/style.css">"#));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external resources"
        );
    }
}
