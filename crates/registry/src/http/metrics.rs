//! `GET /metrics`: the registry's metrics in the OpenMetrics text format, for Prometheus.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::core::Core;

/// The media type of the exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(core): State<Arc<Core>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, OPENMETRICS)], core.metrics_text())
}
