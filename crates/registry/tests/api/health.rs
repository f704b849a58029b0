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
    // One text for a timeout, a refused and a filtered port: listings do not map who answers.
    assert_eq!(critical.last_error.as_deref(), Some("no answer"));
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

/// The `rollcall_probers` gauge: prober tasks alive in the registry.
async fn probers(registry: &TestRegistry) -> f64 {
    registry.metric("rollcall_probers").await
}

#[tokio::test]
async fn a_replaced_or_deregistered_instance_leaves_no_prober_behind() {
    // The first probe is due only within ten minutes: a prober left running would sleep that long.
    let registry = TestRegistry::spawn_with(|config| config.health_interval = Duration::from_secs(600)).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    for _ in 0..20 {
        register(&registry, &grades).await;
    }
    eventually("one prober for the one instance", DEADLINE, || async {
        #[allow(clippy::float_cmp)] // a small count is exact in an f64
        let one = probers(&registry).await == 1.0;
        one.then_some(())
    })
    .await;
    assert_eq!(registry.deregister(&grades.url).await.status(), 200);
    eventually("no prober once it is gone", DEADLINE, || async {
        #[allow(clippy::float_cmp)]
        let none = probers(&registry).await == 0.0;
        none.then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_endless_heartbeat_answer_is_cut_short_and_the_instance_stays_passing() {
    let registry = TestRegistry::spawn().await;
    let (portal, grades) = super::portal_holding_grades(&registry).await;
    grades.set_heartbeat(HeartbeatMode::EndlessBody);
    let before = grades.probes();
    eventually("ten probes answered with endless bodies", DEADLINE, || async {
        (grades.probes() >= before + 10).then_some(())
    })
    .await;
    let instance = registry
        .instance("GradingService", &grades.url)
        .await
        .expect("still listed");
    assert_eq!(instance.state, InstanceState::Passing, "{instance:?}");
    assert_eq!(instance.consecutive_failures, 0, "{instance:?}");
    assert!(
        portal.patches().iter().all(|p| p.removed.is_empty()),
        "the dependent lost it"
    );
    // Each probe read a few KiB and hung up: what was sent is at most what the sockets buffer,
    // not a stream read for the whole timeout.
    let per_probe = grades.streamed_bytes() / (grades.probes() - before);
    assert!(per_probe < 16 << 20, "{per_probe} bytes streamed per probe");
}

#[tokio::test]
async fn many_instances_at_one_host_are_probed_within_the_hosts_budget() {
    let registry = TestRegistry::spawn_with(|c| {
        c.health_interval = Duration::from_millis(100);
        c.max_probes_per_host = 20;
    })
    .await;
    let fleet = rollcall_testkit::FakeFleet::spawn().await;
    for n in 0..50 {
        let response = registry.register(&fleet.registration(n, "Crowd")).await;
        assert_eq!(response.status(), 200);
    }
    // Unlimited, 50 instances every 100 ms would be 500 probes a second at this one host.
    let before = fleet.heartbeats();
    let started = Instant::now();
    // The rate over the time 60 probes took (about 2 s within the budget, 0.1 s without it).
    let probes = eventually("60 probes of the host", DEADLINE, || async {
        let probes = fleet.heartbeats() - before;
        (probes >= 60).then_some(probes)
    })
    .await;
    let probes = u32::try_from(probes).expect("a few thousand at most");
    let rate = f64::from(probes) / started.elapsed().as_secs_f64();
    assert!(
        rate <= 35.0,
        "{rate:.0} probes a second at one host, over its budget of 20"
    );
    assert!(rate >= 10.0, "{rate:.0} probes a second: probing stalled");
    // Late probes are not failures: every instance stays passing.
    let listed = registry.service("Crowd").await;
    assert!(listed.instances.iter().all(|i| i.state == InstanceState::Passing));
}
