//! The seed protocol's `/services` endpoint, exactly as Go clients use it.
//!
//! `POST` registers: the registry first delivers the required-services patch to the caller's
//! ServiceUpdateURL, then stores the registration durably, and answers 200 only once both are
//! done; if the delivery fails the answer is 400 and the registration leaves no trace. `DELETE`
//! with the ServiceURL as a text body deregisters (500 for an unknown URL, as the seed does).
//! Other methods answer 405.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::post;
use rollcall_http::SaysJson;
use rollcall_wire::{Patch, Registration, Scope};

use super::audited::Subject;
use super::validate::{self, Dialect};
use crate::auth::Caller;
use crate::core::{ApplyError, Core};
use crate::error::ApiError;
use crate::outbound::patch_body;
use crate::state::{Command, CommandError, new_instance_id};

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new().route("/services", post(register).delete(deregister))
}

#[tracing::instrument(level = "debug", skip_all)]
async fn register(
    State(core): State<Arc<Core>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    json: SaysJson,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    validate::json_content_type(json, Dialect::Seed)?;
    let body = body.map_err(|r| validate::body_error(&r, Dialect::Seed))?;
    let registration: Registration = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not a valid Registration: {e}")))?;
    subject.set(&registration.service_url);
    let caller = caller?;
    let registration = validate::registration(registration)?;
    caller.may(&Scope::Register(registration.service_name.clone()))?;
    // Refused before the callback, so that a full registry, or another's URL, calls nobody
    // back; the seed answers every refused registration with 400.
    let by = caller.actor(peer.ip());
    core.catalog()
        .admits(&registration, &by)
        .map_err(|e| seed_refusal(&e))?;
    validate::addresses(&core, peer.ip(), &registration, None).await?;

    let held = core.catalog().providers_of(&registration.required_services);
    let patch = Patch {
        added: held.iter().cloned().collect(),
        removed: Vec::new(),
    };
    let update_url = &registration.service_update_url;
    let parsed = url::Url::parse(update_url)
        .map_err(|e| ApiError::bad_request("invalid_registration", format!("ServiceUpdateURL: {e}")))?;
    let client = core.outbound.client(Some(peer.ip()));
    let callback = client.post_json(&parsed, patch_body(&patch), core.config.notify_timeout);
    let delivered = tokio::select! {
        () = core.shutdown.cancelled() => return Err(ApiError::ShuttingDown),
        delivered = callback => delivered,
    };
    delivered.map_err(|error| {
        core.metrics.refused_registrations.inc();
        tracing::info!(%update_url, %error, "registration refused: its callback failed");
        ApiError::bad_request(
            "callback_failed",
            format!(
                "the required-services patch could not be delivered to {update_url}: {}",
                error.public()
            ),
        )
    })?;

    let command = Command::Register {
        registration,
        metadata: BTreeMap::new(),
        check: rollcall_wire::Check::default(),
        config_url: None,
        by,
        new_instance_id: new_instance_id(),
        delivered: held,
        // Its update URL just answered the callback.
        proven: true,
        at: SystemTime::now(),
    };
    match core.apply(command).await {
        Ok(_) => {}
        Err(ApplyError::Command(refused)) => return Err(seed_refusal(&refused)),
        Err(error) => return Err(error.into()),
    }
    core.metrics.seed_registrations.inc();
    Ok(StatusCode::OK)
}

#[tracing::instrument(level = "debug", skip_all)]
async fn deregister(
    State(core): State<Arc<Core>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Result<Caller, ApiError>,
    subject: Subject,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(|r| validate::body_error(&r, Dialect::Seed))?;
    let url = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_body", "the body must be the ServiceURL as UTF-8 text"))?
        .trim();
    subject.set(url);
    let caller = caller?;
    let service = core
        .catalog()
        .instance(url)
        .map(|i| i.registration.service_name.clone());
    let service = service.ok_or_else(|| ApiError::UnknownInstance(url.to_owned()))?;
    caller.may(&Scope::Register(service))?;
    let by = caller.actor(peer.ip());
    core.apply(Command::Deregister {
        url: url.to_owned(),
        by,
    })
    .await?;
    Ok(StatusCode::OK)
}

/// How the seed answers a registration the catalog refuses: 400, whatever the reason.
fn seed_refusal(error: &CommandError) -> ApiError {
    let code = match error {
        CommandError::NotOwner(_) => "not_owner",
        _ => "too_many_instances",
    };
    ApiError::bad_request(code, error.to_string())
}
