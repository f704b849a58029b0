//! The `/v1/instances` API: register with metadata and a check and get an id back, look an
//! instance up by id, deregister, drain or undrain it by id, renew a TTL-checked one.
//!
//! Unlike the seed's `POST /services`, `POST /v1/instances` does not wait for a callback: it
//! answers once the registration is on disk, and the instance's delivery queue sends its initial
//! providers right after (retried like any patch).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use rollcall_http::SaysJson;
use rollcall_wire::{InstanceRegistration, InstanceView, Scope};

use super::audited::Subject;
use super::validate::{self, Dialect};
use crate::auth::Caller;
use crate::core::Core;
use crate::error::ApiError;
use crate::state::{Command, Event, Instance, new_instance_id};

/// The writes: registering and deregistering.
pub(super) fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/instances", post(register))
        .route("/v1/instances/{id}", delete(deregister))
        .route("/v1/instances/{id}/drain", post(drain))
        .route("/v1/instances/{id}/undrain", post(undrain))
        .route("/v1/instances/{id}/ttl", put(renew))
}

/// The read: one instance by id.
pub(super) fn reads() -> Router<Arc<Core>> {
    Router::new().route("/v1/instances/{id}", get(get_instance))
}

/// `201 Created` for a new ServiceURL, `200 OK` when it replaced an existing registration; the
/// body is the instance as listed.
#[tracing::instrument(level = "debug", skip_all)]
async fn register(
    State(core): State<Arc<Core>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    json: SaysJson,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<InstanceView>), ApiError> {
    validate::json_content_type(json, Dialect::V1)?;
    let body = body.map_err(|r| validate::body_error(&r, Dialect::V1))?;
    let request: InstanceRegistration = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not a valid instance registration: {e}"),
        )
    })?;
    subject.set(&request.registration.service_url);
    let caller = caller?;
    let registration = validate::registration(request.registration)?;
    caller.may(&Scope::Register(registration.service_name.clone()))?;
    validate::metadata(&request.metadata)?;
    let check = request.check.unwrap_or_default();
    validate::check(&check)?;
    let config_url = validate::config_url(&registration, request.config_update_url)?;
    validate::addresses(&core, peer.ip(), &registration, config_url.as_ref()).await?;

    // It holds nothing yet: its queue sends every provider it requires.
    let command = Command::Register {
        registration,
        metadata: request.metadata,
        check,
        config_url,
        by: caller.actor(peer.ip()),
        new_instance_id: new_instance_id(),
        delivered: BTreeSet::new(),
        // Announced once a probe has passed, which comes at once.
        proven: false,
        at: SystemTime::now(),
    };
    // The answer is the instance as this registration left it: another registration or a
    // deregistration of the same URL may follow before the answer is written.
    let (events, view) = core
        .apply_and_read(command, |catalog, events| match events.first() {
            Some(Event::Registered { id, url, .. }) => catalog.current(url, *id).map(Instance::view),
            _ => None,
        })
        .await?;
    let (Some(Event::Registered { replaced, .. }), Some(view)) = (events.first(), view) else {
        unreachable!("a registration starts with its Registered event, and is current until the lock is released");
    };
    core.metrics.v1_registrations.inc();
    let status = if replaced.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(view)))
}

#[tracing::instrument(level = "debug", skip_all, fields(instance = %id))]
async fn get_instance(
    State(core): State<Arc<Core>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    // Administrators see how the last probe failed; others one text for every way of not
    // answering, so that the registry cannot be used to map which addresses answer.
    let view = if caller.is_admin() {
        Instance::admin_view
    } else {
        Instance::view
    };
    let view = core.catalog().instance_by_id(&id).map(view);
    view.map(Json).ok_or(ApiError::UnknownInstanceId(id))
}

#[tracing::instrument(level = "debug", skip_all, fields(instance = %id))]
async fn deregister(
    State(core): State<Arc<Core>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (url, by) = changing(&core, &caller?, peer, &subject, &id)?;
    core.apply(Command::Deregister { url, by })
        .await
        .map_err(|error| gone_is_unknown(error, &id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renews a TTL-checked instance: a passing check, which announces a pending instance and
/// brings a failing one back. `204 No Content`; 409 `not_ttl` for an instance checked
/// otherwise. Not audited: like probes, renewals report liveness and change no registration
/// (refused ones are logged at debug level).
#[tracing::instrument(level = "debug", skip_all, fields(instance = %id))]
async fn renew(
    State(core): State<Arc<Core>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Result<Caller, ApiError>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let renewed = async {
        let (url, by) = changing(&core, &caller?, peer, &Subject::default(), &id)?;
        let at = SystemTime::now();
        core.apply(Command::Renew { url, by, at })
            .await
            .map_err(|error| gone_is_unknown(error, &id))
    };
    match renewed.await {
        Ok(_) => {
            core.metrics.probes_passed.inc();
            Ok(StatusCode::NO_CONTENT)
        }
        Err(error) => {
            tracing::debug!(%peer, %error, "renewal refused");
            Err(error)
        }
    }
}

/// The query of `POST .../drain`.
#[derive(Debug, serde::Deserialize)]
struct DrainQuery {
    /// How long to wait for every dependent to acknowledge the `Removed` patch.
    wait: Option<String>,
}

/// The longest `wait` a drain honours.
const MAX_DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A drain's answer: the instance, and how many dependents still held it.
type Drained = ([(axum::http::HeaderName, String); 1], Json<InstanceView>);

/// The answer's header saying how many dependents still held the instance when it was sent.
const UNACKNOWLEDGED: axum::http::HeaderName = axum::http::HeaderName::from_static("x-rollcall-unacknowledged");

/// Takes the instance out of rotation: its dependents are sent `Removed` at once, while it
/// keeps being probed and listed as `draining`. With `?wait=10s` the answer waits (at most that,
/// at most a minute) until every dependent acknowledged the patch. The answer is the instance as
/// listed, and in `X-Rollcall-Unacknowledged` how many dependents still held it.
#[tracing::instrument(level = "debug", skip_all, fields(instance = %id))]
async fn drain(
    State(core): State<Arc<Core>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<DrainQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Drained, ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_query", message);
    let axum::extract::Query(query) = query.map_err(|e| invalid(e.body_text()))?;
    let wait = match query.wait.as_deref() {
        None => std::time::Duration::ZERO,
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| invalid(format!("wait {text:?} is not a duration (like 10s): {e}")))?
            .min(MAX_DRAIN_WAIT),
    };
    let Json(view) = set_draining(&core, peer, caller?, &subject, id, true).await?;
    let entry = rollcall_wire::PatchEntry {
        name: view.service.clone(),
        url: view.url.clone(),
    };
    let holders = core.until_let_go(&entry, tokio::time::Instant::now() + wait).await;
    Ok(([(UNACKNOWLEDGED, holders.to_string())], Json(view)))
}

/// Puts a drained instance back into rotation (as passing; a failing one shows it at its next
/// probe).
#[tracing::instrument(level = "debug", skip_all, fields(instance = %id))]
async fn undrain(
    State(core): State<Arc<Core>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    Path(id): Path<String>,
) -> Result<Json<InstanceView>, ApiError> {
    set_draining(&core, peer, caller?, &subject, id, false).await
}

async fn set_draining(
    core: &Arc<Core>,
    peer: SocketAddr,
    caller: Caller,
    subject: &Subject,
    id: String,
    drain: bool,
) -> Result<Json<InstanceView>, ApiError> {
    let (url, by) = changing(core, &caller, peer, subject, &id)?;
    let command = Command::Drain {
        url: url.clone(),
        by,
        drain,
    };
    let (_, view) = core
        .apply_and_read(command, |catalog, _| catalog.instance(&url).map(Instance::view))
        .await
        .map_err(|error| gone_is_unknown(error, &id))?;
    view.map(Json).ok_or(ApiError::UnknownInstanceId(id))
}

/// The ServiceURL of instance `id`, named as the request's subject, and who changes it, once
/// `caller` may change instances of its service (ownership is the catalog's to check).
fn changing(
    core: &Core,
    caller: &Caller,
    peer: SocketAddr,
    subject: &Subject,
    id: &str,
) -> Result<(String, crate::state::Actor), ApiError> {
    let registered = core
        .catalog()
        .instance_by_id(id)
        .map(|i| (i.registration.service_url.clone(), i.registration.service_name.clone()));
    let (url, service) = registered.ok_or_else(|| ApiError::UnknownInstanceId(id.to_owned()))?;
    subject.set(&url);
    caller.may(&Scope::Register(service))?;
    Ok((url, caller.actor(peer.ip())))
}

/// An instance deregistered by someone else in between is, by now, an unknown id.
fn gone_is_unknown(error: crate::core::ApplyError, id: &str) -> ApiError {
    match error {
        crate::core::ApplyError::Command(crate::state::CommandError::UnknownInstance(_)) => {
            ApiError::UnknownInstanceId(id.to_owned())
        }
        other => other.into(),
    }
}
