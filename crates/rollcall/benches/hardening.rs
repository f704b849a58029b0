//! What being safe to expose costs (issue 15), each figure beside a baseline measured in the
//! same run, with the release `rollcall registry` as a child process and everything else in
//! this process, on 127.0.0.1:
//! - `tokens`: durable registrations and lookups per second (wrk) of a registry that serves
//!   requests without a token (loopback) beside one that requires one on every request
//!   (`--require-tokens`), the two interleaved run by run;
//! - `tls`: the same two figures over HTTPS (`--tls-cert`, a certificate made at run time)
//!   beside plain HTTP, interleaved; wrk keeps its connections, so the handshakes are paid once
//!   and the figure is the cost of encrypting the traffic;
//! - `endless`: the registry's RSS while 100 instances' heartbeats answer endless bodies, beside
//!   its RSS while the same 100 answer normally (idle plus the connections' buffers);
//! - `idle-sockets`: how late probes come (each gap between two probes of an instance, less the
//!   interval) with 2,000 idle inbound sockets held open, beside none, alternating.
//!
//! - `restart`: a registry holding `--max-instances` (20,000) instances, probed: how long a
//!   SIGTERM takes, how long a restart takes until it announces its address and answers a
//!   lookup, and a SIGTERM right after that restart, while every instance's prober starts; beside
//!   the same with an empty catalog.
//!
//! Run with `scripts/bench -p rollcall --bench hardening` (or `-- tokens` for one section).

// A benchmark is a report: it prints, and turns counts into f64 for ratios.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::path::Path;
use std::time::{Duration, Instant};

use rollcall_testkit::bench::{THROUGHPUT_REGISTRY_FLAGS, registration_script, verdict};
use rollcall_testkit::wrk::{self, Load};
use rollcall_testkit::{
    DEADLINE, FakeFleet, FakeService, HeartbeatMode, ServerProcess, cpu_and_rss, eventually, median_p99,
};
use tokio::net::TcpStream;

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Open connections of the load generator.
const CONNECTIONS: usize = 128;
/// How long each wrk run lasts.
const WINDOW: Duration = Duration::from_secs(5);
/// wrk runs of each figure, alternating, unless `ROLLCALL_BENCH_RUNS` says otherwise; the
/// median is reported.
fn runs() -> usize {
    std::env::var("ROLLCALL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn main() {
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let wanted = rollcall_testkit::wanted_sections();
        if wanted("tokens") {
            tokens().await;
        }
        if wanted("tls") {
            tls().await;
        }
        if wanted("restart") {
            restart().await;
        }
        if wanted("endless") {
            endless().await;
        }
        if wanted("idle-sockets") {
            idle_sockets().await;
        }
    });
}

/// A registry for the throughput figures: probing out of the way, no instance cap.
fn throughput_registry(extra: &[&str]) -> ServerProcess {
    ServerProcess::start(rollcall(), "registry", |c| {
        c.args(THROUGHPUT_REGISTRY_FLAGS);
        c.args(extra);
    })
}

/// Registers ten instances of `Lookup` at `registry` through `http`, presenting `token` if any.
async fn lookup_service(http: &reqwest::Client, registry: &ServerProcess, fleet: &FakeFleet, token: Option<&str>) {
    for n in 0..10 {
        let request = http
            .post(format!("{}/v1/instances", registry.url))
            .json(&fleet.registration(1_000_000 + n, "Lookup"));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        assert_eq!(request.send().await.expect("POST").status(), 201);
    }
}

/// One registry under load: the registration and lookup loads it gets, where, which process.
struct Target {
    register: Load,
    lookup: Load,
    url: String,
    pid: u32,
}

/// Registrations at every target, then lookups of `Lookup`, each interleaved across targets
/// (`wrk::interleave`): one figure per target for each.
async fn writes_and_reads(targets: Vec<Target>) -> (Vec<wrk::Measured>, Vec<wrk::Measured>) {
    tokio::task::spawn_blocking(move || {
        let writes: Vec<_> = targets.iter().map(|t| (&t.register, t.url.as_str(), t.pid)).collect();
        let gets: Vec<String> = targets
            .iter()
            .map(|t| format!("{}/v1/services/Lookup", t.url))
            .collect();
        let reads: Vec<_> = targets
            .iter()
            .zip(&gets)
            .map(|(t, get)| (&t.lookup, get.as_str(), t.pid))
            .collect();
        (wrk::interleave(&writes, runs()), wrk::interleave(&reads, runs()))
    })
    .await
    .expect("load")
}

fn rate(measured: &wrk::Measured) -> f64 {
    measured.median.requests_per_second
}

fn micros(measured: &wrk::Measured) -> f64 {
    measured.cpu_per_request * 1e6
}

/// A token that may register anything and read, issued by the admin token `registry` wrote.
async fn issue_token(registry: &ServerProcess) -> String {
    let admin = std::fs::read_to_string(registry.data_path().join("admin.token")).expect("admin token");
    let created: rollcall_wire::CreatedToken = reqwest::Client::new()
        .post(format!("{}/v1/tokens", registry.url))
        .bearer_auth(admin.trim())
        .json(&serde_json::json!({"name": "bench", "scopes": ["register:*", "read"]}))
        .send()
        .await
        .expect("POST /v1/tokens")
        .json()
        .await
        .expect("token");
    created.token
}

async fn tokens() {
    assert!(
        wrk::available(),
        "this section drives load with wrk: run it through scripts/bench"
    );
    let open = throughput_registry(&[]);
    let locked = throughput_registry(&["--require-tokens"]);
    // A second registry without tokens, measured the same way: how far two identical registries
    // fall apart on this host (the noise floor of the ratio).
    let twin = throughput_registry(&[]);
    let token = issue_token(&locked).await;
    let fleet = FakeFleet::spawn().await;
    let http = reqwest::Client::new();
    lookup_service(&http, &open, &fleet, None).await;
    lookup_service(&http, &locked, &fleet, Some(&token)).await;
    lookup_service(&http, &twin, &fleet, None).await;

    // The same script and header bytes on both sides, so that wrk (on the same two cores) does the
    // same work for both: only the header's name differs, and only one registry reads it.
    let header = |name: &str| format!("wrk.headers[\"{name}\"] = \"Bearer {token}\"\n");
    let (with_token, without) = (header("Authorization"), header("X-Not-Authorization"));
    let script = registration_script(&fleet.url);
    let target = |registry: &ServerProcess, header: &str| Target {
        register: Load::new(CONNECTIONS, WINDOW).script(&format!("{header}{script}")),
        lookup: Load::new(CONNECTIONS, WINDOW).script(header),
        url: registry.url.clone(),
        pid: registry.pid(),
    };
    let targets = vec![
        target(&open, &without),
        target(&locked, &with_token),
        target(&twin, &without),
    ];
    let (writes, reads) = writes_and_reads(targets).await;
    for (what, figures) in [
        ("durable registrations", &writes),
        ("lookups of a 10-instance service", &reads),
    ] {
        let (off, on, twin) = (&figures[0], &figures[1], &figures[2]);
        let ratio = rate(on) / rate(off);
        println!(
            "{what} (wrk, {CONNECTIONS} connections, median of {} x {WINDOW:?}, interleaved ABBA): tokens on {:.0}/s ({:.1} µs of registry CPU each) | tokens off {:.0}/s ({:.1} µs) | on / off {ratio:.3} | an identical second registry without tokens {:.0}/s ({:.1} µs), twin / off {:.3} | target at most 5 % slower: {}",
            runs(),
            rate(on),
            micros(on),
            rate(off),
            micros(off),
            rate(twin),
            micros(twin),
            rate(twin) / rate(off),
            verdict(ratio >= 0.95)
        );
    }
}

async fn tls() {
    assert!(
        wrk::available(),
        "this section drives load with wrk: run it through scripts/bench"
    );
    let ca = rollcall_testkit::TestCa::new("bench");
    let cert = ca.issue("registry");
    let cert_args = [
        "--tls-cert",
        cert.cert.to_str().expect("UTF-8 path"),
        "--tls-key",
        cert.key.to_str().expect("UTF-8 path"),
    ];
    let plain = throughput_registry(&[]);
    let encrypted = throughput_registry(&cert_args);
    let fleet = FakeFleet::spawn().await;
    let trusting = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca.ca_file).expect("CA")).expect("PEM"))
        .build()
        .expect("client");
    lookup_service(&trusting, &plain, &fleet, None).await;
    lookup_service(&trusting, &encrypted, &fleet, None).await;
    let target = |registry: &ServerProcess| Target {
        register: Load::new(CONNECTIONS, WINDOW).script(&registration_script(&fleet.url)),
        lookup: Load::new(CONNECTIONS, WINDOW),
        url: registry.url.clone(),
        pid: registry.pid(),
    };
    let (writes, reads) = writes_and_reads(vec![target(&plain), target(&encrypted)]).await;
    for (what, figures) in [
        ("durable registrations", &writes),
        ("lookups of a 10-instance service", &reads),
    ] {
        let (off, on) = (&figures[0], &figures[1]);
        println!(
            "{what} (wrk, {CONNECTIONS} kept-alive connections, median of {} x {WINDOW:?}, interleaved ABBA): HTTPS {:.0}/s ({:.1} µs of registry CPU each) | plain HTTP {:.0}/s ({:.1} µs) | HTTPS / plain {:.3} (reported, no target)",
            runs(),
            rate(on),
            micros(on),
            rate(off),
            micros(off),
            rate(on) / rate(off)
        );
    }
}

/// How long a restart of `registry` (on its data) takes: until it announces its address, until
/// it answers a lookup of `Load0`, and then until a SIGTERM stops it; with the SIGTERM that
/// stopped it first.
async fn restart_times(registry: ServerProcess) -> [Duration; 4] {
    let mut registry = registry;
    let stopping = Instant::now();
    registry.signal("TERM");
    registry.wait_for_exit();
    let stop = stopping.elapsed();
    let started = Instant::now();
    let mut registry = registry.restart(|c| {
        c.args(["--health-interval", "3s"]);
    });
    let announced = started.elapsed();
    let lookup = format!("{}/v1/services/Load0", registry.url);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    loop {
        if http.get(&lookup).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
    }
    let answered = started.elapsed();
    let stopping = Instant::now();
    registry.signal("TERM");
    registry.wait_for_exit();
    [stop, announced, answered, stopping.elapsed()]
}

async fn restart() {
    let fleet = FakeFleet::spawn().await;
    let start = || {
        ServerProcess::start(rollcall(), "registry", |c| {
            c.args(["--health-interval", "3s"]);
        })
    };
    let full = start();
    let http = reqwest::Client::new();
    let mut registering = tokio::task::JoinSet::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let target = 20_000;
    for _ in 0..64 {
        let (http, next, url) = (http.clone(), next.clone(), full.url.clone());
        let fleet_url = fleet.url.clone();
        registering.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= target {
                    return;
                }
                let url_of = format!("{fleet_url}/i/{n}");
                let body = serde_json::json!({
                    "ServiceName": format!("Load{}", n % 100), "ServiceURL": url_of,
                    "ServiceUpdateURL": format!("{url_of}/services"), "HeartbeatURL": format!("{url_of}/heartbeat"),
                });
                let answer = http
                    .post(format!("{url}/v1/instances"))
                    .json(&body)
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(answer.status(), 201, "registration {n}");
            }
        });
    }
    registering.join_all().await;
    let [stop, announced, answered, stop_again] = restart_times(full).await;
    let empty = start();
    let [e_stop, e_announced, e_answered, e_stop_again] = restart_times(empty).await;
    println!(
        "a registry holding {target} instances (the default --max-instances), probed every 3 s: SIGTERM {} | restart to its address {} | to a lookup answered {} | SIGTERM right after the restart {} || empty catalog: {} | {} | {} | {} | target SIGTERM within the 5 s grace, every time: {}",
        ms(stop),
        ms(announced),
        ms(answered),
        ms(stop_again),
        ms(e_stop),
        ms(e_announced),
        ms(e_answered),
        ms(e_stop_again),
        verdict(stop.max(stop_again) <= Duration::from_secs(5))
    );
}

/// The registry's RSS after it ran for `window`: a measurement window (what it holds after that
/// long under the current load), not a wait for readiness.
async fn rss_after(registry: &ServerProcess, window: Duration) -> u64 {
    tokio::time::sleep(window).await;
    cpu_and_rss(registry.pid()).1
}

/// 100 fake services named `{prefix}{n}`, registered through the seed API with `registry` and
/// each probed once: the registry's probing is under way when this returns.
async fn probed_services(registry: &ServerProcess, prefix: &str) -> Vec<FakeService> {
    let http = reqwest::Client::new();
    let mut services = Vec::new();
    for n in 0..100 {
        let service = FakeService::spawn(&format!("{prefix}{n}"), &[]).await;
        let answer = http
            .post(format!("{}/services", registry.url))
            .json(&service.registration())
            .send()
            .await
            .expect("POST /services");
        assert_eq!(answer.status(), 200);
        services.push(service);
    }
    for service in &services {
        eventually("the registry to probe every service", DEADLINE, || async {
            (service.probes() > 0).then_some(())
        })
        .await;
    }
    services
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

async fn endless() {
    let registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.args(["--health-interval", "100ms", "--health-timeout", "1s"]);
        // Every fake is on 127.0.0.1: lift the per-host probe budget (100/s).
        c.args(["--max-probes-per-host", "100000"]);
    });
    let idle = rss_after(&registry, Duration::from_secs(2)).await;
    let services = probed_services(&registry, "Endless").await;
    let healthy = rss_after(&registry, Duration::from_secs(10)).await;
    for service in &services {
        service.set_heartbeat(HeartbeatMode::EndlessBody);
    }
    let endless = rss_after(&registry, Duration::from_secs(10)).await;
    let ratio = endless as f64 / healthy as f64;
    println!(
        "registry RSS, 100 instances probed every 100 ms for 10 s: heartbeats answering endless bodies {} | the same heartbeats answering normally {} | idle {} | endless / normal {ratio:.2} | target within 10 %: {}",
        mib(endless),
        mib(healthy),
        mib(idle),
        verdict(ratio <= 1.10)
    );
}

/// Each gap between two consecutive probes of one instance within `window`, less `interval`.
fn lateness(services: &[FakeService], window: (Instant, Instant), interval: Duration) -> Vec<Duration> {
    let mut late = Vec::new();
    for service in services {
        let times: Vec<Instant> = service
            .probe_times()
            .into_iter()
            .filter(|t| *t >= window.0 && *t <= window.1)
            .collect();
        late.extend(
            times
                .windows(2)
                .map(|pair| (pair[1] - pair[0]).saturating_sub(interval)),
        );
    }
    late
}

/// Opens `count` connections to `address` that never send a byte; returns them.
async fn idle_connections(address: &str, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(address)).await {
            streams.push(stream);
        }
    }
    streams
}

async fn idle_sockets() {
    rollcall_http::raise_open_files_limit();
    let interval = Duration::from_millis(100);
    let registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.args(["--health-interval", "100ms", "--max-probes-per-host", "100000"]);
    });
    let services = probed_services(&registry, "Probed").await;
    let address = registry.url.trim_start_matches("http://").to_owned();
    // Alternating, each phase shorter than the registry's 10 s header timeout, which would close
    // the idle sockets.
    let (mut without, mut with, mut held) = (Vec::new(), Vec::new(), 0);
    for _ in 0..3 {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        without.extend(lateness(&services, (start, Instant::now()), interval));

        let sockets = idle_connections(&address, 2_000).await;
        held = held.max(sockets.len());
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        with.extend(lateness(&services, (start, Instant::now()), interval));
        drop(sockets);
    }
    let (median_without, p99_without) = median_p99(&mut without);
    let (median_with, p99_with) = median_p99(&mut with);
    let unchanged = p99_with <= p99_without.mul_f64(1.2).max(p99_without + Duration::from_millis(5));
    println!(
        "probe lateness (gap between probes less the 100 ms interval; its ±10 % jitter included), 100 instances, 3 x 5 s per side, alternating: with {held} idle inbound sockets median {} p99 {} ({} gaps) | without median {} p99 {} ({} gaps) | target p99 unchanged within noise (within 20 % or 5 ms): {}",
        ms(median_with),
        ms(p99_with),
        with.len(),
        ms(median_without),
        ms(p99_without),
        without.len(),
        verdict(unchanged)
    );
}
