//! A rollcall service against a registry that speaks only the seed protocol (as the original Go
//! registry does), with the captured Go patches replayed into it.

use rollcall_testkit::{SeedRegistry, body_of, fixture, send_raw};
use rollcall_wire::{Patch, Registration};
use tokio_util::sync::CancellationToken;

use crate::service;

/// The Go log service's URL as the captured patches name it (never bound: it only travels in
/// patches).
fn go_log_url() -> String {
    let patch: Patch = serde_json::from_slice(body_of(&fixture("go-wire/registry-patch-added.http"))).expect("a patch");
    patch.added[0].url.clone()
}

/// The Go log service as the captured patches name it.
fn go_log_service() -> Registration {
    let url = go_log_url();
    Registration {
        service_name: "LogService".into(),
        service_url: url.clone(),
        required_services: vec![],
        service_update_url: format!("{url}/services"),
        heartbeat_url: format!("{url}/heartbeat"),
    }
}

#[tokio::test]
async fn a_rollcall_service_registers_with_a_seed_registry_follows_its_patches_and_deregisters() {
    let registry = SeedRegistry::spawn().await;
    registry.add(go_log_service()).await;
    let running = service(&format!("{}/services", registry.url), "GradingService", &["LogService"])
        .start(CancellationToken::new())
        .await
        .expect("starts against a seed-style registry URL");
    let url = running.url().to_owned();
    let providers = running.providers();
    assert_eq!(providers.urls("LogService"), [go_log_url()]);

    // The registration is byte for byte what the Go grading service sends, but for its URL.
    let requests = registry.requests();
    let captured = fixture("go-wire/registry-register-request.http");
    let go_grading: Registration = serde_json::from_slice(body_of(&captured)).expect("a registration");
    let expected = String::from_utf8_lossy(body_of(&captured)).replace(&go_grading.service_url, &url);
    assert_eq!(requests[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(String::from_utf8_lossy(&requests[0].body), expected);

    // The Go registry's patches, replayed byte for byte.
    let address = url.trim_start_matches("http://");
    let removed = send_raw(address, &fixture("go-wire/registry-patch-removed.http")).await;
    assert_eq!(removed.status, 200);
    assert!(providers.get("LogService").is_err(), "removed");
    let added = send_raw(address, &fixture("go-wire/registry-patch-added.http")).await;
    assert_eq!(added.status, 200);
    let again = send_raw(address, &fixture("go-wire/registry-patch-added.http")).await;
    assert_eq!(again.status, 200);
    assert_eq!(providers.urls("LogService"), [go_log_url()], "no duplicate");
    let null = send_raw(address, &fixture("go-wire/registry-patch-initial-null.http")).await;
    assert_eq!(null.status, 200);
    assert_eq!(
        providers.urls("LogService"),
        [go_log_url()],
        "null lists change nothing"
    );

    running.stop().await;
    let deregistration = registry.requests().pop().expect("a last request");
    assert_eq!(deregistration.method, "DELETE");
    assert_eq!(deregistration.body, url.as_bytes());
    assert!(registry.registrations().iter().all(|r| r.service_url != url));
}

#[tokio::test]
async fn the_null_patch_of_an_empty_seed_registry_means_no_providers() {
    let registry = SeedRegistry::spawn().await;
    let running = service(&registry.url, "Portal", &["LogService", "GradingService"])
        .start(CancellationToken::new())
        .await
        .expect("starts");
    let providers = running.providers();
    assert_eq!(
        providers.get("GradingService").expect_err("none").service,
        "GradingService"
    );

    // A provider registering later reaches the service through the seed registry's patch.
    registry.add(go_log_service()).await;
    assert_eq!(providers.get("LogService").expect("announced").url(), go_log_url());
    running.stop().await;
}
