//! `GET /v1/events`: a reset, then every change; `Last-Event-ID` resumes with no gap.

use std::time::Duration;

use rollcall_testkit::{FakeFleet, FakeService, SseClient, SseMessage, TestRegistry};
use rollcall_wire::{CatalogEvent, InstanceState};

use super::register;

fn event_of(message: &SseMessage) -> CatalogEvent {
    let event: CatalogEvent = message.json();
    assert_eq!(message.event, event.kind(), "the SSE event name is the type");
    event
}

async fn next_event(stream: &mut SseClient) -> (String, CatalogEvent) {
    let message = stream.next().await.expect("an event");
    (message.id.clone().expect("every event has an id"), event_of(&message))
}

#[tokio::test]
async fn a_stream_starts_with_the_whole_catalog_then_follows_every_change() {
    let registry = TestRegistry::spawn_with(|c| c.health_retry_delay = Duration::from_millis(600)).await;
    let logs = FakeService::spawn("LogService", &[]).await;
    register(&registry, &logs).await;

    let mut stream = SseClient::connect(&format!("{}/v1/events", registry.url), None).await;
    let (reset_id, reset) = next_event(&mut stream).await;
    let CatalogEvent::Reset { services } = reset else {
        panic!("expected a reset first, got {reset:?}")
    };
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].instances[0].url, logs.url);

    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    let (registered_id, registered) = next_event(&mut stream).await;
    assert!(registered_id.parse::<u64>().expect("numeric") > reset_id.parse::<u64>().expect("numeric"));
    assert!(matches!(&registered, CatalogEvent::Registered { instance } if instance.url == grades.url));

    grades.fail_next_probes(1);
    let (_, changed) = next_event(&mut stream).await;
    let CatalogEvent::StateChanged { instance, from } = changed else {
        panic!("expected a state change, got {changed:?}")
    };
    assert_eq!((from, instance.state), (InstanceState::Passing, InstanceState::Suspect));
    let (_, recovered) = next_event(&mut stream).await;
    assert!(matches!(
        recovered,
        CatalogEvent::StateChanged {
            from: InstanceState::Suspect,
            ..
        }
    ));

    assert_eq!(registry.deregister(&grades.url).await.status(), 200);
    let (_, gone) = next_event(&mut stream).await;
    assert!(matches!(&gone, CatalogEvent::Deregistered { instance, reaped: false } if instance.url == grades.url));
}

#[tokio::test]
async fn last_event_id_resumes_with_no_gap_and_an_unknown_one_gets_a_reset() {
    let registry = TestRegistry::spawn().await;
    let url = format!("{}/v1/events", registry.url);
    let mut stream = SseClient::connect(&url, None).await;
    let (reset_id, _) = next_event(&mut stream).await;
    drop(stream);

    let first = FakeService::spawn("A", &[]).await;
    let second = FakeService::spawn("B", &[]).await;
    register(&registry, &first).await;
    register(&registry, &second).await;

    let mut resumed = SseClient::connect(&url, Some(&reset_id)).await;
    for expected in [&first, &second] {
        let (_, event) = next_event(&mut resumed).await;
        assert!(
            matches!(&event, CatalogEvent::Registered { instance } if instance.url == expected.url),
            "expected {} registered, got {event:?}",
            expected.url
        );
    }

    let mut stale = SseClient::connect(&url, Some("12")).await;
    let (_, event) = next_event(&mut stale).await;
    let CatalogEvent::Reset { services } = event else {
        panic!("expected a reset, got {event:?}")
    };
    assert_eq!(services.len(), 2);
}

#[tokio::test]
async fn a_client_too_slow_for_the_live_feed_is_told_and_can_resume() {
    let registry = TestRegistry::spawn_with(|c| {
        c.health_interval = Duration::from_secs(3600);
        c.max_instances_per_service = 10_000;
    })
    .await;
    let url = format!("{}/v1/events", registry.url);
    let mut slow = SseClient::connect(&url, None).await;
    let (mut last_id, _) = next_event(&mut slow).await;

    // Far more changes than the live feed holds, while the client reads nothing; 8 KiB of
    // metadata each, so that they cannot all wait in the sockets' buffers either.
    let fleet = FakeFleet::spawn().await;
    let padding = "x".repeat(8 * 1024);
    let changes = 3_000;
    let mut registrations = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let instances: Vec<serde_json::Value> = (worker..changes)
            .step_by(16)
            .map(|n| {
                let mut body = serde_json::to_value(fleet.registration(n, "Bulk")).expect("encode");
                body["Metadata"] = serde_json::json!({ "padding": padding });
                body
            })
            .collect();
        let base = registry.url.clone();
        registrations.spawn(async move {
            let http = reqwest::Client::new();
            for registration in instances {
                let response = http
                    .post(format!("{base}/v1/instances"))
                    .json(&registration)
                    .send()
                    .await
                    .expect("POST");
                assert_eq!(response.status(), 201);
            }
        });
    }
    registrations.join_all().await;

    // Probes go on meanwhile (first probes are spread over the interval, so a few are due at
    // once, and under load one may time out): state changes may come between the registrations.
    let mut registered = std::collections::HashSet::new();
    let mut lagged = false;
    while let Some(message) = slow.next().await {
        if message.event == "lagged" {
            lagged = true;
            continue;
        }
        last_id = message.id.clone().expect("id");
        if let CatalogEvent::Registered { instance } = event_of(&message) {
            registered.insert(instance.url);
        }
    }
    assert!(lagged, "the stream ended without saying it lagged");
    assert!(registered.len() < changes, "it was not behind after all");

    let mut resumed = SseClient::connect(&url, Some(&last_id)).await;
    while registered.len() < changes {
        let (_, event) = next_event(&mut resumed).await;
        match event {
            CatalogEvent::Registered { instance } => {
                assert!(
                    registered.insert(instance.url.clone()),
                    "{} announced twice",
                    instance.url
                );
            }
            CatalogEvent::StateChanged { .. } => {}
            other => panic!("a resumed stream has no reset and no gap: {other:?}"),
        }
    }
}
