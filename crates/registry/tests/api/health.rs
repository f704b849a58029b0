//! Health checks: suspect before critical, recovery, independence of probes, reaping.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rollcall_testkit::{DEADLINE, FakeService, HeartbeatMode, TestRegistry, eventually};
use rollcall_wire::{InstanceState, Patch};

use super::register;

#[tokio::test]
async fn one_failed_probe_notifies_nobody_and_tries_failures_do() {
    // A long retry delay keeps the suspect state visible to the test.
    let registry = TestRegistry::spawn_with(|c| c.health_retry_delay = Duration::from_millis(600)).await;
    let (portal, grades) = super::portal_holding_grades(&registry).await;

    grades.fail_next_probes(1);
    let suspect = registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Suspect)
        .await;
    assert_eq!(suspect.consecutive_failures, 1);
    assert_eq!(suspect.last_error.as_deref(), Some("answered HTTP 503"));
    registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Passing)
        .await;
    assert_eq!(
        portal.patches().len(),
        2,
        "one failed probe must not reach dependents: {:?}",
        portal.patches()
    );

    grades.fail_next_probes(3);
    registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Critical)
        .await;
    portal.wait_for_providers(&BTreeSet::new()).await;
    assert_eq!(
        portal.patches()[2],
        Patch {
            added: vec![],
            removed: vec![grades.entry()]
        }
    );

    // The probes go on: once it answers again it is passing and re-announced.
    registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Passing)
        .await;
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;
}

#[tokio::test]
async fn a_critical_instance_recovers_by_itself() {
    let registry = TestRegistry::spawn().await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;

    grades.set_heartbeat(HeartbeatMode::Failing(StatusCode::INTERNAL_SERVER_ERROR));
    let critical = registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Critical)
        .await;
    assert_eq!(critical.last_error.as_deref(), Some("answered HTTP 500"));
    assert!(critical.last_check_at.is_some());
    portal.wait_for_providers(&BTreeSet::new()).await;

    grades.set_heartbeat(HeartbeatMode::Healthy);
    let passing = registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Passing)
        .await;
    assert_eq!(passing.last_error, None);
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;
}

#[tokio::test]
async fn a_hung_heartbeat_delays_nobody_elses_checks() {
    // A hung probe takes the whole (long) timeout; a sequential checker would stall on it.
    let health_timeout = Duration::from_secs(5);
    let registry = TestRegistry::spawn_with(|c| c.health_timeout = health_timeout).await;
    let hung = FakeService::spawn("Hung", &[]).await;
    register(&registry, &hung).await;
    hung.set_heartbeat(HeartbeatMode::Hang);
    let failing = FakeService::spawn("Failing", &[]).await;
    register(&registry, &failing).await;

    eventually("the hung probe to start", DEADLINE, || async {
        (hung.probes() >= 1).then_some(())
    })
    .await;
    let started = Instant::now();
    failing.set_heartbeat(HeartbeatMode::Failing(StatusCode::SERVICE_UNAVAILABLE));
    registry
        .wait_for_state("Failing", &failing.url, InstanceState::Critical)
        .await;
    assert!(
        started.elapsed() < health_timeout,
        "detecting a failing instance took {:?}: it waited for the hung one",
        started.elapsed()
    );
    let hung_view = registry.instance("Hung", &hung.url).await.expect("listed");
    assert_ne!(
        hung_view.state,
        InstanceState::Critical,
        "its first probe has not timed out yet"
    );
}

#[tokio::test]
async fn a_timed_out_probe_counts_as_a_failure() {
    let registry = TestRegistry::spawn().await;
    let hung = FakeService::spawn("Hung", &[]).await;
    register(&registry, &hung).await;
    hung.set_heartbeat(HeartbeatMode::Hang);
    let critical = registry
        .wait_for_state("Hung", &hung.url, InstanceState::Critical)
        .await;
    assert_eq!(critical.last_error.as_deref(), Some("no answer within 100ms"));
}

#[tokio::test]
async fn an_instance_critical_for_too_long_is_deregistered() {
    let registry = TestRegistry::spawn_with(|c| c.deregister_critical_after = Duration::from_millis(300)).await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    grades.stop();
    registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Critical)
        .await;
    eventually("the critical instance to be reaped", DEADLINE, || async {
        registry
            .service("GradingService")
            .await
            .instances
            .is_empty()
            .then_some(())
    })
    .await;
    portal.wait_for_providers(&BTreeSet::new()).await;
}
