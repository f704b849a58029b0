//! `/v1/config`: central configuration documents and their releases.
//!
//! - `PUT /v1/config/{namespace}/{service}/{name}` publishes the body as the next release (its
//!   format from `?format=` or the `Content-Type`; `If-Match: "N"` to publish only over revision
//!   N, `If-None-Match: *` only if the document does not exist yet; the message in
//!   `X-Rollcall-Message`). The answer waits until the release is on disk.
//! - `POST .../rollback?to=N` publishes release N's content again, as a new release.
//! - `GET .../{name}` answers the latest content (or `?revision=N`) in its own media type, with
//!   its revision in `ETag` and `X-Rollcall-Revision`; `If-None-Match` with the current revision
//!   answers 304 (the cheap revision check); `?index=N&wait=30s` blocks until a revision past N.
//! - `GET /v1/config/{namespace}/{service}` streams (server-sent events) every document the
//!   service reads there, its own and the shared ones: the latest of each, then each new one.
//! - `POST .../acks` is an instance's report on a release (applied, or rejected and why);
//!   `GET .../status` how the latest release stands across the instances that read it.
//! - `GET .../history` lists the retained releases, newest first; `GET .../diff?from=&to=` is
//!   the unified diff between two of them; `GET /v1/config` lists every document.
//!
//! Publishing needs the `config:PATTERN` scope matching `namespace/service/name` (or admin);
//! reading needs `read`, like the rest of the registry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use rollcall_wire::{Ack, AckStatus, ConfigFormat, DocumentView, ReleaseEvent, ReleaseView, RolloutStatus, Scope};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::audited::Subject;
use super::services::{DEFAULT_WAIT, MAX_WAIT};
use crate::auth::Caller;
use crate::core::Core;
use crate::error::ApiError;
use crate::releases::acks::Reader;
use crate::releases::{DocKey, Draft, MAX_DOCUMENT_BYTES, SHARED, StoredRelease};

/// The response header that carries a document's revision.
pub const REVISION_HEADER: HeaderName = HeaderName::from_static("x-rollcall-revision");
/// The request header that carries a publish's message.
const MESSAGE_HEADER: HeaderName = HeaderName::from_static("x-rollcall-message");

/// The writes: publishing and rolling back. Their bodies may be as large as a document.
pub(super) fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/config/{namespace}/{service}/{name}", axum::routing::put(publish))
        .route("/v1/config/{namespace}/{service}/{name}/rollback", post(rollback))
        .route("/v1/config/{namespace}/{service}/{name}/acks", post(ack))
        .route_layer(DefaultBodyLimit::max(MAX_DOCUMENT_BYTES + 1))
}

/// The reads.
pub(super) fn reads() -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/config", get(list))
        .route("/v1/config/{namespace}/{service}", get(stream))
        .route("/v1/config/{namespace}/{service}/{name}", get(content))
        .route("/v1/config/{namespace}/{service}/{name}/history", get(history))
        .route("/v1/config/{namespace}/{service}/{name}/diff", get(diff))
        .route("/v1/config/{namespace}/{service}/{name}/status", get(status))
}

fn invalid_query(message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

/// A document's key from its path.
fn key_of((namespace, service, name): (String, String, String)) -> Result<DocKey, ApiError> {
    Ok(DocKey::new(&namespace, &service, &name)?)
}

/// `If-Match: "N"` (or `N`) → `Some(N)`; `If-None-Match: *` → `Some(0)` (only a new
/// document); neither → `None`.
fn expected_revision(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let invalid =
        |what: &str| ApiError::bad_request("invalid_precondition", format!("{what} must be a revision like \"3\""));
    if let Some(value) = headers.get(header::IF_MATCH) {
        let text = value.to_str().map_err(|_| invalid("If-Match"))?;
        let revision = text.trim().trim_matches('"').parse().map_err(|_| invalid("If-Match"))?;
        return Ok(Some(revision));
    }
    match headers.get(header::IF_NONE_MATCH).map(HeaderValue::as_bytes) {
        Some(b"*") => Ok(Some(0)),
        Some(_) => Err(invalid("If-None-Match on a publish is * or absent; If-Match")),
        None => Ok(None),
    }
}

/// The publish's message (`X-Rollcall-Message`, UTF-8), empty when absent.
fn message(headers: &HeaderMap) -> Result<String, ApiError> {
    headers.get(MESSAGE_HEADER).map_or(Ok(String::new()), |value| {
        String::from_utf8(value.as_bytes().to_vec())
            .map_err(|_| ApiError::bad_request("invalid_message", "X-Rollcall-Message must be UTF-8"))
    })
}

#[derive(Debug, Deserialize)]
struct PublishQuery {
    format: Option<String>,
}

/// The format of a publish: `?format=` first, then the `Content-Type`.
fn format_of(query: &PublishQuery, headers: &HeaderMap) -> Result<ConfigFormat, ApiError> {
    if let Some(word) = &query.format {
        return word.parse().map_err(invalid_query);
    }
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    ConfigFormat::from_media_type(media_type).ok_or(ApiError::UnsupportedDocumentType)
}

/// A release as answered by a publish or a rollback: 201 for a document's first release, 200
/// after; the revision in `ETag`.
fn published(release: &StoredRelease) -> Response {
    let status = if release.meta.revision == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = release.meta.view(&release.key);
    (status, [(header::ETAG, etag(release.meta.revision))], Json(view)).into_response()
}

/// The document a write changes, named as the request's subject, and its caller once it may
/// publish it.
fn publisher(
    Path(path): Path<(String, String, String)>,
    subject: &Subject,
    caller: Result<Caller, ApiError>,
) -> Result<(DocKey, Caller), ApiError> {
    let key = key_of(path)?;
    subject.set(key.path());
    let caller = caller?;
    caller.may(&Scope::Config(key.path()))?;
    Ok((key, caller))
}

fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

#[tracing::instrument(level = "debug", skip_all)]
async fn publish(
    State(core): State<Arc<Core>>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    path: Path<(String, String, String)>,
    query: Result<Query<PublishQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (key, caller) = publisher(path, &subject, caller)?;
    let Query(query) = query.map_err(|e| invalid_query(e.body_text()))?;
    let format = format_of(&query, &headers)?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(MAX_DOCUMENT_BYTES),
        _ => ApiError::bad_request("invalid_body", rejection.body_text()),
    })?;
    let content = String::from_utf8(body.to_vec())
        .map_err(|e| ApiError::bad_request("malformed_document", format!("the document is not UTF-8: {e}")))?;
    let draft = Draft {
        format,
        content,
        author: caller.name().to_owned(),
        message: message(&headers)?,
        expected: expected_revision(&headers)?,
        rolled_back_from: None,
        at: SystemTime::now(),
    };
    let release = core.published.publish(&key, draft).await?;
    Ok(published(&release))
}

#[derive(Debug, Deserialize)]
struct RollbackQuery {
    to: Option<String>,
}

#[tracing::instrument(level = "debug", skip_all)]
async fn rollback(
    State(core): State<Arc<Core>>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    path: Path<(String, String, String)>,
    query: Result<Query<RollbackQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (key, caller) = publisher(path, &subject, caller)?;
    let Query(query) = query.map_err(|e| invalid_query(e.body_text()))?;
    let to =
        revision(query.to.as_deref(), "to")?.ok_or_else(|| invalid_query("rollback needs ?to=REVISION".to_owned()))?;
    let message = match message(&headers)? {
        given if !given.is_empty() => given,
        _ => format!("rollback to revision {to}"),
    };
    let expected = expected_revision(&headers)?;
    let release = core
        .published
        .rollback(&key, to, caller.name(), message, expected)
        .await?;
    Ok(published(&release))
}

/// A revision given as `?{field}=N`.
fn revision(text: Option<&str>, field: &str) -> Result<Option<u64>, ApiError> {
    text.map(|text| {
        text.parse::<u64>()
            .map_err(|_| invalid_query(format!("{field} must be a revision (a whole number), not {text:?}")))
    })
    .transpose()
}

#[derive(Debug, Deserialize)]
struct ContentQuery {
    revision: Option<String>,
    index: Option<String>,
    wait: Option<String>,
}

/// Every document a service reads in a namespace (its own and the shared ones) as server-sent
/// `release` events: first the latest release of each, then `ready`, then each new release as
/// it is made. A stream that falls more than 1,024 releases behind is sent `lagged` and closed:
/// reconnecting starts with the latest of each again, so a client never misses a document's
/// latest release (intermediate ones may be skipped).
#[tracing::instrument(level = "debug", skip_all)]
async fn stream(
    State(core): State<Arc<Core>>,
    Path((namespace, service)): Path<(String, String)>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // The same rules as a document's path (its name aside).
    DocKey::new(&namespace, &service, "x")?;
    let (current, live) = core.published.stream(&namespace, &service);
    let snapshot: Vec<SseEvent> = current.iter().map(|release| release_event(release)).collect();
    let ready = SseEvent::default()
        .event("ready")
        .data(format!("{{\"documents\":{}}}", snapshot.len()));
    let live = stream::unfold(Some(live), move |receiver| {
        let (namespace, service) = (namespace.clone(), service.clone());
        async move {
            let mut receiver = receiver?;
            loop {
                match receiver.recv().await {
                    Ok(release) if release.key.read_by(&namespace, &service) => {
                        return Some((release_event(&release), Some(receiver)));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        let lagged = SseEvent::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{missed}}}"));
                        return Some((lagged, None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    let events = stream::iter(snapshot)
        .chain(stream::once(async { ready }))
        .chain(live)
        .map(Ok)
        .take_until(core.shutdown.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// An instance's report on a release: `{"instance", "revision", "status": "applied" |
/// "rejected", "reason", "missed_push"}`, sent by the instance itself (the `register` scope of
/// its service). 204.
#[tracing::instrument(level = "debug", skip_all)]
async fn ack(
    State(core): State<Arc<Core>>,
    caller: Result<Caller, ApiError>,
    path: Path<(String, String, String)>,
    json: rollcall_http::SaysJson,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let key = key_of(path.0)?;
    super::validate::json_content_type(json, super::validate::Dialect::V1)?;
    let body = body.map_err(|r| super::validate::body_error(&r, super::validate::Dialect::V1))?;
    let ack: Ack = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not an ack: {e}")))?;
    if ack.reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::bad_request(
            "invalid_ack",
            format!("the reason is longer than {MAX_REASON_BYTES} bytes"),
        ));
    }
    let service = core
        .catalog()
        .instance_by_id(&ack.instance)
        .map(|i| i.registration.service_name.clone())
        .ok_or_else(|| ApiError::UnknownInstanceId(ack.instance.clone()))?;
    caller?.may(&Scope::Register(service.clone()))?;
    if !key.read_by(&key.namespace, &service) {
        return Err(ApiError::bad_request(
            "invalid_ack",
            format!("{service} does not read {}", key.path()),
        ));
    }
    core.published.ack(&key, &ack)?;
    match ack.status {
        AckStatus::Applied => core.metrics.config_applied.inc(),
        AckStatus::Rejected => core.metrics.config_rejected.inc(),
    };
    if ack.missed_push {
        core.metrics.config_push_missed.inc();
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The longest reason an ack may give.
const MAX_REASON_BYTES: usize = 1024;

/// How a document's latest release stands across the instances that read it: every registered
/// instance of its service (of every service, for a shared document).
async fn status(
    State(core): State<Arc<Core>>,
    path: Path<(String, String, String)>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let key = key_of(path.0)?;
    let readers = {
        let catalog = core.catalog();
        let views = if key.service == SHARED {
            catalog.services(false).into_iter().flat_map(|s| s.instances).collect()
        } else {
            catalog.service(&key.service, false).instances
        };
        views
            .into_iter()
            .map(|i| Reader {
                id: i.id,
                url: i.url,
                state: i.state,
            })
            .collect()
    };
    Ok(Json(core.published.progress(&key, readers)?))
}

/// A release as a stream's `release` event.
fn release_event(release: &StoredRelease) -> SseEvent {
    let event = ReleaseEvent {
        release: release.meta.view(&release.key),
        content: release.content.clone(),
    };
    let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
    SseEvent::default()
        .id(format!("{}@{}", release.key.path(), release.meta.revision))
        .event("release")
        .data(data)
}

/// A document's content in its own media type, with its revision and hash in headers.
#[tracing::instrument(level = "debug", skip_all)]
async fn content(
    State(core): State<Arc<Core>>,
    path: Path<(String, String, String)>,
    query: Result<Query<ContentQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_of(path.0)?;
    let Query(query) = query.map_err(|e| invalid_query(e.body_text()))?;
    if let Some(known) = revision(query.index.as_deref(), "index")? {
        let wait = match query.wait.as_deref() {
            None => DEFAULT_WAIT,
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| invalid_query(format!("wait {text:?} is not a duration like 30s or 5m: {e}")))?
                .min(MAX_WAIT),
        };
        core.published.wait_past(&key, known, wait, &core.shutdown).await;
    }
    let release = match revision(query.revision.as_deref(), "revision")? {
        Some(revision) => core.published.release(&key, revision).await?,
        None => Arc::clone(core.published.documents().latest(&key)?),
    };
    let tag = etag(release.meta.revision);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|seen| seen.as_bytes() == tag.as_bytes());
    let described = [
        (header::ETAG, tag),
        (REVISION_HEADER, release.meta.revision.to_string()),
        (header::CONTENT_TYPE, release.meta.format.media_type().to_owned()),
        (
            HeaderName::from_static("x-rollcall-sha256"),
            release.meta.sha256.clone(),
        ),
    ];
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, described).into_response());
    }
    Ok((described, release.content.clone()).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    namespace: Option<String>,
}

/// Every document (of `?namespace=`), with its latest release.
async fn list(
    State(core): State<Arc<Core>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Documents>, ApiError> {
    let Query(query) = query.map_err(|e| invalid_query(e.body_text()))?;
    let documents = core.published.documents().list(query.namespace.as_deref());
    Ok(Json(Documents { documents }))
}

/// The answer of `GET /v1/config`.
#[derive(Debug, serde::Serialize)]
struct Documents {
    documents: Vec<DocumentView>,
}

/// The answer of `GET .../history`.
#[derive(Debug, serde::Serialize)]
struct History {
    releases: Vec<ReleaseView>,
}

/// The retained releases of a document, newest first.
async fn history(
    State(core): State<Arc<Core>>,
    path: Path<(String, String, String)>,
) -> Result<Json<History>, ApiError> {
    let key = key_of(path.0)?;
    let documents = core.published.documents();
    let releases = documents.history(&key)?.map(|meta| meta.view(&key)).collect();
    Ok(Json(History { releases }))
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

/// The unified diff from one release to another (by default: the one before the latest, to
/// the latest).
async fn diff(
    State(core): State<Arc<Core>>,
    path: Path<(String, String, String)>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = key_of(path.0)?;
    let Query(query) = query.map_err(|e| invalid_query(e.body_text()))?;
    let latest = core.published.documents().latest(&key)?.meta.revision;
    let to = revision(query.to.as_deref(), "to")?.unwrap_or(latest);
    let from = revision(query.from.as_deref(), "from")?.unwrap_or_else(|| to.saturating_sub(1));
    let after = core.published.release(&key, to).await?;
    let before = match from {
        0 => String::new(),
        from => core.published.release(&key, from).await?.content.clone(),
    };
    let text = similar::TextDiff::from_lines(&before, &after.content)
        .unified_diff()
        .header(&format!("{}@{from}", key.path()), &format!("{}@{to}", key.path()))
        .to_string();
    Ok(([(header::CONTENT_TYPE, "text/x-diff; charset=utf-8")], text).into_response())
}
