//! Ingest endpoints. Each answers only once every accepted record is durably stored.

use std::io::Read;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rollcall_wire::{BatchResult, Scope};

use super::AppState;
use crate::access::Sender;
use crate::error::ApiError;
use crate::ingest::{self, Parsed};
use crate::metrics::Format;
use crate::record::Entry;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/log", post(seed_line))
        .route("/v1/records", post(native_batch))
        .route("/v1/logs", post(otlp))
        .route("/loki/api/v1/push", post(loki))
}

/// An ingest request's sender, headers and body, the body gunzipped when `Content-Encoding:
/// gzip` and at most `max_body` bytes either way. The sender is checked (`logs:write`) before
/// the body is read; the headers are moved out of the request, not copied.
struct IngestBody {
    sender: Sender,
    headers: HeaderMap,
    body: Bytes,
}

impl FromRequest<AppState> for IngestBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let max = state.max_body;
        let (mut parts, body) = request.into_parts();
        let sender = super::sender(&parts, state, &Scope::LogsWrite).await?;
        let headers = std::mem::take(&mut parts.headers);
        let request = Request::from_parts(parts, body);
        let raw = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(max)
            } else {
                ApiError::bad_request("invalid_body", rejection.body_text())
            }
        })?;
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity");
        let body = match encoding.trim().to_ascii_lowercase().as_str() {
            "identity" | "" => raw,
            "gzip" | "x-gzip" => {
                let mut out = Vec::new();
                let limit = u64::try_from(max).unwrap_or(u64::MAX) + 1;
                flate2::read::GzDecoder::new(&raw[..])
                    .take(limit)
                    .read_to_end(&mut out)
                    .map_err(|e| ApiError::bad_request("invalid_gzip", format!("the gzip body cannot be read: {e}")))?;
                if out.len() > max {
                    return Err(ApiError::TooLarge(max));
                }
                out.into()
            }
            other => {
                return Err(ApiError::UnsupportedEncoding(other.to_owned()));
            }
        };
        Ok(Self { sender, headers, body })
    }
}

/// Stores what parsed, stamped with the name of the token that sent it, counts both outcomes,
/// and returns the result to answer with.
async fn store(state: &AppState, sender: &Sender, format: Format, mut parsed: Parsed) -> Result<BatchResult, ApiError> {
    if let Some(name) = sender.name() {
        let stamp = Entry::sender_stamp(name);
        for entry in &mut parsed.entries {
            entry.stamp(&stamp);
        }
    }
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
    IngestBody { sender, body, .. }: IngestBody,
) -> Result<StatusCode, ApiError> {
    let text = String::from_utf8_lossy(&body);
    let entry =
        ingest::seed_line(&text, SystemTime::now()).map_err(|reason| ApiError::bad_request("invalid_line", reason))?;
    store(
        &state,
        &sender,
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
    IngestBody { sender, headers, body }: IngestBody,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ndjson = ["ndjson", "jsonl", "json-seq", "jsonlines"]
        .iter()
        .any(|t| content_type.contains(t));
    let parsed = ingest::native(&body, ndjson, SystemTime::now())
        .map_err(|reason| ApiError::bad_request("invalid_json", reason))?;
    let result = store(&state, &sender, Format::Native, parsed).await?;
    Ok(axum::Json(result).into_response())
}

/// True when the request says its body is protobuf.
fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("protobuf"))
}

/// OTLP/HTTP logs, JSON or protobuf: answered in the request's encoding, empty (`{}`) when all
/// were stored, else `partialSuccess` with the count and why.
#[tracing::instrument(level = "debug", skip_all)]
async fn otlp(
    State(state): State<AppState>,
    IngestBody { sender, headers, body }: IngestBody,
) -> Result<Response, ApiError> {
    let protobuf = is_protobuf(&headers);
    let parsed = if protobuf {
        ingest::otlp::protobuf(&body, SystemTime::now())
            .map_err(|reason| ApiError::bad_request("invalid_protobuf", reason))?
    } else {
        ingest::otlp::json(&body, SystemTime::now()).map_err(|reason| ApiError::bad_request("invalid_json", reason))?
    };
    let result = store(&state, &sender, Format::Otlp, parsed).await?;
    let why = result.rejected.first().map(|first| {
        format!(
            "record {} (and {} more): {}",
            first.index,
            result.rejected.len() - 1,
            first.reason
        )
    });
    if protobuf {
        let answer = ingest::otlp::protobuf_answer(result.rejected.len(), why);
        return Ok(([(header::CONTENT_TYPE, "application/x-protobuf")], answer).into_response());
    }
    let answer = match why {
        None => serde_json::json!({}),
        Some(why) => serde_json::json!({"partialSuccess": {
            "rejectedLogRecords": result.rejected.len(),
            "errorMessage": why,
        }}),
    };
    Ok(axum::Json(answer).into_response())
}

/// Loki's push API, JSON or snappy-compressed protobuf: 204 when every entry was stored; 400
/// naming the refused entries otherwise (the valid ones are stored: a Loki client does not
/// retry a 400).
#[tracing::instrument(level = "debug", skip_all)]
async fn loki(
    State(state): State<AppState>,
    IngestBody { sender, headers, body }: IngestBody,
) -> Result<StatusCode, ApiError> {
    let parsed = if is_protobuf(&headers) {
        let raw = unsnappy(&body, state.max_body)?;
        ingest::loki::protobuf(&raw).map_err(|reason| ApiError::bad_request("invalid_protobuf", reason))?
    } else {
        ingest::loki::json(&body).map_err(|reason| ApiError::bad_request("invalid_json", reason))?
    };
    let result = store(&state, &sender, Format::Loki, parsed).await?;
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

/// A snappy block (Loki's protobuf body) decompressed, refused before any allocation when it
/// says it is larger than `max` bytes.
fn unsnappy(body: &[u8], max: usize) -> Result<Vec<u8>, ApiError> {
    let invalid =
        |e: snap::Error| ApiError::bad_request("invalid_snappy", format!("the body is not a snappy block: {e}"));
    let size = snap::raw::decompress_len(body).map_err(invalid)?;
    if size > max {
        return Err(ApiError::TooLarge(max));
    }
    snap::raw::Decoder::new().decompress_vec(body).map_err(invalid)
}
