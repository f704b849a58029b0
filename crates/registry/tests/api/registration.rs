//! Registration semantics: callback before 200, no trace after a failed callback, one entry per
//! ServiceURL, deregistration.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;

use rollcall_testkit::{DEADLINE, FakeService, PatchMode, TestRegistry, eventually, refused_url};
use rollcall_wire::{ErrorBody, Patch, Registration};

use super::register;

#[tokio::test]
async fn the_200_comes_only_after_the_callback_was_delivered() {
    let registry = TestRegistry::spawn().await;
    let logs = FakeService::spawn("LogService", &[]).await;
    register(&registry, &logs).await;
    let grades = FakeService::spawn("GradingService", &["LogService"]).await;
    grades.set_patch_mode(PatchMode::Hold);

    let pending = registry.register_in_background(&grades.registration());
    eventually("the callback to arrive", DEADLINE, || async {
        (grades.patch_arrivals() == 1).then_some(())
    })
    .await;
    assert!(
        !pending.is_finished(),
        "the registry answered while its callback was still held"
    );
    assert!(
        registry.service("GradingService").await.instances.is_empty(),
        "not listed before the callback succeeded"
    );

    grades.release_patches();
    let response = pending.await.expect("join").expect("POST");
    assert_eq!(response.status(), 200);
    // When the 200 arrives the service already holds its providers.
    assert_eq!(grades.providers(), BTreeSet::from([logs.entry()]));
}

#[tokio::test]
async fn a_refused_callback_answers_400_and_leaves_no_trace() {
    let registry = TestRegistry::spawn().await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;

    let refusing = FakeService::spawn("GradingService", &[]).await;
    refusing.set_patch_mode(PatchMode::Refuse(StatusCode::INTERNAL_SERVER_ERROR));
    let response = registry.register(&refusing.registration()).await;
    assert_eq!(response.status(), 400);
    let error: ErrorBody = response.json().await.expect("JSON error");
    assert_eq!(error.error, "callback_failed");
    assert!(error.message.contains("HTTP 500"), "{}", error.message);
    assert!(registry.service("GradingService").await.instances.is_empty());

    // Deliveries to the portal are ordered: once it holds the next provider, it would already
    // have been told about the refused one, had it been announced.
    let accepted = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &accepted).await;
    portal.wait_for_providers(&BTreeSet::from([accepted.entry()])).await;
    assert!(portal.patches().iter().all(|p| !p.added.contains(&refusing.entry())));
}

#[tokio::test]
async fn an_unreachable_or_hung_callback_answers_400_with_one_reason_for_both() {
    let registry = TestRegistry::spawn_with(|c| c.notify_timeout = Duration::from_millis(300)).await;
    let dead = refused_url().await;
    let registration = Registration {
        service_name: "Dead".into(),
        service_url: dead.clone(),
        required_services: vec![],
        service_update_url: format!("{dead}/services"),
        heartbeat_url: format!("{dead}/heartbeat"),
    };
    let response = registry.register(&registration).await;
    assert_eq!(response.status(), 400);
    let refused: ErrorBody = response.json().await.expect("JSON error");

    let hung = FakeService::spawn("Hung", &[]).await;
    hung.set_patch_mode(PatchMode::Hang);
    let response = registry.register(&hung.registration()).await;
    assert_eq!(response.status(), 400);
    let silent: ErrorBody = response.json().await.expect("JSON error");
    // A closed port and a silent one read the same to the caller: registering cannot be used to
    // map which internal addresses answer.
    for error in [&refused, &silent] {
        assert_eq!(error.error, "callback_failed");
        assert!(error.message.ends_with(": no answer"), "{}", error.message);
    }
    assert!(registry.services().await.services.is_empty());
}

#[tokio::test]
async fn registering_the_same_url_again_keeps_one_entry_and_repeats_nothing() {
    let registry = TestRegistry::spawn().await;
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &portal).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    register(&registry, &grades).await;
    assert_eq!(registry.service("GradingService").await.instances.len(), 1);

    let second = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &second).await;
    portal
        .wait_for_providers(&BTreeSet::from([grades.entry(), second.entry()]))
        .await;
    let expected = [
        Patch::default(),
        Patch {
            added: vec![grades.entry()],
            removed: vec![],
        },
        Patch {
            added: vec![second.entry()],
            removed: vec![],
        },
    ];
    assert_eq!(
        portal.patches(),
        expected,
        "the repeated registration was announced again"
    );
}

#[tokio::test]
async fn re_registering_a_url_under_another_name_moves_it() {
    let registry = TestRegistry::spawn().await;
    let watcher = FakeService::spawn("Watcher", &["Old", "New"]).await;
    register(&registry, &watcher).await;
    let mut service = FakeService::spawn("Old", &[]).await;
    register(&registry, &service).await;
    watcher.wait_for_providers(&BTreeSet::from([service.entry()])).await;

    service.name = "New".to_owned();
    register(&registry, &service).await;
    watcher.wait_for_providers(&BTreeSet::from([service.entry()])).await;
    assert!(registry.service("Old").await.instances.is_empty());
    assert_eq!(registry.service("New").await.instances.len(), 1);
}

#[tokio::test]
async fn deregistration_notifies_dependents_and_an_unknown_url_changes_nothing() {
    let registry = TestRegistry::spawn().await;
    let (portal, grades) = super::portal_holding_grades(&registry).await;

    assert_eq!(registry.deregister(&grades.url).await.status(), 200);
    portal.wait_for_providers(&BTreeSet::new()).await;
    assert_eq!(
        portal.patches().last().map(|p| p.removed.clone()),
        Some(vec![grades.entry()])
    );

    let before = listed_urls(&registry).await;
    let response = registry.deregister(&grades.url).await;
    assert_eq!(response.status(), 500, "the seed answers 500 for an unknown ServiceURL");
    let error: ErrorBody = response.json().await.expect("JSON error");
    assert_eq!(error.error, "unknown_instance");
    assert_eq!(listed_urls(&registry).await, before);
}

/// Every listed instance as (service, URL): what a deregistration could change.
async fn listed_urls(registry: &TestRegistry) -> Vec<(String, String)> {
    let services = registry.services().await.services;
    services
        .into_iter()
        .flat_map(|s| s.instances.into_iter().map(move |i| (s.name.clone(), i.url)))
        .collect()
}

#[tokio::test]
async fn a_callback_that_redirects_is_refused_and_the_redirect_is_not_followed() {
    let registry = TestRegistry::spawn().await;
    let victim = FakeService::spawn("Victim", &[]).await;
    for status in [StatusCode::TEMPORARY_REDIRECT, StatusCode::FOUND] {
        let location = format!("{}/services", victim.url);
        let app = axum::Router::new().route(
            "/services",
            axum::routing::post(move || {
                let location = location.clone();
                async move { (status, [("location", location)]) }
            }),
        );
        let redirecting = rollcall_testkit::serve(app, tokio_util::sync::CancellationToken::new()).await;
        let registration = Registration {
            service_name: "Bouncer".into(),
            service_url: redirecting.clone(),
            required_services: vec!["Victim".into()],
            service_update_url: format!("{redirecting}/services"),
            heartbeat_url: format!("{redirecting}/heartbeat"),
        };
        let response = registry.register(&registration).await;
        assert_eq!(response.status(), 400, "a {status} is a failed callback");
        let error: ErrorBody = response.json().await.expect("JSON error");
        assert!(
            error.message.ends_with(&format!("answered HTTP {}", status.as_u16())),
            "{}",
            error.message
        );
    }
    assert_eq!(
        victim.patch_arrivals(),
        0,
        "the registry's POST was bounced to another host"
    );
}

#[tokio::test]
async fn urls_with_credentials_are_refused_without_being_repeated() {
    let registry = TestRegistry::spawn().await;
    let service = FakeService::spawn("Secretive", &[]).await;
    let mut registration = service.registration();
    registration.heartbeat_url = registration.heartbeat_url.replace("http://", "http://admin:hunter2@");
    let response = registry.register(&registration).await;
    assert_eq!(response.status(), 400);
    let error: ErrorBody = response.json().await.expect("JSON error");
    assert_eq!(error.error, "invalid_registration");
    assert!(
        error
            .message
            .contains("HeartbeatURL must not carry a user name or password"),
        "{}",
        error.message
    );
    assert!(
        !error.message.contains("hunter2"),
        "the answer repeats the secret: {}",
        error.message
    );
    assert!(registry.services().await.services.is_empty());
}
