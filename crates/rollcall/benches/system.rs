//! Whole-system benchmark: `rollcall up` from start to all four services registered and passing,
//! the idle memory of the whole system, and the grading API's and the portal's throughput and
//! latency, each beside a baseline measured in the same run.
//!
//! Run with `cargo bench -p rollcall --bench system` (sections `startup`, `memory`, `pages`).
//! The system under test is the release `rollcall up` (four child processes) on 127.0.0.1 ports
//! picked by the OS, with its data in a temporary directory:
//! - startup: 10 runs of `rollcall up` until the registry lists LogService, GradingService and
//!   Portal as passing, beside `rollcall registry` alone until it announces its address;
//! - memory: the four services' RSS after 3 s idle, summed, beside `rollcall registry` started
//!   alone and idle as long;
//! - pages: `GET /students` on the grading service and `GET /students/1` on the portal, with 32
//!   concurrent clients in five 1 s windows alternating with the baseline, and then at a fixed
//!   200 requests/s for 5 s (p50/p99) side by side with it: an axum handler in this process
//!   answering the same bytes.
//!
//! Each target's verdict is printed from the run's own figure.

// A benchmark is a report: it prints, and turns counts into f64 for rates.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rollcall_testkit::bench::verdict;
use rollcall_testkit::median_p99;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A running `rollcall up` and the URLs it printed.
struct Up {
    child: Child,
    urls: BTreeMap<String, String>,
    _data: tempfile::TempDir,
}

async fn start_up() -> (Up, Instant) {
    let data = tempfile::tempdir().expect("data dir");
    let started = Instant::now();
    let mut child = Command::new(rollcall())
        .args(["up", "--data-dir"])
        .arg(data.path())
        .args(["--registry-listen", "127.0.0.1:0", "--logs-listen", "127.0.0.1:0"])
        .args(["--grades-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("rollcall up");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut urls = BTreeMap::new();
    while urls.len() < 4 {
        let line = lines.next_line().await.expect("read").expect("a line");
        let mut words = line.split_whitespace();
        if let (Some(name), Some(url)) = (words.next(), words.next()) {
            urls.insert(name.to_owned(), url.to_owned());
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (
        Up {
            child,
            urls,
            _data: data,
        },
        started,
    )
}

async fn stop_up(mut up: Up) {
    let pid = up
        .child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(i32::try_from(pid).ok()?));
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), up.child.wait()).await;
}

/// Waits until the registry lists the three services as passing.
async fn all_passing(http: &reqwest::Client, registry: &str) {
    loop {
        if let Ok(response) = http.get(format!("{registry}/v1/services")).send().await
            && let Ok(view) = response.json::<rollcall_wire::ServicesView>().await
        {
            let passing = |name: &str| {
                view.service(name).is_some_and(|s| {
                    s.instances
                        .iter()
                        .any(|i| i.state == rollcall_wire::InstanceState::Passing)
                })
            };
            if ["LogService", "GradingService", "Portal"].iter().all(|n| passing(n)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn startup_section() {
    println!("== rollcall up: start to all four services registered and passing (10 runs)");
    let http = http();
    let mut ups = Vec::new();
    let mut registries = Vec::new();
    for _ in 0..10 {
        let (up, started) = start_up().await;
        all_passing(&http, &up.urls["registry"]).await;
        ups.push(started.elapsed());
        stop_up(up).await;

        let data = tempfile::tempdir().expect("data dir");
        let started = Instant::now();
        let mut registry = Command::new(rollcall())
            .args(["registry", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("rollcall registry");
        let mut lines = BufReader::new(registry.stdout.take().expect("stdout")).lines();
        lines.next_line().await.expect("read").expect("the address line");
        registries.push(started.elapsed());
        let _ = registry.kill().await;
    }
    let (up_median, up_p99) = median_p99(&mut ups);
    let (registry_median, _) = median_p99(&mut registries);
    println!(
        "rollcall up: median {}  worst {}   baseline (the registry alone, to its address line): median {}   ratio {:.1} | target < 1 s: {}",
        ms(up_median),
        ms(up_p99),
        ms(registry_median),
        up_median.as_secs_f64() / registry_median.as_secs_f64(),
        verdict(up_p99 < Duration::from_secs(1))
    );
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

async fn memory_section() {
    println!("== memory of the whole system, idle (3 s after start)");
    let http = http();
    let (up, _) = start_up().await;
    all_passing(&http, &up.urls["registry"]).await;
    // The baseline: the registry alone, started the same way, idle as long.
    let data = tempfile::tempdir().expect("data dir");
    let alone = rollcall_testkit::ServerProcess::start_command(
        std::process::Command::new(rollcall())
            .args(["registry", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path()),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up_pid = up.child.id().expect("pid");
    let services = children(up_pid);
    assert_eq!(services.len(), 4, "rollcall up runs four services: {services:?}");
    let each: Vec<u64> = services.iter().map(|pid| rss_kib(*pid)).collect();
    let total = each.iter().sum::<u64>() as f64 / 1024.0;
    println!(
        "four services: {total:.1} MiB in all ({}), plus `up` itself {:.1} MiB   baseline (the registry alone): {:.1} MiB | target < 60 MiB: {}",
        each.iter()
            .map(|k| format!("{:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" + "),
        rss_kib(up_pid) as f64 / 1024.0,
        rss_kib(alone.pid()) as f64 / 1024.0,
        verdict(total < 60.0)
    );
    stop_up(up).await;
}

/// An axum server in this process answering `body` (with `content_type`) to every GET.
async fn baseline_server(body: Vec<u8>, content_type: &'static str) -> String {
    let body = Arc::new(body);
    let app = axum::Router::new().fallback(move || {
        let body = Arc::clone(&body);
        async move { ([("content-type", content_type)], body.as_ref().clone()) }
    });
    rollcall_testkit::serve(app, tokio_util::sync::CancellationToken::new()).await
}

/// Requests per second of `url` and of `baseline`, each with 32 clients, in five alternating
/// windows of 1 s each (so that the host's drift favours neither).
async fn throughput_pair(url: &str, baseline: &str) -> (f64, f64) {
    let mut counts = [0u64; 2];
    let mut elapsed = [Duration::ZERO; 2];
    for _ in 0..5 {
        for (i, target) in [url, baseline].into_iter().enumerate() {
            let (count, took) = window(target, Duration::from_secs(1)).await;
            counts[i] += count;
            elapsed[i] += took;
        }
    }
    let rate = |i: usize| counts[i] as f64 / elapsed[i].as_secs_f64();
    (rate(0), rate(1))
}

/// Requests answered with 32 clients for `length`, and how long it took.
async fn window(url: &str, length: Duration) -> (u64, Duration) {
    let http = http();
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let (http, url, count) = (http.clone(), url.to_owned(), Arc::clone(&count));
        tasks.spawn(async move {
            while started.elapsed() < length {
                let response = http.get(&url).send().await.expect("GET");
                assert!(response.status().is_success(), "{url} answered {}", response.status());
                response.bytes().await.expect("body");
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tasks.join_all().await;
    (count.load(Ordering::Relaxed), started.elapsed())
}

/// Latencies (p50, p99) of 1,000 requests to `url` and 1,000 to `baseline`, sent at a fixed
/// 200 per second each, side by side, whatever the answers' pace.
async fn fixed_rate_pair(url: &str, baseline: &str) -> [(Duration, Duration); 2] {
    let http = http();
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    let mut tasks = JoinSet::new();
    for _ in 0..1000 {
        ticks.tick().await;
        for (i, target) in [url, baseline].into_iter().enumerate() {
            let (http, target) = (http.clone(), target.to_owned());
            tasks.spawn(async move {
                let started = Instant::now();
                let response = http.get(&target).send().await.expect("GET");
                assert!(
                    response.status().is_success(),
                    "{target} answered {}",
                    response.status()
                );
                response.bytes().await.expect("body");
                (i, started.elapsed())
            });
        }
    }
    let mut latencies = [Vec::new(), Vec::new()];
    for (i, latency) in tasks.join_all().await {
        latencies[i].push(latency);
    }
    let [mut ours, mut theirs] = latencies;
    [median_p99(&mut ours), median_p99(&mut theirs)]
}

async fn pages_section() {
    println!(
        "== pages: 32 clients for 5 s (alternating 1 s windows with the baseline), then 200 requests/s each for 5 s"
    );
    let http = http();
    let (up, _) = start_up().await;
    all_passing(&http, &up.urls["registry"]).await;
    for (name, url, content_type) in [
        (
            "grading GET /students",
            format!("{}/students", up.urls["grades"]),
            "application/json",
        ),
        (
            "portal GET /students/1",
            format!("{}/students/1", up.urls["portal"]),
            "text/html; charset=utf-8",
        ),
    ] {
        let body = http
            .get(&url)
            .send()
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body")
            .to_vec();
        let baseline = baseline_server(body.clone(), content_type).await;
        let (ours, theirs) = throughput_pair(&url, &baseline).await;
        let [(p50, p99), (base_p50, base_p99)] = fixed_rate_pair(&url, &baseline).await;
        println!(
            "{name} ({} bytes): {ours:.0} requests/s (baseline {theirs:.0}/s, ratio {:.2}); at 200/s p50 {} p99 {} (baseline p50 {} p99 {})",
            body.len(),
            ours / theirs,
            ms(p50),
            ms(p99),
            ms(base_p50),
            ms(base_p99)
        );
    }
    stop_up(up).await;
}

fn main() {
    let wanted = rollcall_testkit::wanted_sections();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        if wanted("startup") {
            startup_section().await;
        }
        if wanted("memory") {
            memory_section().await;
        }
        if wanted("pages") {
            pages_section().await;
        }
    });
}
