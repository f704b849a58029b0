//! Parse, don't trust: what every registration endpoint checks before the catalog sees a
//! request, and how a body that could not be read is answered.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use rollcall_http::SaysJson;
use rollcall_wire::{Check, CheckKind, Registration};

use super::MAX_BODY_BYTES;
use crate::core::Core;
use crate::error::ApiError;
use crate::outbound::CallError;

/// Most metadata labels one instance may carry.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Most services one registration may require.
pub const MAX_REQUIRED_SERVICES: usize = 64;
/// The longest service name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// The longest URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Checks what Go's decoder lets through: names present, URLs absolute http(s) with a host, the
/// heartbeat and update URLs on the ServiceURL's host (a registration speaks for one instance).
/// Duplicate required services are dropped (first occurrence kept).
pub(super) fn registration(mut registration: Registration) -> Result<Registration, ApiError> {
    if registration.service_name.trim().is_empty() {
        return Err(invalid("ServiceName is missing or empty"));
    }
    if registration.service_name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!("ServiceName is longer than {MAX_NAME_BYTES} bytes")));
    }
    let service = check_url("ServiceURL", &registration.service_url)?;
    for (field, value) in [
        ("ServiceUpdateURL", &registration.service_update_url),
        ("HeartbeatURL", &registration.heartbeat_url),
    ] {
        let url = check_url(field, value)?;
        if url.host() != service.host() {
            return Err(invalid(format!(
                "{field} must be on the ServiceURL's host ({}), not {}: a registration speaks for one instance",
                service.host_str().unwrap_or_default(),
                url.host_str().unwrap_or_default(),
            )));
        }
    }
    let mut seen = HashSet::new();
    registration.required_services.retain(|name| seen.insert(name.clone()));
    if registration.required_services.iter().any(|name| name.trim().is_empty()) {
        return Err(invalid("RequiredServices holds an empty name"));
    }
    if registration.required_services.len() > MAX_REQUIRED_SERVICES {
        return Err(invalid(format!(
            "RequiredServices names {} services; at most {MAX_REQUIRED_SERVICES} are allowed",
            registration.required_services.len()
        )));
    }
    if registration
        .required_services
        .iter()
        .any(|name| name.len() > MAX_NAME_BYTES)
    {
        return Err(invalid(format!(
            "RequiredServices holds a name longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(registration)
}

/// The shortest interval, timeout or TTL a check may have.
pub const MIN_CHECK_DURATION: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest interval, timeout or TTL a check may have.
pub const MAX_CHECK_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
/// The most tries a check may give.
pub const MAX_CHECK_TRIES: u32 = 100;

/// Checks a registration's `Check`: durations within [`MIN_CHECK_DURATION`] and
/// [`MAX_CHECK_DURATION`], tries from 1 to [`MAX_CHECK_TRIES`], a TTL exactly for TTL checks,
/// an interval and a timeout only for the checks the registry makes itself.
pub(super) fn check(check: &Check) -> Result<(), ApiError> {
    let durations = [
        ("Interval", check.interval),
        ("Timeout", check.timeout),
        ("TTL", check.ttl),
    ];
    for (field, value) in durations {
        if let Some(value) = value
            && !(MIN_CHECK_DURATION..=MAX_CHECK_DURATION).contains(&value)
        {
            return Err(invalid(format!(
                "Check.{field} is {}; it must be from 100ms to 1 day",
                humantime::format_duration(value)
            )));
        }
    }
    if let Some(tries) = check.tries
        && !(1..=MAX_CHECK_TRIES).contains(&tries)
    {
        return Err(invalid(format!(
            "Check.Tries is {tries}; it must be from 1 to {MAX_CHECK_TRIES}"
        )));
    }
    match check.kind {
        CheckKind::Ttl if check.ttl.is_none() => Err(invalid("a ttl Check needs a TTL (like \"10s\")")),
        CheckKind::Ttl if check.interval.is_some() || check.timeout.is_some() => Err(invalid(
            "Check.Interval and Check.Timeout apply to http and tcp checks: a ttl check is renewed by the instance",
        )),
        CheckKind::Http | CheckKind::Tcp if check.ttl.is_some() => Err(invalid(format!(
            "Check.TTL applies to ttl checks only, not {}",
            check.kind.as_str()
        ))),
        _ => Ok(()),
    }
}

/// Checks a `ConfigUpdateURL`: absolute http(s), on the ServiceURL's host, without
/// credentials, like the other URLs of a registration.
pub(super) fn config_url(registration: &Registration, url: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let service = check_url("ServiceURL", &registration.service_url)?;
    let parsed = check_url("ConfigUpdateURL", &url)?;
    if parsed.host() != service.host() {
        return Err(invalid(format!(
            "ConfigUpdateURL must be on the ServiceURL's host ({}), not {}",
            service.host_str().unwrap_or_default(),
            parsed.host_str().unwrap_or_default(),
        )));
    }
    Ok(Some(url))
}

/// Checks metadata labels: at most [`MAX_METADATA_ENTRIES`], no empty key.
pub(super) fn metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(format!(
            "Metadata has {} entries; at most {MAX_METADATA_ENTRIES} are allowed",
            metadata.len()
        )));
    }
    if metadata.keys().any(|key| key.trim().is_empty()) {
        return Err(invalid("Metadata has an empty key"));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_registration", message)
}

fn check_url(field: &str, value: &str) -> Result<url::Url, ApiError> {
    if value.is_empty() {
        return Err(invalid(format!("{field} is missing or empty")));
    }
    if value.len() > MAX_URL_BYTES {
        return Err(invalid(format!("{field} is longer than {MAX_URL_BYTES} bytes")));
    }
    let url = url::Url::parse(value).map_err(|e| invalid(format!("{field} {value:?} is not an absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "{field} {value:?} must use http or https, not {}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{field} {value:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Said without the URL: it holds a secret.
        return Err(invalid(format!(
            "{field} must not carry a user name or password: registered URLs are shown to every reader"
        )));
    }
    Ok(url)
}

/// Checks, under the registry's address policy, that the registration's heartbeat and update
/// URLs resolve to addresses the registry may call for a registration sent from `peer` (each
/// call checks again when it connects). The one check here that does I/O: it resolves names.
pub(super) async fn addresses(
    core: &Core,
    peer: IpAddr,
    registration: &Registration,
    config_url: Option<&String>,
) -> Result<(), ApiError> {
    let urls = [
        ("HeartbeatURL", Some(&registration.heartbeat_url)),
        ("ServiceUpdateURL", Some(&registration.service_update_url)),
        ("ConfigUpdateURL", config_url),
    ];
    for (field, value) in urls.into_iter().filter_map(|(field, value)| Some((field, value?))) {
        let url = url::Url::parse(value).map_err(|e| invalid(format!("{field} is not an absolute URL: {e}")))?;
        match core.outbound.check(Some(peer), &url).await {
            Ok(()) => {}
            Err(CallError::Refused(why)) => {
                core.metrics.refused_registrations.inc();
                return Err(ApiError::bad_request(
                    "address_refused",
                    format!("{field} {value} is refused: {why}"),
                ));
            }
            Err(_) => {
                core.metrics.refused_registrations.inc();
                return Err(ApiError::bad_request(
                    "address_refused",
                    format!("{field} {value} is refused: its host name does not resolve"),
                ));
            }
        }
    }
    Ok(())
}

/// How a body that could not be read is answered: 400 on the seed endpoints (the seed answers
/// every refused registration with 400), 413 on the `/v1` ones.
#[derive(Debug, Clone, Copy)]
pub(super) enum Dialect {
    /// The seed protocol's status codes.
    Seed,
    /// rollcall's own API.
    V1,
}

/// Checks that a JSON write says it is JSON: a page of another site can send `text/plain` or a
/// form without asking first, but not `application/json` (the browser asks the server first,
/// and rollcall answers no such question). 400 on the seed endpoints, 415 on the `/v1` ones.
pub(super) fn json_content_type(SaysJson(json): SaysJson, dialect: Dialect) -> Result<(), ApiError> {
    match (json, dialect) {
        (true, _) => Ok(()),
        (false, Dialect::Seed) => Err(ApiError::bad_request(
            "unsupported_media_type",
            "the Registration must be sent as Content-Type: application/json",
        )),
        (false, Dialect::V1) => Err(ApiError::UnsupportedMediaType),
    }
}

/// Maps a body that could not be buffered to an answer in `dialect`.
pub(super) fn body_error(rejection: &BytesRejection, dialect: Dialect) -> ApiError {
    match (rejection.status(), dialect) {
        (StatusCode::PAYLOAD_TOO_LARGE, Dialect::V1) => ApiError::PayloadTooLarge(MAX_BODY_BYTES),
        (StatusCode::PAYLOAD_TOO_LARGE, Dialect::Seed) => ApiError::bad_request(
            "body_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        ),
        _ => ApiError::bad_request("invalid_body", rejection.body_text()),
    }
}
