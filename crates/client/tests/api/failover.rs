//! Several registries given to one service: when the one in use stops answering, the service
//! moves on to the next and registers there.

use rollcall_testkit::{DEADLINE, TestRegistry, eventually};
use tokio_util::sync::CancellationToken;

use crate::service;

#[tokio::test]
async fn a_service_given_two_registries_moves_to_the_second_when_the_first_goes_away() {
    let (first, second) = (TestRegistry::spawn().await, TestRegistry::spawn().await);
    let both = format!("{},{}/services", first.url, second.url);
    let running = service(&both, "HelloService", &[])
        .start(CancellationToken::new())
        .await
        .expect("starts");
    let url = running.url().to_owned();
    assert!(
        first.instance("HelloService", &url).await.is_some(),
        "registered with the first"
    );
    assert!(second.instance("HelloService", &url).await.is_none());

    first.stop().await;
    eventually("the service to register with the second registry", DEADLINE, || async {
        second.instance("HelloService", &url).await
    })
    .await;
    running.stop().await;
    assert!(
        second.instance("HelloService", &url).await.is_none(),
        "and it deregisters from the one it moved to"
    );
}
