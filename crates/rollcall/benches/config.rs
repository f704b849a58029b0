//! Central configuration (issue 17), each figure beside a baseline measured in the same run,
//! with the release `rollcall registry` as a child process and everything else in this process,
//! on 127.0.0.1:
//! - `push`: from a publish until all 1,000 subscribed `ConfigClient`s (each holding its
//!   service's stream) applied the new value, beside the registry's fan-out of a provider patch
//!   to 1,000 dependents, trial by trial;
//! - `publish`: a durable publish's acknowledgement (fsynced), beside a durable registration's,
//!   alternating;
//! - `cache-start`: a client's start until its value is there, from its cache with the registry
//!   gone, beside from the registry;
//! - `rss`: the registry's RSS holding 10,000 documents of 4 KiB, beside the same registry empty;
//! - `webhooks`: from a publish until all 1,000 instances registered with a `ConfigUpdateURL`
//!   were sent it, beside the registry's fan-out of a provider patch to the same 1,000, trial by
//!   trial.
//!
//! Run with `scripts/bench -p rollcall --bench config` (or `-- push` for one section);
//! `ROLLCALL_BENCH_TRIALS` sets the trials of `push` (default 30).

// A benchmark is a report: it prints, and turns counts into f64 for ratios.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollcall_client::ConfigClient;
use rollcall_testkit::bench::{seed_fan_out_once, verdict};
use rollcall_testkit::{DEADLINE, FakeService, ServerProcess, cpu_and_rss, eventually, median_p99};
use tokio_util::sync::CancellationToken;

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn trials(default: usize) -> usize {
    std::env::var("ROLLCALL_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            rollcall_http::raise_open_files_limit();
            let wanted = rollcall_testkit::wanted_sections();
            if wanted("push") {
                push().await;
            }
            if wanted("publish") {
                publish_ack().await;
            }
            if wanted("cache-start") {
                cache_start().await;
            }
            if wanted("rss") {
                rss().await;
            }
            if wanted("webhooks") {
                webhooks().await;
            }
        });
}

/// Publishes `body` as `path` on the registry at `base`; the time the acknowledgement took.
async fn publish(http: &reqwest::Client, base: &str, path: &str, body: String) -> Duration {
    let started = Instant::now();
    let answer = http
        .put(format!("{base}/v1/config/{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("PUT");
    assert!(answer.status().is_success(), "{}", answer.status());
    started.elapsed()
}

const SUBSCRIBERS: usize = 1_000;

async fn push() {
    let registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.args(["--max-probes-per-host", "4000000000"]);
    });
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    publish(&http, &registry.url, "prod/Fan/doc", r#"{"n": 0}"#.to_owned()).await;

    // 1,000 configuration clients, each noting when each value arrived.
    let stop = CancellationToken::new();
    let mut arrivals = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let client = ConfigClient::start(http.clone(), &registry.url, "prod", "Fan", None, stop.clone());
        let mut value = client.value::<serde_json::Value, _>("doc", |_| Ok(()));
        let seen: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
        let noted = Arc::clone(&seen);
        tokio::spawn(async move {
            if let Some(value) = value.current() {
                let n = value["n"].as_u64().unwrap_or_default();
                noted.lock().expect("lock").push((n, Instant::now()));
            }
            while let Some(value) = value.changed().await {
                let n = value["n"].as_u64().unwrap_or_default();
                noted.lock().expect("lock").push((n, Instant::now()));
            }
        });
        arrivals.push(seen);
    }
    // 1,000 dependents of the provider patches the baseline sends.
    let mut dependents = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let dependent = FakeService::spawn("Dependent", &["Fan"]).await;
        let answer = http
            .post(format!("{}/services", registry.url))
            .json(&dependent.registration())
            .send()
            .await
            .expect("register");
        assert_eq!(answer.status(), 200);
        dependents.push(dependent);
    }
    let arrived = |n: u64| {
        let arrivals = &arrivals;
        async move {
            let mut last = None;
            for seen in arrivals {
                let at = eventually("every client to apply the release", DEADLINE, || async {
                    seen.lock()
                        .expect("lock")
                        .iter()
                        .find(|(m, _)| *m == n)
                        .map(|(_, at)| *at)
                })
                .await;
                last = last.max(Some(at));
            }
            last.expect("subscribers")
        }
    };
    arrived(0).await;

    let count = trials(30);
    let (mut config, mut patches) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let (registry_cpu_before, _) = cpu_and_rss(registry.pid());
    for trial in 1..=count as u64 {
        let started = Instant::now();
        publish(&http, &registry.url, "prod/Fan/doc", format!("{{\"n\": {trial}}}")).await;
        config.push(arrived(trial).await - started);
        patches.push(seed_fan_out_once(&http, &registry.url, &dependents, DEADLINE).await);
    }
    let registry_cpu = cpu_and_rss(registry.pid()).0 - registry_cpu_before;
    let (median, p99) = median_p99(&mut config);
    let (patch_median, patch_p99) = median_p99(&mut patches);
    println!(
        "publish until all {SUBSCRIBERS} subscribed clients applied it ({count} trials): median {} p99 {} || a provider patch's fan-out to {SUBSCRIBERS} dependents, same trials: median {} p99 {} | registry CPU over both {:.2} s | target p99 <= 50 ms: {}",
        ms(median),
        ms(p99),
        ms(patch_median),
        ms(patch_p99),
        registry_cpu,
        verdict(p99 <= Duration::from_millis(50))
    );
    stop.cancel();
}

async fn publish_ack() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let fleet = rollcall_testkit::FakeFleet::spawn().await;
    let (mut publishes, mut registrations) = (Vec::new(), Vec::new());
    let document = format!("{{\"padding\": \"{}\"}}", "x".repeat(4000));
    for n in 0..200 {
        publishes.push(publish(&http, &registry.url, "prod/Grading/limits", document.clone()).await);
        let started = Instant::now();
        let answer = http
            .post(format!("{}/v1/instances", registry.url))
            .json(&fleet.registration(n, "Load"))
            .send()
            .await
            .expect("register");
        assert_eq!(answer.status(), 201);
        registrations.push(started.elapsed());
    }
    let (median, p99) = median_p99(&mut publishes);
    let (r_median, r_p99) = median_p99(&mut registrations);
    println!(
        "durable publish of a 4 KiB document acknowledged (200, alternating): median {} p99 {} || a durable /v1 registration's: median {} p99 {} | target p99 <= 20 ms: {}",
        ms(median),
        ms(p99),
        ms(r_median),
        ms(r_p99),
        verdict(p99 <= Duration::from_millis(20))
    );
}

async fn cache_start() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    publish(
        &http,
        &registry.url,
        "prod/Grading/limits",
        r#"{"max": 100}"#.to_owned(),
    )
    .await;
    let cache = tempfile::tempdir().expect("dir");
    let first_value = |base: String| {
        let (http, dir) = (http.clone(), cache.path().to_owned());
        async move {
            let stop = CancellationToken::new();
            let started = Instant::now();
            let client = ConfigClient::start(http, &base, "prod", "Grading", Some(dir), stop.clone());
            let mut value = client.value::<serde_json::Value, _>("limits", |_| Ok(()));
            if value.current().is_none() {
                tokio::time::timeout(DEADLINE, value.changed())
                    .await
                    .expect("a value in time");
            }
            let took = started.elapsed();
            stop.cancel();
            took
        }
    };
    let mut from_registry: Vec<Duration> = Vec::new();
    for _ in 0..30 {
        from_registry.push(first_value(registry.url.clone()).await);
    }
    drop(registry);
    let gone = rollcall_testkit::refused_url().await;
    let mut from_cache: Vec<Duration> = Vec::new();
    for _ in 0..30 {
        from_cache.push(first_value(gone.clone()).await);
    }
    let (median, p99) = median_p99(&mut from_cache);
    let (r_median, r_p99) = median_p99(&mut from_registry);
    println!(
        "a client's start until its value is there (30 each): from its cache with the registry gone median {} p99 {} || from the registry median {} p99 {} | target <= 500 ms: {}",
        ms(median),
        ms(p99),
        ms(r_median),
        ms(r_p99),
        verdict(p99 <= Duration::from_millis(500))
    );
}

async fn rss() {
    let empty = ServerProcess::start(rollcall(), "registry", |_| {});
    let full = ServerProcess::start(rollcall(), "registry", |_| {});
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let document = |n: usize| format!("{{\"n\": {n}, \"padding\": \"{}\"}}", "x".repeat(4070));
    let mut publishing = tokio::task::JoinSet::new();
    for part in 0..16 {
        let (http, base) = (http.clone(), full.url.clone());
        publishing.spawn(async move {
            for n in (part..10_000).step_by(16) {
                publish(&http, &base, &format!("prod/Service{}/doc{n}", n % 100), document(n)).await;
            }
        });
    }
    // Every publish is acknowledged: stored and held; nothing is left to wait for.
    publishing.join_all().await;
    let (_, full_rss) = cpu_and_rss(full.pid());
    let (_, empty_rss) = cpu_and_rss(empty.pid());
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "registry RSS holding 10,000 documents of 4 KiB: {:.1} MiB || the same registry empty: {:.1} MiB | target <= 100 MiB: {}",
        mib(full_rss),
        mib(empty_rss),
        verdict(full_rss <= 100 * 1024 * 1024)
    );
}

/// What the webhook receivers were sent: configuration revision → (deliveries, the last one's
/// time), and provider URL → (patches adding it, the last one's time).
#[derive(Debug, Default)]
struct Received {
    releases: HashMap<u64, (usize, Instant)>,
    patches: HashMap<String, (usize, Instant)>,
}

/// One server standing in for every webhook receiver: `/i/{n}/config` and `/i/{n}/services`
/// note what they are sent in `received`; its base URL.
async fn receivers(received: Arc<Mutex<Received>>) -> String {
    use axum::routing::{any, post};
    let (on_release, on_patch) = (Arc::clone(&received), Arc::clone(&received));
    let app = axum::Router::new()
        .route(
            "/i/{n}/config",
            post(move |axum::Json(event): axum::Json<rollcall_wire::ReleaseEvent>| {
                let received = Arc::clone(&on_release);
                async move {
                    let mut received = received.lock().expect("lock");
                    let entry = received
                        .releases
                        .entry(event.release.revision)
                        .or_insert((0, Instant::now()));
                    *entry = (entry.0 + 1, Instant::now());
                }
            }),
        )
        .route(
            "/i/{n}/services",
            post(move |axum::Json(patch): axum::Json<rollcall_wire::Patch>| {
                let received = Arc::clone(&on_patch);
                async move {
                    let mut received = received.lock().expect("lock");
                    for added in patch.added {
                        let entry = received.patches.entry(added.url).or_insert((0, Instant::now()));
                        *entry = (entry.0 + 1, Instant::now());
                    }
                }
            }),
        )
        .route("/i/{n}/heartbeat", any(|| async {}));
    rollcall_testkit::serve(app, CancellationToken::new()).await
}

/// Registers 1,000 instances of `Hooked` at `fleet`, each with a `ConfigUpdateURL`, requiring
/// `Fan`.
async fn register_hooked(http: &reqwest::Client, base: &str, fleet: &str) {
    let mut registering = tokio::task::JoinSet::new();
    for part in 0..32 {
        let (http, base, fleet) = (http.clone(), base.to_owned(), fleet.to_owned());
        registering.spawn(async move {
            for n in (part..SUBSCRIBERS).step_by(32) {
                let url = format!("{fleet}/i/{n}");
                let body = serde_json::json!({
                    "ServiceName": "Hooked", "ServiceURL": url, "RequiredServices": ["Fan"],
                    "ServiceUpdateURL": format!("{url}/services"), "HeartbeatURL": format!("{url}/heartbeat"),
                    "ConfigUpdateURL": format!("{url}/config"), "Metadata": {"config-namespace": "prod"},
                });
                let answer = http
                    .post(format!("{base}/v1/instances"))
                    .json(&body)
                    .send()
                    .await
                    .expect("register");
                assert_eq!(answer.status(), 201);
            }
        });
    }
    registering.join_all().await;
}

/// Registers a new provider of `Fan` and waits until all 1,000 dependents were sent it; then
/// deregisters it. The wait.
async fn patch_once(http: &reqwest::Client, base: &str, received: &Arc<Mutex<Received>>) -> Duration {
    let mut provider = FakeService::spawn("Fan", &[]).await;
    // A port the OS hands out again would make an earlier trial's patches look like this one's.
    while received.lock().expect("lock").patches.contains_key(&provider.url) {
        provider = FakeService::spawn("Fan", &[]).await;
    }
    let started = Instant::now();
    let answer = http
        .post(format!("{base}/services"))
        .json(&provider.registration())
        .send()
        .await
        .expect("register");
    assert_eq!(answer.status(), 200);
    let last = eventually("every dependent to be sent the provider", DEADLINE, || async {
        let received = received.lock().expect("lock");
        received
            .patches
            .get(&provider.url)
            .filter(|(count, _)| *count >= SUBSCRIBERS)
            .map(|(_, last)| *last)
    })
    .await;
    let answer = http
        .delete(format!("{base}/services"))
        .body(provider.url.clone())
        .send()
        .await
        .expect("deregister");
    assert_eq!(answer.status(), 200);
    last - started
}

async fn webhooks() {
    let received: Arc<Mutex<Received>> = Arc::default();
    let fleet = receivers(Arc::clone(&received)).await;
    let registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.args(["--health-interval", "10m", "--max-probes-per-host", "4000000000"]);
    });
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    publish(&http, &registry.url, "prod/Hooked/doc", r#"{"n": 1}"#.to_owned()).await;
    register_hooked(&http, &registry.url, &fleet).await;
    let all_sent = |revision: u64| {
        let received = Arc::clone(&received);
        async move {
            eventually("every webhook to be sent the release", DEADLINE, || async {
                let received = received.lock().expect("lock");
                received
                    .releases
                    .get(&revision)
                    .filter(|(count, _)| *count >= SUBSCRIBERS)
                    .map(|(_, last)| *last)
            })
            .await
        }
    };
    all_sent(1).await;
    // The first patch also opens a connection to each dependent: not a trial.
    patch_once(&http, &registry.url, &received).await;

    let count = trials(30);
    let (mut hooks, mut patches) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for trial in 2..(count as u64 + 2) {
        let started = Instant::now();
        publish(&http, &registry.url, "prod/Hooked/doc", format!("{{\"n\": {trial}}}")).await;
        hooks.push(all_sent(trial).await - started);

        patches.push(patch_once(&http, &registry.url, &received).await);
    }
    let (median, p99) = median_p99(&mut hooks);
    let (patch_median, patch_p99) = median_p99(&mut patches);
    println!(
        "publish until all {SUBSCRIBERS} webhook receivers were sent it ({count} trials): median {} p99 {} || a provider patch's fan-out to the same {SUBSCRIBERS}, same trials: median {} p99 {} | target p99 <= 200 ms: {}",
        ms(median),
        ms(p99),
        ms(patch_median),
        ms(patch_p99),
        verdict(p99 <= Duration::from_millis(200))
    );
}
