//! rollcall-client benchmark: the cost of a provider lookup and of one `tracing::info!` with log
//! shipping on, each beside a baseline measured in the same run.
//!
//! Run with `cargo bench -p rollcall-client --bench client`. Sections:
//! - `providers`: `Providers::get` (round robin over 3 instances) in ns, alone and while another
//!   thread applies patches without pause, beside the Go client's design (a map behind a mutex,
//!   the URL copied out) under the same two loads;
//! - `logging`: one `tracing::info!` with two fields on the application thread, with shipping to
//!   a live log service, with the log service down (early, and again once the buffer is full and
//!   records are being dropped), beside the same event with no layer at all.
//!
//! Medians of many samples, each sample timing a run of calls; machines here are noisy.

// A benchmark is a report: it prints to stdout, and turns counts into f64 for ratios.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rollcall_client::{LogShipping, Providers, RunningService, Service, ShippingConfig};
use rollcall_testkit::{LogSink, TestRegistry};
use rollcall_wire::{Patch, PatchEntry};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::prelude::*;

/// Times `samples` runs of `calls_per_sample` calls of `call` and returns the median ns per call.
fn median_ns(samples: usize, calls_per_sample: usize, mut call: impl FnMut()) -> f64 {
    let mut per_call: Vec<f64> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls_per_sample {
                call();
            }
            start.elapsed().as_nanos() as f64 / calls_per_sample as f64
        })
        .collect();
    per_call.sort_by(f64::total_cmp);
    per_call[per_call.len() / 2]
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

/// Runs `lookups` while a second thread flips a fourth instance in and out with `apply`.
fn under_patches(apply: impl Fn(&Patch) + Sync, lookups: impl FnOnce() -> f64) -> (f64, usize) {
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
        let ns = lookups();
        stop.store(true, Ordering::Relaxed);
        (ns, patcher.join().expect("patcher"))
    })
}

fn providers_section() {
    println!("== providers.get (round robin over 3 instances)");
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
    let ours_alone = median_ns(samples, calls, ours);
    let base_alone = median_ns(samples, calls, theirs);
    let (ours_patched, patches_during_ours) = under_patches(|p| providers.apply(p), || median_ns(samples, calls, ours));
    let (base_patched, patches_during_base) =
        under_patches(|p| baseline.apply(p), || median_ns(samples, calls, theirs));
    println!(
        "alone:                 {ours_alone:7.1} ns   baseline (mutex map, URL copied) {base_alone:7.1} ns   ratio {:.2}",
        ours_alone / base_alone
    );
    println!(
        "while patches applied: {ours_patched:7.1} ns   baseline {base_patched:7.1} ns   ratio {:.2}   ({patches_during_ours} vs {patches_during_base} patches applied meanwhile)",
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
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
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
    runtime.block_on(registry.deregister(&sink.service.url));
    let early = info_cost(&down.1);
    // 20,000 records have now gone into an 8,192-record buffer that cannot drain: the next
    // run measures the dropping path.
    let full = info_cost(&down.1);
    println!("no layer (baseline):        {baseline:7.1} ns");
    println!(
        "shipping, log service up:   {shipping_up:7.1} ns   ratio {:.2}   ({delivered} records delivered by then)",
        shipping_up / baseline
    );
    println!(
        "shipping, log service down: {early:7.1} ns   ratio {:.2}   (first 20,000 records)",
        early / baseline
    );
    println!(
        "  ... still down, buffer full: {full:5.1} ns   ratio {:.2}   ({} records dropped and counted)",
        full / baseline,
        down.0.dropped()
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

fn main() {
    let wanted = rollcall_testkit::wanted_sections();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if wanted("providers") {
        providers_section();
    }
    if wanted("logging") {
        logging_section(&runtime);
    }
}
