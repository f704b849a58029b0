//! What every service's `/metrics` shows besides its own figures, under one prefix scheme
//! (`rollcall_`, then the service's own word for its own: `rollcall_logs_...`, `rollcall_grades_...`):
//!
//! - `rollcall_build_info{service, version}` 1;
//! - the process: `rollcall_process_cpu_seconds_total`, `rollcall_process_resident_memory_bytes`,
//!   `rollcall_process_open_fds`, `rollcall_process_start_time_seconds` (read from `/proc` by
//!   `procfs` at each scrape);
//! - `rollcall_http_request_duration_seconds{route, status}`: every request answered, by the
//!   route it matched (its pattern, `/v1/services/{name}`: a bounded set) and the class of its
//!   status (`2xx` ... `5xx`), through the [`track`] middleware.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The labels of `rollcall_build_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    service: String,
    version: String,
}

/// The labels of a request's duration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: &'static str,
}

/// The request-duration histogram, shared with the [`track`] middleware.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Histogram>,
}

/// Registers the metrics every service shows in `root` (a registry prefixed `rollcall`), for
/// `service` (`registry`, `logs`, `grades`, `portal`) at `version`; returns what [`track`]
/// needs.
pub fn register(root: &mut Registry, service: &str, version: &str) -> HttpMetrics {
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            service: service.to_owned(),
            version: version.to_owned(),
        })
        .set(1);
    root.register("build_info", "The service and version running (always 1)", build);
    root.register_collector(Box::new(ProcessCollector));
    // 0.1 ms to about 6.5 s.
    let requests = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
        Histogram::new(exponential_buckets(0.0001, 3.0, 11))
    });
    root.register(
        "http_request_duration_seconds",
        "Time from a request's arrival to its answer's head, by route and status class",
        requests.clone(),
    );
    HttpMetrics { requests }
}

/// Middleware timing every request answered: add it with
/// `axum::middleware::from_fn_with_state(metrics, track)` through `Router::layer`, so that
/// the route it matched is known.
pub async fn track(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics
        .requests
        .get_or_create(&RequestLabels { route, status })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The process's CPU, memory, files and start, read at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    // Tick and byte counts far below 2^52 are exact in an f64; an fd count fits an i64.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_wrap)]
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A process whose /proc cannot be read (not Linux, or hidden) shows none of these.
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            let at = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                cpu.metric_type(),
            )?;
            cpu.encode(at)?;
            let rss = ConstGauge::new(stat.rss.saturating_mul(procfs::page_size()) as i64);
            let at = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory, in bytes",
                None,
                rss.metric_type(),
            )?;
            rss.encode(at)?;
            if let Ok(boot) = procfs::boot_time_secs() {
                let start = ConstGauge::new(boot as f64 + stat.starttime as f64 / ticks);
                let at = encoder.encode_descriptor(
                    "process_start_time_seconds",
                    "When the process started, in seconds since the Unix epoch",
                    None,
                    start.metric_type(),
                )?;
                start.encode(at)?;
            }
        }
        if let Ok(fds) = me.fd_count() {
            let open = ConstGauge::new(fds as i64);
            let at =
                encoder.encode_descriptor("process_open_fds", "Open file descriptors", None, open.metric_type())?;
            open.encode(at)?;
        }
        Ok(())
    }
}
