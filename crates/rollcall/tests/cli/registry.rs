//! `rollcall registry` as an operator runs it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rollcall_testkit::{FakeService, ServerProcess, eventually};

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

async fn services_answer(url: &str) -> u16 {
    reqwest::get(format!("{url}/v1/services"))
        .await
        .expect("GET /v1/services")
        .status()
        .as_u16()
}

#[tokio::test]
async fn prints_its_address_serves_and_stops_on_sigterm() {
    let mut registry = ServerProcess::start(rollcall(), "registry", |_| {});
    assert_eq!(services_answer(&registry.url).await, 200);
    registry.signal("TERM");
    assert!(registry.wait_for_exit().success());
}

#[tokio::test]
async fn is_configured_by_environment_and_stops_on_sigint() {
    let mut registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.env("ROLLCALL_LISTEN", "127.0.0.1:0")
            .env("ROLLCALL_HEALTH_INTERVAL", "250ms");
    });
    assert_eq!(services_answer(&registry.url).await, 200);
    // Probed every 250 ms: four probes come within a second or so, where the default 3 s
    // interval would take at least nine.
    let service = FakeService::spawn("A", &[]).await;
    let registered = reqwest::Client::new()
        .post(format!("{}/services", registry.url))
        .json(&service.registration())
        .send()
        .await
        .expect("POST /services");
    assert_eq!(registered.status(), 200);
    eventually(
        "four probes at the configured interval",
        Duration::from_secs(5),
        || async { (service.probes() >= 4).then_some(()) },
    )
    .await;
    registry.signal("INT");
    assert!(registry.wait_for_exit().success());
}

#[test]
fn a_malformed_duration_is_refused_with_a_hint() {
    let output = Command::new(rollcall())
        .args(["registry", "--listen", "127.0.0.1:0", "--health-interval", "soon"])
        .output()
        .expect("run rollcall");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--health-interval"), "{stderr}");
    assert!(
        stderr.contains("250ms"),
        "the error shows how to write a duration: {stderr}"
    );
}
