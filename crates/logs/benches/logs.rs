//! Log service benchmark: durable ingest, the seed one-line path, and queries over a large store,
//! each beside a baseline measured in the same run.
//!
//! Run with `cargo bench -p rollcall-logs --bench logs` (sections `ingest`, `formats`, `seed`, `query`:
//! `... -- query`). The log service runs in this process on 127.0.0.1 with its data in a
//! temporary directory on the project's disk; so do the load generators.
//! - ingest: 8 clients posting NDJSON batches of 1,000 records of about 200 bytes, each answered
//!   once durable, in five 2 s rounds alternating with the baseline: the same batch bytes
//!   appended to a file and fsynced, one batch at a time, by a bare loop;
//! - formats: the same batches as OTLP and Loki, each in JSON and in protobuf (Loki's with
//!   snappy), 8 clients, five 2 s rounds per format in turn: protobuf beside JSON;
//! - seed: wrk posting one `/log` line per request with 8, 128 and 512 connections, median of
//!   three 5 s runs each, interleaved run by run with the Go original (`benches/go_original/main.go`,
//!   built with Go; `scripts/bench` installs wrk and Go) under the same load; at 512 connections also with an
//!   axum handler in this process answering 200 without storing anything, and the same handler
//!   holding each request for one commit cycle as measured, which isolates what waiting for a
//!   commit costs from what storing costs;
//! - query: fills the store to `ROLLCALL_BENCH_RECORDS` records (10 million by default), then the
//!   newest 100 matches by service and level (p50/p99 of 200 queries) beside the newest record
//!   with no filter, the same through Loki's `query_range` with LogQL (selector and line
//!   filter), and a substring scan of every segment beside a bare loop reading the same
//!   files in 1 MiB preads into one buffer and searching them with the same `memmem`.
//!
//! Every target is printed with its verdict, computed from the run's own figure. One file for the
//! three sections: cargo runs one binary per bench target, and they share the service harness.

// A benchmark is a report: it prints, and turns counts into f64 for rates.
#![allow(
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use rollcall_logs::LogsConfig;
use rollcall_testkit::bench::verdict;
use rollcall_testkit::wrk::{self, Load};
use rollcall_testkit::{ServerProcess, TestRegistry, median_p99};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The allocator the `rollcall` binary runs with, so that the in-process service costs the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SERVICES: usize = 10;

/// One NDJSON batch of 1,000 records of about 200 bytes: 10 services, and independently of the
/// service 1 in 20 records at warn and 1 in 1,000 at error.
fn batch(seed: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(220_000);
    for i in 0..1000 {
        let n = seed * 1000 + i;
        // Levels follow n / 10, so that they spread over all services.
        let level = if (n / 10) % 1000 == 7 {
            "error"
        } else if (n / 10) % 20 == 3 {
            "warn"
        } else {
            "info"
        };
        writeln!(
            body,
            r#"{{"service":"svc-{}","level":"{level}","message":"request {n} served for student {} in {} ms with grade book revision {}","fields":{{"route":"/students","status":200}}}}"#,
            n % SERVICES,
            n % 9973,
            n % 97,
            n % 100_003
        )
        .expect("write to a Vec");
    }
    body
}

struct Running {
    url: String,
    data_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    service: rollcall_logs::LogService,
    _registry: TestRegistry,
}

async fn start_logs() -> Running {
    let registry = TestRegistry::spawn().await;
    let data_dir = tempfile::tempdir_in(std::env::current_dir().expect("cwd")).expect("data dir");
    let mut config = LogsConfig::new("127.0.0.1:0".parse().expect("address"), data_dir.path().join("logs"));
    config.service.registry.clone_from(&registry.url);
    config.retention_size = ByteSize::gib(64);
    let shutdown = CancellationToken::new();
    let service = rollcall_logs::start(config, shutdown.clone(), None)
        .await
        .expect("log service");
    Running {
        url: service.url().to_owned(),
        data_dir,
        shutdown,
        service,
        _registry: registry,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()
        .expect("client")
}

/// `clients` tasks posting `bodies` round robin to `url` until `duration` passes or `target`
/// records are acknowledged; returns (records acknowledged, bytes sent, elapsed).
async fn post_batches(
    url: &str,
    bodies: &Arc<Vec<Vec<u8>>>,
    clients: usize,
    duration: Duration,
    target: u64,
) -> (u64, u64, Duration) {
    post_as(url, &NDJSON, bodies, clients, duration, target).await
}

/// How a batch is posted: where, and as what.
struct Format {
    name: &'static str,
    path: &'static str,
    content_type: &'static str,
}

const NDJSON: Format = Format {
    name: "native NDJSON",
    path: "/v1/records",
    content_type: "application/x-ndjson",
};

/// [`post_batches`] for any format.
async fn post_as(
    url: &str,
    format: &Format,
    bodies: &Arc<Vec<Vec<u8>>>,
    clients: usize,
    duration: Duration,
    target: u64,
) -> (u64, u64, Duration) {
    let http = http();
    let records = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let (http, url, bodies, records, bytes) = (
            http.clone(),
            format!("{url}{}", format.path),
            Arc::clone(bodies),
            Arc::clone(&records),
            Arc::clone(&bytes),
        );
        let content_type = format.content_type;
        tasks.spawn(async move {
            let mut n = client;
            while started.elapsed() < duration && records.load(Ordering::Relaxed) < target {
                let body = bodies[n % bodies.len()].clone();
                n += clients;
                let size = body.len() as u64;
                let response = http
                    .post(&url)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .expect("POST");
                assert!(
                    response.status().is_success(),
                    "{}",
                    response.text().await.unwrap_or_default()
                );
                records.fetch_add(1000, Ordering::Relaxed);
                bytes.fetch_add(size, Ordering::Relaxed);
            }
        });
    }
    tasks.join_all().await;
    (
        records.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
        started.elapsed(),
    )
}

/// The baseline: the same bodies appended to a file and fsynced one by one, for `duration`.
fn bare_append(dir: &std::path::Path, bodies: &[Vec<u8>], duration: Duration) -> (u64, u64, Duration) {
    let path = dir.join("bare.log");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open");
    let started = Instant::now();
    let (mut records, mut bytes) = (0, 0);
    let mut n = 0;
    while started.elapsed() < duration {
        let body = &bodies[n % bodies.len()];
        n += 1;
        file.write_all(body).expect("write");
        file.sync_data().expect("fsync");
        records += 1000;
        bytes += body.len() as u64;
    }
    let elapsed = started.elapsed();
    drop(file);
    std::fs::remove_file(path).expect("remove");
    (records, bytes, elapsed)
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

async fn ingest_section() {
    println!(
        "== durable ingest: NDJSON batches of 1,000 records (~200 B each), 8 clients; 5 rounds of 2 s, alternating with the bare loop"
    );
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..64).map(batch).collect());
    let logs = start_logs().await;
    let (mut records, mut bytes, mut elapsed) = (0, 0, Duration::ZERO);
    let (mut base_records, mut base_bytes, mut base_elapsed) = (0, 0, Duration::ZERO);
    for _ in 0..5 {
        let (r, b, e) = post_batches(&logs.url, &bodies, 8, Duration::from_secs(2), u64::MAX).await;
        (records, bytes, elapsed) = (records + r, bytes + b, elapsed + e);
        let (dir, bodies) = (logs.data_dir.path().to_owned(), Arc::clone(&bodies));
        let (r, b, e) = tokio::task::spawn_blocking(move || bare_append(&dir, &bodies, Duration::from_secs(2)))
            .await
            .expect("baseline");
        (base_records, base_bytes, base_elapsed) = (base_records + r, base_bytes + b, base_elapsed + e);
    }
    let (ours, theirs) = (rate(bytes, elapsed), rate(base_bytes, base_elapsed));
    let records_per_second = rate(records, elapsed);
    println!(
        "log service: {records_per_second:>9.0} records/s  {:>6.1} MB/s   (each batch acknowledged only once fsynced) | target >= 500,000 records/s: {}",
        ours / 1e6,
        verdict(records_per_second >= 500_000.0)
    );
    println!(
        "bare loop:   {:>9.0} records/s  {:>6.1} MB/s   (the same batches appended and fsynced one by one)",
        rate(base_records, base_elapsed),
        theirs / 1e6
    );
    println!(
        "bytes/s ratio (log service / bare loop): {:.2} | target >= 0.5: {}",
        ours / theirs,
        verdict(ours / theirs >= 0.5)
    );
    stop(logs).await;
}

/// The records of [`batch`] `seed`, one by one: service, level, message, and the status field.
fn records(seed: usize) -> Vec<(String, &'static str, String)> {
    (0..1000)
        .map(|i| {
            let n = seed * 1000 + i;
            let level = if (n / 10) % 1000 == 7 {
                "error"
            } else if (n / 10) % 20 == 3 {
                "warn"
            } else {
                "info"
            };
            let message = format!(
                "request {n} served for student {} in {} ms with grade book revision {}",
                n % 9973,
                n % 97,
                n % 100_003
            );
            (format!("svc-{}", n % SERVICES), level, message)
        })
        .collect()
}

/// Batch `seed` as OTLP: one resource per service, the fields as attributes.
fn otlp_batch(seed: usize, now: u64) -> opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let value = |v: Value| Some(AnyValue { value: Some(v) });
    let attribute = |key: &str, v: Value| KeyValue {
        key: key.to_owned(),
        value: value(v),
        ..KeyValue::default()
    };
    let mut by_service: std::collections::BTreeMap<String, Vec<LogRecord>> = std::collections::BTreeMap::new();
    for (service, level, message) in records(seed) {
        by_service.entry(service).or_default().push(LogRecord {
            time_unix_nano: now,
            severity_text: level.to_owned(),
            body: value(Value::StringValue(message)),
            attributes: vec![
                attribute("route", Value::StringValue("/students".to_owned())),
                attribute("status", Value::IntValue(200)),
            ],
            ..LogRecord::default()
        });
    }
    let resource_logs = by_service
        .into_iter()
        .map(|(service, log_records)| ResourceLogs {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", Value::StringValue(service))],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        })
        .collect();
    opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest { resource_logs }
}

/// The same request in OTLP's JSON encoding.
fn otlp_json(request: &opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest) -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(Value::StringValue(s)) => serde_json::json!({"stringValue": s}),
        Some(Value::IntValue(i)) => serde_json::json!({"intValue": i.to_string()}),
        _ => serde_json::Value::Null,
    };
    let attributes = |list: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
        list.iter()
            .map(|kv| serde_json::json!({"key": kv.key, "value": text(&kv.value)}))
            .collect::<Vec<_>>()
    };
    let resources: Vec<_> = request
        .resource_logs
        .iter()
        .map(|r| {
            let records: Vec<_> = r.scope_logs[0]
                .log_records
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "timeUnixNano": l.time_unix_nano.to_string(),
                        "severityText": l.severity_text,
                        "body": text(&l.body),
                        "attributes": attributes(&l.attributes),
                    })
                })
                .collect();
            serde_json::json!({
                "resource": {"attributes": attributes(&r.resource.as_ref().expect("resource").attributes)},
                "scopeLogs": [{"logRecords": records}],
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"resourceLogs": resources})).expect("JSON")
}

/// Batch `seed` as a Loki push: one stream per service and level, the fields as structured
/// metadata; JSON, and snappy-compressed protobuf.
fn loki_batches(seed: usize, now: u64) -> (Vec<u8>, Vec<u8>) {
    use prost::Message;
    use rollcall_logs::loki_push::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
    let mut streams: std::collections::BTreeMap<(String, &str), Vec<String>> = std::collections::BTreeMap::new();
    for (service, level, message) in records(seed) {
        streams.entry((service, level)).or_default().push(message);
    }
    let metadata = [("route", "/students"), ("status", "200")];
    let json_streams: Vec<_> = streams
        .iter()
        .map(|((service, level), lines)| {
            let values: Vec<_> = lines
                .iter()
                .map(|line| serde_json::json!([now.to_string(), line, {"route": "/students", "status": "200"}]))
                .collect();
            serde_json::json!({"stream": {"service_name": service, "level": level}, "values": values})
        })
        .collect();
    let json = serde_json::to_vec(&serde_json::json!({"streams": json_streams})).expect("JSON");
    let at = Timestamp {
        seconds: i64::try_from(now / 1_000_000_000).expect("seconds"),
        nanos: i32::try_from(now % 1_000_000_000).expect("nanos"),
    };
    let push = PushRequest {
        streams: streams
            .into_iter()
            .map(|((service, level), lines)| StreamAdapter {
                labels: format!("{{service_name=\"{service}\", level=\"{level}\"}}"),
                entries: lines
                    .into_iter()
                    .map(|line| EntryAdapter {
                        timestamp: Some(at),
                        line,
                        structured_metadata: metadata
                            .iter()
                            .map(|(name, value)| LabelPairAdapter {
                                name: (*name).to_owned(),
                                value: (*value).to_owned(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    };
    let protobuf = snap::raw::Encoder::new()
        .compress_vec(&push.encode_to_vec())
        .expect("snappy");
    (json, protobuf)
}

/// The same records posted as OTLP and Loki, JSON and protobuf, round by round in turn.
async fn formats_section() {
    use prost::Message;
    const FORMATS: [Format; 4] = [
        Format {
            name: "OTLP JSON",
            path: "/v1/logs",
            content_type: "application/json",
        },
        Format {
            name: "OTLP protobuf",
            path: "/v1/logs",
            content_type: "application/x-protobuf",
        },
        Format {
            name: "Loki JSON",
            path: "/loki/api/v1/push",
            content_type: "application/json",
        },
        Format {
            name: "Loki protobuf + snappy",
            path: "/loki/api/v1/push",
            content_type: "application/x-protobuf",
        },
    ];
    println!(
        "== ingest by format: the same batches of 1,000 records (~200 B each) as OTLP and Loki, JSON and protobuf, 8 clients; 5 rounds of 2 s per format, in turn"
    );
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos(),
    )
    .expect("before 2262");
    let mut bodies: [Vec<Vec<u8>>; 4] = Default::default();
    for seed in 0..64 {
        let otlp = otlp_batch(seed, now);
        bodies[0].push(otlp_json(&otlp));
        bodies[1].push(otlp.encode_to_vec());
        let (json, protobuf) = loki_batches(seed, now);
        bodies[2].push(json);
        bodies[3].push(protobuf);
    }
    let bodies = bodies.map(Arc::new);
    let logs = start_logs().await;
    let mut totals = [(0_u64, 0_u64, Duration::ZERO); 4];
    for _ in 0..5 {
        for (n, format) in FORMATS.iter().enumerate() {
            let (r, b, e) = post_as(&logs.url, format, &bodies[n], 8, Duration::from_secs(2), u64::MAX).await;
            totals[n] = (totals[n].0 + r, totals[n].1 + b, totals[n].2 + e);
        }
    }
    let rates = totals.map(|(records, _, elapsed)| rate(records, elapsed));
    for (n, format) in FORMATS.iter().enumerate() {
        println!(
            "{:<24} {:>9.0} records/s  {:>6.1} MB/s sent",
            format.name,
            rates[n],
            rate(totals[n].1, totals[n].2) / 1e6
        );
    }
    for (json, protobuf, name) in [(0, 1, "OTLP"), (2, 3, "Loki")] {
        let ratio = rates[protobuf] / rates[json];
        println!(
            "{name}: protobuf / JSON {ratio:.2} | target protobuf at least as fast as JSON and >= 500,000 records/s: {}",
            verdict(ratio >= 1.0 && rates[protobuf] >= 500_000.0)
        );
    }
    stop(logs).await;
}

/// The seed section's concurrencies: a few services logging, many, and a load generator's worth.
const SEED_CONNECTIONS: [usize; 3] = [8, 128, 512];
/// Runs per measurement; the median is reported.
const SEED_RUNS: usize = 3;
/// How long one run lasts.
const SEED_WINDOW: Duration = Duration::from_secs(5);

/// wrk Lua: every request posts one seed-style line, unique per wrk thread and request.
const SEED_SCRIPT: &str = r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain"
local count = 0
function request()
  count = count + 1
  return wrk.format(nil, "/log", nil, string.format("[GradingService] - Student with ID %d-%d not found", thread_id, count))
end
"#;

async fn seed_section() {
    assert!(
        wrk::available(),
        "the seed section drives load with wrk: run it through scripts/bench"
    );
    println!(
        "== seed POST /log, one line per request (wrk, median of {SEED_RUNS} runs of {SEED_WINDOW:?}; CPU per request over all runs)"
    );
    let report = |what: &str, measured: &wrk::Measured| {
        let r = &measured.median;
        println!(
            "  {what:<48} {:>7.0} requests/s, latency median {:>5.2} ms, p99 {:>6.2} ms, {:>5.1} µs of server CPU per request",
            r.requests_per_second,
            r.median.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            measured.cpu_per_request * 1e6
        );
    };
    let go_dir = tempfile::tempdir_in(std::env::current_dir().expect("cwd")).expect("go data dir");
    let go = go_original(go_dir.path());
    // The service runs in this process, so this process's CPU is the server's (wrk is a child
    // process, not counted): CPU per request is steadier than requests/s on a noisy host.
    let logs = start_logs().await;
    let most = SEED_CONNECTIONS[SEED_CONNECTIONS.len() - 1];
    // The held baseline waits as long as one commit cycle at the highest concurrency: measured
    // in a first run, before the measured ones.
    let before = commits(&logs.url).await;
    let (load, url) = (Load::new(most, SEED_WINDOW).script(SEED_SCRIPT), logs.url.clone());
    tokio::task::spawn_blocking(move || load.run(&url))
        .await
        .expect("warm-up");
    let hold = SEED_WINDOW.mul_f64(1.0 / commits(&logs.url).await.since(before).count.max(1.0));
    let baselines = [
        (
            "axum answering 200, storing nothing".to_owned(),
            baseline_server(Duration::ZERO).await,
        ),
        (
            format!("the same, answering after {:.2} ms", hold.as_secs_f64() * 1e3),
            baseline_server(hold).await,
        ),
    ];
    let me = std::process::id();
    for connections in SEED_CONNECTIONS {
        println!("{connections} connections (interleaved run by run):");
        let load = Load::new(connections, SEED_WINDOW).script(SEED_SCRIPT);
        let mut targets = vec![(logs.url.clone(), me)];
        targets.extend(go.iter().map(|go| (go.url.clone(), go.pid())));
        if connections == most {
            targets.extend(baselines.iter().map(|(_, url)| (url.clone(), me)));
        }
        let commits_before = commits(&logs.url).await;
        let measured = tokio::task::spawn_blocking(move || {
            let targets: Vec<(&Load, &str, u32)> =
                targets.iter().map(|(url, pid)| (&load, url.as_str(), *pid)).collect();
            wrk::interleave(&targets, SEED_RUNS)
        })
        .await
        .expect("load");
        let durable = measured[0];
        report("rollcall (each line fsynced before 200)", &durable);
        let run = commits(&logs.url).await.since(commits_before);
        println!(
            "  {:<48} {:.0} commits, mean write+fsync {:.2} ms, {:.1} records per commit",
            "",
            run.count,
            run.seconds / run.count.max(1.0) * 1e3,
            run.records / run.count.max(1.0)
        );
        let rollcall = durable.median.requests_per_second;
        let mut rest = measured[1..].iter();
        if go.is_some() {
            let original = rest.next().expect("measured");
            report("the Go original (no fsync)", original);
            let ratio = rollcall / original.median.requests_per_second;
            let target = if connections == most {
                format!(" | target at least the Go original: {}", verdict(ratio >= 1.0))
            } else {
                String::new()
            };
            println!("  {:<48} rollcall {ratio:.2} × the Go original{target}", "");
        }
        for ((what, _), baseline) in baselines.iter().zip(rest) {
            report(what, baseline);
            println!(
                "  {:<48} rollcall {:.2} × it",
                "",
                rollcall / baseline.median.requests_per_second
            );
        }
        if connections == most {
            println!(
                "  {:<48} the issue's figure for the Go original here, 42,000/s: {}",
                "",
                verdict(rollcall >= 42_000.0)
            );
        }
    }
    stop(logs).await;
}

/// The Go original's log service (`benches/go_original/main.go`), built with Debian's Go
/// (installed by `scripts/bench`) and started with its file in `dir`; `None` without Go.
fn go_original(dir: &std::path::Path) -> Option<ServerProcess> {
    let binary = rollcall_testkit::bench::build_go(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/go_original/main.go")),
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "go-original-logs",
    )?;
    Some(ServerProcess::start_command(
        std::process::Command::new(binary).arg("-file").arg(dir.join("app.log")),
    ))
}

/// The store's commits so far, their write+fsync seconds and the records they stored.
async fn commits(url: &str) -> Commits {
    let text = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("metrics");
    let value = |name: &str| rollcall_testkit::metric(&text, name).unwrap_or(0.0);
    Commits {
        count: value("rollcall_logs_fsync_seconds_count"),
        seconds: value("rollcall_logs_fsync_seconds_sum"),
        records: value("rollcall_logs_records_stored_total"),
    }
}

/// Commits as counted by the store: how many, their write+fsync seconds, their records.
#[derive(Clone, Copy)]
struct Commits {
    count: f64,
    seconds: f64,
    records: f64,
}

impl Commits {
    /// What was committed between `earlier` and these counts.
    fn since(self, earlier: Self) -> Self {
        Self {
            count: self.count - earlier.count,
            seconds: self.seconds - earlier.seconds,
            records: self.records - earlier.records,
        }
    }
}

/// An axum server in this process that answers `POST /log` with 200 after `hold` and stores
/// nothing.
async fn baseline_server(hold: Duration) -> String {
    let app = axum::Router::new().route(
        "/log",
        axum::routing::post(move |_: axum::body::Bytes| async move {
            if !hold.is_zero() {
                tokio::time::sleep(hold).await;
            }
            ""
        }),
    );
    rollcall_testkit::serve(app, CancellationToken::new()).await
}

async fn timed_get(http: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    let response = http.get(url).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("body");
    started.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn query_section() {
    let target: u64 = std::env::var("ROLLCALL_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    println!("== queries over {target} records");
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..64).map(batch).collect());
    let logs = start_logs().await;
    let filled = Instant::now();
    let (records, _, elapsed) = post_batches(&logs.url, &bodies, 8, Duration::from_secs(3600), target).await;
    println!("filled with {records} records in {:.1} s", elapsed.as_secs_f64());
    let _ = filled;

    let http = http();
    let mut newest = Vec::new();
    let mut filtered = Vec::new();
    let mut logql = Vec::new();
    for i in 0..200 {
        let level = if i % 2 == 0 { "warn" } else { "error" };
        filtered.push(
            timed_get(
                &http,
                &format!(
                    "{}/v1/records?service=svc-{}&level={level}&limit=100",
                    logs.url,
                    i % SERVICES
                ),
            )
            .await,
        );
        // The same records through Loki's API: a stream selector and a line filter.
        let query = format!(
            r#"{{service="svc-{}", level=~"{level}|error|fatal"}} |= "served""#,
            i % SERVICES
        );
        let url = reqwest::Url::parse_with_params(
            &format!("{}/loki/api/v1/query_range", logs.url),
            [("query", query.as_str()), ("limit", "100"), ("since", "24h")],
        )
        .expect("a URL");
        logql.push(timed_get(&http, url.as_str()).await);
        newest.push(timed_get(&http, &format!("{}/v1/records?limit=1", logs.url)).await);
    }
    let (filtered_p50, filtered_p99) = median_p99(&mut filtered);
    let (logql_p50, logql_p99) = median_p99(&mut logql);
    let (newest_p50, newest_p99) = median_p99(&mut newest);
    println!(
        "newest 100 by service and level: p50 {}  p99 {}   baseline (newest record, no filter): p50 {}  p99 {} | target p99 < 50 ms: {}",
        ms(filtered_p50),
        ms(filtered_p99),
        ms(newest_p50),
        ms(newest_p99),
        verdict(filtered_p99 < Duration::from_millis(50))
    );
    println!(
        "query_range, selector and line filter, newest 100: p50 {}  p99 {}   beside the native query above (p99 {}) | target p99 <= 50 ms: {}",
        ms(logql_p50),
        ms(logql_p99),
        ms(filtered_p99),
        verdict(logql_p99 <= Duration::from_millis(50))
    );

    let segments_dir = logs.data_dir.path().join("logs");
    let disk: u64 = std::fs::read_dir(&segments_dir)
        .expect("segments")
        .filter_map(Result::ok)
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    let mut scans = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..5 {
        scans.push(
            timed_get(
                &http,
                &format!("{}/v1/records?contains=no%20such%20text&limit=100", logs.url),
            )
            .await,
        );
        let dir = segments_dir.clone();
        bare.push(
            tokio::task::spawn_blocking(move || bare_scan(&dir))
                .await
                .expect("scan"),
        );
    }
    let (scan, _) = median_p99(&mut scans);
    let (bare_scan_time, _) = median_p99(&mut bare);
    let (ours, theirs) = (
        disk as f64 / scan.as_secs_f64() / 1e6,
        disk as f64 / bare_scan_time.as_secs_f64() / 1e6,
    );
    println!(
        "substring scan of {:.0} MB: {} = {ours:.0} MB/s   bare loop (1 MiB preads into one buffer, memmem): {} = {theirs:.0} MB/s   ratio {:.2} | target >= 500 MB/s: {}",
        disk as f64 / 1e6,
        ms(scan),
        ms(bare_scan_time),
        ours / theirs,
        verdict(ours >= 500.0)
    );
    stop(logs).await;
}

/// Reads every segment in 1 MiB `pread`s into one reused buffer (as the service reads blocks
/// into buffers of their size) and searches each for a substring that is not there.
fn bare_scan(dir: &std::path::Path) -> Duration {
    use std::os::unix::fs::FileExt;
    let started = Instant::now();
    let finder = memchr::memmem::Finder::new(b"no such text");
    let mut buffer = vec![0u8; 1 << 20];
    let mut found = 0;
    for entry in std::fs::read_dir(dir).expect("segments").filter_map(Result::ok) {
        let file = std::fs::File::open(entry.path()).expect("open");
        let mut offset = 0;
        loop {
            let read = file.read_at(&mut buffer, offset).expect("read");
            if read == 0 {
                break;
            }
            found += finder.find_iter(&buffer[..read]).count();
            offset += read as u64;
        }
    }
    assert_eq!(found, 0);
    started.elapsed()
}

async fn stop(logs: Running) {
    logs.shutdown.cancel();
    logs.service.wait().await;
    drop(logs.data_dir);
}

fn main() {
    let wanted = rollcall_testkit::wanted_sections();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        if wanted("ingest") {
            ingest_section().await;
        }
        if wanted("formats") {
            formats_section().await;
        }
        if wanted("seed") {
            seed_section().await;
        }
        if wanted("query") {
            query_section().await;
        }
    });
}
