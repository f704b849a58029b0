//! `GET /v1/services` and `GET /v1/services/{name}`: what the registry holds, as JSON, and
//! blocking queries to watch it.
//!
//! `?passing` (or `?passing=true`) keeps only passing instances. A service with no instance
//! answers 200 with an empty list, so that a client can ask for a service before it exists.
//!
//! Every answer carries the index it reflects in `X-Rollcall-Index`: the service's own index for
//! one service (it moves only when that service's instances come, go or change state), the
//! catalog-wide index for the list. With `?index=N`, the answer comes at once if the index differs
//! from N, and otherwise waits until it changes or `wait` (default 5m, at most 10m) runs out.
//!
//! One service's answer is encoded once per version of the service and then served from the
//! registry's [`LookupCache`](crate::lookups::LookupCache).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rollcall_wire::ServicesView;
use serde::Deserialize;

use crate::core::Core;
use crate::error::ApiError;

/// The response header that carries the index an answer reflects.
pub const INDEX_HEADER: HeaderName = HeaderName::from_static("x-rollcall-index");
/// How long a blocking query waits when `wait` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// The longest `wait` honoured; longer ones are cut to it.
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// A JSON answer with the index it reflects in [`INDEX_HEADER`].
type Indexed<T> = ([(HeaderName, String); 1], Json<T>);

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/services", get(list_services))
        .route("/v1/services/{name}", get(get_service))
}

/// The query string both listing endpoints take, as sent.
#[derive(Debug, Deserialize)]
pub(super) struct RawQuery {
    passing: Option<String>,
    index: Option<String>,
    wait: Option<String>,
}

/// The query string, checked.
#[derive(Debug)]
struct ListQuery {
    passing_only: bool,
    /// The index the client holds, with how long to wait for a change.
    block: Option<(u64, Duration)>,
}

/// Checks a listing's query string (for the fuzz targets): whether it is accepted.
#[cfg(test)]
pub(super) fn check_query(query: Result<Query<RawQuery>, QueryRejection>) -> bool {
    ListQuery::parse(query).is_ok()
}

impl ListQuery {
    fn parse(query: Result<Query<RawQuery>, QueryRejection>) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::bad_request("invalid_query", message);
        let Query(raw) = query.map_err(|e| invalid(e.body_text()))?;
        let passing_only = match raw.passing.as_deref() {
            None | Some("false" | "0") => false,
            Some("" | "true" | "1") => true,
            Some(other) => return Err(invalid(format!("passing must be true or false, not {other:?}"))),
        };
        let wait = wait_of(raw.wait.as_deref())?;
        let block = match raw.index.as_deref() {
            None => None,
            Some(text) => {
                let index = text
                    .parse::<u64>()
                    .map_err(|_| invalid(format!("index must be a whole number, not {text:?}")))?;
                Some((index, wait))
            }
        };
        Ok(Self { passing_only, block })
    }
}

/// A blocking query's `wait`: [`DEFAULT_WAIT`] when absent, at most [`MAX_WAIT`].
pub(super) fn wait_of(text: Option<&str>) -> Result<Duration, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_WAIT);
    };
    humantime::parse_duration(text)
        .map(|wait| wait.min(MAX_WAIT))
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_query",
                format!("wait {text:?} is not a duration like 30s or 5m: {e}"),
            )
        })
}

/// Waits, if the query asks to, until the index read by `current` differs from the client's.
async fn wait_for_change(
    core: &Core,
    service: Option<&str>,
    block: Option<(u64, Duration)>,
    current: impl Fn() -> u64,
) {
    let Some((known, wait)) = block else {
        return;
    };
    let mut changes = core.watch(service);
    if current() != known {
        return;
    }
    let _held = Held::count(&core.metrics.blocking_queries);
    tokio::select! {
        _ = changes.wait_for(|_| current() != known) => {}
        () = tokio::time::sleep(wait) => {}
        () = core.shutdown.cancelled() => {}
    }
}

/// Counts a held query in `rollcall_blocking_queries` for as long as it is held, however it
/// ends (a client that goes away drops the handler mid-wait).
pub(super) struct Held<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Held<'a> {
    pub(super) fn count(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[tracing::instrument(level = "debug", skip_all)]
async fn list_services(
    State(core): State<Arc<Core>>,
    query: Result<Query<RawQuery>, QueryRejection>,
) -> Result<Indexed<ServicesView>, ApiError> {
    let query = ListQuery::parse(query)?;
    wait_for_change(&core, None, query.block, || core.catalog().last_index()).await;
    let catalog = core.catalog();
    let index = catalog.last_index().to_string();
    let view = ServicesView {
        services: catalog.services(query.passing_only),
    };
    Ok(([(INDEX_HEADER, index)], Json(view)))
}

#[tracing::instrument(level = "debug", skip_all, fields(service = %name))]
async fn get_service(
    State(core): State<Arc<Core>>,
    Path(name): Path<String>,
    query: Result<Query<RawQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = ListQuery::parse(query)?;
    wait_for_change(&core, Some(&name), query.block, || core.catalog().index_of(&name)).await;
    let passing_only = query.passing_only;
    let catalog = core.catalog();
    let index = catalog.index_of(&name);
    let version = catalog.version_of(&name);
    let cached = version.and_then(|version| core.lookups.get(&name, passing_only, version));
    let body = cached.unwrap_or_else(|| {
        let listing = catalog.service(&name, passing_only);
        let body = Bytes::from(serde_json::to_vec(&listing).expect("a listing of strings always encodes"));
        if let Some(version) = version {
            core.lookups.insert(&name, passing_only, version, body.clone());
        }
        body
    });
    drop(catalog);
    let headers = [
        (INDEX_HEADER, HeaderValue::from(index)),
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
    ];
    Ok((headers, body).into_response())
}
