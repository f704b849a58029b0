//! `GET /v1/services` and `GET /v1/services/{name}`.

use axum::http::StatusCode;
use rollcall_testkit::{FakeService, HeartbeatMode, TestRegistry};
use rollcall_wire::InstanceState;

use super::register;

#[tokio::test]
async fn listing_shows_every_instance_with_its_state_and_last_check() {
    let registry = TestRegistry::spawn().await;
    let good = FakeService::spawn("GradingService", &["LogService"]).await;
    let bad = FakeService::spawn("GradingService", &[]).await;
    let logs = FakeService::spawn("LogService", &[]).await;
    for service in [&good, &bad, &logs] {
        register(&registry, service).await;
    }
    bad.set_heartbeat(HeartbeatMode::Failing(StatusCode::INTERNAL_SERVER_ERROR));
    registry
        .wait_for_state("GradingService", &bad.url, InstanceState::Critical)
        .await;
    let good_view = registry
        .wait_for_state("GradingService", &good.url, InstanceState::Passing)
        .await;

    let all = registry.services().await;
    let names: Vec<&str> = all.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["GradingService", "LogService"]);
    assert_eq!(all.service("GradingService").map(|s| s.instances.len()), Some(2));
    assert_eq!(good_view.heartbeat_url, format!("{}/heartbeat", good.url));
    assert_eq!(good_view.update_url, format!("{}/services", good.url));
    assert_eq!(good_view.required_services, ["LogService"]);
    assert!(
        good_view.registered_at.ends_with('Z'),
        "RFC 3339 UTC: {}",
        good_view.registered_at
    );

    let passing = registry.get("/v1/services/GradingService?passing").await;
    assert_eq!(passing.status(), 200);
    let passing: rollcall_wire::ServiceView = passing.json().await.expect("JSON");
    let urls: Vec<&str> = passing.instances.iter().map(|i| i.url.as_str()).collect();
    assert_eq!(urls, [good.url.as_str()]);
}

#[tokio::test]
async fn a_service_nobody_registered_is_an_empty_list() {
    let registry = TestRegistry::spawn().await;
    let response = registry.get("/v1/services/Nobody").await;
    assert_eq!(response.status(), 200);
    let view: rollcall_wire::ServiceView = response.json().await.expect("JSON");
    assert_eq!(view.name, "Nobody");
    assert!(view.instances.is_empty());
}
