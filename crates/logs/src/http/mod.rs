//! The log service's HTTP API: ingest (`/log`, `/v1/records`, `/v1/logs`, `/loki/api/v1/push`),
//! query and tail (`/v1/records`, `/v1/records/tail`) and `/metrics`. Errors are JSON.
//!
//! Ingest needs the `logs:write` scope (checked before the body is read), everything else
//! `logs:read`; anonymous requests are served where `crate::access` says.

mod ingest;
mod loki;
mod records;
mod tail;

#[cfg(test)]
pub(crate) use records::check_query as records_params;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::Semaphore;

use crate::access::{Access, Sender};
use crate::error::ApiError;
use crate::store::Store;
use rollcall_http::answer::json_fallbacks;
use rollcall_wire::Scope;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub tails: Arc<Semaphore>,
    pub max_body: usize,
    /// Who may write and read.
    pub access: Arc<Access>,
    /// Ends open tails when the service stops. Behind an `Arc` because the state is cloned for
    /// every request, and cloning a token takes a lock its clones share.
    pub shutdown: Arc<tokio_util::sync::CancellationToken>,
}

/// A request whose sender may read (the `logs:read` scope).
pub(crate) struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        sender(parts, state, &Scope::LogsRead).await.map(|_| Reader)
    }
}

/// Who sent the request in `parts`, if it may do what `wanted` allows.
pub(crate) async fn sender(parts: &Parts, state: &AppState, wanted: &Scope) -> Result<Sender, ApiError> {
    let peer = rollcall_http::peer_of(&parts.extensions);
    state.access.check(&parts.headers, peer, wanted).await
}

pub(crate) fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(ingest::router())
        .merge(records::router())
        .merge(loki::router())
        .route("/metrics", get(metrics));
    let track = axum::middleware::from_fn_with_state(state.store.metrics().http.clone(), rollcall_http::observe::track);
    json_fallbacks(routes)
        .layer(track)
        // Compressed bodies are limited again after decompression (see `ingest::IngestBody`).
        .layer(DefaultBodyLimit::max(state.max_body))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>, _reader: Reader) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.store.metrics().encode(),
    )
}
