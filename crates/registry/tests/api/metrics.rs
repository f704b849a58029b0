//! `GET /metrics`: a well-formed OpenMetrics exposition whose values follow what happened.

use std::collections::HashMap;

use axum::http::StatusCode;
use rollcall_testkit::{FakeService, HeartbeatMode, TestRegistry};
use rollcall_wire::InstanceState;

use super::register;

/// Parses an exposition strictly enough to catch a malformed one: every line is a `# HELP`,
/// `# TYPE` or `# UNIT` comment, a `name{labels} value` sample or the final `# EOF`.
fn parse(text: &str) -> HashMap<String, String> {
    let mut samples = HashMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" {
            assert!(lines.peek().is_none(), "# EOF must be the last line");
            return samples;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap_or_default();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "unexpected comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
        }
        assert!(value.parse::<f64>().is_ok(), "bad value: {line}");
        samples.insert(series.to_owned(), value.to_owned());
    }
    panic!("the exposition does not end with # EOF");
}

#[tokio::test]
async fn the_exposition_parses_and_counts_what_happened() {
    let registry = TestRegistry::spawn().await;
    let (_portal, _grades) = super::portal_holding_grades(&registry).await;
    let broken = FakeService::spawn("Broken", &[]).await;
    register(&registry, &broken).await;
    broken.set_heartbeat(HeartbeatMode::Failing(StatusCode::SERVICE_UNAVAILABLE));
    registry
        .wait_for_state("Broken", &broken.url, InstanceState::Critical)
        .await;

    let response = registry.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let samples = parse(&response.text().await.expect("text"));
    // Counters, gauges of counts and histogram counts are whole numbers.
    let count = |series: &str| -> u64 {
        let value = samples.get(series).unwrap_or_else(|| panic!("no {series}"));
        value
            .parse()
            .unwrap_or_else(|_| panic!("{series} is not a count: {value}"))
    };

    assert_eq!(count(r#"rollcall_instances{state="passing"}"#), 2);
    assert_eq!(count(r#"rollcall_instances{state="critical"}"#), 1);
    assert_eq!(count(r#"rollcall_registrations_total{api="seed"}"#), 3);
    assert_eq!(count("rollcall_delivery_queues"), 1);
    assert!(count(r#"rollcall_probes_total{outcome="failed"}"#) >= 3);
    assert!(count(r#"rollcall_deliveries_total{outcome="delivered"}"#) >= 1);
    assert!(count("rollcall_delivery_latency_seconds_count") >= 1);
    assert!(count("rollcall_catalog_commit_seconds_count") >= 3);
}
