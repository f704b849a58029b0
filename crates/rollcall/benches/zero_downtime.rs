//! Zero-downtime operations (issue 16), each figure beside a baseline measured in the same run,
//! with the release `rollcall` binary's services as child processes and the load in this
//! process, on 127.0.0.1:
//! - `rolling-restart`: requests that fail for a dependent making one attempt per request (it
//!   learns its providers from the registry's patches, like the seed's Go services) while two
//!   `rollcall grades` processes are restarted one after the other under its steady load, with
//!   draining (the default `--drain-timeout 10s`) and without (`--drain-timeout 0s`), alternating;
//! - `ttl-expiry`: how long after a TTL ran out the registry says so (the instance turns
//!   suspect, as seen on `/v1/events`), and until it is critical, beside how long an HTTP-probed
//!   instance with the same interval takes to turn suspect once its heartbeat fails;
//! - `ttl-cost`: the registry's CPU and RSS with 10,000 TTL instances renewed every second
//!   (renewals sent from this process), beside 10,000 instances it probes every second.
//!
//! Run with `scripts/bench -p rollcall --bench zero_downtime` (or `-- ttl-expiry` for one
//! section); `ROLLCALL_BENCH_RUNS` sets the rolling restarts per side (default 5).

// A benchmark is a report: it prints, and turns counts into f64 for ratios.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rollcall_testkit::bench::verdict;
use rollcall_testkit::{
    DEADLINE, FakeFleet, FakeService, HeartbeatMode, ServerProcess, SseClient, SteadyLoad, Tally, cpu_and_rss,
    eventually, median_p99, roll,
};
use rollcall_wire::{CatalogEvent, InstanceState, InstanceView};
use serde_json::json;

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let wanted = rollcall_testkit::wanted_sections();
            if wanted("rolling-restart") {
                rolling_restart().await;
            }
            if wanted("ttl-expiry") {
                ttl_expiry().await;
            }
            if wanted("ttl-cost") {
                ttl_cost().await;
            }
        });
}

/// A registry that notices a dead instance within a second (probes every 250 ms).
fn quick_registry(extra: &[&str]) -> ServerProcess {
    ServerProcess::start(rollcall(), "registry", |c| {
        c.args(["--health-interval", "250ms", "--health-timeout", "100ms"])
            .args(["--health-tries", "3", "--health-retry-delay", "100ms"])
            .args(extra);
    })
}

async fn rolling_restart() {
    let runs: usize = std::env::var("ROLLCALL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        on.push(one_rolling_restart("10s").await);
        off.push(one_rolling_restart("0s").await);
    }
    let total = |tallies: &[Tally]| {
        tallies.iter().fold(Tally::default(), |sum, t| Tally {
            sent: sum.sent + t.sent,
            failed: sum.failed + t.failed,
        })
    };
    let per_run = |tallies: &[Tally]| {
        tallies
            .iter()
            .map(|t| t.failed.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (with, without) = (total(&on), total(&off));
    println!(
        "rolling restart of 2 grading processes under a single-attempt dependent's steady load, {runs} restarts per side, alternating: failed requests with draining {} of {} (per restart: {}) | without draining (--drain-timeout 0s) {} of {} (per restart: {}) | target 0 with draining: {}",
        with.failed,
        with.sent,
        per_run(&on),
        without.failed,
        without.sent,
        per_run(&off),
        verdict(with.failed == 0)
    );
}

/// One rolling restart of two grading processes started with `--drain-timeout drain`.
async fn one_rolling_restart(drain: &str) -> Tally {
    let registry = quick_registry(&[]);
    let with_registry = |c: &mut std::process::Command| {
        c.args(["--registry", &registry.url, "--drain-timeout", drain]);
    };
    let grading = vec![
        ServerProcess::start(rollcall(), "grades", with_registry),
        ServerProcess::start(rollcall(), "grades", with_registry),
    ];
    let dependent = Arc::new(FakeService::spawn("Caller", &["GradingService"]).await);
    let registered = reqwest::Client::new()
        .post(format!("{}/services", registry.url))
        .json(&dependent.registration())
        .send()
        .await
        .expect("register the dependent");
    assert_eq!(registered.status(), 200);
    eventually("both grading instances held", DEADLINE, || async {
        (dependent.providers().len() == 2).then_some(())
    })
    .await;
    let load = SteadyLoad::of_dependent(
        Arc::clone(&dependent),
        "GradingService",
        "/students",
        Duration::from_millis(1),
    );
    load.wait_for_more(200).await;
    let grading = roll(grading, &dependent, "GradingService", |old| old.restart(with_registry)).await;
    load.wait_for_more(200).await;
    let tally = load.stop().await;
    drop(grading);
    tally
}

/// Registers `count` instances through `POST /v1/instances` with the bodies `body(n)`, 64 at a
/// time; returns their ids by `n`.
async fn register_all(
    registry: &str,
    count: usize,
    body: impl Fn(usize) -> serde_json::Value + Send + Sync + 'static,
) -> Vec<String> {
    let (http, next, body) = (reqwest::Client::new(), Arc::new(AtomicUsize::new(0)), Arc::new(body));
    let ids = Arc::new(std::sync::Mutex::new(vec![String::new(); count]));
    let mut registering = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (http, next, body, ids, url) = (
            http.clone(),
            next.clone(),
            body.clone(),
            ids.clone(),
            registry.to_owned(),
        );
        registering.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                let answer = http
                    .post(format!("{url}/v1/instances"))
                    .json(&body(n))
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(answer.status(), 201, "registration {n}");
                let view: InstanceView = answer.json().await.expect("instance");
                ids.lock().expect("ids")[n] = view.id;
            }
        });
    }
    registering.join_all().await;
    Arc::try_unwrap(ids)
        .expect("every task ended")
        .into_inner()
        .expect("ids")
}

/// A `/v1` registration of instance `n` of `fleet` as `service`, checked by `check`.
fn fleet_instance(fleet: &str, n: usize, service: &str, check: &serde_json::Value) -> serde_json::Value {
    let url = format!("{fleet}/i/{n}");
    json!({
        "ServiceName": service, "ServiceURL": url,
        "ServiceUpdateURL": format!("{url}/services"), "HeartbeatURL": format!("{url}/heartbeat"),
        "Check": check,
    })
}

/// When each instance (by URL) was first seen entering `state` on `events`, until `count` were.
async fn entered(events: &mut SseClient, state: InstanceState, count: usize) -> HashMap<String, Instant> {
    let mut seen = HashMap::new();
    while seen.len() < count {
        let Some(message) = events.next().await else { break };
        if let CatalogEvent::StateChanged { instance, .. } = message.json::<CatalogEvent>()
            && instance.state == state
        {
            seen.entry(instance.url).or_insert_with(Instant::now);
        }
    }
    seen
}

async fn ttl_expiry() {
    const TRIALS: usize = 50;
    let ttl = Duration::from_secs(1);
    let retry_delay = Duration::from_secs(1);
    let registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.args([
            "--health-retry-delay",
            "1s",
            "--health-tries",
            "3",
            "--max-probes-per-host",
            "100000",
        ]);
    });
    let http = reqwest::Client::new();
    let fleet = FakeFleet::spawn().await;

    // TTL instances: registered, renewed once, then left to run out.
    let mut events = SseClient::connect(&format!("{}/v1/events", registry.url), None).await;
    let check = json!({"Kind": "ttl", "TTL": "1s"});
    let fleet_url = fleet.url.clone();
    let ids = register_all(&registry.url, TRIALS, move |n| {
        fleet_instance(&fleet_url, n, "Ttl", &check)
    })
    .await;
    let mut renewed = HashMap::new();
    for (n, id) in ids.iter().enumerate() {
        let answer = http
            .put(format!("{}/v1/instances/{id}/ttl", registry.url))
            .send()
            .await
            .expect("PUT ttl");
        assert_eq!(answer.status(), 204);
        renewed.insert(format!("{}/i/{n}", fleet.url), Instant::now());
        tokio::time::sleep(Duration::from_millis(7)).await; // spread over the TTL
    }
    let suspect = entered(&mut events, InstanceState::Suspect, TRIALS).await;
    let critical = entered(&mut events, InstanceState::Critical, TRIALS).await;
    let mut after_ttl: Vec<Duration> = suspect
        .iter()
        .map(|(url, at)| at.saturating_duration_since(renewed[url] + ttl))
        .collect();
    let mut to_critical: Vec<Duration> = critical.iter().map(|(url, at)| *at - renewed[url]).collect();

    // The baseline: HTTP-probed instances with the same interval, whose heartbeats start failing.
    let mut services = Vec::new();
    for n in 0..TRIALS {
        let service = FakeService::spawn(&format!("Probed{n}"), &[]).await;
        let mut body = serde_json::to_value(service.registration()).expect("encode");
        body["Check"] = json!({"Interval": "1s", "Tries": 3});
        let answer = http
            .post(format!("{}/v1/instances", registry.url))
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(answer.status(), 201);
        services.push(service);
    }
    // The TTL instances are critical by now: every passing instance is a probed one.
    every_passing(&registry.url, TRIALS).await;
    let mut failing_since = HashMap::new();
    for service in &services {
        service.set_heartbeat(HeartbeatMode::Failing(axum::http::StatusCode::SERVICE_UNAVAILABLE));
        failing_since.insert(service.url.clone(), Instant::now());
    }
    let probed_suspect = entered(&mut events, InstanceState::Suspect, TRIALS).await;
    let mut probed: Vec<Duration> = probed_suspect
        .iter()
        .map(|(url, at)| *at - failing_since[url])
        .collect();

    let (median, p99) = median_p99(&mut after_ttl);
    let (critical_median, critical_p99) = median_p99(&mut to_critical);
    let (probed_median, probed_p99) = median_p99(&mut probed);
    println!(
        "TTL expiry, {TRIALS} instances with a 1 s TTL and 3 tries (retry delay 1 s), renewed once: suspect after the TTL ran out median {} p99 {} | critical after the last renewal median {} p99 {} (TTL + 2 retry delays = 3 s) || HTTP-probed every 1 s, heartbeat failing: suspect after median {} p99 {} | target p99 within one retry delay of the TTL: {}",
        ms(median),
        ms(p99),
        ms(critical_median),
        ms(critical_p99),
        ms(probed_median),
        ms(probed_p99),
        verdict(p99 <= retry_delay)
    );
}

/// What a registry used over a `window`: CPU (share of one core) and RSS at the end.
async fn cost_over(registry: &ServerProcess, window: Duration) -> (f64, u64) {
    let (cpu_before, _) = cpu_and_rss(registry.pid());
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let (cpu_after, rss) = cpu_and_rss(registry.pid());
    ((cpu_after - cpu_before) / started.elapsed().as_secs_f64(), rss)
}

/// A registry admitting `count` instances, probing every second, with no per-host budget in the
/// way (the fleet is one host).
fn registry_for(count: usize) -> ServerProcess {
    let count = count.to_string();
    ServerProcess::start(rollcall(), "registry", |c| {
        c.args(["--health-interval", "1s", "--max-probes-per-host", "100000"])
            .args(["--max-instances", &count, "--max-instances-per-service", &count]);
    })
}

/// Instances in each side of `ttl-cost`.
const COST_COUNT: usize = 10_000;
/// How long each side of `ttl-cost` is measured, once settled.
const COST_WINDOW: Duration = Duration::from_secs(10);

/// What one side of `ttl-cost` measured.
struct Cost {
    /// Share of one core.
    cpu: f64,
    rss: u64,
    /// Renewals answered, or probes received, per second.
    rate: f64,
}

async fn ttl_cost() {
    let fleet = FakeFleet::spawn().await;
    let (mut ttl, mut probed) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        ttl.push(ttl_side(&fleet).await);
        probed.push(probed_side(&fleet).await);
    }
    let (ttl, probed) = (median_cost(ttl), median_cost(probed));
    println!(
        "{COST_COUNT} instances, 3 rounds of {} s per side, alternating, medians: TTL-checked, renewed every 1 s ({:.0} renewals/s answered): registry CPU {:.1} % of a core, RSS {} || HTTP-probed every 1 s ({:.0} probes/s): CPU {:.1} %, RSS {} | TTL / probed CPU {:.2}",
        COST_WINDOW.as_secs(),
        ttl.rate,
        ttl.cpu * 100.0,
        mib(ttl.rss),
        probed.rate,
        probed.cpu * 100.0,
        mib(probed.rss),
        ttl.cpu / probed.cpu
    );
}

/// The median of each figure.
fn median_cost(mut costs: Vec<Cost>) -> Cost {
    let middle = costs.len() / 2;
    let mut take = |key: fn(&Cost) -> f64| {
        costs.sort_by(|a, b| key(a).total_cmp(&key(b)));
        key(&costs[middle])
    };
    let (cpu, rate) = (take(|c| c.cpu), take(|c| c.rate));
    costs.sort_by_key(|c| c.rss);
    Cost {
        cpu,
        rss: costs[middle].rss,
        rate,
    }
}

/// 10,000 instances with a 3 s TTL, each renewed every second by 100 renewers in this process.
async fn ttl_side(fleet: &FakeFleet) -> Cost {
    let registry = registry_for(COST_COUNT);
    let fleet_url = fleet.url.clone();
    let check = json!({"Kind": "ttl", "TTL": "3s"});
    let ids = register_all(&registry.url, COST_COUNT, move |n| {
        fleet_instance(&fleet_url, n, "Ttl", &check)
    })
    .await;
    let ids = Arc::new(ids);
    let renewals = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let http = reqwest::Client::new();
    let mut renewers = tokio::task::JoinSet::new();
    for part in 0..100 {
        let (ids, renewals, stop, http, url) = (
            ids.clone(),
            renewals.clone(),
            stop.clone(),
            http.clone(),
            registry.url.clone(),
        );
        renewers.spawn(async move {
            let mut every_second = tokio::time::interval(Duration::from_secs(1));
            while !stop.is_cancelled() {
                every_second.tick().await;
                for id in ids.iter().skip(part).step_by(100) {
                    let renewed = http.put(format!("{url}/v1/instances/{id}/ttl")).send().await;
                    if renewed.is_ok_and(|r| r.status() == 204) {
                        renewals.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    every_passing(&registry.url, COST_COUNT).await;
    let before = renewals.load(Ordering::Relaxed);
    let (cpu, rss) = cost_over(&registry, COST_WINDOW).await;
    let rate = (renewals.load(Ordering::Relaxed) - before) as f64 / COST_WINDOW.as_secs_f64();
    let passing = registry_states(&registry.url).await;
    assert_eq!(passing, COST_COUNT, "every renewed instance passing");
    stop.cancel();
    renewers.join_all().await;
    Cost { cpu, rss, rate }
}

/// 10,000 instances of `fleet`, probed every second.
async fn probed_side(fleet: &FakeFleet) -> Cost {
    let registry = registry_for(COST_COUNT);
    let fleet_url = fleet.url.clone();
    register_all(&registry.url, COST_COUNT, move |n| {
        fleet_instance(&fleet_url, n, "Probed", &json!(null))
    })
    .await;
    every_passing(&registry.url, COST_COUNT).await;
    let before = fleet.heartbeats();
    let (cpu, rss) = cost_over(&registry, COST_WINDOW).await;
    let rate = (fleet.heartbeats() - before) as f64 / COST_WINDOW.as_secs_f64();
    Cost { cpu, rss, rate }
}

/// Waits until the registry at `url` lists `count` instances as passing: every one proven
/// alive (probed or renewed), so a measurement starts on a fleet in its steady state.
async fn every_passing(url: &str, count: usize) {
    eventually("every instance to pass", DEADLINE, || async {
        (registry_states(url).await == count).then_some(())
    })
    .await;
}

/// How many instances the registry at `url` lists as passing.
async fn registry_states(url: &str) -> usize {
    let view: rollcall_wire::ServicesView = reqwest::get(format!("{url}/v1/services"))
        .await
        .expect("GET /v1/services")
        .json()
        .await
        .expect("JSON");
    view.services
        .iter()
        .flat_map(|s| &s.instances)
        .filter(|i| i.state == InstanceState::Passing)
        .count()
}
