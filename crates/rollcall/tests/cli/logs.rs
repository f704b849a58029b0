//! `rollcall logs` as a process: `kill -9` during ingest loses no acknowledged record, and
//! SIGTERM deregisters it from the registry and ends it cleanly.

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
