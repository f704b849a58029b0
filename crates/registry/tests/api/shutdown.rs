//! Graceful shutdown stays bounded, whatever the registry is waiting on.

use std::time::Duration;

use rollcall_registry::SHUTDOWN_GRACE;
use rollcall_testkit::{DEADLINE, FakeService, HeartbeatMode, PatchMode, SseClient, TestRegistry, eventually};

use super::register;

#[tokio::test]
async fn stopping_is_prompt_with_hung_callbacks_and_probes_blocking_queries_and_event_streams() {
    let registry = TestRegistry::spawn_with(|c| {
        c.notify_timeout = Duration::from_secs(60);
        c.health_timeout = Duration::from_secs(60);
    })
    .await;
    let hung_probe = FakeService::spawn("HungProbe", &[]).await;
    register(&registry, &hung_probe).await;
    hung_probe.set_heartbeat(HeartbeatMode::Hang);
    eventually("a probe to hang", DEADLINE, || async {
        (hung_probe.probes() >= 1).then_some(())
    })
    .await;

    let hung_callback = FakeService::spawn("HungCallback", &[]).await;
    hung_callback.set_patch_mode(PatchMode::Hang);
    let pending = registry.register_in_background(&hung_callback.registration());
    eventually("the callback to hang", DEADLINE, || async {
        (hung_callback.patch_arrivals() == 1).then_some(())
    })
    .await;

    let blocking_query = {
        let url = format!("{}/v1/services/Nobody?index=0&wait=10m", registry.url);
        tokio::spawn(async move { reqwest::get(url).await })
    };
    eventually("the blocking query to be held", DEADLINE, || async {
        (registry.metric("rollcall_blocking_queries").await >= 1.0).then_some(())
    })
    .await;

    let mut events = SseClient::connect(&format!("{}/v1/events", registry.url), None).await;
    assert!(events.next().await.is_some(), "the stream opens with a reset");

    let took = registry.stop().await;
    assert!(took < SHUTDOWN_GRACE, "stopping took {took:?}");
    assert!(events.next().await.is_none(), "the event stream ends with the registry");
    let query = tokio::time::timeout(DEADLINE, blocking_query)
        .await
        .expect("the blocking query outlived the registry")
        .expect("joined")
        .expect("the held query is answered, not cut off");
    assert_eq!(query.status(), 200);
    assert_eq!(
        query.headers()["x-rollcall-index"],
        "0",
        "nothing changed while it was held"
    );
    let listing: rollcall_wire::ServiceView = query.json().await.expect("a listing");
    assert!(listing.instances.is_empty());
    let answer = pending
        .await
        .expect("join")
        .expect("the interrupted registration is answered, not cut off");
    assert_eq!(answer.status(), 503, "an interrupted registration is not acknowledged");
}
