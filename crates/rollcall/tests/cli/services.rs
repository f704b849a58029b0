//! `rollcall services` against a live registry: the table, `--json`, `--watch`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use rollcall_testkit::{FakeService, ServerProcess};
use rollcall_wire::{CatalogEvent, ServicesView};

use crate::register;

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

/// Runs `rollcall services ARGS` to completion and returns its stdout.
async fn services(args: &[&str]) -> String {
    let mut command = tokio::process::Command::new(rollcall());
    command.arg("services").args(args).env_remove("ROLLCALL_REGISTRY");
    let output = command.output().await.expect("run rollcall services");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[tokio::test]
async fn lists_the_catalog_as_a_table_and_as_json() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    assert_eq!(
        services(&["--registry", &registry.url]).await.trim(),
        "no services registered"
    );

    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    // A seed-style URL works too.
    let table = services(&["--registry", &format!("{}/services", registry.url)]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("SERVICE"), "{table}");
    assert!(lines[0].contains("STATE") && lines[0].contains("LAST CHECK"), "{table}");
    assert!(
        lines[1].starts_with("GradingService") && lines[1].contains("passing"),
        "{table}"
    );
    assert!(lines[1].contains(&grades.url), "{table}");

    let json = services(&["--registry", &registry.url, "--json"]).await;
    let view: ServicesView = serde_json::from_str(&json).expect("--json prints the catalog");
    assert_eq!(view.service("GradingService").map(|s| s.instances.len()), Some(1));
}

#[tokio::test]
async fn watch_prints_the_catalog_then_each_change() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let mut child = Command::new(rollcall())
        .args(["services", "--watch", "--json", "--registry", &registry.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rollcall services --watch");
    let (lines_sent, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_sent.send(line).is_err() {
                break;
            }
        }
    });
    let mut next_event = async || -> CatalogEvent {
        let line = tokio::time::timeout(rollcall_testkit::DEADLINE, lines.recv())
            .await
            .expect("a line within the deadline")
            .expect("the watcher is running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not an event ({e}): {line}"))
    };

    assert!(matches!(next_event().await, CatalogEvent::Reset { services } if services.is_empty()));
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    let event = next_event().await;
    assert!(
        matches!(&event, CatalogEvent::Registered { instance } if instance.url == grades.url),
        "{event:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn an_unreachable_registry_is_an_error_that_names_it() {
    let nobody = rollcall_testkit::refused_url().await;
    let output = Command::new(rollcall())
        .args(["services", "--registry", &nobody])
        .output()
        .expect("run rollcall services");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the registry at {nobody}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_service_name_cannot_rewrite_the_terminal() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let mut service = FakeService::spawn("Grades", &[]).await;
    service.name = "Grades\u{1b}[2J\rOK".to_owned();
    register(&registry, &service).await;
    let table = services(&["--registry", &registry.url]).await;
    assert!(
        !table.trim_end().chars().any(|c| c.is_control() && c != '\n'),
        "{table:?}"
    );
    assert!(table.contains(r"Grades\u{1b}[2J\rOK"), "{table}");
}

#[tokio::test]
async fn lists_a_registry_served_over_https_given_its_authority() {
    let ca = rollcall_testkit::TestCa::new("rollcall-test");
    let cert = ca.issue("registry");
    let registry = ServerProcess::start(rollcall(), "registry", |c| {
        c.arg("--tls-cert").arg(&cert.cert).arg("--tls-key").arg(&cert.key);
    });
    assert!(registry.url.starts_with("https://"), "{}", registry.url);
    let ca_file = ca.ca_file.to_str().expect("UTF-8 path");
    assert_eq!(
        services(&["--registry", &registry.url, "--ca-file", ca_file])
            .await
            .trim(),
        "no services registered"
    );
    let output = tokio::process::Command::new(rollcall())
        .args(["services", "--registry", &registry.url])
        .env_remove("ROLLCALL_CA_FILE")
        .output()
        .await
        .expect("run rollcall services");
    assert!(
        !output.status.success(),
        "the platform's roots do not know the test authority"
    );
}

#[tokio::test]
async fn drain_and_undrain_take_an_instance_out_of_rotation_and_back_by_its_url() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    let run = |verb: &'static str| {
        let (registry, url) = (registry.url.clone(), grades.url.clone());
        async move {
            let output = tokio::process::Command::new(rollcall())
                .args([verb, &url, "--registry", &registry])
                .output()
                .await
                .expect("run");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).expect("UTF-8")
        }
    };
    assert_eq!(
        run("drain").await.trim(),
        format!("GradingService {} is draining", grades.url)
    );
    let table = services(&["--registry", &registry.url]).await;
    assert!(table.contains("draining"), "{table}");
    assert_eq!(
        run("undrain").await.trim(),
        format!("GradingService {} is passing", grades.url)
    );
}

#[tokio::test]
async fn given_several_registries_a_command_uses_the_first_that_answers() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;
    let dead = rollcall_testkit::refused_url().await;
    let table = services(&["--registry", &format!("{dead},{}", registry.url)]).await;
    assert!(table.contains("GradingService"), "{table}");
}
