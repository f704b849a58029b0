//! Blocking queries: `?index=N&wait=...` answers at once when the index moved, holds otherwise,
//! and every service has its own index.

use std::time::{Duration, Instant};

use rollcall_testkit::{FakeService, TestRegistry};
use rollcall_wire::{InstanceState, ServiceView, ServicesView};

use super::register;

/// `GET path` and the index it reflects.
async fn get_with_index<T: serde::de::DeserializeOwned>(registry: &TestRegistry, path: &str) -> (T, u64) {
    let response = registry.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    let index = response
        .headers()
        .get("x-rollcall-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("an X-Rollcall-Index header");
    (response.json().await.expect("JSON"), index)
}

/// Starts `GET path` (a blocking query) in a task of its own.
fn in_background(registry: &TestRegistry, path: &str) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    tokio::spawn(reqwest::get(format!("{}{path}", registry.url)))
}

#[tokio::test]
async fn a_stale_index_answers_at_once() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    let (_, index) = get_with_index::<ServiceView>(&registry, "/v1/services/GradingService").await;
    assert!(index > 0);

    let started = Instant::now();
    let path = format!("/v1/services/GradingService?index={}&wait=30s", index - 1);
    let (view, again) = get_with_index::<ServiceView>(&registry, &path).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it waited {:?} although the index differed",
        started.elapsed()
    );
    assert_eq!(again, index);
    assert_eq!(view.instances.len(), 1);
}

#[tokio::test]
async fn a_current_index_holds_until_that_service_changes() {
    let registry = TestRegistry::spawn().await;
    let first = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &first).await;
    let (_, index) = get_with_index::<ServiceView>(&registry, "/v1/services/GradingService").await;

    let watcher = in_background(
        &registry,
        &format!("/v1/services/GradingService?index={index}&wait=60s"),
    );
    // Unrelated churn: another service comes and goes.
    let other = FakeService::spawn("LogService", &[]).await;
    register(&registry, &other).await;
    assert_eq!(registry.deregister(&other.url).await.status(), 200);
    let mut watcher = watcher;
    let woke = tokio::time::timeout(Duration::from_millis(300), &mut watcher).await;
    assert!(woke.is_err(), "another service's change woke the watcher");

    let second = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &second).await;
    let response = watcher.await.expect("join").expect("GET");
    let moved: u64 = response.headers()["x-rollcall-index"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    assert!(moved > index);
    let view: ServiceView = response.json().await.expect("JSON");
    assert_eq!(view.instances.len(), 2);
}

#[tokio::test]
async fn a_state_change_moves_the_index() {
    let registry = TestRegistry::spawn_with(|c| c.health_retry_delay = Duration::from_millis(600)).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    let (_, index) = get_with_index::<ServiceView>(&registry, "/v1/services/GradingService").await;
    grades.fail_next_probes(1);
    let path = format!("/v1/services/GradingService?index={index}&wait=30s");
    let (view, moved) = get_with_index::<ServiceView>(&registry, &path).await;
    assert!(moved > index);
    assert_eq!(view.instances[0].state, InstanceState::Suspect);
}

#[tokio::test]
async fn wait_runs_out_with_the_same_index() {
    let registry = TestRegistry::spawn().await;
    let (_, index) = get_with_index::<ServicesView>(&registry, "/v1/services").await;
    let started = Instant::now();
    let (_, again) = get_with_index::<ServicesView>(&registry, &format!("/v1/services?index={index}&wait=200ms")).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(again, index);
}

#[tokio::test]
async fn the_catalog_list_blocks_on_the_catalog_index() {
    let registry = TestRegistry::spawn().await;
    let (_, index) = get_with_index::<ServicesView>(&registry, "/v1/services").await;
    let watcher = in_background(&registry, &format!("/v1/services?index={index}&wait=60s"));
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    let view: ServicesView = watcher.await.expect("join").expect("GET").json().await.expect("JSON");
    assert_eq!(view.services.len(), 1);
}

#[tokio::test]
async fn malformed_index_or_wait_is_a_400() {
    let registry = TestRegistry::spawn().await;
    for query in ["index=-1", "index=soon", "index=1&wait=forever"] {
        let response = registry.get(&format!("/v1/services/GradingService?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
    }
}
