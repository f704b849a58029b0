//! Zero-downtime operations as processes: a rolling restart of the grading service's instances
//! under the load of a dependent that makes one attempt per request and of the portal (no
//! request may fail), and a service that renews itself (`--ttl`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rollcall_testkit::{FakeService, ServerProcess, SteadyLoad, eventually, roll};

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_grading_fails_no_request_of_a_single_attempt_dependent_nor_of_the_portal() {
    let registry = crate::quick_registry(rollcall());
    let with_registry = |c: &mut Command| {
        c.args(["--registry", &registry.url]);
    };
    let grading = vec![
        ServerProcess::start(rollcall(), "grades", with_registry),
        ServerProcess::start(rollcall(), "grades", with_registry),
    ];
    let portal = crate::portal(rollcall(), &registry);
    // A dependent like the seed's Go services: it learns its providers from the registry's
    // patches and makes one attempt per request.
    let dependent = Arc::new(FakeService::spawn("Caller", &["GradingService"]).await);
    crate::register(&registry, &dependent).await;
    eventually(
        "the dependent to hold both grading instances",
        rollcall_testkit::DEADLINE,
        || async { (dependent.providers().len() == 2).then_some(()) },
    )
    .await;

    let pace = Duration::from_millis(2);
    let direct = SteadyLoad::of_dependent(Arc::clone(&dependent), "GradingService", "/students", pace);
    let students = format!("{}/students", portal.url);
    let through_portal = SteadyLoad::start(pace, move |_| Some(students.clone()));
    direct.wait_for_more(50).await;
    through_portal.wait_for_more(50).await;

    let grading = roll(grading, &dependent, "GradingService", |old| old.restart(with_registry)).await;

    direct.wait_for_more(50).await;
    through_portal.wait_for_more(50).await;
    let (direct, through_portal) = (direct.stop().await, through_portal.stop().await);
    assert!(
        direct.sent > 100 && through_portal.sent > 100,
        "{direct:?} {through_portal:?}"
    );
    assert_eq!(direct.failed, 0, "the single-attempt dependent: {direct:?}");
    assert_eq!(through_portal.failed, 0, "through the portal: {through_portal:?}");
    drop((grading, portal, registry));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_with_ttl_renews_itself_and_leaves_when_stopped() {
    let registry = crate::quick_registry(rollcall());
    let mut grades = ServerProcess::start(rollcall(), "grades", |c| {
        c.args(["--registry", &registry.url, "--ttl", "1s"]);
    });
    let url = grades.url.clone();
    let listed = || async {
        let view: rollcall_wire::ServiceView =
            rollcall_testkit::get_json(&format!("{}/v1/services/GradingService", registry.url)).await?;
        view.instances.into_iter().find(|i| i.url == url)
    };
    let instance = eventually("the TTL instance to pass", rollcall_testkit::DEADLINE, || async {
        listed()
            .await
            .filter(|i| i.state == rollcall_wire::InstanceState::Passing)
    })
    .await;
    assert_eq!(instance.check.kind, rollcall_wire::CheckKind::Ttl);
    assert_eq!(instance.check.ttl.as_deref(), Some("1s"));
    // Passing for two TTLs on end: renewed all along.
    rollcall_testkit::passing_throughout(Duration::from_secs(2), listed).await;

    grades.signal("TERM");
    tokio::task::block_in_place(|| grades.wait_for_exit());
    assert!(listed().await.is_none(), "deregistered on its way out");
}
