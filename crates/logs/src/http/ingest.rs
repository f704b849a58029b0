//! Ingest endpoints. Each answers only once every accepted record is durably stored.

use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rollcall_wire::BatchResult;

use super::{AppState, body_bytes, body_rejection};
use crate::error::ApiError;
use crate::ingest::{self, Parsed};
use crate::metrics::Format;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/log", post(seed_line))
        .route("/v1/records", post(native_batch))
        .route("/v1/logs", post(otlp))
        .route("/loki/api/v1/push", post(loki))
}

/// Reads the body of an ingest request.
fn body(state: &AppState, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Vec<u8>, ApiError> {
    let body = body.map_err(|r| body_rejection(&r, state.max_body))?;
    body_bytes(headers, &body, state.max_body)
}

/// Stores what parsed, counts both outcomes, and returns the result to answer with.
async fn store(state: &AppState, format: Format, parsed: Parsed) -> Result<BatchResult, ApiError> {
    let accepted = parsed.entries.len();
    let rejected = parsed.rejected.len();
    if let Err(error) = state.store.append(parsed.entries).await {
        if matches!(error, crate::store::StoreError::Busy(_)) {
            state.store.metrics().busy.inc();
        }
        return Err(error.into());
    }
    state.store.metrics().ingested(format, accepted, rejected);
    Ok(BatchResult {
        accepted,
        rejected: parsed.rejected,
    })
}

/// The seed's `POST /log`: one text line; 200 with an empty body, 400 when empty.
#[tracing::instrument(level = "debug", skip_all)]
async fn seed_line(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let bytes = body(&state, &headers, raw)?;
    let text = String::from_utf8_lossy(&bytes);
    let entry =
        ingest::seed_line(&text, SystemTime::now()).map_err(|reason| ApiError::bad_request("invalid_line", reason))?;
    store(
        &state,
        Format::Seed,
        Parsed {
            entries: vec![entry],
            rejected: vec![],
        },
    )
    .await?;
    Ok(StatusCode::OK)
}

/// rollcall's batch: a JSON array of records, or NDJSON; answers the accepted count and a reason
/// for each rejected record.
#[tracing::instrument(level = "debug", skip_all)]
async fn native_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body(&state, &headers, raw)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ndjson = ["ndjson", "jsonl", "json-seq", "jsonlines"]
        .iter()
        .any(|t| content_type.contains(t));
    let parsed = ingest::native(&bytes, ndjson, SystemTime::now())
        .map_err(|reason| ApiError::bad_request("invalid_json", reason))?;
    let result = store(&state, Format::Native, parsed).await?;
    Ok(axum::Json(result).into_response())
}

/// OTLP/HTTP JSON logs: `{}` when all were stored, else `partialSuccess` with the count and why.
#[tracing::instrument(level = "debug", skip_all)]
async fn otlp(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body(&state, &headers, raw)?;
    let is_protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("protobuf"));
    if is_protobuf {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "OTLP protobuf is not supported: configure the exporter for http/json",
        ));
    }
    let parsed =
        ingest::otlp(&bytes, SystemTime::now()).map_err(|reason| ApiError::bad_request("invalid_json", reason))?;
    let result = store(&state, Format::Otlp, parsed).await?;
    let body = match result.rejected.first() {
        None => serde_json::json!({}),
        Some(first) => serde_json::json!({"partialSuccess": {
            "rejectedLogRecords": result.rejected.len(),
            "errorMessage": format!("record {} (and {} more): {}", first.index, result.rejected.len() - 1, first.reason),
        }}),
    };
    Ok(axum::Json(body).into_response())
}

/// Loki's push API (JSON): 204 when every entry was stored; 400 naming the refused entries
/// otherwise (the valid ones are stored: a Loki client does not retry a 400).
#[tracing::instrument(level = "debug", skip_all)]
async fn loki(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let bytes = body(&state, &headers, raw)?;
    let parsed = ingest::loki(&bytes).map_err(|reason| ApiError::bad_request("invalid_json", reason))?;
    let result = store(&state, Format::Loki, parsed).await?;
    match result.rejected.first() {
        None => Ok(StatusCode::NO_CONTENT),
        Some(first) => Err(ApiError::bad_request(
            "rejected_entries",
            format!(
                "{} entries stored, {} refused; entry {}: {}",
                result.accepted,
                result.rejected.len(),
                first.index,
                first.reason
            ),
        )),
    }
}
