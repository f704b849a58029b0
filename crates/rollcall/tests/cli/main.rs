//! Process-level tests of the `rollcall` binary: it is spawned for real, configured by flags and
//! `ROLLCALL_*` variables, and stopped with real signals.

mod config;
mod durability;
mod faults;
mod hardening;
mod logs;
mod nodes;
mod observed;
mod registry;
mod rolling;
mod services;
mod system;
mod tokens;

/// Registers `service` with the registry process through the seed endpoint.
async fn register(registry: &rollcall_testkit::ServerProcess, service: &rollcall_testkit::FakeService) {
    let response = reqwest::Client::new()
        .post(format!("{}/services", registry.url))
        .json(&service.registration())
        .send()
        .await
        .expect("POST /services");
    assert_eq!(response.status(), 200);
}

/// A registry process that probes every 250 ms (100 ms timeout, 3 tries 100 ms apart), so that
/// a dead service is noticed well within a second.
fn quick_registry(binary: &std::path::Path) -> rollcall_testkit::ServerProcess {
    rollcall_testkit::ServerProcess::start(binary, "registry", |c| {
        c.args(["--health-interval", "250ms", "--health-timeout", "100ms"])
            .args(["--health-tries", "3", "--health-retry-delay", "100ms"]);
    })
}

/// A portal process (it keeps no data directory) on a port the OS picks, finding the grading
/// service through `registry`.
fn portal(binary: &std::path::Path, registry: &rollcall_testkit::ServerProcess) -> rollcall_testkit::ServerProcess {
    rollcall_testkit::ServerProcess::start_command(std::process::Command::new(binary).args([
        "portal",
        "--listen",
        "127.0.0.1:0",
        "--registry",
        &registry.url,
    ]))
}
