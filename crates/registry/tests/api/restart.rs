//! Restarts: the catalog comes back, nothing is announced because of the restart itself, and
//! the probes that follow announce what really changed.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use rollcall_testkit::{DEADLINE, FakeService, HeartbeatMode, TestRegistry, eventually};
use rollcall_wire::InstanceState;

use super::register;

#[tokio::test]
async fn the_catalog_survives_a_restart_and_the_restart_announces_nothing() {
    let registry = TestRegistry::spawn().await;
    let (portal, grades) = super::portal_holding_grades(&registry).await;
    let before = registry.instance("GradingService", &grades.url).await.expect("listed");

    let registry = registry.restart().await;
    let after = registry
        .instance("GradingService", &grades.url)
        .await
        .expect("restored");
    assert_eq!(after.id, before.id);
    assert_eq!(after.registered_at, before.registered_at);
    assert_eq!(registry.services().await.services.len(), 2);

    // Once it was probed again, a new provider reaches the portal: had the restart sent it an
    // empty list (or a Removed), that patch would have come first.
    eventually("a probe after the restart", DEADLINE, || async {
        registry
            .instance("GradingService", &grades.url)
            .await
            .filter(|i| i.last_check_at.is_some())
    })
    .await;
    let second = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &second).await;
    portal
        .wait_for_providers(&BTreeSet::from([grades.entry(), second.entry()]))
        .await;
    assert!(
        portal.patches().iter().all(|p| p.removed.is_empty()),
        "{:?}",
        portal.patches()
    );
    assert_eq!(
        portal.patches().len(),
        3,
        "initial, +grades, +second: {:?}",
        portal.patches()
    );
}

#[tokio::test]
async fn an_instance_that_died_during_the_restart_is_removed_after_probes() {
    let registry = TestRegistry::spawn().await;
    let (portal, grades) = super::portal_holding_grades(&registry).await;

    grades.stop();
    let registry = registry.restart().await;
    registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Critical)
        .await;
    portal.wait_for_providers(&BTreeSet::new()).await;
}

#[tokio::test]
async fn a_deregistration_survives_a_restart() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    assert_eq!(registry.deregister(&grades.url).await.status(), 200);
    let registry = registry.restart().await;
    assert!(registry.services().await.services.is_empty());
}

#[tokio::test]
async fn a_drained_instance_is_still_drained_after_a_restart() {
    let registry = TestRegistry::spawn().await;
    let (portal, grades) = super::portal_holding_grades(&registry).await;
    let id = registry
        .instance("GradingService", &grades.url)
        .await
        .expect("listed")
        .id;
    assert_eq!(registry.post(&format!("/v1/instances/{id}/drain")).await.status(), 200);
    portal.wait_for_providers(&BTreeSet::new()).await;

    let registry = registry.restart().await;
    // Probes pass after the restart; it stays out of rotation all the same.
    let probes = grades.probes();
    eventually("probes after the restart", DEADLINE, || async {
        (grades.probes() > probes + 2).then_some(())
    })
    .await;
    let restored = registry.instance("GradingService", &grades.url).await.expect("listed");
    assert_eq!(restored.state, InstanceState::Draining);
    assert!(portal.providers().is_empty(), "the restart announced it again");
}

#[tokio::test]
async fn a_provider_critical_at_a_restart_that_answers_again_after_it_is_sent_to_its_dependents_again() {
    let registry = TestRegistry::spawn().await;
    let dependent = FakeService::spawn("D", &["P"]).await;
    register(&registry, &dependent).await;
    let provider = FakeService::spawn("P", &[]).await;
    register(&registry, &provider).await;
    dependent.wait_for_providers(&BTreeSet::from([provider.entry()])).await;
    provider.set_heartbeat(HeartbeatMode::Failing(StatusCode::SERVICE_UNAVAILABLE));
    dependent.wait_for_providers(&BTreeSet::new()).await;

    // It answers again while the registry restarts: the restarted registry must not take for
    // held what its dependent was told is gone (found by the model test, `model.rs`).
    provider.set_heartbeat(HeartbeatMode::Healthy);
    let registry = registry.restart().await;
    let restored = registry
        .get("/v1/services/P")
        .await
        .json::<rollcall_wire::ServiceView>()
        .await
        .expect("JSON");
    assert_eq!(
        restored.instances.first().map(|i| i.state),
        Some(InstanceState::Critical),
        "critical until a probe passes"
    );
    dependent.wait_for_providers(&BTreeSet::from([provider.entry()])).await;
}
