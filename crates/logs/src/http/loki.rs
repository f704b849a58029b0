//! The subset of Loki's query API that Grafana's Loki data source and `logcli` read with:
//! `GET /loki/api/v1/query_range` and `query` (log queries in the LogQL of `crate::logql`),
//! `labels`, `label/{name}/values`, `series`, and the live `tail` over a WebSocket. A result
//! stream's labels are `service` (and `service_name`, as Loki names it), `level`, and the
//! record's fields with text values (see [`Shown::stream`]).
//!
//! Times (`start`, `end`, `time`) are read as everywhere (`crate::timestamp`: RFC 3339 or an
//! epoch count, Loki's nanoseconds included); `since` is a duration before `end`. The label
//! and series listings look at the newest [`LABEL_SCAN`] records of the range.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use rollcall_wire::Level;
use serde::Deserialize;
use serde_json::{Value, json};

use super::records::{parse_time, run_query};
use super::{AppState, Reader};
use crate::error::ApiError;
use crate::query::{Filter, Order};
use crate::record::unix_nanos;

/// Entries a query answers unless told otherwise (Grafana sends its own).
const DEFAULT_LIMIT: usize = 100;
/// The most entries one query answers.
const MAX_LIMIT: usize = 5_000;
/// How far back a query looks without `start` or `since`.
const DEFAULT_RANGE: Duration = Duration::from_secs(3600);
/// The records the label listings look at.
const LABEL_SCAN: usize = 10_000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/loki/api/v1/query_range", get(query_range))
        .route("/loki/api/v1/query", get(query_instant))
        .route("/loki/api/v1/tail", get(tail))
        .route("/loki/api/v1/labels", get(labels))
        .route("/loki/api/v1/series", get(series))
        .route("/loki/api/v1/label/{name}/values", get(label_values))
}

#[derive(Debug, Deserialize)]
struct RangeParams {
    query: Option<String>,
    start: Option<String>,
    end: Option<String>,
    /// For `query`: the end of the range.
    time: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    direction: Option<String>,
    /// For metric queries: the distance between points (`15s`, or seconds).
    step: Option<String>,
}

impl RangeParams {
    /// `[start, end)` in Unix nanoseconds.
    fn range(&self) -> Result<(i64, i64), ApiError> {
        let now = unix_nanos(SystemTime::now()).map_err(|e| ApiError::bad_request("invalid_time", e))?;
        let end = match self.end.as_deref().or(self.time.as_deref()) {
            Some(text) => parse_time("end", text)?,
            None => now,
        };
        let start = match (&self.start, &self.since) {
            (Some(text), _) => parse_time("start", text)?,
            (None, Some(since)) => {
                let back = humantime::parse_duration(since)
                    .map_err(|e| ApiError::bad_request("invalid_time", format!("since={since:?}: {e}")))?;
                end.saturating_sub(i64::try_from(back.as_nanos()).unwrap_or(i64::MAX))
            }
            (None, None) => end.saturating_sub(i64::try_from(DEFAULT_RANGE.as_nanos()).unwrap_or(i64::MAX)),
        };
        Ok((start, end))
    }
}

fn params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// `query_range`: a log query's streams, or a metric query's series at each step.
async fn query_range(
    State(state): State<AppState>,
    _reader: Reader,
    query: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    answer(&state, &params(query)?, false).await
}

/// `query`: a metric query's series at `time`; a log query looks back over the default range
/// from `time` (Loki refuses log queries here; `logcli` and some panels send them).
async fn query_instant(
    State(state): State<AppState>,
    _reader: Reader,
    query: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    answer(&state, &params(query)?, true).await
}

async fn answer(state: &AppState, params: &RangeParams, instant: bool) -> Result<Json<Value>, ApiError> {
    let text = params
        .query
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("invalid_query", "query= is required: a LogQL query"))?;
    match crate::logql::parse_expr(text).map_err(|why| ApiError::bad_request("invalid_logql", why))? {
        crate::logql::Expr::Log(query) => streams(state, params, query).await,
        crate::logql::Expr::Metric(metric) => series_over_time(state, params, &metric, instant).await,
    }
}

/// The records a metric query may count: past these it is refused, so that its answer is
/// bounded (narrow the selector or the range).
const MAX_METRIC_RECORDS: usize = 100_000;
/// The most points of one series.
const MAX_STEPS: i64 = 11_000;

/// A metric query's series: at every step from `start` to `end` (`instant`: at `end` only).
async fn series_over_time(
    state: &AppState,
    params: &RangeParams,
    metric: &crate::logql::Metric,
    instant: bool,
) -> Result<Json<Value>, ApiError> {
    let (start, end) = params.range()?;
    let start = if instant { end } else { start };
    let step = match params.step.as_deref() {
        Some(text) => match text.parse::<f64>() {
            // Whole nanoseconds of a step in seconds; checked below.
            #[allow(clippy::cast_possible_truncation)]
            Ok(seconds) if seconds > 0.0 => (seconds * 1e9) as i64,
            _ => i64::try_from(
                humantime::parse_duration(text)
                    .map_err(|e| ApiError::bad_request("invalid_query", format!("step={text:?}: {e}")))?
                    .as_nanos(),
            )
            .unwrap_or(i64::MAX),
        },
        None => ((end - start) / 250).max(1_000_000_000),
    };
    if step <= 0 || (end - start) / step > MAX_STEPS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("at most {MAX_STEPS} points: a longer step or a shorter range"),
        ));
    }
    let range = i64::try_from(metric.range.as_nanos()).unwrap_or(i64::MAX);
    let filter = Filter::of_logql(metric.query.clone(), Some(start.saturating_sub(range)), Some(end + 1));
    let page = run_query(&state.store, filter, Order::OldestFirst, None, MAX_METRIC_RECORDS).await?;
    if page.next_cursor.is_some() {
        return Err(ApiError::bad_request(
            "too_many_records",
            format!("the query counts more than {MAX_METRIC_RECORDS} records: narrow its selector or range"),
        ));
    }
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<i64>> = BTreeMap::new();
    for (_, record) in page.records {
        if let Ok(shown) = serde_json::from_slice::<Shown>(&record) {
            let at = crate::timestamp::parse(&shown.time).unwrap_or_default();
            series.entry(metric.series_of(shown.stream())).or_default().push(at);
        }
    }
    #[allow(clippy::cast_precision_loss)] // seconds since 1970 fit an f64's 52 bits
    let seconds = |t: i64| t as f64 / 1e9;
    let result: Vec<Value> = series
        .into_iter()
        .filter_map(|(labels, mut times)| {
            times.sort_unstable();
            let points = metric.points(&times, (0..).map(|n| start + n * step).take_while(|t| *t <= end));
            let mut points = points.into_iter().map(|(t, v)| json!([seconds(t), v.to_string()]));
            if instant {
                let value = points.next()?;
                Some(json!({"metric": labels, "value": value}))
            } else {
                let values: Vec<Value> = points.collect();
                (!values.is_empty()).then(|| json!({"metric": labels, "values": values}))
            }
        })
        .collect();
    let kind = if instant { "vector" } else { "matrix" };
    Ok(Json(
        json!({"status": "success", "data": {"resultType": kind, "result": result, "stats": {}}}),
    ))
}

/// A log query's entries, grouped into streams, in the asked direction.
async fn streams(state: &AppState, params: &RangeParams, query: crate::logql::Query) -> Result<Json<Value>, ApiError> {
    let (start, end) = params.range()?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let order = match params.direction.as_deref() {
        None | Some("backward" | "BACKWARD") => Order::NewestFirst,
        Some("forward" | "FORWARD") => Order::OldestFirst,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("direction={other:?}: forward or backward"),
            ));
        }
    };
    let filter = Filter::of_logql(query, Some(start), Some(end));
    let page = run_query(&state.store, filter, order, None, limit).await?;
    let mut streams: BTreeMap<BTreeMap<String, String>, Vec<[String; 2]>> = BTreeMap::new();
    for (_, record) in page.records {
        let Ok(shown) = serde_json::from_slice::<Shown>(&record) else {
            continue;
        };
        let at = crate::timestamp::parse(&shown.time).unwrap_or_default();
        streams
            .entry(shown.stream())
            .or_default()
            .push([at.to_string(), shown.message]);
    }
    let result: Vec<Value> = streams
        .into_iter()
        .map(|(stream, values)| json!({"stream": stream, "values": values}))
        .collect();
    Ok(Json(json!({
        "status": "success",
        "data": {"resultType": "streams", "result": result, "stats": {}},
    })))
}

#[derive(Debug, Deserialize)]
struct TailParams {
    query: Option<String>,
    start: Option<String>,
    limit: Option<usize>,
    /// Loki's batching delay: answered at once here, so it is read and not used.
    #[allow(dead_code)]
    delay_for: Option<String>,
}

/// Loki's live tail: a WebSocket carrying, as JSON text messages, the last `limit` matches
/// since `start` (default: the last hour), then each new match as it is stored, each message
/// `{"streams": [...], "dropped_entries": [...]}` like Loki's. Records a slow client missed
/// come as one `dropped_entries` item whose `count` says how many (Loki lists them one by one;
/// the log service keeps no copy of what it dropped).
async fn tail(
    State(state): State<AppState>,
    _reader: Reader,
    query: Result<Query<TailParams>, QueryRejection>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Result<axum::response::Response, ApiError> {
    let params = params(query)?;
    let text = params
        .query
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("invalid_query", "query= is required: a LogQL log query"))?;
    let query = crate::logql::parse(text).map_err(|why| ApiError::bad_request("invalid_logql", why))?;
    let start = RangeParams {
        query: None,
        start: params.start,
        end: None,
        time: None,
        since: None,
        limit: None,
        direction: None,
        step: None,
    }
    .range()?
    .0;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let tail = super::tail::Tail::open(&state, Filter::of_logql(query, Some(start), None), None, limit).await?;
    Ok(upgrade.on_upgrade(move |socket| follow(socket, tail)))
}

/// Sends what `tail` follows over `socket` until either ends.
async fn follow(mut socket: axum::extract::ws::WebSocket, mut tail: super::tail::Tail) {
    use axum::extract::ws::Message;
    loop {
        let next = tokio::select! {
            next = tail.next() => next,
            // A client's close (or anything it sends: a tail reads nothing) ends it.
            received = socket.recv() => match received {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return,
            },
        };
        let message = match next {
            Some(super::tail::Followed::Record(_, record)) => {
                let Ok(shown) = serde_json::from_slice::<Shown>(&record) else {
                    continue;
                };
                let at = crate::timestamp::parse(&shown.time).unwrap_or_default();
                json!({
                    "streams": [{
                        "stream": shown.stream(),
                        "values": [[at.to_string(), shown.message]],
                    }],
                    "dropped_entries": [],
                })
            }
            Some(super::tail::Followed::Dropped(count)) => json!({
                "streams": [],
                "dropped_entries": [{"labels": {}, "timestamp": "0", "count": count}],
            }),
            None => return,
        };
        if socket.send(Message::Text(message.to_string().into())).await.is_err() {
            return;
        }
    }
}

impl Shown {
    /// The labels of the record's stream: `service` (also as `service_name`), `level`, and each
    /// field with a text value (a shipper's labels and structured metadata, OTLP's string
    /// attributes: the store keeps them alike).
    fn stream(&self) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = self
            .fields
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
            .collect();
        labels.insert("service".to_owned(), self.service.clone());
        labels.insert("service_name".to_owned(), self.service.clone());
        labels.insert("level".to_owned(), self.level.to_string());
        labels
    }
}

/// What a listed record shows that a stream needs.
#[derive(Deserialize)]
struct Shown {
    time: String,
    service: String,
    level: Level,
    message: String,
    #[serde(default)]
    fields: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct LabelParams {
    start: Option<String>,
    end: Option<String>,
    since: Option<String>,
}

/// The newest records of the range, for the label listings.
async fn recent(state: &AppState, params: LabelParams) -> Result<Vec<Shown>, ApiError> {
    let range = RangeParams {
        query: None,
        start: params.start,
        end: params.end,
        time: None,
        since: params.since,
        limit: None,
        direction: None,
        step: None,
    };
    let (start, end) = range.range()?;
    let filter = Filter {
        since: Some(start),
        until: Some(end),
        ..Filter::default()
    };
    let page = run_query(&state.store, filter, Order::NewestFirst, None, LABEL_SCAN).await?;
    Ok(page
        .records
        .iter()
        .filter_map(|(_, record)| serde_json::from_slice(record).ok())
        .collect())
}

/// Every label name a query can select on: `service`, `service_name`, `level`, and the fields
/// the range's records carry.
async fn labels(
    State(state): State<AppState>,
    _reader: Reader,
    query: Result<Query<LabelParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut names: BTreeSet<String> = ["level", "service", "service_name"].map(str::to_owned).into();
    for shown in recent(&state, params(query)?).await? {
        names.extend(shown.fields.into_iter().map(|(name, _)| name));
    }
    Ok(Json(json!({"status": "success", "data": names})))
}

/// The streams (service and level) of the range's records that match any of the `match[]`
/// selectors (every stream without one).
async fn series(
    State(state): State<AppState>,
    _reader: Reader,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    // `match[]` repeats: read the pairs as they come.
    let pairs: Vec<(String, String)> = reqwest::Url::parse(&format!("http://query/?{}", raw.unwrap_or_default()))
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?
        .query_pairs()
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let value = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let selectors = pairs
        .iter()
        .filter(|(name, _)| name == "match[]" || name == "match")
        .map(|(_, text)| crate::logql::parse(text).map_err(|why| ApiError::bad_request("invalid_logql", why)))
        .collect::<Result<Vec<_>, _>>()?;
    let range = LabelParams {
        start: value("start"),
        end: value("end"),
        since: value("since"),
    };
    let mut streams: BTreeSet<BTreeMap<String, String>> = BTreeSet::new();
    for shown in recent(&state, range).await? {
        let record = crate::logql::Record {
            service: &shown.service,
            level: shown.level,
            message: &shown.message,
            fields: &shown.fields,
        };
        if selectors.is_empty() || selectors.iter().any(|query| query.matches(&record)) {
            streams.insert(shown.stream());
        }
    }
    Ok(Json(json!({"status": "success", "data": streams})))
}

/// The values label `name` takes in the range's records.
async fn label_values(
    State(state): State<AppState>,
    _reader: Reader,
    Path(name): Path<String>,
    query: Result<Query<LabelParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut values = BTreeSet::new();
    for shown in recent(&state, params(query)?).await? {
        let value = match name.as_str() {
            "service" | "service_name" => Some(shown.service),
            "level" | "detected_level" => Some(shown.level.to_string()),
            field => shown.fields.get(field).map(|v| match v {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            }),
        };
        values.extend(value);
    }
    Ok(Json(json!({"status": "success", "data": values})))
}
