//! The outbound address policy, as a registering client meets it: a registration speaks for
//! its own address, so URLs on another host, at link-local or metadata addresses, or at the
//! registry itself are refused with 400 and a reason, before anything is called.

use rollcall_testkit::{CountingListener, FakeService, TestRegistry};
use rollcall_wire::{ErrorBody, Registration};
use serde_json::json;

fn at(base: &str) -> Registration {
    Registration {
        service_name: "Sneaky".to_owned(),
        service_url: base.to_owned(),
        required_services: Vec::new(),
        service_update_url: format!("{base}/services"),
        heartbeat_url: format!("{base}/heartbeat"),
    }
}

/// Registers `registration` through the seed endpoint and through `/v1/instances`; both must
/// answer 400 with `code`, and a message containing `says`.
async fn assert_refused(registry: &TestRegistry, registration: &Registration, code: &str, says: &str) {
    let seed = registry.register(registration).await;
    let v1 = registry
        .register_instance(&json!({
            "ServiceName": registration.service_name, "ServiceURL": registration.service_url,
            "RequiredServices": [], "ServiceUpdateURL": registration.service_update_url,
            "HeartbeatURL": registration.heartbeat_url,
        }))
        .await;
    for (api, response) in [("seed", seed), ("v1", v1)] {
        assert_eq!(response.status(), 400, "{api}: {}", registration.heartbeat_url);
        let error: ErrorBody = response.json().await.expect("JSON error");
        assert_eq!(error.error, code, "{api}: {}", error.message);
        assert!(error.message.contains(says), "{api}: {}", error.message);
    }
}

#[tokio::test]
async fn heartbeat_and_update_urls_must_be_on_the_service_urls_host() {
    let registry = TestRegistry::spawn().await;
    let service = FakeService::spawn("Elsewhere", &[]).await;
    let mut registration = service.registration();
    registration.heartbeat_url = "http://example.com/heartbeat".to_owned();
    assert_refused(
        &registry,
        &registration,
        "invalid_registration",
        "must be on the ServiceURL's host",
    )
    .await;
    assert!(registry.services().await.services.is_empty());
}

#[tokio::test]
async fn metadata_link_local_and_unspecified_addresses_are_refused_before_any_call() {
    let registry = TestRegistry::spawn().await;
    for base in [
        "http://169.254.169.254",
        "http://2852039166",
        "http://[::ffff:169.254.169.254]",
        "http://[fe80::1]:8080",
        "http://0.0.0.0:8080",
    ] {
        assert_refused(
            &registry,
            &at(base),
            "address_refused",
            "which the registry never calls",
        )
        .await;
    }
    assert!(registry.services().await.services.is_empty());
}

#[tokio::test]
async fn a_registration_cannot_make_the_registry_call_itself() {
    let registry = TestRegistry::spawn().await;
    assert_refused(
        &registry,
        &at(&registry.url),
        "address_refused",
        "the registry's own address",
    )
    .await;
    let localhost = registry.url.replace("127.0.0.1", "localhost");
    assert_refused(
        &registry,
        &at(&localhost),
        "address_refused",
        "the registry's own address",
    )
    .await;
}

#[tokio::test]
async fn a_loopback_registration_may_point_at_any_loopback_port_and_is_called() {
    let registry = TestRegistry::spawn().await;
    let listener = CountingListener::start().await;
    // Registered from 127.0.0.1, at a name that resolves to ::1 and 127.0.0.1: allowed, and
    // called back.
    let registration = at(&format!("http://localhost:{}", listener.port()));
    let response = registry.register(&registration).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    assert!(
        listener.connections() >= 1,
        "the callback went to the registered address"
    );
}
