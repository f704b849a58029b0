//! Gray rollouts of configuration: a release goes to its gray instances first and to everyone
//! after the bakes, rolls back by itself when a gray instance turns critical or rejects it, and
//! is promoted or aborted by hand.

use axum::http::StatusCode;
use rollcall_testkit::{DEADLINE, FakeService, HeartbeatMode, SseClient, TestRegistry, eventually, http_client};
use rollcall_wire::{ErrorBody, InstanceState, InstanceView, ReleaseEvent, RolloutStatus};

const LIMITS: &str = "/v1/config/prod/GradingService/limits";

/// Three passing grading instances and their ids.
async fn three_instances(registry: &TestRegistry) -> Vec<(String, FakeService)> {
    let mut instances = Vec::new();
    for _ in 0..3 {
        let grades = FakeService::spawn("GradingService", &[]).await;
        let view: InstanceView = registry.register_v1(&grades.registration()).await;
        registry
            .wait_for_state("GradingService", &grades.url, InstanceState::Passing)
            .await;
        instances.push((view.id, grades));
    }
    instances
}

async fn put(registry: &TestRegistry, query: &str, body: &str) -> reqwest::Response {
    http_client()
        .put(format!("{}{LIMITS}{query}", registry.url))
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .expect("PUT")
}

/// The configuration stream of instance `id`.
async fn stream_of(registry: &TestRegistry, id: &str) -> SseClient {
    SseClient::connect(
        &format!("{}/v1/config/prod/GradingService?instance={id}", registry.url),
        None,
    )
    .await
}

/// The next release the stream sends (skipping `ready`).
async fn next_revision(stream: &mut SseClient) -> u64 {
    loop {
        let message = stream.next().await.expect("an event");
        if message.event == "release" {
            return message.json::<ReleaseEvent>().release.revision;
        }
    }
}

async fn status(registry: &TestRegistry) -> RolloutStatus {
    registry
        .get(&format!("{LIMITS}/status"))
        .await
        .json()
        .await
        .expect("status")
}

async fn rollout_state(registry: &TestRegistry, state: &str) -> RolloutStatus {
    eventually(&format!("the rollout to be {state}"), DEADLINE, || async {
        let status = status(registry).await;
        (status.rollout.as_ref()?.state == state).then_some(status)
    })
    .await
}

#[tokio::test]
async fn a_rollout_reaches_its_gray_instance_first_and_everyone_after_the_bakes() {
    let registry = TestRegistry::spawn().await;
    let instances = three_instances(&registry).await;
    assert_eq!(put(&registry, "", "one").await.status(), StatusCode::CREATED);
    let (gray, other) = (&instances[0].0, &instances[1].0);
    let mut gray_stream = stream_of(&registry, gray).await;
    let mut other_stream = stream_of(&registry, other).await;
    assert_eq!(
        (
            next_revision(&mut gray_stream).await,
            next_revision(&mut other_stream).await
        ),
        (1, 1)
    );

    let staged = put(&registry, &format!("?rollout=instances:{gray},100&bake=1s"), "two").await;
    assert_eq!(staged.status(), StatusCode::OK);
    let staged: rollcall_wire::ReleaseView = staged.json().await.expect("release");
    assert!(staged.staged);
    assert_eq!(next_revision(&mut gray_stream).await, 2, "the gray instance first");
    let read = registry.get(LIMITS).await;
    assert_eq!(
        read.headers()["x-rollcall-revision"],
        "1",
        "everyone else still runs revision 1"
    );
    let as_gray = registry.get(&format!("{LIMITS}?instance={gray}")).await;
    assert_eq!(as_gray.text().await.expect("body"), "two");

    // After the first bake the second step takes everyone in; after the second it is promoted.
    assert_eq!(next_revision(&mut other_stream).await, 2);
    let promoted = rollout_state(&registry, "promoted").await;
    assert_eq!(promoted.revision, 2, "revision 2 in force");
    assert_eq!(registry.get(LIMITS).await.text().await.expect("body"), "two");
}

#[tokio::test]
async fn a_gray_instance_turning_critical_rolls_the_rollout_back_by_itself() {
    let registry = TestRegistry::spawn().await;
    let instances = three_instances(&registry).await;
    put(&registry, "", "one").await;
    let (gray, grades) = (&instances[0].0, &instances[0].1);
    let mut gray_stream = stream_of(&registry, gray).await;
    assert_eq!(next_revision(&mut gray_stream).await, 1);
    put(&registry, &format!("?rollout=instances:{gray}&bake=1h"), "two").await;
    assert_eq!(next_revision(&mut gray_stream).await, 2);

    grades.set_heartbeat(HeartbeatMode::Failing(StatusCode::SERVICE_UNAVAILABLE));
    let rolled_back = rollout_state(&registry, "rolled_back").await;
    let reason = rolled_back.rollout.and_then(|r| r.reason).unwrap_or_default();
    assert!(reason.contains("turned critical"), "{reason}");
    assert_eq!(
        next_revision(&mut gray_stream).await,
        1,
        "the gray instance is sent revision 1 again"
    );
    assert_eq!(registry.get(LIMITS).await.headers()["x-rollcall-revision"], "1");
}

#[tokio::test]
async fn a_gray_instance_rejecting_the_release_rolls_it_back_and_promote_and_abort_work_by_hand() {
    let registry = TestRegistry::spawn().await;
    let instances = three_instances(&registry).await;
    put(&registry, "", "one").await;
    let gray = &instances[0].0;
    put(&registry, &format!("?rollout=instances:{gray}&bake=1h"), "two").await;
    let rejected = serde_json::json!({"instance": gray, "revision": 2, "status": "rejected", "reason": "not a number"});
    let answer = http_client()
        .post(format!("{}{LIMITS}/acks", registry.url))
        .json(&rejected)
        .send()
        .await
        .expect("ack");
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    let rolled_back = rollout_state(&registry, "rolled_back").await;
    assert!(
        rolled_back
            .rollout
            .and_then(|r| r.reason)
            .is_some_and(|r| r.contains("not a number"))
    );

    // By hand: a second candidate aborted, a third promoted.
    put(&registry, &format!("?rollout=instances:{gray}&bake=1h"), "three").await;
    let aborted = registry.post(&format!("{LIMITS}/rollout/abort")).await;
    assert_eq!(aborted.status(), StatusCode::OK);
    let aborted: RolloutStatus = aborted.json().await.expect("status");
    assert_eq!(
        aborted.rollout.map(|r| (r.state, r.reason)),
        Some(("rolled_back".to_owned(), Some("aborted by anonymous".to_owned())))
    );
    put(&registry, "?rollout=10&bake=1h", "four").await;
    let promoted: RolloutStatus = registry
        .post(&format!("{LIMITS}/rollout/promote"))
        .await
        .json()
        .await
        .expect("status");
    assert_eq!(
        (promoted.revision, promoted.rollout.map(|r| r.state)),
        (4, Some("promoted".to_owned()))
    );
    let nothing = registry.post(&format!("{LIMITS}/rollout/abort")).await;
    assert_eq!(nothing.status(), StatusCode::CONFLICT, "nothing runs");
}

#[tokio::test]
async fn a_rollout_needs_a_release_in_force_and_a_live_instance() {
    let registry = TestRegistry::spawn().await;
    let first = put(&registry, "?rollout=50", "one").await;
    assert_eq!(first.status(), StatusCode::CONFLICT);
    let error: ErrorBody = first.json().await.expect("error");
    assert_eq!(error.error, "no_live_instance", "{}", error.message);
    let _instances = three_instances(&registry).await;
    let first = put(&registry, "?rollout=50", "one").await;
    let error: ErrorBody = first.json().await.expect("error");
    assert_eq!(error.error, "rollout_refused", "{}", error.message);
    put(&registry, "", "one").await;
    let bad = put(&registry, "?rollout=150", "two").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_registry_restarted_during_a_rollout_goes_on_with_it() {
    let registry = TestRegistry::spawn().await;
    let instances = three_instances(&registry).await;
    put(&registry, "", "one").await;
    let gray = &instances[0].0;
    let staged = put(&registry, &format!("?rollout=instances:{gray},100&bake=1h"), "two").await;
    assert_eq!(staged.status(), StatusCode::OK);

    let registry = registry.restart().await;
    let running = status(&registry).await.rollout.expect("the rollout");
    assert_eq!(
        (running.state.as_str(), running.candidate, running.step),
        ("running", 2, 0),
        "at the step it was at"
    );
    let as_gray = registry.get(&format!("{LIMITS}?instance={gray}")).await;
    assert_eq!(
        as_gray.text().await.expect("body"),
        "two",
        "the gray instance still runs the candidate"
    );
    let as_other = registry.get(&format!("{LIMITS}?instance={}", instances[1].0)).await;
    assert_eq!(as_other.text().await.expect("body"), "one");

    let promoted = http_client()
        .post(format!("{}{LIMITS}/rollout/promote", registry.url))
        .send()
        .await
        .expect("POST promote");
    assert_eq!(promoted.status(), StatusCode::OK);
    // The promotion is kept too: after another restart revision 2 is in force for everyone.
    let registry = registry.restart().await;
    assert_eq!(registry.get(LIMITS).await.text().await.expect("body"), "two");
    assert_eq!(status(&registry).await.rollout.expect("the rollout").state, "promoted");
}
