//! The log service's HTTP API: ingest (`/log`, `/v1/records`, `/v1/logs`, `/loki/api/v1/push`),
//! query and tail (`/v1/records`, `/v1/records/tail`) and `/metrics`. Errors are JSON.

mod ingest;
mod records;

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::store::Store;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub tails: Arc<Semaphore>,
    pub max_body: usize,
    /// Ends open tails when the service stops.
    pub shutdown: tokio_util::sync::CancellationToken,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .merge(ingest::router())
        .merge(records::router())
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        // Compressed bodies are limited again after decompression (see `body_bytes`).
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

/// The request body, gunzipped when `Content-Encoding: gzip`, at most `max` bytes either way.
fn body_bytes(headers: &HeaderMap, body: &axum::body::Bytes, max: usize) -> Result<Vec<u8>, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => Ok(body.to_vec()),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            let limit = u64::try_from(max).unwrap_or(u64::MAX) + 1;
            flate2::read::GzDecoder::new(&body[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::bad_request("invalid_gzip", format!("the gzip body cannot be read: {e}")))?;
            if out.len() > max {
                return Err(too_large(max));
            }
            Ok(out)
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {other:?} is not supported: send identity or gzip"),
        )),
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is larger than {max} bytes: send smaller batches"),
    )
}

/// Maps axum's body rejection (over the limit, or a broken stream) to a JSON error.
fn body_rejection(rejection: &axum::extract::rejection::BytesRejection, max: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(max)
    } else {
        ApiError::bad_request("invalid_body", rejection.body_text())
    }
}
