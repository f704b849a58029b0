//! The checks a `/v1` registration may choose: TTL checks renewed by the instance, TCP checks,
//! its own interval, timeout and tries, and the bounds on them.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use rollcall_testkit::{FakeService, HeartbeatMode, TestRegistry, eventually, http_client};
use rollcall_wire::{CheckKind, ErrorBody, InstanceState, InstanceView};
use serde_json::json;

use super::register;

/// `service`'s registration with `check`.
fn with_check(service: &FakeService, check: serde_json::Value) -> serde_json::Value {
    let mut body = serde_json::to_value(service.registration()).expect("encode");
    body["Check"] = check;
    body
}

async fn register_checked(registry: &TestRegistry, service: &FakeService, check: serde_json::Value) -> InstanceView {
    let response = registry.register_instance(&with_check(service, check)).await;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 201, "{body}");
    serde_json::from_str(&body).expect("an instance view")
}

async fn renew(registry: &TestRegistry, id: &str) -> reqwest::Response {
    http_client()
        .put(format!("{}/v1/instances/{id}/ttl", registry.url))
        .send()
        .await
        .expect("PUT ttl")
}

#[tokio::test]
async fn a_ttl_instance_is_announced_by_its_first_renewal_and_removed_when_renewals_stop() {
    let registry = TestRegistry::spawn().await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let view = register_checked(&registry, &grades, json!({"Kind": "ttl", "TTL": "1s", "Tries": 2})).await;
    assert_eq!(view.state, InstanceState::Pending);
    assert_eq!(view.check.kind, CheckKind::Ttl);
    assert_eq!(view.check.ttl.as_deref(), Some("1s"));

    assert_eq!(renew(&registry, &view.id).await.status(), StatusCode::NO_CONTENT);
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;

    // Renewed every 100 ms (the cadence of the instance this test plays), well within its TTL
    // of a second, for two TTLs: it stays passing all along.
    let renewer = {
        let (url, id) = (registry.url.clone(), view.id.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                let renewed = http_client().put(format!("{url}/v1/instances/{id}/ttl")).send().await;
                assert_eq!(renewed.expect("PUT ttl").status(), StatusCode::NO_CONTENT);
            }
        })
    };
    rollcall_testkit::passing_throughout(Duration::from_secs(2), || {
        registry.instance("GradingService", &grades.url)
    })
    .await;
    assert!(!renewer.is_finished(), "a renewal was refused");
    renewer.abort();

    // Renewals stop: suspect, then critical after its 2 tries, and its dependents let go.
    let critical = registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Critical)
        .await;
    assert_eq!(critical.last_error.as_deref(), Some("not renewed within its TTL"));
    assert!(critical.consecutive_failures >= 2, "{critical:?}");
    portal.wait_for_providers(&BTreeSet::new()).await;

    // One renewal brings it back.
    assert_eq!(renew(&registry, &view.id).await.status(), StatusCode::NO_CONTENT);
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;
    assert_eq!(grades.probes(), 0, "a TTL-checked instance is never probed");
}

#[tokio::test]
async fn renewals_are_refused_for_other_checks_unknown_ids_and_other_owners() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let view = register_checked(&registry, &grades, json!({"Kind": "http"})).await;
    let not_ttl = renew(&registry, &view.id).await;
    assert_eq!(not_ttl.status(), StatusCode::CONFLICT);
    let error: ErrorBody = not_ttl.json().await.expect("JSON error");
    assert_eq!(error.error, "not_ttl");
    assert!(error.message.contains("http"), "{}", error.message);

    let unknown = renew(&registry, "no-such-id").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // Registered with one token, renewed with another that may register the service too.
    let ttl = FakeService::spawn("GradingService", &[]).await;
    let owner = registry.token("owner", &["register:GradingService"]).await;
    let other = registry.token("other", &["register:GradingService"]).await;
    let created = http_client()
        .post(format!("{}/v1/instances", registry.url))
        .bearer_auth(&owner)
        .json(&with_check(&ttl, json!({"TTL": "1m"})))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<InstanceView>().await.expect("JSON").id;
    let put = |token: String| {
        http_client()
            .put(format!("{}/v1/instances/{id}/ttl", registry.url))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(put(other).await.expect("PUT").status(), StatusCode::FORBIDDEN);
    assert_eq!(put(owner).await.expect("PUT").status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_tcp_check_passes_on_a_connection_and_fails_once_nothing_listens() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    // Its HTTP heartbeat fails: only a connection counts.
    grades.set_heartbeat(HeartbeatMode::Failing(StatusCode::INTERNAL_SERVER_ERROR));
    let view = register_checked(&registry, &grades, json!({"Kind": "tcp"})).await;
    assert_eq!(view.check.kind, CheckKind::Tcp);
    registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Passing)
        .await;
    assert_eq!(grades.probes(), 0, "a TCP check sends no request");

    grades.stop();
    let critical = registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Critical)
        .await;
    assert_eq!(critical.last_error.as_deref(), Some("no answer"));
}

#[tokio::test]
async fn an_instance_is_probed_on_its_own_interval() {
    // The registry's interval is 30 s: probes every 100 ms can only be the instance's own.
    let registry = TestRegistry::spawn_with(|config| config.health_interval = Duration::from_secs(30)).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let view = register_checked(&registry, &grades, json!({"Interval": "100ms", "Timeout": "200ms"})).await;
    assert_eq!(view.check.interval.as_deref(), Some("100ms"));
    eventually("five probes", rollcall_testkit::DEADLINE, || async {
        (grades.probes() >= 5).then_some(())
    })
    .await;
}

#[tokio::test]
async fn checks_outside_the_bounds_are_refused_with_the_bounds() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let cases = [
        (
            json!({"Interval": "50ms"}),
            "invalid_registration",
            "from 100ms to 1 day",
        ),
        (json!({"TTL": "2days"}), "invalid_registration", "from 100ms to 1 day"),
        (
            json!({"Kind": "tcp", "Timeout": "25h"}),
            "invalid_registration",
            "from 100ms to 1 day",
        ),
        (json!({"Tries": 0}), "invalid_registration", "from 1 to 100"),
        (json!({"Kind": "ttl"}), "invalid_registration", "needs a TTL"),
        (
            json!({"Kind": "ttl", "TTL": "5s", "Interval": "1s"}),
            "invalid_registration",
            "renewed by the instance",
        ),
        (
            json!({"Kind": "http", "TTL": "5s"}),
            "invalid_registration",
            "ttl checks only",
        ),
        (json!({"Kind": "icmp"}), "invalid_json", "icmp"),
        (json!({"TTL": "soon"}), "invalid_json", "TTL \"soon\""),
    ];
    for (check, code, says) in cases {
        let response = registry.register_instance(&with_check(&grades, check.clone())).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{check}");
        let error: ErrorBody = response.json().await.expect("JSON error");
        assert_eq!(error.error, code, "{check}");
        assert!(error.message.contains(says), "{check}: {}", error.message);
    }
    assert!(registry.services().await.services.is_empty(), "nothing was registered");
}

#[tokio::test]
async fn a_chosen_check_survives_a_restart() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let view = register_checked(&registry, &grades, json!({"TTL": "200ms", "Tries": 1})).await;
    let registry = registry.restart().await;
    let restored = registry
        .instance("GradingService", &grades.url)
        .await
        .expect("restored");
    assert_eq!((restored.id, restored.check), (view.id, view.check));
    // Restored passing, and not renewed: critical after one TTL and its one try.
    registry
        .wait_for_state("GradingService", &grades.url, InstanceState::Critical)
        .await;
}
