//! TTL liveness: a service the registry cannot reach renews itself, is announced and stays
//! passing, comes back after the registry restarts empty, and leaves when it stops.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rollcall_client::Liveness;
use rollcall_testkit::{DEADLINE, FakeService, TestRegistry, eventually, refused_url};
use rollcall_wire::{CheckKind, InstanceState, PatchEntry};
use tokio_util::sync::CancellationToken;

use crate::service;

#[tokio::test]
async fn a_service_the_registry_cannot_reach_stays_discoverable_by_renewing_itself() {
    let registry = TestRegistry::spawn().await;
    let caller = FakeService::spawn("Caller", &["HelloService"]).await;
    assert_eq!(registry.register(&caller.registration()).await.status(), 200);
    // It advertises an address where nothing listens: the registry can never probe it.
    let unreachable = refused_url().await;
    let running = service(&registry.url, "HelloService", &[])
        .advertise(unreachable.clone())
        .liveness(Liveness::Ttl(Duration::from_secs(1)))
        .start(CancellationToken::new())
        .await
        .expect("starts");
    let entry = PatchEntry {
        name: "HelloService".to_owned(),
        url: unreachable.clone(),
    };
    caller.wait_for_providers(&BTreeSet::from([entry])).await;
    let listed = registry.instance("HelloService", &unreachable).await.expect("listed");
    assert_eq!(listed.check.kind, CheckKind::Ttl);

    // Passing for two TTLs on end: renewals, not probes, keep it there.
    rollcall_testkit::passing_throughout(Duration::from_secs(2), || {
        registry.instance("HelloService", &unreachable)
    })
    .await;

    // A registry back empty: the next renewal finds it unknown, and it registers again.
    let registry = registry.restart_empty().await;
    let answering = Instant::now();
    eventually("the service to register again", DEADLINE, || async {
        registry
            .instance("HelloService", &unreachable)
            .await
            .filter(|i| i.state == InstanceState::Passing)
    })
    .await;
    assert!(
        answering.elapsed() < Duration::from_secs(1),
        "back after {:?}",
        answering.elapsed()
    );

    running.stop().await;
    assert!(
        registry.instance("HelloService", &unreachable).await.is_none(),
        "deregistered"
    );
}
