//! The log service's HTTP API: ingest (`/log`, `/v1/records`, `/v1/logs`, `/loki/api/v1/push`),
//! query and tail (`/v1/records`, `/v1/records/tail`) and `/metrics`. Errors are JSON.

mod ingest;
mod records;

#[cfg(test)]
pub(crate) use records::check_query as records_params;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::Semaphore;

use crate::store::Store;
use rollcall_http::answer::json_fallbacks;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub tails: Arc<Semaphore>,
    pub max_body: usize,
    /// Ends open tails when the service stops. Behind an `Arc` because the state is cloned for
    /// every request, and cloning a token takes a lock its clones share.
    pub shutdown: Arc<tokio_util::sync::CancellationToken>,
}

pub(crate) fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(ingest::router())
        .merge(records::router())
        .route("/metrics", get(metrics));
    json_fallbacks(routes)
        // Compressed bodies are limited again after decompression (see `ingest::IngestBody`).
        .layer(DefaultBodyLimit::max(state.max_body))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.store.metrics().encode(),
    )
}
