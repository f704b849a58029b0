//! `/v1/instances`: register with metadata, look up and deregister by id.

use std::collections::BTreeSet;

use rollcall_testkit::{FakeService, TestRegistry};
use rollcall_wire::{ErrorBody, InstanceState, InstanceView};
use serde_json::json;

use super::register;

fn body_of(service: &FakeService, metadata: serde_json::Value) -> serde_json::Value {
    let mut body = serde_json::to_value(service.registration()).expect("encode");
    body["Metadata"] = metadata;
    body
}

#[tokio::test]
async fn an_instance_registers_with_metadata_and_keeps_its_id() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let response = registry
        .register_instance(&body_of(&grades, json!({"version": "1.4.2"})))
        .await;
    assert_eq!(response.status(), 201);
    let created: InstanceView = response.json().await.expect("JSON");
    assert_eq!(created.service, "GradingService");
    assert_eq!(created.url, grades.url);
    assert_eq!(created.metadata.get("version").map(String::as_str), Some("1.4.2"));
    assert_eq!(created.id.len(), 32, "128 random bits in hex: {}", created.id);

    let response = registry
        .register_instance(&body_of(&grades, json!({"version": "1.4.3"})))
        .await;
    assert_eq!(response.status(), 200, "re-registering the same URL replaces it");
    let replaced: InstanceView = response.json().await.expect("JSON");
    assert_eq!(replaced.id, created.id);

    let fetched: InstanceView = registry
        .get(&format!("/v1/instances/{}", created.id))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(fetched.metadata.get("version").map(String::as_str), Some("1.4.3"));
    let listed = registry.service("GradingService").await;
    assert_eq!(listed.instances.len(), 1);
    assert_eq!(listed.instances[0].id, created.id);
}

#[tokio::test]
async fn a_v1_registration_gets_its_providers_pushed_and_is_announced() {
    let registry = TestRegistry::spawn().await;
    let logs = FakeService::spawn("LogService", &[]).await;
    register(&registry, &logs).await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;

    let grades = FakeService::spawn("GradingService", &["LogService"]).await;
    let response = registry.register_instance(&body_of(&grades, json!(null))).await;
    assert_eq!(response.status(), 201);
    grades.wait_for_providers(&BTreeSet::from([logs.entry()])).await;
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;
}

#[tokio::test]
async fn deregistering_by_id_removes_and_an_unknown_id_is_404() {
    let registry = TestRegistry::spawn().await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let created: InstanceView = registry
        .register_instance(&body_of(&grades, json!({})))
        .await
        .json()
        .await
        .expect("JSON");
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;

    let path = format!("/v1/instances/{}", created.id);
    assert_eq!(registry.delete(&path).await.status(), 204);
    portal.wait_for_providers(&BTreeSet::new()).await;
    for response in [registry.delete(&path).await, registry.get(&path).await] {
        assert_eq!(response.status(), 404);
        let error: ErrorBody = response.json().await.expect("JSON error");
        assert_eq!(error.error, "unknown_instance");
        assert!(error.message.contains(&created.id));
    }
}

#[tokio::test]
async fn bad_instance_registrations_get_json_errors() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let cases = [
        (body_of(&grades, json!({"n": 1})), 400, "Metadata"),
        (body_of(&grades, json!({"": "x"})), 400, "empty key"),
        (body_of(&grades, json!("labels")), 400, "Metadata"),
        (json!({"ServiceName": "GradingService"}), 400, "ServiceURL"),
        (json!([1, 2]), 400, "instance registration"),
        (
            with(&grades, |body| body["ServiceName"] = json!("x".repeat(201))),
            400,
            "longer than 200 bytes",
        ),
        (
            with(&grades, |body| {
                body["RequiredServices"] = json!((0..65).map(|n| format!("S{n}")).collect::<Vec<_>>());
            }),
            400,
            "at most 64",
        ),
        (
            with(&grades, |body| {
                body["HeartbeatURL"] = json!(format!("http://a/{}", "x".repeat(2048)));
            }),
            400,
            "longer than 2048 bytes",
        ),
    ];
    for (body, status, mentions) in cases {
        let response = registry.register_instance(&body).await;
        assert_eq!(response.status(), status, "{body}");
        let error: ErrorBody = response.json().await.expect("JSON error");
        assert!(
            error.message.contains(mentions),
            "{body}: {:?} should mention {mentions}",
            error.message
        );
    }
    let huge = body_of(&grades, json!({"blob": "x".repeat(rollcall_registry::MAX_BODY_BYTES)}));
    let response = registry.register_instance(&huge).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<ErrorBody>().await.expect("JSON").error,
        "body_too_large"
    );
    assert!(registry.services().await.services.is_empty());
}

#[tokio::test]
async fn concurrent_registrations_of_one_url_are_each_answered_with_what_they_registered() {
    // Each registration is acknowledged, so each is answered with itself, even when another
    // registration of the same ServiceURL replaced it before the answer was written.
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let bodies: Vec<_> = (0..64)
        .map(|n| body_of(&grades, json!({ "attempt": n.to_string() })))
        .collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|body| registry.register_instance(body))).await;
    let mut ids = BTreeSet::new();
    for (n, response) in answers.into_iter().enumerate() {
        assert!(
            matches!(response.status().as_u16(), 200 | 201),
            "registration {n} answered {}",
            response.status()
        );
        let view: InstanceView = response.json().await.expect("JSON");
        assert_eq!(
            view.metadata["attempt"],
            n.to_string(),
            "registration {n} answered with another one"
        );
        ids.insert(view.id);
    }
    assert_eq!(ids.len(), 1, "one URL keeps one id");
}

/// `grades`' registration as a `/v1` body, changed by `change`.
fn with(grades: &FakeService, change: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut body = body_of(grades, json!({}));
    change(&mut body);
    body
}

#[tokio::test]
async fn registrations_past_the_instance_limits_are_refused_and_call_nobody_back() {
    let registry = TestRegistry::spawn_with(|c| {
        c.max_instances = 3;
        c.max_instances_per_service = 2;
    })
    .await;
    let mut held = Vec::new();
    let mut register = async |name: &str| {
        let service = FakeService::spawn(name, &[]).await;
        let status = registry.register_instance(&body_of(&service, json!({}))).await.status();
        held.push(service);
        status
    };
    assert_eq!(register("A").await, 201);
    assert_eq!(register("A").await, 201);
    assert_eq!(register("A").await, 429, "one service past its limit");
    assert_eq!(register("B").await, 201);
    let third_a = FakeService::spawn("A", &[]).await;
    let response = registry.register_instance(&body_of(&third_a, json!({}))).await;
    let error: ErrorBody = response.json().await.expect("JSON error");
    assert_eq!(error.error, "too_many_instances");
    assert!(error.message.contains("--max-instances"), "{}", error.message);

    // The seed endpoint answers 400, and before any callback.
    let another = FakeService::spawn("C", &["A"]).await;
    let response = registry.register(&another.registration()).await;
    assert_eq!(response.status(), 400, "the registry past its limit");
    let error: ErrorBody = response.json().await.expect("JSON error");
    assert_eq!(error.error, "too_many_instances");
    assert_eq!(
        another.patch_arrivals(),
        0,
        "a full registry called the registrant back"
    );

    // An instance already held re-registers as ever.
    assert_eq!(
        registry.register_instance(&body_of(&held[0], json!({}))).await.status(),
        200
    );
    assert_eq!(
        registry
            .services()
            .await
            .services
            .iter()
            .map(|s| s.instances.len())
            .sum::<usize>(),
        3
    );
}

#[tokio::test]
async fn a_v1_registration_is_announced_only_once_probed_and_its_first_probe_comes_at_once() {
    // A long interval: an announcement within seconds can only come from the immediate probe.
    let registry = TestRegistry::spawn_with(|config| config.health_interval = std::time::Duration::from_secs(30)).await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let started = std::time::Instant::now();
    let response = registry.register_instance(&body_of(&grades, json!(null))).await;
    assert_eq!(response.status(), 201);
    let created: InstanceView = response.json().await.expect("JSON");
    assert!(
        matches!(created.state, InstanceState::Pending | InstanceState::Passing),
        "{:?}",
        created.state
    );
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(grades.probes() >= 1, "announced after a probe, not before");
}

#[tokio::test]
async fn a_v1_registration_at_a_dead_url_is_never_announced() {
    let registry = TestRegistry::spawn().await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    let dead = rollcall_testkit::refused_url().await;
    let body = json!({
        "ServiceName": "GradingService", "ServiceURL": dead,
        "ServiceUpdateURL": format!("{dead}/services"), "HeartbeatURL": format!("{dead}/heartbeat"),
    });
    assert_eq!(registry.register_instance(&body).await.status(), 201);
    // Every try failed: it will not be announced any more.
    registry
        .wait_for_state("GradingService", &dead, InstanceState::Critical)
        .await;
    let announced: Vec<_> = portal
        .patches()
        .into_iter()
        .filter(|p| p.added.iter().any(|e| e.url == dead))
        .collect();
    assert!(
        announced.is_empty(),
        "the dead instance was pushed to a dependent: {announced:?}"
    );
}

#[tokio::test]
async fn a_drained_instance_leaves_its_dependents_at_once_and_an_undrained_one_comes_back() {
    let registry = TestRegistry::spawn().await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;
    let id = registry
        .instance("GradingService", &grades.url)
        .await
        .expect("listed")
        .id;

    let drained = registry.post(&format!("/v1/instances/{id}/drain")).await;
    assert_eq!(drained.status(), 200);
    let view: InstanceView = drained.json().await.expect("JSON");
    assert_eq!(view.state, InstanceState::Draining);
    portal.wait_for_providers(&BTreeSet::new()).await;
    let probes = grades.probes();
    rollcall_testkit::eventually("probes to go on while drained", rollcall_testkit::DEADLINE, || async {
        (grades.probes() > probes + 2).then_some(())
    })
    .await;
    assert_eq!(
        registry.instance("GradingService", &grades.url).await.map(|i| i.state),
        Some(InstanceState::Draining),
        "passing probes do not put it back"
    );

    let undrained = registry.post(&format!("/v1/instances/{id}/undrain")).await;
    assert_eq!(undrained.status(), 200);
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;

    let unknown = registry.post("/v1/instances/nope/drain").await;
    assert_eq!(unknown.status(), 404);
}
