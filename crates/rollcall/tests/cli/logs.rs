//! `rollcall logs` as a process: `kill -9` during ingest loses no acknowledged record, and
//! SIGTERM deregisters it from the registry and ends it cleanly, also while it is still waiting
//! for an unreachable registry.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rollcall_testkit::{DEADLINE, ServerProcess, eventually};
use rollcall_wire::{BatchResult, RecordPage, ServicesView};
use serde_json::json;
use tokio::task::JoinSet;

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

type Acknowledged = Arc<Mutex<Vec<String>>>;

/// Four clients posting batches of 50 uniquely named records until the log service goes away.
fn start_ingest(base: &str, round: usize, acknowledged: &Acknowledged) -> JoinSet<()> {
    let http = reqwest::Client::new();
    let mut clients = JoinSet::new();
    for client in 0..4 {
        let (http, acknowledged, url) = (http.clone(), Arc::clone(acknowledged), format!("{base}/v1/records"));
        clients.spawn(async move {
            for batch in 0.. {
                let messages: Vec<String> = (0..50).map(|i| format!("r{round}-c{client}-b{batch}-{i}")).collect();
                let records: Vec<_> = messages
                    .iter()
                    .map(|m| json!({"service": "Load", "level": "info", "message": m}))
                    .collect();
                let Ok(response) = http.post(&url).json(&records).send().await else {
                    return;
                };
                let Ok(result) = response.json::<BatchResult>().await else {
                    return;
                };
                assert_eq!(result.accepted, 50, "{:?}", result.rejected);
                acknowledged.lock().expect("lock").extend(messages);
            }
        });
    }
    clients
}

async fn stored_messages(base: &str) -> HashSet<String> {
    let mut messages = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let after = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let url = format!("{base}/v1/records?service=Load&limit=10000{after}");
        let page: RecordPage = reqwest::get(url).await.expect("GET").json().await.expect("a page");
        messages.extend(page.records.into_iter().map(|r| r.message));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return messages,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_record_survives_kill_9() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let with_registry = |c: &mut std::process::Command| {
        c.args(["--registry", &registry.url]);
    };
    let acknowledged: Acknowledged = Arc::default();
    let mut logs = ServerProcess::start(rollcall(), "logs", with_registry);
    for round in 0..2 {
        let clients = start_ingest(&logs.url, round, &acknowledged);
        eventually("records to be acknowledged", DEADLINE, || async {
            (acknowledged.lock().expect("lock").len() >= 2_000 * (round + 1)).then_some(())
        })
        .await;
        logs = logs.kill_and_restart(with_registry);
        clients.join_all().await;
    }
    let stored = stored_messages(&logs.url).await;
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let missing: Vec<&String> = acknowledged.iter().filter(|m| !stored.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged records are missing after kill -9: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test]
async fn sigterm_deregisters_the_log_service_and_ends_it_cleanly() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let mut logs = ServerProcess::start(rollcall(), "logs", |c| {
        c.args(["--registry", &registry.url]);
    });
    let listed = || async {
        let services: ServicesView = reqwest::get(format!("{}/v1/services", registry.url))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(services.service("LogService").map_or(0, |s| s.instances.len()))
    };
    assert_eq!(listed().await, Some(1), "registered once it announced its address");
    logs.signal("TERM");
    assert!(logs.wait_for_exit().success());
    eventually("the log service to be deregistered", DEADLINE, || async {
        (listed().await == Some(0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_while_the_registry_is_unreachable_is_a_clean_stop() {
    // Nothing listens at the registry's address: the service serves, and retries registering.
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    };
    let (registry_port, port) = (free_port(), free_port());
    let data = tempfile::tempdir().expect("data dir");
    let mut logs = std::process::Command::new(rollcall())
        .args(["logs", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--registry", &format!("http://127.0.0.1:{registry_port}")])
        .arg("--data-dir")
        .arg(data.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn rollcall logs");
    eventually(
        "the log service to serve while it waits for the registry",
        DEADLINE,
        || async {
            let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?;
            response.status().is_success().then_some(())
        },
    )
    .await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &logs.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = logs.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the log service did not exit within {DEADLINE:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(
        status.success(),
        "a requested stop before registering exits with {status}"
    );
}

#[tokio::test]
async fn the_cli_finds_the_log_service_through_the_registry_then_queries_and_tails_it() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let logs = ServerProcess::start(rollcall(), "logs", |c| {
        c.args(["--registry", &registry.url]);
    });
    let records = json!([
        {"service": "GradingService", "level": "info", "message": "graded", "fields": {"student": 7}},
        {"service": "GradingService", "level": "error", "message": "store failed"},
        {"service": "Portal", "level": "info", "message": "page served"},
    ]);
    let posted = reqwest::Client::new()
        .post(format!("{}/v1/records", logs.url))
        .json(&records)
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), 200);

    let query = |args: &[&str]| {
        let output = std::process::Command::new(rollcall())
            .args(["logs", "query", "--registry", &registry.url])
            .args(args)
            .output()
            .expect("rollcall logs query");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("utf-8")
    };
    let text = query(&["--service", "GradingService"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("ERROR GradingService store failed"), "{text}");
    assert!(lines[1].contains("INFO GradingService graded student=7"), "{text}");
    let json = query(&["--level", "error", "--json"]);
    let record: rollcall_wire::LogRecord = serde_json::from_str(json.trim()).expect("one JSON record");
    assert_eq!(record.message, "store failed");
    // The same reads in LogQL.
    let text = query(&[r#"{service="GradingService"} |= "grad" | student == 7"#]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("INFO GradingService graded student=7"), "{text}");

    // The tail prints the last record, then a new one as it is stored.
    let mut tail = tokio::process::Command::new(rollcall())
        .args([
            "logs",
            "tail",
            "--logs",
            &logs.url,
            "--service",
            "Portal",
            "--last",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("rollcall logs tail");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tail.stdout.take().expect("stdout")));
    let mut next_line = async || {
        tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("a line within the deadline")
            .expect("read")
            .expect("a line")
    };
    assert!(next_line().await.contains("page served"));
    reqwest::Client::new()
        .post(format!("{}/v1/records", logs.url))
        .json(&json!([{"service": "Portal", "message": "another page"}]))
        .send()
        .await
        .expect("POST");
    assert!(next_line().await.contains("another page"));
}

#[tokio::test]
async fn a_message_cannot_forge_a_line_or_rewrite_the_terminal() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let logs = ServerProcess::start(rollcall(), "logs", |c| {
        c.args(["--registry", &registry.url]);
    });
    let forged = "paid\r\u{1b}[2K2026-12-03T00:00:00Z  INFO Bank refund approved\n\u{7}";
    let posted = reqwest::Client::new()
        .post(format!("{}/v1/records", logs.url))
        .json(&json!([{"service": "Shop\u{1b}]0;owned\u{7}", "message": forged, "fields": {"note": "a\rb"}}]))
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), 200);

    let output = tokio::process::Command::new(rollcall())
        // Only this record: the registry's audit records are in the store too.
        .args(["logs", "query", "--logs", &logs.url, "--contains", "paid"])
        .output()
        .await
        .expect("rollcall logs query");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(text.lines().count(), 1, "one record, one line: {text:?}");
    assert!(
        !text.trim_end_matches('\n').chars().any(char::is_control),
        "raw control characters reach the terminal: {text:?}"
    );
    assert!(text.contains(r"paid\r\u{1b}[2K"), "{text}");
    assert!(text.contains(r"Shop\u{1b}]0;owned\u{7}"), "{text}");
    assert!(text.contains(r#"note="a\rb""#), "{text}");

    let json = tokio::process::Command::new(rollcall())
        .args(["logs", "query", "--logs", &logs.url, "--contains", "paid", "--json"])
        .output()
        .await
        .expect("rollcall logs query --json");
    let record: rollcall_wire::LogRecord =
        serde_json::from_slice(&json.stdout).expect("--json output is JSON, unchanged");
    assert_eq!(record.message, forged);
}
