//! rollcall-client benchmark: the cost of a provider lookup and of one `tracing::info!` with log
//! shipping on, each beside a baseline measured in the same run.
//!
//! Run with `cargo bench -p rollcall-client --bench client`. Sections:
//! - `providers`: `Providers::get` (round robin over 3 instances) in ns, alone and while another
//!   thread applies patches without pause, beside the Go client's design (a map behind a mutex,
//!   the URL copied out) under the same two loads;
//! - `logging`: one `tracing::info!` with two fields on the application thread, with shipping to
//!   a live log service, with the log service down (early, and again once the buffer is full and
//!   records are being dropped), beside the same event with no layer at all;
//! - `reregister`: a registry restarted empty, 30 times: how long until a service is listed
//!   again, from the moment the registry answers (issue 16's target: p99 within 1 s), with the
//!   registry probing every 30 s (so only the runtime's watch on its own listing can be that
//!   quick), beside the same with probes every 100 ms, where the probes' silence would tell too.
//!
//! Medians of many samples, each sample timing a run of calls, subject and baseline alternating
//! sample by sample (machines here are noisy); each target's verdict is computed from the run.

// A benchmark is a report: it prints to stdout, and turns counts into f64 for ratios.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rollcall_client::{LogShipping, Providers, RunningService, Service, ShippingConfig};
use rollcall_testkit::bench::verdict;
use rollcall_testkit::{DEADLINE, LogSink, TestRegistry, cpu_and_rss, eventually};
use rollcall_wire::{Patch, PatchEntry};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::prelude::*;

/// Times `samples` runs of `calls_per_sample` calls of `ours`, and as many of `theirs`,
/// alternating run by run so that the host's drift favours neither; the median ns per call of
/// each.
fn median_ns_pair(
    samples: usize,
    calls_per_sample: usize,
    mut ours: impl FnMut(),
    mut theirs: impl FnMut(),
) -> (f64, f64) {
    let time = |call: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..calls_per_sample {
            call();
        }
        start.elapsed().as_nanos() as f64 / calls_per_sample as f64
    };
    let (mut a, mut b) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        a.push(time(&mut ours));
        b.push(time(&mut theirs));
    }
    (median(&mut a), median(&mut b))
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn entry(url: &str) -> PatchEntry {
    PatchEntry {
        name: "GradingService".into(),
        url: url.into(),
    }
}

/// The Go client's providers: a map of URL lists behind one mutex, the URL copied out.
#[derive(Default)]
struct MutexProviders {
    services: Mutex<HashMap<String, Vec<String>>>,
    next: AtomicUsize,
}

impl MutexProviders {
    fn get(&self, service: &str) -> Option<String> {
        let services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let urls = services.get(service)?;
        let index = self.next.fetch_add(1, Ordering::Relaxed) % urls.len();
        Some(urls[index].clone())
    }

    fn apply(&self, patch: &Patch) {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        for e in &patch.added {
            services.entry(e.name.clone()).or_default().push(e.url.clone());
        }
        for e in &patch.removed {
            if let Some(urls) = services.get_mut(&e.name) {
                urls.retain(|u| *u != e.url);
            }
        }
    }
}

/// Runs `lookups` while a second thread flips a fourth instance in and out with `apply`;
/// returns what `lookups` returned and the patches applied meanwhile.
fn under_patches<T>(apply: impl Fn(&Patch) + Sync, lookups: impl FnOnce() -> T) -> (T, usize) {
    let stop = AtomicBool::new(false);
    let add = Patch {
        added: vec![entry("http://10.0.0.4:6000")],
        removed: vec![],
    };
    let remove = Patch {
        added: vec![],
        removed: vec![entry("http://10.0.0.4:6000")],
    };
    std::thread::scope(|scope| {
        let patcher = scope.spawn(|| {
            let mut patches = 0;
            while !stop.load(Ordering::Relaxed) {
                apply(&add);
                apply(&remove);
                patches += 2;
            }
            patches
        });
        let measured = lookups();
        stop.store(true, Ordering::Relaxed);
        (measured, patcher.join().expect("patcher"))
    })
}

fn providers_section() {
    println!(
        "== providers.get (round robin over 3 instances; medians of 200 runs of 10,000, alternating with the baseline)"
    );
    let initial = Patch {
        added: (1..=3).map(|i| entry(&format!("http://10.0.0.{i}:6000"))).collect(),
        removed: vec![],
    };
    let providers = Providers::default();
    providers.apply(&initial);
    let baseline = MutexProviders::default();
    baseline.apply(&initial);

    let (samples, calls) = (200, 10_000);
    let ours = || drop(black_box(providers.get(black_box("GradingService"))));
    let theirs = || drop(black_box(baseline.get(black_box("GradingService"))));
    let (ours_alone, base_alone) = median_ns_pair(samples, calls, ours, theirs);
    // Each under its own patcher, as fast as it can apply patches, sample by sample in turn.
    let (mut ours_patched, mut base_patched) = (Vec::new(), Vec::new());
    let (mut patches_ours, mut patches_base) = (0, 0);
    for _ in 0..samples {
        let (ns, patches) = under_patches(|p| providers.apply(p), || median_ns_pair(1, calls, ours, || {}).0);
        ours_patched.push(ns);
        patches_ours += patches;
        let (ns, patches) = under_patches(|p| baseline.apply(p), || median_ns_pair(1, calls, theirs, || {}).0);
        base_patched.push(ns);
        patches_base += patches;
    }
    let (ours_patched, base_patched) = (median(&mut ours_patched), median(&mut base_patched));
    println!(
        "alone:                 {ours_alone:7.1} ns   baseline (mutex map, URL copied) {base_alone:7.1} ns   ratio {:.2}",
        ours_alone / base_alone
    );
    println!(
        "while patches applied: {ours_patched:7.1} ns   baseline {base_patched:7.1} ns   ratio {:.2}   ({patches_ours} vs {patches_base} patches applied meanwhile; no target: a design property, see BENCHMARKS.md)",
        ours_patched / base_patched
    );
}

/// Median ns of one `tracing::info!` with two fields, on this thread, under `dispatch`.
fn info_cost(dispatch: &tracing::Dispatch) -> f64 {
    tracing::dispatcher::with_default(dispatch, || {
        // 50 calls per sample, then a pause: about 5,000 records/s, which a live log service
        // keeps up with, so the buffer's normal path is what is measured.
        let mut samples = Vec::new();
        for round in 0..400u32 {
            let start = Instant::now();
            for n in 0..50u32 {
                tracing::info!(round, n, "grade recorded for student");
            }
            samples.push(start.elapsed().as_nanos() as f64 / 50.0);
            std::thread::sleep(Duration::from_millis(10));
        }
        median(&mut samples)
    })
}

fn logging_section(runtime: &tokio::runtime::Runtime) {
    println!("== one tracing::info! on the application thread (2 fields; median of 400 runs of 50)");
    let baseline = info_cost(&tracing::Dispatch::new(tracing_subscriber::registry()));

    let registry = runtime.block_on(TestRegistry::spawn());
    let sink = runtime.block_on(async {
        let sink = LogSink::spawn().await;
        registry.register(&sink.service.registration()).await;
        sink
    });
    let up = shipping_service(runtime, &registry, "UpService");
    let shipping_up = info_cost(&up.1);
    let delivered = up.0.shipped();

    let down = shipping_service(runtime, &registry, "DownService");
    runtime.block_on(async {
        registry.deregister(&sink.service.url).await;
        // Measure the down path only once the service knows the log service is gone.
        let providers = down.2.providers();
        eventually("DownService to drop the log service", DEADLINE, || async {
            providers.urls("LogService").is_empty().then_some(())
        })
        .await;
    });
    let early = info_cost(&down.1);
    // 20,000 records have now gone into an 8,192-record buffer that cannot drain: the next
    // runs measure the dropping path, and the process's memory across 100,000 more records.
    let (_, rss_full) = cpu_and_rss(std::process::id());
    let full = info_cost(&down.1);
    for _ in 0..4 {
        info_cost(&down.1);
    }
    let (_, rss_later) = cpu_and_rss(std::process::id());
    let growth_kib = (rss_later as f64 - rss_full as f64) / 1024.0;
    let target_ns = 2_000.0;
    println!("no layer (baseline):        {baseline:7.1} ns");
    println!(
        "shipping, log service up:   {shipping_up:7.1} ns   ratio {:.2}   ({delivered} records delivered by then) | target median < 2 us: {}",
        shipping_up / baseline,
        verdict(shipping_up < target_ns)
    );
    println!(
        "shipping, log service down: {early:7.1} ns   ratio {:.2}   (first 20,000 records) | target median < 2 us: {}",
        early / baseline,
        verdict(early < target_ns)
    );
    println!(
        "  ... still down, buffer full: {full:5.1} ns   ratio {:.2}   ({} records dropped and counted) | target median < 2 us: {}",
        full / baseline,
        down.0.dropped(),
        verdict(full < target_ns)
    );
    println!(
        "  memory while down: RSS {:.1} MiB with the buffer full, {growth_kib:+.0} KiB after 100,000 more records | target no growth (< 512 KiB): {}",
        rss_full as f64 / (1024.0 * 1024.0),
        verdict(growth_kib < 512.0)
    );
    runtime.block_on(async {
        up.2.stop().await;
        down.2.stop().await;
    });
}

/// A running service shipping its logs, and a dispatch whose only layer is that shipping.
fn shipping_service(
    runtime: &tokio::runtime::Runtime,
    registry: &TestRegistry,
    name: &str,
) -> (LogShipping, tracing::Dispatch, RunningService) {
    let logs = LogShipping::with_config(name, ShippingConfig::default()).fallback_to(std::io::sink());
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(logs.layer()));
    let service = Service::builder(name)
        .requires(["LogService"])
        .registry(&registry.url)
        .handle_signals(false)
        .ship_logs(logs.clone());
    let running = runtime
        .block_on(service.start(CancellationToken::new()))
        .expect("service starts");
    (logs, dispatch, running)
}

/// `trials` empty restarts of a registry probing every `interval`: how long after each one the
/// service was listed again, from the moment the registry answered.
async fn back_after_empty_restarts(interval: Duration, trials: usize) -> Vec<Duration> {
    let mut registry = TestRegistry::spawn_with(|config| config.health_interval = interval).await;
    let running = Service::builder("Returning")
        .registry(&registry.url)
        .handle_signals(false)
        .expected_health_interval(interval)
        .start(CancellationToken::new())
        .await
        .expect("service starts");
    let url = running.url().to_owned();
    let mut back = Vec::with_capacity(trials);
    for _ in 0..trials {
        registry = registry.restart_empty().await;
        let answering = Instant::now();
        eventually("the service listed again", DEADLINE, || async {
            registry.instance("Returning", &url).await
        })
        .await;
        back.push(answering.elapsed());
    }
    running.stop().await;
    back
}

fn reregister_section(runtime: &tokio::runtime::Runtime) {
    let trials = 30;
    let (mut slow, mut fast) = runtime.block_on(async {
        (
            back_after_empty_restarts(Duration::from_secs(30), trials).await,
            back_after_empty_restarts(Duration::from_millis(100), trials).await,
        )
    });
    let (median, p99) = rollcall_testkit::median_p99(&mut slow);
    let (fast_median, fast_p99) = rollcall_testkit::median_p99(&mut fast);
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "re-registration after an empty registry restart ({trials} restarts), from the registry answering to the service listed: probes every 30 s: median {}, p99 {} | probes every 100 ms: median {}, p99 {} | target p99 within 1 s: {}",
        ms(median),
        ms(p99),
        ms(fast_median),
        ms(fast_p99),
        verdict(p99 <= Duration::from_secs(1))
    );
}

fn main() {
    let wanted = rollcall_testkit::wanted_sections();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if wanted("providers") {
        providers_section();
    }
    if wanted("logging") {
        logging_section(&runtime);
    }
    if wanted("reregister") {
        reregister_section(&runtime);
    }
}
