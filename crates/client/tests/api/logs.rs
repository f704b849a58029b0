//! Log shipping through a live registry to a fake log service.
//!
//! Each test installs its subscriber for its own thread and runs on a current-thread runtime,
//! so everything it logs (and nothing another test logs) goes through its shipping.

use std::time::Duration;

use rollcall_client::{LogShipping, RunningService, ShippingConfig};
use rollcall_testkit::{DEADLINE, LogSink, TestRegistry, eventually};
use tokio_util::sync::CancellationToken;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::prelude::*;

use crate::{SharedBuffer, service};

fn quick_batches() -> ShippingConfig {
    ShippingConfig {
        linger: Duration::from_millis(20),
        ..ShippingConfig::default()
    }
}

/// Shipping with `config` whose fallback is returned for inspection, installed for this thread.
fn shipping(config: ShippingConfig) -> (LogShipping, SharedBuffer, DefaultGuard) {
    let fallback = SharedBuffer::default();
    let logs = LogShipping::with_config("HelloService", config).fallback_to(fallback.clone());
    let guard = tracing_subscriber::registry().with(logs.layer()).set_default();
    (logs, fallback, guard)
}

async fn start(registry: &TestRegistry, logs: &LogShipping) -> RunningService {
    service(&registry.url, "HelloService", &["LogService"])
        .ship_logs(logs.clone())
        .start(CancellationToken::new())
        .await
        .expect("starts")
}

async fn registered_sink(registry: &TestRegistry) -> LogSink {
    let sink = LogSink::spawn().await;
    assert_eq!(registry.register(&sink.service.registration()).await.status(), 200);
    sink
}

#[tokio::test]
async fn records_reach_the_log_service_with_level_fields_and_service_name() {
    let registry = TestRegistry::spawn().await;
    let sink = registered_sink(&registry).await;
    let (logs, _fallback, _guard) = shipping(quick_batches());
    let running = start(&registry, &logs).await;

    tracing::info!(student = 99, title = "Quiz 1", "grade refused");
    tracing::warn!("second");
    tracing::debug!("below the shipped level");
    let lines = sink.wait_for_line("second").await;
    // The registry runs on this thread too: its own records ("registered") are shipped.
    let ours: Vec<&String> = lines.iter().filter(|l| !l.contains("registered")).collect();
    assert_eq!(
        ours,
        [
            "[HelloService] - INFO grade refused student=99 title=\"Quiz 1\"",
            "[HelloService] - WARN second"
        ]
    );
    assert_eq!(logs.dropped(), 0);
    running.stop().await;
}

#[tokio::test]
async fn a_log_service_that_starts_late_still_gets_the_records() {
    let registry = TestRegistry::spawn().await;
    let (logs, fallback, _guard) = shipping(quick_batches());
    let running = start(&registry, &logs).await;

    tracing::info!("before any log service");
    eventually("the record on the fallback writer", DEADLINE, || async {
        fallback.text().contains("before any log service").then_some(())
    })
    .await;
    assert!(
        fallback.text().contains("no provider of LogService"),
        "{}",
        fallback.text()
    );

    let sink = registered_sink(&registry).await;
    sink.wait_for_line("before any log service").await;
    running.stop().await;
}

#[tokio::test]
async fn records_refused_for_a_while_are_delivered_once_in_order() {
    let registry = TestRegistry::spawn().await;
    let sink = registered_sink(&registry).await;
    sink.refuse(true);
    let (logs, fallback, _guard) = shipping(quick_batches());
    let running = start(&registry, &logs).await;

    for n in 0..5 {
        tracing::info!(n, "while refused");
    }
    eventually("the records on the fallback writer", DEADLINE, || async {
        fallback.text().contains("n=4").then_some(())
    })
    .await;
    sink.refuse(false);
    let lines = sink.wait_for_line("n=4").await;
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains("while refused")).collect();
    let expected: Vec<String> = (0..5)
        .map(|n| format!("[HelloService] - INFO while refused n={n}"))
        .collect();
    assert_eq!(ours, expected.iter().collect::<Vec<_>>());
    running.stop().await;
}

#[tokio::test]
async fn a_tight_logging_loop_never_blocks_and_drops_are_counted_then_reported() {
    let registry = TestRegistry::spawn().await;
    let config = ShippingConfig {
        buffer: 1000,
        ..quick_batches()
    };
    let (logs, _fallback, _guard) = shipping(config);
    let running = start(&registry, &logs).await;

    // No log service: the buffer fills and every further record is dropped, at once.
    let records = 200_000;
    for n in 0..records {
        tracing::info!(n, "tight loop");
    }
    let dropped = logs.dropped();
    assert!(dropped >= records - 1000 - 1000, "dropped {dropped} of {records}");

    let sink = registered_sink(&registry).await;
    let lines = sink.wait_for_line("log records were dropped").await;
    let report = lines.iter().find(|l| l.contains("dropped")).expect("the report");
    assert!(report.contains(&format!("dropped={dropped}")), "{report}");
    running.stop().await;
}

#[tokio::test]
async fn shutdown_flushes_what_is_buffered() {
    let registry = TestRegistry::spawn().await;
    let sink = registered_sink(&registry).await;
    let config = ShippingConfig {
        linger: Duration::from_secs(60),
        ..ShippingConfig::default()
    };
    let (logs, _fallback, _guard) = shipping(config);
    let running = start(&registry, &logs).await;
    for n in 0..3 {
        tracing::info!(n, "just before shutdown");
    }
    running.stop().await;
    let shipped: Vec<String> = sink
        .lines()
        .into_iter()
        .filter(|l| l.contains("just before shutdown"))
        .collect();
    assert_eq!(shipped.len(), 3, "{shipped:?}");
}

#[tokio::test]
async fn with_no_log_service_a_stop_is_not_held_until_its_deadline_and_every_record_is_written_once() {
    let registry = TestRegistry::spawn().await;
    let (logs, fallback, _guard) = shipping(quick_batches());
    let running = start(&registry, &logs).await;
    tracing::info!("nobody ships this");
    let stopping = std::time::Instant::now();
    running.stop().await;
    // The service's shutdown deadline is 5 s: waiting it out for a log service nobody knows
    // would show here.
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stopped after {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        fallback.text().matches("nobody ships this").count(),
        1,
        "{}",
        fallback.text()
    );
}

#[tokio::test]
async fn records_a_failing_log_service_never_took_are_written_to_the_fallback_once_at_shutdown() {
    let registry = TestRegistry::spawn().await;
    let sink = registered_sink(&registry).await;
    sink.refuse(true);
    let (logs, fallback, _guard) = shipping(quick_batches());
    let running = start(&registry, &logs).await;
    tracing::info!("refused all along");
    eventually("the batch to fall back once", DEADLINE, || async {
        fallback.text().contains("refused all along").then_some(())
    })
    .await;
    running.stop().await;
    assert_eq!(
        fallback.text().matches("refused all along").count(),
        1,
        "{}",
        fallback.text()
    );
}
