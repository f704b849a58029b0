//! `GET /v1/sd/prometheus`: the catalog as Prometheus HTTP service-discovery targets.

use axum::http::StatusCode;
use rollcall_testkit::{FakeService, HeartbeatMode, TestRegistry};
use rollcall_wire::{ErrorBody, InstanceState};
use serde_json::Value;

use super::register;

/// The targets `GET /v1/sd/prometheus{query}` lists, as `(service, target, state)`.
async fn targets(registry: &TestRegistry, query: &str) -> Vec<(String, String, String)> {
    let answer = registry.get(&format!("/v1/sd/prometheus{query}")).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .expect("text")
            .starts_with("application/json"),
        "Prometheus reads only JSON"
    );
    let groups: Vec<Value> = answer.json().await.expect("a JSON array");
    let mut listed: Vec<_> = groups
        .iter()
        .map(|group| {
            let targets = group["targets"].as_array().expect("targets");
            assert_eq!(targets.len(), 1, "one target per group: {group}");
            assert_eq!(group["labels"]["__metrics_path__"], "/metrics");
            assert!(group["labels"]["instance_id"].as_str().is_some_and(|id| !id.is_empty()));
            let label = |name: &str| group["labels"][name].as_str().expect("a label").to_owned();
            (
                label("service"),
                targets[0].as_str().expect("text").to_owned(),
                label("state"),
            )
        })
        .collect();
    listed.sort();
    listed
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn prometheus_finds_the_passing_instances_and_the_registry_and_all_when_asked() {
    let registry = TestRegistry::spawn().await;
    let up = FakeService::spawn("GradingService", &[]).await;
    let down = FakeService::spawn("Portal", &[]).await;
    register(&registry, &up).await;
    register(&registry, &down).await;
    down.set_heartbeat(HeartbeatMode::Failing(StatusCode::SERVICE_UNAVAILABLE));
    registry
        .wait_for_state("Portal", &down.url, InstanceState::Critical)
        .await;

    let me = host_port(&registry.url);
    let passing = targets(&registry, "").await;
    assert_eq!(
        passing,
        [
            ("GradingService".to_owned(), host_port(&up.url), "passing".to_owned()),
            ("Registry".to_owned(), me.clone(), "passing".to_owned()),
        ],
        "the critical Portal is left out"
    );
    let all = targets(&registry, "?state=all").await;
    assert!(
        all.contains(&("Portal".to_owned(), host_port(&down.url), "critical".to_owned())),
        "{all:?}"
    );
    assert_eq!(
        targets(&registry, "?service=GradingService").await,
        [("GradingService".to_owned(), host_port(&up.url), "passing".to_owned())]
    );

    // An instance that leaves leaves the targets.
    assert_eq!(registry.deregister(&up.url).await.status(), StatusCode::OK);
    assert_eq!(
        targets(&registry, "").await,
        [("Registry".to_owned(), me, "passing".to_owned())]
    );

    let bad = registry.get("/v1/sd/prometheus?state=some").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let error: ErrorBody = bad.json().await.expect("a JSON error");
    assert_eq!(error.error, "invalid_query", "{}", error.message);
}
