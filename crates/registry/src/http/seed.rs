//! The seed protocol's `/services` endpoint, exactly as Go clients use it.
//!
//! `POST` registers: the registry first delivers the required-services patch to the caller's
//! ServiceUpdateURL and answers 200 only once that delivery succeeded; if it fails the answer is
//! 400 and the registration leaves no trace. `DELETE` with the ServiceURL as a text body
//! deregisters (500 for an unknown URL, as the seed does). Other methods answer 405.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::routing::post;
use rollcall_wire::{Patch, Registration};

use crate::core::Core;
use crate::error::ApiError;
use crate::outbound::{patch_body, post_json};
use crate::state::{Command, Event};

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new().route("/services", post(register).delete(deregister))
}

#[tracing::instrument(skip_all)]
async fn register(State(core): State<Arc<Core>>, body: Result<Bytes, BytesRejection>) -> Result<StatusCode, ApiError> {
    let body = body.map_err(|r| body_error(&r))?;
    let registration: Registration = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not a valid Registration: {e}")))?;
    let registration = validate(registration)?;

    let held = core.catalog().providers_of(&registration.required_services);
    let patch = Patch {
        added: held.iter().cloned().collect(),
        removed: Vec::new(),
    };
    let callback = post_json(
        &core.http,
        &registration.service_update_url,
        patch_body(&patch),
        core.config.notify_timeout,
    );
    let delivered = tokio::select! {
        () = core.shutdown.cancelled() => return Err(ApiError::ShuttingDown),
        delivered = callback => delivered,
    };
    delivered.map_err(|e| {
        ApiError::bad_request(
            "callback_failed",
            format!(
                "the required-services patch could not be delivered to {}: {e}",
                registration.service_update_url
            ),
        )
    })?;

    let events = core.apply(Command::Register {
        registration: registration.clone(),
        at: SystemTime::now(),
    })?;
    if let Some(Event::Registered { id, .. }) = events.first() {
        core.notifier.subscribe(&core, &registration, *id, held);
    }
    Ok(StatusCode::OK)
}

#[tracing::instrument(skip_all)]
async fn deregister(
    State(core): State<Arc<Core>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(|r| body_error(&r))?;
    let url = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_body", "the body must be the ServiceURL as UTF-8 text"))?
        .trim();
    core.apply(Command::Deregister { url: url.to_owned() })?;
    Ok(StatusCode::OK)
}

fn body_error(rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::bad_request(
            "body_too_large",
            format!("the body is larger than {} bytes", super::MAX_BODY_BYTES),
        )
    } else {
        ApiError::bad_request("invalid_body", rejection.body_text())
    }
}

/// Checks what Go's decoder lets through: names present, URLs absolute http(s) with a host.
/// Duplicate required services are dropped (first occurrence kept).
fn validate(mut registration: Registration) -> Result<Registration, ApiError> {
    if registration.service_name.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_registration",
            "ServiceName is missing or empty",
        ));
    }
    for (field, value) in [
        ("ServiceURL", &registration.service_url),
        ("ServiceUpdateURL", &registration.service_update_url),
        ("HeartbeatURL", &registration.heartbeat_url),
    ] {
        check_url(field, value)?;
    }
    let mut seen = std::collections::HashSet::new();
    registration.required_services.retain(|name| seen.insert(name.clone()));
    if registration.required_services.iter().any(|name| name.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "invalid_registration",
            "RequiredServices holds an empty name",
        ));
    }
    Ok(registration)
}

fn check_url(field: &str, value: &str) -> Result<(), ApiError> {
    let invalid = |why: String| ApiError::bad_request("invalid_registration", format!("{field} {why}"));
    if value.is_empty() {
        return Err(invalid("is missing or empty".to_owned()));
    }
    let url = url::Url::parse(value).map_err(|e| invalid(format!("{value:?} is not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "{value:?} must use http or https, not {}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{value:?} has no host")));
    }
    Ok(())
}
