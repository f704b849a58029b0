//! Whole-system benchmark: `rollcall up` from start to all four services registered and passing,
//! the idle memory of the whole system, and the grading API's and the portal's throughput and
//! latency, each beside a baseline measured in the same run.
//!
//! Run with `cargo bench -p rollcall --bench system` (sections `startup`, `memory`, `pages`).
//! The system under test is the release `rollcall up` (four child processes) on 127.0.0.1 ports
//! picked by the OS, with its data in a temporary directory:
//! - startup: 10 runs of `rollcall up` until the registry lists LogService, GradingService and
//!   Portal as passing, beside `rollcall registry` alone until it announces its address;
//! - memory: the four services' RSS after 3 s idle, summed, beside the registry's alone;
//! - pages: `GET /students` on the grading service and `GET /students/1` on the portal, with 32
//!   concurrent clients for 5 s, and then at a fixed 200 requests/s for 5 s (p50/p99), beside an
//!   axum handler in this process answering the same bytes.

// A benchmark is a report: it prints, and turns counts into f64 for rates.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    let pid = up.child.id().expect("pid").to_string();
    let _ = std::process::Command::new("kill").args(["-INT", &pid]).status();
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
        "rollcall up: median {}  worst {}   baseline (the registry alone, to its address line): median {}   ratio {:.1}",
        ms(up_median),
        ms(up_p99),
        ms(registry_median),
        up_median.as_secs_f64() / registry_median.as_secs_f64()
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
    println!("== memory of the whole system, idle");
    let http = http();
    let (up, _) = start_up().await;
    all_passing(&http, &up.urls["registry"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up_pid = up.child.id().expect("pid");
    let services = children(up_pid);
    let each: Vec<u64> = services.iter().map(|pid| rss_kib(*pid)).collect();
    let total: u64 = each.iter().sum();
    let registry = each.first().copied().unwrap_or(0);
    println!(
        "four services: {:.1} MiB in all ({}), plus `up` itself {:.1} MiB   baseline (the registry alone): {:.1} MiB",
        total as f64 / 1024.0,
        each.iter()
            .map(|k| format!("{:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" + "),
        rss_kib(up_pid) as f64 / 1024.0,
        registry as f64 / 1024.0
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

/// Requests per second with 32 clients for 5 s.
async fn throughput(url: &str) -> f64 {
    let http = http();
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let (http, url, count) = (http.clone(), url.to_owned(), Arc::clone(&count));
        tasks.spawn(async move {
            while started.elapsed() < Duration::from_secs(5) {
                let response = http.get(&url).send().await.expect("GET");
                assert!(response.status().is_success());
                response.bytes().await.expect("body");
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tasks.join_all().await;
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Latencies of 1,000 requests sent at a fixed 200 per second, whatever the answers' pace.
async fn fixed_rate(url: &str) -> (Duration, Duration) {
    let http = http();
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    let mut tasks = JoinSet::new();
    for _ in 0..1000 {
        ticks.tick().await;
        let (http, url) = (http.clone(), url.to_owned());
        tasks.spawn(async move {
            let started = Instant::now();
            let response = http.get(&url).send().await.expect("GET");
            response.bytes().await.expect("body");
            started.elapsed()
        });
    }
    let mut latencies = tasks.join_all().await;
    median_p99(&mut latencies)
}

async fn pages_section() {
    println!("== pages: 32 clients for 5 s, then 200 requests/s for 5 s");
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
        let ours = throughput(&url).await;
        let theirs = throughput(&baseline).await;
        let (p50, p99) = fixed_rate(&url).await;
        let (base_p50, base_p99) = fixed_rate(&baseline).await;
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
