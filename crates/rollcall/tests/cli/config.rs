//! `rollcall config` against a registry process: publish, read, history, diff, rollback, list,
//! watch, and a malformed document refused with where it goes wrong.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use rollcall_testkit::ServerProcess;

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

/// `rollcall config ARGS --registry URL`: its exit status, stdout and stderr.
fn config(registry: &ServerProcess, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(rollcall())
        .arg("config")
        .args(args)
        .args(["--registry", &registry.url])
        .env_remove("ROLLCALL_TOKEN")
        .output()
        .expect("run rollcall config");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_read_history_diff_rollback_and_status_from_the_command_line() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("limits.json");
    let path = "prod/GradingService/limits";
    let file_name = file.to_str().expect("UTF-8 path");

    std::fs::write(&file, "{\n  \"maxScore\": 100\n}\n").expect("write");
    let (ok, out, err) = config(&registry, &["put", path, file_name, "-m", "first"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("published prod/GradingService/limits revision 1"),
        "{out}"
    );
    std::fs::write(&file, "{\n  \"maxScore\": 90\n}\n").expect("write");
    let (ok, _, err) = config(&registry, &["put", path, file_name, "--if-match", "1", "-m", "lower"]);
    assert!(ok, "{err}");
    let (ok, _, err) = config(&registry, &["put", path, file_name, "--if-match", "1"]);
    assert!(!ok && err.contains("at revision 2"), "a stale compare-and-set: {err}");

    assert_eq!(config(&registry, &["get", path]).1, "{\n  \"maxScore\": 90\n}\n");
    let history = config(&registry, &["history", path]).1;
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(
        lines[0].starts_with("r2 ") && lines[0].ends_with("anonymous  lower"),
        "{history}"
    );
    let diff = config(&registry, &["diff", path]).1;
    assert!(
        diff.contains("-  \"maxScore\": 100") && diff.contains("+  \"maxScore\": 90"),
        "{diff}"
    );

    let (ok, out, err) = config(&registry, &["rollback", path, "--to", "1"]);
    assert!(ok && out.contains("revision 3"), "{out}{err}");
    assert_eq!(config(&registry, &["get", path]).1, "{\n  \"maxScore\": 100\n}\n");
    assert_eq!(
        config(&registry, &["get", path, "--revision", "2"]).1,
        "{\n  \"maxScore\": 90\n}\n"
    );
    let listed = config(&registry, &["list"]).1;
    assert!(listed.starts_with("prod/GradingService/limits  r3  json"), "{listed}");

    // Two grading instances; one reports applying revision 3, one rejecting it.
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let grades = rollcall_testkit::FakeService::spawn("GradingService", &[]).await;
        let view: rollcall_wire::InstanceView = http
            .post(format!("{}/v1/instances", registry.url))
            .json(&grades.registration())
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("instance");
        ids.push((view.id, grades));
    }
    for (n, (id, _)) in ids.iter().enumerate() {
        let status = if n == 0 { "applied" } else { "rejected" };
        let ack = serde_json::json!({"instance": id, "revision": 3, "status": status, "reason": "too low"});
        let answer = http
            .post(format!("{}/v1/config/{path}/acks", registry.url))
            .json(&ack)
            .send()
            .await
            .expect("ack");
        assert_eq!(answer.status(), 204);
    }
    let status = config(&registry, &["status", path]).1;
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(
        lines[0], "r3: 1 of 2 applied, 1 rejected, 0 unreachable, 0 waiting",
        "{status}"
    );
    assert!(
        lines[1].starts_with(&format!("  {} ", ids[1].0)) && lines[1].ends_with("rejected r3: too low"),
        "{status}"
    );

    // A gray rollout to the first instance, seen in the status, then aborted by hand.
    std::fs::write(&file, "{\n  \"maxScore\": 95\n}\n").expect("write");
    let steps = format!("instances:{}", ids[0].0);
    let (ok, out, err) = config(
        &registry,
        &["put", path, file_name, "--rollout", &steps, "--bake", "1h"],
    );
    assert!(ok && out.contains("revision 4"), "{out}{err}");
    let status = config(&registry, &["status", path]).1;
    assert!(
        status.contains("rollout of r4 over r3: running at step 1 of 1"),
        "{status}"
    );
    let (ok, out, err) = config(&registry, &["rollout", "abort", path]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("{path}: rollout of revision 4 rolled back; revision 3 in force")
    );

    let yaml = dir.path().join("bad.yaml");
    std::fs::write(&yaml, "a: 1\nb: [1, 2\n").expect("write");
    let (ok, _, err) = config(&registry, &["put", path, yaml.to_str().expect("UTF-8")]);
    assert!(!ok && err.contains("line 3, column 1"), "{err}");
}

#[test]
fn watch_prints_each_release_as_it_is_published() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("flags.txt");
    std::fs::write(&file, "one").expect("write");
    let path = "prod/_shared/flags";
    let file_name = file.to_str().expect("UTF-8 path");
    assert!(config(&registry, &["put", path, file_name, "-m", "one"]).0);

    let mut watch = Command::new(rollcall())
        .args(["config", "watch", path, "--registry", &registry.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rollcall config watch");
    // Read on a thread, so that a watch that prints nothing fails the test instead of hanging it.
    let stdout = watch.stdout.take().expect("stdout");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(rollcall_testkit::DEADLINE)
            .expect("a line within the deadline")
    };
    let first = next();
    assert!(first.starts_with("r1 ") && first.ends_with("one"), "{first}");
    std::fs::write(&file, "two").expect("write");
    assert!(config(&registry, &["put", path, file_name, "-m", "two"]).0);
    let second = next();
    assert!(second.starts_with("r2 ") && second.ends_with("two"), "{second}");
    let _ = watch.kill();
    let _ = watch.wait();
}
