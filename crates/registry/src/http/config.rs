//! `/v1/config`: central configuration documents and their releases (the push side, streams,
//! reports and rollouts by hand, is `config_push`).
//!
//! - `PUT /v1/config/{namespace}/{service}/{name}` publishes the body as the next release (its
//!   format from `?format=` or the `Content-Type`; `If-Match: "N"` to publish only over revision
//!   N, `If-None-Match: *` only if the document does not exist yet; the message in
//!   `X-Rollcall-Message`; `?rollout=STEPS&bake=D` to stage it for a gray rollout). The answer
//!   waits until the release is on disk.
//! - `POST .../rollback?to=N` publishes release N's content again, as a new release.
//! - `GET .../{name}` answers the release in force (or `?revision=N`, or what `?instance=ID` is
//!   to run) in its own media type, with its revision in `ETag` and `X-Rollcall-Revision`;
//!   `If-None-Match` with the current revision answers 304 (the cheap revision check);
//!   `?index=N&wait=30s` blocks until a revision past N is in force.
//! - `GET .../history` lists the retained releases, newest first; `GET .../diff?from=&to=` is
//!   the unified diff between two of them; `GET /v1/config` lists every document.
//!
//! Publishing needs the `config:PATTERN` scope matching `namespace/service/name` (or admin);
//! reading needs `read`, like the rest of the registry.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rollcall_wire::{ConfigFormat, DocumentView, ReleaseView, Scope};
use serde::Deserialize;

use super::audited::Subject;
use crate::auth::Caller;
use crate::core::Core;
use crate::error::ApiError;
use crate::releases::rollout::Selector;
use crate::releases::{DocKey, Draft, MAX_DOCUMENT_BYTES, StoredRelease};

/// The response header that carries a document's revision.
pub const REVISION_HEADER: HeaderName = HeaderName::from_static("x-rollcall-revision");
/// The request header that carries a publish's message.
const MESSAGE_HEADER: HeaderName = HeaderName::from_static("x-rollcall-message");

/// The writes: publishing and rolling back. Their bodies may be as large as a document.
pub(super) fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/config/{namespace}/{service}/{name}", axum::routing::put(publish))
        .route("/v1/config/{namespace}/{service}/{name}/rollback", post(rollback))
        .route_layer(DefaultBodyLimit::max(MAX_DOCUMENT_BYTES + 1))
}

/// The reads.
pub(super) fn reads() -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/config", get(list))
        .route("/v1/config/{namespace}/{service}/{name}", get(content))
        .route("/v1/config/{namespace}/{service}/{name}/history", get(history))
        .route("/v1/config/{namespace}/{service}/{name}/diff", get(diff))
}

pub(super) fn invalid_query(message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

/// A document's key from its path.
pub(super) fn key_of((namespace, service, name): (String, String, String)) -> Result<DocKey, ApiError> {
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
    /// A gray rollout's steps: `10,50` (percentages), `instances:ID+ID`, `label:KEY=VALUE`.
    rollout: Option<String>,
    /// How long each step bakes (default 1 minute).
    bake: Option<String>,
}

/// The rollout plan a publish asks for, if any.
fn rollout_of(query: &PublishQuery) -> Result<Option<(Vec<Selector>, std::time::Duration)>, ApiError> {
    let Some(steps) = &query.rollout else {
        if query.bake.is_some() {
            return Err(invalid_query("bake goes with rollout".to_owned()));
        }
        return Ok(None);
    };
    let steps = steps
        .split(',')
        .map(Selector::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid_query)?;
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(invalid_query(format!("a rollout has 1 to {MAX_STEPS} steps")));
    }
    let bake = match &query.bake {
        None => DEFAULT_BAKE,
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| invalid_query(format!("bake {text:?} is not a duration like 30s: {e}")))?,
    };
    if !(MIN_BAKE..=MAX_BAKE).contains(&bake) {
        return Err(invalid_query("bake must be from 100ms to 1 day".to_owned()));
    }
    Ok(Some((steps, bake)))
}

/// The most steps a rollout may have.
const MAX_STEPS: usize = 20;
/// How long each step bakes unless the publish says.
const DEFAULT_BAKE: std::time::Duration = std::time::Duration::from_secs(60);
/// The shortest bake.
const MIN_BAKE: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest bake.
const MAX_BAKE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

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
pub(super) fn publisher(
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
    let rollout = rollout_of(&query)?;
    if rollout.is_some() {
        let live = crate::rollouts::readers(&core, &key)
            .iter()
            .any(|reader| reader.state.is_discoverable());
        if !live {
            return Err(ApiError::NoLiveInstance(format!(
                "no instance of {} is live: a gray rollout needs one to try the release on",
                key.service
            )));
        }
    }
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
        rollout,
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
    instance: Option<String>,
    revision: Option<String>,
    index: Option<String>,
    wait: Option<String>,
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
        let wait = super::services::wait_of(query.wait.as_deref())?;
        let held = core.published.documents().in_force(&key).map_or(0, |r| r.meta.revision) <= known;
        let _held = held.then(|| super::services::Held::count(&core.metrics.blocking_queries));
        core.published.wait_past(&key, known, wait, &core.shutdown).await;
    }
    let release = if let Some(revision) = revision(query.revision.as_deref(), "revision")? {
        core.published.release(&key, revision).await?
    } else {
        let id = query.instance.as_deref();
        let metadata = crate::rollouts::metadata_of(&core, id);
        core.published.documents().release_for(&key, id, &metadata)?
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
    let latest = core.published.documents().in_force(&key)?.meta.revision;
    let to = revision(query.to.as_deref(), "to")?.unwrap_or(latest);
    let from = revision(query.from.as_deref(), "from")?.unwrap_or_else(|| to.saturating_sub(1));
    let text = core.published.diff(&key, from, to).await?;
    Ok(([(header::CONTENT_TYPE, "text/x-diff; charset=utf-8")], text).into_response())
}
