//! Providers kept up to date by a live registry's patches.

use rollcall_client::Policy;
use rollcall_testkit::{DEADLINE, FakeService, TestRegistry, eventually};
use tokio_util::sync::CancellationToken;

use crate::service;

#[tokio::test]
async fn providers_follow_the_registry() {
    let registry = TestRegistry::spawn().await;
    let first = FakeService::spawn("GradingService", &[]).await;
    assert_eq!(registry.register(&first.registration()).await.status(), 200);

    let running = service(&registry.url, "Portal", &["GradingService"])
        .start(CancellationToken::new())
        .await
        .expect("starts");
    let providers = running.providers();
    // The registry delivered the providers before it acknowledged the registration.
    assert_eq!(providers.get("GradingService").expect("known at once").url(), first.url);
    let mut watch = providers.watch("GradingService");

    let second = FakeService::spawn("GradingService", &[]).await;
    assert_eq!(registry.register(&second.registration()).await.status(), 200);
    watch.changed().await.expect("a change");
    assert_eq!(*watch.borrow_and_update(), [first.url.clone(), second.url.clone()]);
    let picked: Vec<String> = (0..4)
        .map(|_| providers.get("GradingService").expect("known").url().to_owned())
        .collect();
    assert_eq!(
        picked.iter().filter(|u| **u == first.url).count(),
        2,
        "round robin: {picked:?}"
    );

    registry.deregister(&first.url).await;
    eventually("the first provider to be forgotten", DEADLINE, || async {
        (providers.urls("GradingService") == [second.url.clone()]).then_some(())
    })
    .await;
    registry.deregister(&second.url).await;
    eventually("no provider to be left", DEADLINE, || async {
        providers.get("GradingService").err()
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn the_policy_is_chosen_on_the_builder() {
    let registry = TestRegistry::spawn().await;
    let builder = service(&registry.url, "Portal", &["GradingService"]).load_balancing(Policy::PowerOfTwoChoices);
    let providers = builder.providers();
    let running = builder.start(CancellationToken::new()).await.expect("starts");
    assert_eq!(running.providers().policy(), Policy::PowerOfTwoChoices);
    assert_eq!(providers.policy(), Policy::PowerOfTwoChoices, "clones share the policy");
    running.stop().await;
}
