//! `GET /v1/records` (a page of matching records) and `GET /v1/records/tail` (server-sent events:
//! the last N matches, then every new match as it is stored).

use std::convert::Infallible;
use std::time::SystemTime;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use rollcall_wire::Level;
use serde::Deserialize;

use super::tail::{Followed, Tail};
use super::{AppState, Reader};
use crate::error::ApiError;
use crate::query::{self, Filter, Order, Page};
use crate::record::unix_nanos;
use crate::store::Store;

/// Records a page holds unless told otherwise.
const DEFAULT_LIMIT: usize = 100;
/// The most records one page may hold.
const MAX_LIMIT: usize = 10_000;
/// Records a tail starts with unless told otherwise.
const DEFAULT_LAST: usize = 10;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/records", get(records))
        .route("/v1/records/tail", get(tail))
}

/// The query string of both endpoints.
#[derive(Debug, Deserialize)]
pub(crate) struct Params {
    /// One service, or several separated by commas.
    service: Option<String>,
    /// The minimum level.
    level: Option<String>,
    /// RFC 3339, Unix nanoseconds, or a duration ago (`15m`).
    since: Option<String>,
    until: Option<String>,
    contains: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    /// `newest` (default) or `oldest`.
    order: Option<String>,
    /// For tails: how many past matches to start with.
    last: Option<usize>,
    /// A LogQL log query (`crate::logql`), instead of `service`, `level` and `contains`.
    query: Option<String>,
}

impl Params {
    fn filter(&self) -> Result<Filter, ApiError> {
        if let Some(text) = &self.query {
            if self.service.is_some() || self.level.is_some() || self.contains.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "query= is LogQL: put the service, level and text in it, not beside it",
                ));
            }
            let query = crate::logql::parse(text).map_err(|why| ApiError::bad_request("invalid_logql", why))?;
            let since = self.since.as_deref().map(|t| parse_time("since", t)).transpose()?;
            let until = self.until.as_deref().map(|t| parse_time("until", t)).transpose()?;
            return Ok(Filter::of_logql(query, since, until));
        }
        let services = self
            .service
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let min_level = self
            .level
            .as_deref()
            .map(str::parse::<Level>)
            .transpose()
            .map_err(|e| ApiError::bad_request("invalid_level", e.to_string()))?;
        Ok(Filter {
            services,
            min_level,
            since: self.since.as_deref().map(|t| parse_time("since", t)).transpose()?,
            until: self.until.as_deref().map(|t| parse_time("until", t)).transpose()?,
            contains: self.contains.clone().filter(|c| !c.is_empty()),
            logql: None,
        })
    }
}

/// A `since`/`until` bound: a timestamp as `crate::timestamp` reads it, or a duration ago
/// (`15m`).
pub(super) fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    if let Ok(nanos) = crate::timestamp::parse(text) {
        return Ok(nanos);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        ApiError::bad_request(
            "invalid_time",
            format!(
                "{name}={text:?} is not a time: send {}, or a duration ago such as 15m",
                crate::timestamp::ACCEPTED
            ),
        )
    })?;
    let time = SystemTime::now().checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH);
    unix_nanos(time).map_err(|e| ApiError::bad_request("invalid_time", format!("{name}: {e}")))
}

/// Checks a query string as both endpoints do (for the fuzz targets): whether it is accepted.
#[cfg(test)]
pub(crate) fn check_query(query: Result<Query<Params>, QueryRejection>) -> bool {
    params(query).and_then(|params| params.filter()).is_ok()
}

fn params(query: Result<Query<Params>, QueryRejection>) -> Result<Params, ApiError> {
    query
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

pub(super) async fn run_query(
    store: &Store,
    filter: Filter,
    order: Order,
    cursor: Option<u64>,
    limit: usize,
) -> Result<Page, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || query::run(&store, &filter, order, cursor, limit))
        .await
        .map_err(|e| ApiError::internal("running a query", &e))?
        .map_err(|e| ApiError::read_failed(&e))
}

/// A page of matching records, newest first by default.
#[tracing::instrument(level = "debug", skip_all)]
async fn records(
    State(state): State<AppState>,
    _reader: Reader,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query)?;
    let filter = params.filter()?;
    let order = match params.order.as_deref() {
        None | Some("newest" | "desc") => Order::NewestFirst,
        Some("oldest" | "asc") => Order::OldestFirst,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_order",
                format!("order={other:?}: use newest or oldest"),
            ));
        }
    };
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit may be at most {MAX_LIMIT}"),
        ));
    }
    let cursor = params
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| ApiError::bad_request("invalid_cursor", "cursor must be the next_cursor of a page"))
        })
        .transpose()?;
    let page = run_query(&state.store, filter, order, cursor, limit).await?;

    let mut body = Vec::with_capacity(page.records.iter().map(|(_, r)| r.len() + 1).sum::<usize>() + 64);
    body.extend_from_slice(b"{\"records\":[");
    for (i, (_, record)) in page.records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record);
    }
    body.push(b']');
    if let Some(next) = page.next_cursor {
        body.extend_from_slice(format!(",\"next_cursor\":\"{next}\"").as_bytes());
    }
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Follows matching records: the last `last` matches (or, with `Last-Event-ID`, every match
/// after that id), then each new one. A client too slow to keep up gets a `dropped` event with
/// the number of records (of any service) it missed, instead of slowing ingest down.
#[tracing::instrument(level = "debug", skip_all)]
async fn tail(
    State(state): State<AppState>,
    _reader: Reader,
    headers: HeaderMap,
    query: Result<Query<Params>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params = params(query)?;
    let filter = params.filter()?;
    let resume_after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let last = params.last.unwrap_or(DEFAULT_LAST).min(MAX_LIMIT);
    let tail = Tail::open(&state, filter, resume_after, last).await?;
    let events = futures_util::stream::unfold(tail, |mut tail| async move {
        let event = match tail.next().await? {
            Followed::Record(id, record) => Event::default()
                .event("record")
                .id(id.to_string())
                .data(String::from_utf8_lossy(&record)),
            Followed::Dropped(count) => Event::default().event("dropped").data(format!("{{\"count\":{count}}}")),
        };
        Some((Ok(event), tail))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
