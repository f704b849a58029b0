//! The running registry against a reference model over HTTP: random sequences of seed
//! registrations and deregistrations of three providers, their heartbeats failing and
//! recovering, and restarts of the registry (on its data directory), with one dependent
//! requiring them. After every step, once deliveries settle, the dependent holds exactly the
//! providers the model says are registered and answering, and so does the catalog's passing
//! listing; no instance is listed twice; the catalog's index never goes back while the
//! registry runs. (The pure catalog's model test, `state::tests::model`, covers many more
//! sequences; this one proves the I/O around it: probes, deliveries, the store.)

use std::collections::BTreeSet;

use axum::http::StatusCode;
use proptest::prelude::*;
use rollcall_testkit::{DEADLINE, FakeService, HeartbeatMode, TestRegistry, eventually};
use rollcall_wire::{InstanceState, PatchEntry, ServicesView};

use super::register;

const PROVIDERS: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    Register(usize),
    Deregister(usize),
    Fail(usize),
    Heal(usize),
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..PROVIDERS).prop_map(Step::Register),
        2 => (0..PROVIDERS).prop_map(Step::Deregister),
        3 => (0..PROVIDERS).prop_map(Step::Fail),
        2 => (0..PROVIDERS).prop_map(Step::Heal),
        1 => Just(Step::Restart),
    ]
}

/// The catalog's listing: its index, and every URL it lists (checked for duplicates).
async fn listing(registry: &TestRegistry) -> (u64, BTreeSet<String>) {
    let answer = registry.get("/v1/services").await;
    let index = answer.headers()["x-rollcall-index"]
        .to_str()
        .expect("text")
        .parse()
        .expect("a number");
    let view: ServicesView = answer.json().await.expect("JSON");
    let urls: Vec<String> = view
        .services
        .iter()
        .flat_map(|s| &s.instances)
        .map(|i| i.url.clone())
        .collect();
    let unique: BTreeSet<String> = urls.iter().cloned().collect();
    assert_eq!(unique.len(), urls.len(), "an instance is listed twice: {urls:?}");
    (index, unique)
}

async fn passing(registry: &TestRegistry) -> BTreeSet<String> {
    let view: rollcall_wire::ServiceView = registry.get("/v1/services/P?passing").await.json().await.expect("JSON");
    view.instances.into_iter().map(|i| i.url).collect()
}

async fn run(steps: Vec<Step>) {
    let mut registry = TestRegistry::spawn().await;
    let dependent = FakeService::spawn("D", &["P"]).await;
    register(&registry, &dependent).await;
    let mut providers = Vec::new();
    for _ in 0..PROVIDERS {
        providers.push(FakeService::spawn("P", &[]).await);
    }
    let (mut registered, mut healthy) = ([false; PROVIDERS], [true; PROVIDERS]);
    let mut index = 0;
    for step in &steps {
        match step {
            Step::Register(n) => {
                register(&registry, &providers[*n]).await;
                registered[*n] = true;
            }
            Step::Deregister(n) => {
                let answer = registry.deregister(&providers[*n].url).await;
                if registered[*n] {
                    assert_eq!(answer.status(), StatusCode::OK, "{step:?}");
                }
                registered[*n] = false;
            }
            Step::Fail(n) => {
                providers[*n].set_heartbeat(HeartbeatMode::Failing(StatusCode::SERVICE_UNAVAILABLE));
                healthy[*n] = false;
                if registered[*n] {
                    // Settled once its tries ran out, not at once.
                    registry
                        .wait_for_state("P", &providers[*n].url, InstanceState::Critical)
                        .await;
                }
            }
            Step::Heal(n) => {
                providers[*n].set_heartbeat(HeartbeatMode::Healthy);
                healthy[*n] = true;
                if registered[*n] {
                    registry
                        .wait_for_state("P", &providers[*n].url, InstanceState::Passing)
                        .await;
                }
            }
            Step::Restart => {
                registry = registry.restart().await;
                index = 0;
            }
        }
        let (listed_index, listed) = listing(&registry).await;
        assert!(listed_index >= index, "the index went back after {step:?}");
        index = listed_index;
        let model: BTreeSet<String> = (0..PROVIDERS)
            .filter(|n| registered[*n])
            .map(|n| providers[n].url.clone())
            .collect();
        assert_eq!(
            listed
                .iter()
                .filter(|u| **u != dependent.url)
                .cloned()
                .collect::<BTreeSet<_>>(),
            model,
            "listed after {step:?}: nothing deregistered reappears, nothing registered is lost"
        );
        let expected: BTreeSet<PatchEntry> = (0..PROVIDERS)
            .filter(|n| registered[*n] && healthy[*n])
            .map(|n| providers[n].entry())
            .collect();
        let urls: BTreeSet<String> = expected.iter().map(|e| e.url.clone()).collect();
        eventually(&format!("deliveries to settle after {step:?}"), DEADLINE, || async {
            (passing(&registry).await == urls && dependent.providers() == expected).then_some(())
        })
        .await;
    }
}

proptest! {
    // Each case runs a registry and four services, and waits for deliveries after every step
    // (a failing provider takes its tries to drop out): 24 cases of up to 12 steps keep this
    // test within about 20 seconds.
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_registry_keeps_every_dependent_in_step_with_the_catalog_through_any_sequence(
        steps in proptest::collection::vec(step(), 1..12)
    ) {
        tokio::runtime::Runtime::new().expect("runtime").block_on(run(steps));
    }
}
