//! The web console: one page, compiled into the binary, with no build step and nothing
//! fetched from elsewhere. It draws the mesh from `GET /v1/live/stream` and shifts
//! weights with `PUT /v1/routes/{route}/weights`, which needs the control token: the page
//! takes it from the link `gophermesh console` prints (`#token=...`), keeps it in the
//! tab's session storage and removes it from the address bar. Without it the page is
//! read-only.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// Headers every asset gets: no caching across versions, and a policy that lets the page
/// load nothing from anywhere but here.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the console page.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /console.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
