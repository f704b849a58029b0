//! The push side of `/v1/config`: each service's stream of the documents it reads, the
//! instances' reports on releases, how a release stands across them, and gray rollouts.
//!
//! - `GET /v1/config/{namespace}/{service}?instance=ID` streams (server-sent events) every
//!   document the service reads there: what that instance is to run of each (the candidate of a
//!   rollout whose gray set holds it, the release in force otherwise), then each change.
//! - `POST .../{name}/acks`, `GET .../{name}/status`: reports, and how they count.
//! - `POST .../{name}/rollout/promote` and `.../rollout/abort`: a running rollout by hand (the
//!   timer in `crate::rollouts` moves it by itself).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use rollcall_wire::{Ack, AckStatus, ReleaseEvent, RolloutStatus, Scope};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::audited::Subject;
use super::config::{invalid_query, key_of, publisher};
use crate::auth::Caller;
use crate::core::Core;
use crate::error::ApiError;
use crate::releases::{DocKey, StoredRelease};

/// The writes: reports and rollouts by hand.
pub(super) fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/config/{namespace}/{service}/{name}/acks", post(ack))
        .route("/v1/config/{namespace}/{service}/{name}/rollout/promote", post(promote))
        .route("/v1/config/{namespace}/{service}/{name}/rollout/abort", post(abort))
}

/// The reads: streams and status.
pub(super) fn reads() -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/config/{namespace}/{service}", get(stream))
        .route("/v1/config/{namespace}/{service}/{name}/status", get(status))
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    instance: Option<String>,
}

/// What instance `id` is to run of `key`, as a `release` event, unless it was sent already.
fn next_event(core: &Core, key: &DocKey, id: Option<&str>, sent: &mut HashMap<DocKey, u64>) -> Option<SseEvent> {
    let metadata = crate::rollouts::metadata_of(core, id);
    let release = core.published.documents().release_for(key, id, &metadata).ok()?;
    let revision = release.meta.revision;
    if sent.insert(key.clone(), revision) == Some(revision) {
        return None;
    }
    Some(release_event(&release))
}

/// Every document a service reads in a namespace (its own and the shared ones) as server-sent
/// `release` events: first what the instance (`?instance=ID`; without one, any instance outside
/// a rollout) is to run of each, then `ready`, then each change as soon as it is on disk (a new
/// release in force, a rollout's step taking the instance in or out). A stream that falls more
/// than 1,024 changes behind is sent `lagged` and closed: reconnecting starts with the whole
/// picture again, so a client never misses what it is to run.
#[tracing::instrument(level = "debug", skip_all)]
async fn stream(
    State(core): State<Arc<Core>>,
    Path((namespace, service)): Path<(String, String)>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // The same rules as a document's path (its name aside).
    DocKey::new(&namespace, &service, "x")?;
    let Query(query) = query.map_err(|e| invalid_query(e.body_text()))?;
    let instance = query.instance;
    let (current, live) = core.published.stream(&namespace, &service);
    let mut sent = HashMap::new();
    let snapshot: Vec<SseEvent> = current
        .iter()
        .filter_map(|key| next_event(&core, key, instance.as_deref(), &mut sent))
        .collect();
    let ready = SseEvent::default()
        .event("ready")
        .data(format!("{{\"documents\":{}}}", snapshot.len()));
    let following = Arc::clone(&core);
    let live = stream::unfold(Some((live, sent)), move |state| {
        let (core, namespace, service, instance) = (
            Arc::clone(&following),
            namespace.clone(),
            service.clone(),
            instance.clone(),
        );
        async move {
            let (mut receiver, mut sent) = state?;
            loop {
                match receiver.recv().await {
                    Ok(key) if key.read_by(&namespace, &service) => {
                        if let Some(event) = next_event(&core, &key, instance.as_deref(), &mut sent) {
                            return Some((event, Some((receiver, sent))));
                        }
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

/// How a document's release in force stands across the instances that read it, and its last
/// rollout.
async fn status(
    State(core): State<Arc<Core>>,
    path: Path<(String, String, String)>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let key = key_of(path.0)?;
    let mut status = core.published.progress(&key, crate::rollouts::readers(&core, &key))?;
    status.rollout = core
        .published
        .documents()
        .rollout(&key)?
        .map(crate::releases::rollout::Rollout::view);
    if let Some(view) = status.rollout.as_mut().filter(|view| view.state == "running") {
        view.node = core.nodes.owner_of(&key.path());
    }
    Ok(Json(status))
}

/// Promotes the running rollout to every instance now.
#[tracing::instrument(level = "debug", skip_all)]
async fn promote(
    State(core): State<Arc<Core>>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    path: Path<(String, String, String)>,
) -> Result<Json<RolloutStatus>, ApiError> {
    settle(core, caller, subject, path, true).await
}

/// Stops the running rollout: every instance goes back to the release in force.
#[tracing::instrument(level = "debug", skip_all)]
async fn abort(
    State(core): State<Arc<Core>>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    path: Path<(String, String, String)>,
) -> Result<Json<RolloutStatus>, ApiError> {
    settle(core, caller, subject, path, false).await
}

async fn settle(
    core: Arc<Core>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    path: Path<(String, String, String)>,
    promote: bool,
) -> Result<Json<RolloutStatus>, ApiError> {
    let (key, caller) = publisher(path, &subject, caller)?;
    let why = format!("aborted by {}", caller.name());
    let transition = core.published.settle(&key, promote, why).await?;
    tracing::info!(document = %key.path(), ?transition, "rollout settled by hand");
    status(State(core), Path((key.namespace, key.service, key.name))).await
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
