//! Black-box tests of the registry over real HTTP: a registry and fake services, all on
//! `127.0.0.1:0` in this process. One module per area of behaviour.

mod addresses;
mod checks;
mod config;
mod config_hooks;
mod dashboard;
mod discovery;
mod events;
mod guard;
mod health;
mod instances;
mod listing;
mod metrics;
mod model;
mod notify;
mod registration;
mod restart;
mod rollout;
mod seed_wire;
mod shutdown;
mod tls;
mod tokens;
mod watch;

use std::collections::BTreeSet;

use rollcall_testkit::{FakeService, TestRegistry};

/// Registers `service` and asserts the seed's 200.
async fn register(registry: &TestRegistry, service: &FakeService) {
    let response = registry.register(&service.registration()).await;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "registering {} answered {status}: {body}", service.name);
}

/// A `Portal` that requires `GradingService`, and one `GradingService` instance, both
/// registered, once the portal holds the grading instance.
async fn portal_holding_grades(registry: &TestRegistry) -> (FakeService, FakeService) {
    let portal = FakeService::spawn("Portal", &["GradingService"]).await;
    register(registry, &portal).await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(registry, &grades).await;
    portal.wait_for_providers(&BTreeSet::from([grades.entry()])).await;
    (portal, grades)
}
