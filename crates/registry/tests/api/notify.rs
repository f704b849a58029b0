//! Push notifications: a dead subscriber delays no one, waiting patches are coalesced, failed
//! deliveries are retried.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rollcall_testkit::{DEADLINE, FakeService, PatchMode, TestRegistry, eventually};
use rollcall_wire::Patch;

use super::register;

#[tokio::test]
async fn a_dead_subscriber_delays_no_one() {
    let notify_timeout = Duration::from_secs(5);
    let registry = TestRegistry::spawn_with(|c| c.notify_timeout = notify_timeout).await;
    let stuck = FakeService::spawn("Stuck", &["GradingService"]).await;
    register(&registry, &stuck).await;
    stuck.set_patch_mode(PatchMode::Hang);
    let mut healthy = Vec::new();
    for n in 0..5 {
        let subscriber = FakeService::spawn(&format!("Healthy{n}"), &["GradingService"]).await;
        register(&registry, &subscriber).await;
        healthy.push(subscriber);
    }

    let grades = FakeService::spawn("GradingService", &[]).await;
    let started = Instant::now();
    register(&registry, &grades).await;
    for subscriber in &healthy {
        subscriber.wait_for_providers(&BTreeSet::from([grades.entry()])).await;
    }
    assert!(
        started.elapsed() < notify_timeout,
        "healthy subscribers waited {:?}, as long as the stuck one's timeout",
        started.elapsed()
    );
    assert!(stuck.patch_arrivals() >= 2, "the stuck subscriber was tried too");
}

#[tokio::test]
async fn patches_waiting_for_a_slow_subscriber_are_coalesced() {
    let registry = TestRegistry::spawn().await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    portal.set_patch_mode(PatchMode::Hold);

    let first = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &first).await;
    eventually("the first patch to be in flight", DEADLINE, || async {
        (portal.patch_arrivals() == 2).then_some(())
    })
    .await;

    let fleeting = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &fleeting).await;
    assert_eq!(registry.deregister(&fleeting.url).await.status(), 200);
    let last = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &last).await;

    portal.release_patches();
    portal
        .wait_for_providers(&BTreeSet::from([first.entry(), last.entry()]))
        .await;
    let expected = [
        Patch::default(),
        Patch {
            added: vec![first.entry()],
            removed: vec![],
        },
        Patch {
            added: vec![last.entry()],
            removed: vec![],
        },
    ];
    assert_eq!(
        portal.patches(),
        expected,
        "the instance added then removed while waiting was sent"
    );
}

#[tokio::test]
async fn failed_deliveries_are_retried_until_they_succeed() {
    let registry = TestRegistry::spawn().await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    portal.set_patch_mode(PatchMode::Refuse(StatusCode::SERVICE_UNAVAILABLE));

    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    eventually("three refused attempts", DEADLINE, || async {
        (portal.patch_arrivals() >= 4).then_some(())
    })
    .await;
    portal.set_patch_mode(PatchMode::Accept);
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;
    assert_eq!(
        portal.patches().len(),
        2,
        "the patch was delivered once, after the retries"
    );
}

#[tokio::test]
async fn a_patch_never_repeats_what_the_subscriber_holds() {
    let registry = TestRegistry::spawn().await;
    let (portal, grades) = super::portal_holding_grades(&registry).await;
    assert_eq!(registry.deregister(&grades.url).await.status(), 200);
    portal.wait_for_providers(&BTreeSet::new()).await;
    let second = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &second).await;
    portal.wait_for_providers(&BTreeSet::from([second.entry()])).await;
    let third = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &third).await;
    let all = BTreeSet::from([second.entry(), third.entry()]);
    portal.wait_for_providers(&all).await;

    // Replay every patch the portal received: each Added is new to it, each Removed held.
    let mut held = BTreeSet::new();
    for patch in portal.patches() {
        for entry in &patch.added {
            assert!(
                held.insert(entry.clone()),
                "{entry:?} added again: {:?}",
                portal.patches()
            );
        }
        for entry in &patch.removed {
            assert!(held.remove(entry), "{entry:?} removed again: {:?}", portal.patches());
        }
    }
    assert_eq!(held, all);
}

#[tokio::test]
async fn an_endless_answer_to_a_patch_is_cut_short_and_counts_as_delivered() {
    let registry = TestRegistry::spawn().await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    portal.set_patch_mode(PatchMode::EndlessBody);
    let mut expected = BTreeSet::new();
    let mut providers = Vec::new();
    for _ in 0..5 {
        let grades = FakeService::spawn("GradingService", &[]).await;
        register(&registry, &grades).await;
        expected.insert(grades.entry());
        portal.wait_for_providers(&expected).await;
        providers.push(grades);
    }
    let text = registry.get("/metrics").await.text().await.expect("metrics");
    let count = |outcome: &str| {
        rollcall_testkit::metric(&text, &format!(r#"rollcall_deliveries_total{{outcome="{outcome}"}}"#))
            .expect("the deliveries counter")
    };
    assert!(count("delivered") >= 5.0, "{text}");
    assert!(
        count("failed").abs() < f64::EPSILON,
        "{} deliveries failed",
        count("failed")
    );
    assert!(
        portal.streamed_bytes() / 5 < 16 << 20,
        "{} bytes streamed",
        portal.streamed_bytes()
    );
}
