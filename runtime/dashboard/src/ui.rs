//! The web dashboard: pages for people, served from assets embedded in the
//! binary (clusters are often offline, so nothing comes from a CDN).

use crate::App;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../assets/index.html");

/// The dashboard's routes.
pub fn routes() -> Router<App> {
    Router::new().route("/", get(index))
}

async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX_HTML)
}
