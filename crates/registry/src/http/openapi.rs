//! `GET /v1/openapi.json`: the registry's API as an OpenAPI 3.1 document, compiled into the
//! binary (`crates/registry/openapi/openapi.json`). A test checks it names every route served.

use std::sync::Arc;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

use crate::core::Core;

/// The document, as shipped.
pub const OPENAPI_JSON: &str = include_str!("../../openapi/openapi.json");

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new().route(
        "/v1/openapi.json",
        get(|| async { ([(CONTENT_TYPE, "application/json")], OPENAPI_JSON) }),
    )
}
