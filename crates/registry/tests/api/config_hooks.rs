//! Configuration webhooks: an instance registered with a `ConfigUpdateURL` is sent (`POST`) each
//! release it is to run, and its answer counts as its report.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use rollcall_testkit::{DEADLINE, FakeService, TestRegistry, eventually, http_client};
use rollcall_wire::{ReleaseEvent, RolloutStatus};

const LIMITS: &str = "/v1/config/prod/GradingService/limits";

/// A grading instance whose `/config` keeps every release it is sent and answers `answer`.
async fn receiver(answer: Arc<AtomicU16>) -> (FakeService, Arc<Mutex<Vec<ReleaseEvent>>>) {
    let received: Arc<Mutex<Vec<ReleaseEvent>>> = Arc::default();
    let kept = Arc::clone(&received);
    let routes = Router::new().route(
        "/config",
        post(move |axum::Json(event): axum::Json<ReleaseEvent>| {
            let (kept, answer) = (Arc::clone(&kept), Arc::clone(&answer));
            async move {
                kept.lock().expect("lock").push(event);
                StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
            }
        }),
    );
    (
        FakeService::spawn_with_routes("GradingService", &[], routes).await,
        received,
    )
}

async fn publish(registry: &TestRegistry, body: &str) {
    let answer = http_client()
        .put(format!("{}{LIMITS}", registry.url))
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .expect("PUT");
    assert!(answer.status().is_success(), "{}", answer.status());
}

#[tokio::test]
async fn an_instance_with_a_config_url_is_posted_each_release_and_its_answer_is_its_report() {
    let registry = TestRegistry::spawn().await;
    publish(&registry, "one").await;
    let answer = Arc::new(AtomicU16::new(200));
    let (grades, received) = receiver(Arc::clone(&answer)).await;
    let mut body = serde_json::to_value(grades.registration()).expect("encode");
    body["ConfigUpdateURL"] = format!("{}/config", grades.url).into();
    body["Metadata"] = serde_json::json!({"config-namespace": "prod"});
    let registered = registry.register_instance(&body).await;
    assert_eq!(registered.status(), 201);
    let view: rollcall_wire::InstanceView = registered.json().await.expect("instance");
    assert_eq!(view.config_update_url, Some(format!("{}/config", grades.url)));

    let delivered = |revision: u64| {
        let received = Arc::clone(&received);
        async move {
            eventually("the release to be delivered", DEADLINE, || async {
                let received = received.lock().expect("lock");
                received
                    .iter()
                    .find(|e| e.release.revision == revision)
                    .map(|e| e.content.clone())
            })
            .await
        }
    };
    assert_eq!(delivered(1).await, "one", "what is in force when it registers");
    publish(&registry, "two").await;
    assert_eq!(delivered(2).await, "two");
    let counted = |applied: usize, rejected: usize| {
        let registry = &registry;
        async move {
            eventually("the reports to count", DEADLINE, || async {
                let status: RolloutStatus = registry.get(&format!("{LIMITS}/status")).await.json().await.ok()?;
                (status.applied == applied && status.rejected == rejected).then_some(status)
            })
            .await
        }
    };
    counted(1, 0).await;

    answer.store(422, Ordering::SeqCst);
    publish(&registry, "three").await;
    delivered(3).await;
    let status = counted(0, 1).await;
    assert_eq!(status.instances[0].reason, "the webhook answered 422");
}

#[tokio::test]
async fn a_config_url_off_the_instance_s_host_is_refused() {
    let registry = TestRegistry::spawn().await;
    let (grades, _) = receiver(Arc::new(AtomicU16::new(200))).await;
    let mut body = serde_json::to_value(grades.registration()).expect("encode");
    body["ConfigUpdateURL"] = "http://localhost:9/config".into();
    let refused = registry.register_instance(&body).await;
    assert_eq!(refused.status(), 400);
    let error: rollcall_wire::ErrorBody = refused.json().await.expect("error");
    assert!(error.message.contains("ConfigUpdateURL"), "{}", error.message);
}
