//! Registry benchmark: failure detection, fan-out, and the registry's CPU and memory.
//!
//! Run with `cargo bench -p rollcall --bench registry`. The registry under test is the release
//! `rollcall registry` binary as a child process; fake services live in this process, all on
//! 127.0.0.1. Every figure is printed beside a baseline measured in the same run:
//! - failure detection (interval 250ms, timeout 100ms, 3 tries, retry delay 100ms): the time from
//!   a heartbeat starting to fail until a dependent holds the Removed patch, beside the bound the
//!   configured schedule sets (a bound, computed from the flags, not a measured baseline);
//! - fan-out: one change until all 1,000 dependents hold it, against this process sending the
//!   same patch to the same 1,000 receivers directly (and then a drain until all 1,000 hold the
//!   provider's removal, issue 16), and against the Go original's registry
//!   (`benches/go_original/registry.go`, rebuilt from the protocol, built with Debian's Go) with
//!   the same receivers registered to both;
//! - CPU and RSS of the registry idle (beside the Go original's, measured the same way), and with
//!   1,000 and 10,000 instances probed;
//! - durable registrations and lookups per second (`-- throughput`), driven by wrk, beside a
//!   minimal axum handler in this same binary (run as a child process) answering bodies of the
//!   same size, the same handler holding each registration as long as the registry's mean
//!   commit took (what answering only once a group commit is on disk costs by itself), and etcd
//!   3.4's durable puts under the same generator when etcd is installed. Each figure comes with
//!   the server's CPU per request (from `/proc`, over all runs), steadier than rates on a noisy
//!   host.
//!
//! `scripts/bench` installs wrk, etcd and Go (Debian packages) and runs the benchmark.
//!
//! One file for the four sections (cargo runs one binary per bench target, and the sections
//! share the registry process helpers, the baselines and the reference servers).
//!
//! Baselines and references run interleaved with the registry (trial by trial, or wrk run by wrk
//! run), so that the host's load drifting over a section favours none of them, and every target
//! is printed with its verdict, computed from the run's own figure (`testkit::bench::verdict`).
//!
//! `ROLLCALL_BENCH_TRIALS` sets the number of trials (default 60 detections, 100 fan-outs);
//! `ROLLCALL_BENCH_VERBOSE=1` prints every fan-out sample.

// A benchmark is a report: it prints to stdout, and turns small counts into f64 for ratios.
#![allow(
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rollcall_testkit::bench::{ETCD_PUT_SCRIPT, THROUGHPUT_REGISTRY_FLAGS, build_go, registration_script, verdict};
use rollcall_testkit::wrk::{self, Load};
use rollcall_testkit::{
    EtcdCluster, FakeFleet, FakeService, HeartbeatMode, ServerProcess, cpu_and_rss, eventually, median_p99,
};
use rollcall_wire::{Patch, PatchEntry, Registration};
use tokio::task::JoinSet;

const LONG: Duration = Duration::from_secs(60);

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

fn trials(default: usize) -> usize {
    std::env::var("ROLLCALL_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(default, |scale| scale.max(1))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Client {
    http: reqwest::Client,
    services_url: String,
}

impl Client {
    fn new(registry: &ServerProcess) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(LONG)
            .build()
            .expect("client");
        Arc::new(Self {
            http,
            services_url: format!("{}/services", registry.url),
        })
    }

    async fn register(&self, registration: &Registration) {
        let response = self
            .http
            .post(&self.services_url)
            .json(registration)
            .send()
            .await
            .expect("POST /services");
        assert_eq!(response.status(), 200, "registration refused");
    }

    async fn deregister(&self, url: &str) {
        let response = self
            .http
            .delete(&self.services_url)
            .body(url.to_owned())
            .send()
            .await
            .expect("DELETE");
        assert_eq!(response.status(), 200, "deregistration refused");
    }
}

/// The probe schedule of the detection figures; the registry gets it as flags, and its worst
/// case is the figure's bound.
struct Schedule {
    interval: Duration,
    timeout: Duration,
    tries: u32,
    retry_delay: Duration,
}

const DETECTION: Schedule = Schedule {
    interval: Duration::from_millis(250),
    timeout: Duration::from_millis(100),
    tries: 3,
    retry_delay: Duration::from_millis(100),
};

impl Schedule {
    fn flags(&self) -> Vec<String> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        vec![
            "--health-interval".into(),
            ms(self.interval),
            "--health-timeout".into(),
            ms(self.timeout),
            "--health-tries".into(),
            self.tries.to_string(),
            "--health-retry-delay".into(),
            ms(self.retry_delay),
        ]
    }

    /// The latest a failure can be noticed: a full jittered interval (+10 %), then `tries`
    /// failed attempts with the retry delay between them, each taking the timeout when the
    /// heartbeat hangs. Delivering the `Removed` patch comes on top.
    fn bound(&self, heartbeat: HeartbeatMode) -> Duration {
        let per_attempt = if heartbeat == HeartbeatMode::Hang {
            self.timeout
        } else {
            Duration::ZERO
        };
        self.interval.mul_f64(1.1) + (self.tries - 1) * self.retry_delay + self.tries * per_attempt
    }
}

async fn failure_detection(mode: &str, heartbeat: HeartbeatMode) {
    let registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.args(DETECTION.flags());
    });
    let client = Client::new(&registry);
    let dependent = FakeService::spawn("Dependent", &["Target"]).await;
    client.register(&dependent.registration()).await;

    let count = trials(60);
    let batch = 10;
    let mut samples = Vec::with_capacity(count);
    while samples.len() < count {
        let mut providers = Vec::new();
        for _ in 0..batch.min(count - samples.len()) {
            let provider = FakeService::spawn("Target", &[]).await;
            client.register(&provider.registration()).await;
            providers.push(provider);
        }
        let held: BTreeSet<PatchEntry> = providers.iter().map(FakeService::entry).collect();
        eventually("the dependent to hold the batch", LONG, || async {
            held.is_subset(&dependent.providers()).then_some(())
        })
        .await;
        let mut started = Vec::new();
        for provider in &providers {
            started.push(Instant::now());
            provider.set_heartbeat(heartbeat);
        }
        for (provider, start) in providers.iter().zip(started) {
            let removed = eventually("the Removed patch", LONG, || async {
                dependent.arrival_of(&provider.entry(), true)
            })
            .await;
            samples.push(removed.saturating_duration_since(start));
        }
        for provider in &providers {
            provider.stop();
        }
    }
    let (median, p99) = median_p99(&mut samples);
    let bound = DETECTION.bound(heartbeat);
    let target = Duration::from_secs(1);
    println!(
        "failure detection ({mode}, {count} trials): median {} p99 {} | the schedule's bound {} (p99/bound {:.2}) | target p99 < {}: {}",
        ms(median),
        ms(p99),
        ms(bound),
        p99.as_secs_f64() / bound.as_secs_f64(),
        ms(target),
        verdict(p99 < target)
    );
}

/// The Go original's registry (`benches/go_original/registry.go`), built with Debian's Go, as a
/// child process; `None` without Go.
fn go_original() -> Option<ServerProcess> {
    let binary = build_go(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/go_original/registry.go")),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "go-original-registry",
    )?;
    Some(ServerProcess::start_command(&mut std::process::Command::new(binary)))
}

/// Every fake instance of the benches lives on 127.0.0.1: the per-host probe budget, meant for
/// hosts registered in numbers by someone else, would pace the figures instead of the registry.
const UNLIMITED_PROBES: [&str; 2] = ["--max-probes-per-host", "4000000000"];

async fn fan_out() {
    let registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.args(UNLIMITED_PROBES);
    });
    let go = go_original();
    let clients: Vec<Arc<Client>> = std::iter::once(&registry).chain(&go).map(Client::new).collect();
    let subscribers = 1_000;
    let mut dependents = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        dependents.push(Arc::new(FakeService::spawn("Dependent", &["Fan"]).await));
    }
    // Every dependent registers with both registries, so that both fan out to the same receivers.
    let mut registrations = JoinSet::new();
    for chunk in dependents.chunks(subscribers / 20) {
        let chunk: Vec<_> = chunk.iter().map(|d| d.registration()).collect();
        let clients = clients.clone();
        registrations.spawn(async move {
            for registration in chunk {
                for client in &clients {
                    client.register(&registration).await;
                }
            }
        });
    }
    registrations.join_all().await;

    // The first change after the subscribers registered also opens a connection to each of
    // them; it is reported on its own, and the trials measure the steady state.
    let warm_up = fan_out_once(&clients[0], &dependents, "Fan").await;
    if let Some(go) = clients.get(1) {
        fan_out_once(go, &dependents, "Fan").await;
    }

    let count = trials(100);
    let (registry_cpu_before, _) = cpu_and_rss(registry.pid());
    let (own_cpu_before, _) = cpu_and_rss(std::process::id());
    let mut samples = Vec::with_capacity(count);
    let mut go_samples = Vec::with_capacity(count);
    let mut baseline = Vec::with_capacity(count);
    let direct = reqwest::Client::builder()
        .no_proxy()
        .timeout(LONG)
        .build()
        .expect("client");
    send_directly(&direct, &dependents, usize::MAX).await; // open the baseline's connections
    // Interleaved, trial by trial: rollcall, the Go original, this process sending directly.
    let mut registry_cpu = 0.0;
    for trial in 0..count {
        let before = cpu_and_rss(registry.pid()).0;
        samples.push(fan_out_once(&clients[0], &dependents, "Fan").await);
        registry_cpu += cpu_and_rss(registry.pid()).0 - before;
        if let Some(go) = clients.get(1) {
            go_samples.push(fan_out_once(go, &dependents, "Fan").await);
        }
        baseline.push(send_directly(&direct, &dependents, trial).await);
    }
    let registry_cpu_all = cpu_and_rss(registry.pid()).0 - registry_cpu_before;
    let own_cpu = cpu_and_rss(std::process::id()).0 - own_cpu_before;
    let (median, p99) = median_p99(&mut samples);
    let (base_median, base_p99) = median_p99(&mut baseline);
    if std::env::var_os("ROLLCALL_BENCH_VERBOSE").is_some() {
        println!(
            "fan-out samples: {:?}",
            samples.iter().map(Duration::as_millis).collect::<Vec<_>>()
        );
    }
    let target = Duration::from_millis(50);
    println!(
        "fan-out to {subscribers} subscribers ({count} trials): median {} p99 {} | direct POSTs median {} p99 {} | median ratio {:.2} | target p99 < {}: {}",
        ms(median),
        ms(p99),
        ms(base_median),
        ms(base_p99),
        median.as_secs_f64() / base_median.as_secs_f64(),
        ms(target),
        verdict(p99 < target)
    );
    if !go_samples.is_empty() {
        let (go_median, go_p99) = median_p99(&mut go_samples);
        println!(
            "  the Go original, same receivers, interleaved: median {} p99 {} | rollcall / Go original: median {:.2}, p99 {:.2}",
            ms(go_median),
            ms(go_p99),
            median.as_secs_f64() / go_median.as_secs_f64(),
            p99.as_secs_f64() / go_p99.as_secs_f64()
        );
    }
    println!("  first change, opening {subscribers} connections: {}", ms(warm_up));
    let mut drains = Vec::with_capacity(count);
    for _ in 0..count {
        drains.push(drain_once(&registry.url, &clients[0], &dependents).await);
    }
    let (drain_median, drain_p99) = median_p99(&mut drains);
    println!(
        "drain of a provider until all {subscribers} dependents hold Removed ({count} trials, issue 16): median {} p99 {} | the same change by deregistration above: median {} | target p99 <= 50 ms: {}",
        ms(drain_median),
        ms(drain_p99),
        ms(median),
        verdict(drain_p99 <= Duration::from_millis(50))
    );
    println!(
        "  CPU: registry {registry_cpu:.1} s in its own trials ({:.0} us a delivery), {registry_cpu_all:.1} s over all trials; this process (receivers, baseline) {own_cpu:.1} s",
        registry_cpu * 1e6 / (2.0 * (count * subscribers) as f64)
    );
}

/// Registers a new provider of `service`, waits until every dependent holds it, deregisters it
/// and waits until every dependent dropped it; returns the time until all held it.
async fn fan_out_once(client: &Client, dependents: &[Arc<FakeService>], service: &str) -> Duration {
    let mut provider = FakeService::spawn(service, &[]).await;
    // A port the OS hands out again would make an earlier trial's arrival look like this one's.
    while dependents[0].arrival_of(&provider.entry(), false).is_some() {
        provider = FakeService::spawn(service, &[]).await;
    }
    let start = Instant::now();
    client.register(&provider.registration()).await;
    let mut last = start;
    for dependent in dependents {
        let arrived = eventually("every dependent to hold the provider", LONG, || async {
            dependent.arrival_of(&provider.entry(), false)
        })
        .await;
        last = last.max(arrived);
    }
    client.deregister(&provider.url).await;
    for dependent in dependents {
        eventually("the removal to reach every dependent", LONG, || async {
            dependent.arrival_of(&provider.entry(), true)
        })
        .await;
    }
    last - start
}

/// Registers a new provider of `Fan`, waits until every dependent holds it, drains it
/// (`POST /v1/instances/{id}/drain`) and returns the time until every dependent was sent its
/// removal; then deregisters it.
async fn drain_once(registry: &str, client: &Client, dependents: &[Arc<FakeService>]) -> Duration {
    let mut provider = FakeService::spawn("Fan", &[]).await;
    while dependents[0].arrival_of(&provider.entry(), false).is_some() {
        provider = FakeService::spawn("Fan", &[]).await;
    }
    client.register(&provider.registration()).await;
    for dependent in dependents {
        eventually("every dependent to hold the provider", LONG, || async {
            dependent.arrival_of(&provider.entry(), false)
        })
        .await;
    }
    let http = reqwest::Client::new();
    let listed: rollcall_wire::ServiceView = http
        .get(format!("{registry}/v1/services/Fan"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let id = listed
        .instances
        .iter()
        .find(|i| i.url == provider.url)
        .map(|i| i.id.clone())
        .expect("listed");
    let start = Instant::now();
    let drained = http
        .post(format!("{registry}/v1/instances/{id}/drain"))
        .send()
        .await
        .expect("POST drain");
    assert_eq!(drained.status(), 200);
    let mut last = start;
    for dependent in dependents {
        let arrived = eventually("the removal to reach every dependent", LONG, || async {
            dependent.arrival_of(&provider.entry(), true)
        })
        .await;
        last = last.max(arrived);
    }
    client.deregister(&provider.url).await;
    last - start
}

/// The baseline: the same kind of patch, sent by this process straight to every dependent at
/// once; returns the time until all answered.
async fn send_directly(direct: &reqwest::Client, dependents: &[Arc<FakeService>], trial: usize) -> Duration {
    let patch = Patch {
        added: vec![PatchEntry {
            name: "Direct".into(),
            url: format!("http://direct/{trial}"),
        }],
        removed: vec![],
    };
    let start = Instant::now();
    let mut sends = JoinSet::new();
    for dependent in dependents {
        let request = direct.post(format!("{}/services", dependent.url)).json(&patch).send();
        sends.spawn(async move { request.await.map(|r| r.status()) });
    }
    for sent in sends.join_all().await {
        assert_eq!(sent.expect("direct POST"), StatusCode::OK);
    }
    start.elapsed()
}

/// CPU used over `window` as a fraction of one core, and RSS at its end.
async fn measure(pid: u32, window: Duration) -> (f64, u64) {
    let (cpu_before, _) = cpu_and_rss(pid);
    tokio::time::sleep(window).await;
    let (cpu_after, rss) = cpu_and_rss(pid);
    ((cpu_after - cpu_before) / window.as_secs_f64(), rss)
}

async fn resources() {
    let window = Duration::from_secs(10);
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    tokio::time::sleep(Duration::from_secs(1)).await; // let start-up work settle
    let (idle_cpu, idle_rss) = measure(registry.pid(), window).await;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "registry idle: CPU {:.2}% of a core, RSS {:.1} MiB",
        idle_cpu * 100.0,
        mib(idle_rss)
    );
    drop(registry);
    if let Some(go) = go_original() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (go_cpu, go_rss) = measure(go.pid(), window).await;
        println!(
            "  the Go original idle, measured the same way: CPU {:.2}% of a core, RSS {:.1} MiB | rollcall / Go original RSS {:.2}",
            go_cpu * 100.0,
            mib(go_rss),
            mib(idle_rss) / mib(go_rss)
        );
    }

    for (instances, interval) in [(1_000, "3s"), (10_000, "1s")] {
        let registry = ServerProcess::start(rollcall(), "registry", |c| {
            c.args(["--health-interval", interval]);
            c.args(UNLIMITED_PROBES);
        });
        let client = Client::new(&registry);
        let fleet = Arc::new(FakeFleet::spawn().await);
        let mut registrations = JoinSet::new();
        for worker in 0..32 {
            let client = Arc::clone(&client);
            let fleet = Arc::clone(&fleet);
            registrations.spawn(async move {
                for n in (worker..instances).step_by(32) {
                    client
                        .register(&fleet.registration(n, &format!("Service{}", n % 50)))
                        .await;
                }
            });
        }
        registrations.join_all().await;
        // Two full intervals of probes before measuring.
        tokio::time::sleep(2 * rollcall_registry::parse_duration(interval).expect("interval")).await;
        let (cpu, rss) = measure(registry.pid(), window).await;
        let targets = if instances == 10_000 {
            format!(
                " | target CPU < 50% of a core: {}, RSS < 100 MiB: {}",
                verdict(cpu < 0.5),
                verdict(mib(rss) < 100.0)
            )
        } else {
            String::new()
        };
        println!(
            "{instances} instances probed every {interval}: registry CPU {:.1}% of a core, RSS {:.1} MiB ({:.2} x idle){targets}",
            cpu * 100.0,
            mib(rss),
            mib(rss) / mib(idle_rss)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--serve-baseline") {
        let size = |i: usize| {
            args.get(at + i)
                .and_then(|v| v.parse().ok())
                .expect("--serve-baseline POST_BYTES GET_BYTES HOLD_MICROS")
        };
        serve_baseline(size(1), size(2), Duration::from_micros(size(3) as u64));
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(run_sections());
}

async fn run_sections() {
    // `cargo bench -p rollcall --bench registry -- fan-out` runs only the sections named.
    let wanted = rollcall_testkit::wanted_sections();
    if wanted("detection") {
        failure_detection(
            "heartbeat answers 503",
            HeartbeatMode::Failing(StatusCode::SERVICE_UNAVAILABLE),
        )
        .await;
        failure_detection("heartbeat hangs", HeartbeatMode::Hang).await;
    }
    if wanted("fan-out") {
        fan_out().await;
    }
    if wanted("resources") {
        resources().await;
    }
    if wanted("throughput") {
        throughput().await;
    }
}

/// The baseline server: a minimal axum handler in this same binary (run as a child process with
/// `--serve-baseline POST_BYTES GET_BYTES HOLD_MICROS`) answering bodies as large as the
/// registry's, each `POST` after `hold` (zero: at once).
fn serve_baseline(post_bytes: usize, get_bytes: usize, hold: Duration) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind baseline");
        println!(
            "baseline listening on http://{}",
            listener.local_addr().expect("address")
        );
        let created = "x".repeat(post_bytes);
        let listed = "x".repeat(get_bytes);
        let app = axum::Router::new()
            .route(
                "/v1/instances",
                axum::routing::post(move |_body: axum::body::Bytes| {
                    let created = created.clone();
                    async move {
                        if !hold.is_zero() {
                            tokio::time::sleep(hold).await;
                        }
                        (StatusCode::CREATED, created)
                    }
                }),
            )
            .route(
                "/v1/services/{name}",
                axum::routing::get(move || std::future::ready(listed.clone())),
            );
        axum::serve(listener, app).await.expect("serve baseline");
    });
}

/// Open connections of the load generator for the throughput figures.
const CONNECTIONS: usize = 128;
/// How long each throughput figure is measured.
const WINDOW: Duration = Duration::from_secs(5);
/// Runs of each throughput figure; the median is reported.
const RUNS: usize = 3;

/// wrk Lua: every request puts a new key with a 300-byte value into etcd through its JSON
/// gateway (`POST /v3/kv/put`; keys and values in base64, so the body is about the size of a
/// registration).
/// Durable registrations and lookups per second, each beside the baseline server under the same
/// load generator (wrk), and etcd's durable puts under the same generator as a reference.
async fn throughput() {
    assert!(
        wrk::available(),
        "the throughput section drives load with wrk: run it through scripts/bench"
    );
    // Probing is measured on its own (`resources`).
    let registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.args(THROUGHPUT_REGISTRY_FLAGS);
    });
    let fleet = FakeFleet::spawn().await;
    let registrations = Load::new(CONNECTIONS, WINDOW).script(&registration_script(&fleet.url));
    let (post_bytes, get_bytes) = answer_sizes(&registry, &fleet).await;
    let lookups = Load::new(CONNECTIONS, WINDOW);
    let get_path = LOOKUP_PATH;

    // What a group commit costs by itself: the baseline answering only after the registry's
    // mean commit time, taken from a first run of the registration load.
    let (registry_url, registry_pid) = (registry.url.clone(), registry.pid());
    let warm_up = registrations.clone();
    tokio::task::spawn_blocking(move || warm_up.run(&registry_url))
        .await
        .expect("warm-up load");
    let commit = mean_commit(&registry.url).await;
    let baseline = start_baseline(post_bytes, get_bytes, Duration::ZERO);
    let held = start_baseline(post_bytes, get_bytes, commit);
    let etcd = EtcdCluster::installed().then(|| EtcdCluster::start_with_gateway(1));
    let etcd_puts = Load::new(CONNECTIONS, WINDOW).script(ETCD_PUT_SCRIPT);
    let (registry_url, baseline_url, held_url) = (registry.url.clone(), baseline.url.clone(), held.url.clone());
    let (baseline_pid, held_pid) = (baseline.pid(), held.pid());
    let etcd_target = etcd
        .as_ref()
        .map(|etcd| (etcd.endpoints()[0].clone(), etcd.pid(0).expect("running")));
    // Interleaved run by run: the registry, the baseline, the held baseline and etcd take turns.
    let figures = tokio::task::spawn_blocking(move || {
        let mut targets = vec![
            (&registrations, registry_url.as_str(), registry_pid),
            (&registrations, baseline_url.as_str(), baseline_pid),
            (&registrations, held_url.as_str(), held_pid),
        ];
        if let Some((url, pid)) = &etcd_target {
            targets.push((&etcd_puts, url.as_str(), *pid));
        }
        let writes = wrk::interleave(&targets, RUNS);
        let (registry_get, baseline_get) = (format!("{registry_url}{get_path}"), format!("{baseline_url}{get_path}"));
        let reads = wrk::interleave(
            &[
                (&lookups, &registry_get, registry_pid),
                (&lookups, &baseline_get, baseline_pid),
            ],
            RUNS,
        );
        (writes, reads)
    })
    .await
    .expect("load");
    drop((baseline, held, etcd));
    let (writes, reads) = figures;
    let (registered, base_registered, held_registered) = (writes[0], writes[1], writes[2]);
    let (looked_up, base_looked_up) = (reads[0], reads[1]);
    let rate = |measured: &wrk::Measured| measured.median.requests_per_second;
    let micros = |measured: &wrk::Measured| measured.cpu_per_request * 1e6;
    let versus_etcd = writes.get(3).map_or_else(
        || " | etcd: not installed (scripts/bench installs Debian's etcd-server)".to_owned(),
        |etcd| {
            format!(
                " | etcd 3.4 durable puts {:.0}/s ({:.0} µs), rollcall / etcd {:.2}",
                rate(etcd),
                micros(etcd),
                rate(&registered) / rate(etcd)
            )
        },
    );
    let target = 28_000.0;
    println!(
        "durable registrations (wrk, {CONNECTIONS} connections, median of {RUNS} x {WINDOW:?}, interleaved, {post_bytes}-byte answers): {:.0}/s ({:.0} µs of registry CPU each) | baseline {:.0}/s ({:.0} µs), ratio {:.2}{versus_etcd} | target {target:.0}/s: {}",
        rate(&registered),
        micros(&registered),
        rate(&base_registered),
        micros(&base_registered),
        rate(&registered) / rate(&base_registered),
        verdict(rate(&registered) >= target)
    );
    println!(
        "  held baseline (answering after the registry's mean commit, {:.2} ms): {:.0}/s ({:.0} µs) | registry / held baseline {:.2}",
        commit.as_secs_f64() * 1e3,
        rate(&held_registered),
        micros(&held_registered),
        rate(&registered) / rate(&held_registered)
    );
    let ratio = rate(&looked_up) / rate(&base_looked_up);
    println!(
        "lookups of a service ({get_bytes}-byte answers, interleaved): {:.0}/s ({:.0} µs) | baseline {:.0}/s ({:.0} µs) | ratio {ratio:.2} | target ratio >= 0.70: {}",
        rate(&looked_up),
        micros(&looked_up),
        rate(&base_looked_up),
        micros(&base_looked_up),
        verdict(ratio >= 0.70)
    );
}

/// The lookup the throughput section measures: a typical service of ten instances.
const LOOKUP_PATH: &str = "/v1/services/Lookup";

/// Registers the ten instances of [`LOOKUP_PATH`]'s service; the sizes of the registry's answer
/// to a registration and to that lookup, for the baseline to answer as many bytes.
async fn answer_sizes(registry: &ServerProcess, fleet: &FakeFleet) -> (usize, usize) {
    let http = reqwest::Client::new();
    let mut sample = serde_json::to_value(fleet.registration(0, "Load0")).expect("encode");
    sample["Metadata"] = serde_json::json!({ "zone": "a" });
    let created = http
        .post(format!("{}/v1/instances", registry.url))
        .json(&sample)
        .send()
        .await
        .expect("POST");
    let post_bytes = created.bytes().await.expect("body").len();
    for n in 0..10 {
        let response = http
            .post(format!("{}/v1/instances", registry.url))
            .json(&fleet.registration(1_000_000 + n, "Lookup"))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 201);
    }
    let get_bytes = http
        .get(format!("{}{LOOKUP_PATH}", registry.url))
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body")
        .len();
    (post_bytes, get_bytes)
}

/// The baseline server as a child process (see [`serve_baseline`]).
fn start_baseline(post_bytes: usize, get_bytes: usize, hold: Duration) -> ServerProcess {
    ServerProcess::start_command(
        std::process::Command::new(std::env::current_exe().expect("this binary")).args([
            "--serve-baseline",
            &post_bytes.to_string(),
            &get_bytes.to_string(),
            &hold.as_micros().to_string(),
        ]),
    )
}

/// The registry's mean catalog commit time so far, from its `/metrics`.
async fn mean_commit(registry_url: &str) -> Duration {
    let text = reqwest::get(format!("{registry_url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    let value = |name: &str| rollcall_testkit::metric(&text, name).expect("commit histogram");
    let (sum, count) = (
        value("rollcall_catalog_commit_seconds_sum"),
        value("rollcall_catalog_commit_seconds_count"),
    );
    Duration::from_secs_f64(sum / count.max(1.0))
}
