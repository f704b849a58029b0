//! Faults of the real world, made real: the log service's disk fills up. The service runs in a
//! private mount namespace on a small tmpfs (root only; skipped with a message otherwise), so
//! the disk really is full, and space really returns.

use std::path::Path;
use std::process::Command;

use rollcall_testkit::{DEADLINE, ServerProcess, eventually, http_client};
use serde_json::{Value, json};

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

/// Whether this test may mount a tmpfs in a namespace of its own.
fn can_mount() -> bool {
    rustix::process::geteuid().is_root()
        && Command::new("unshare")
            .args(["-m", "--propagation", "private", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

/// One batch of 500 records of about 200 bytes, numbered from `first`.
fn batch(first: usize) -> Value {
    let records: Vec<Value> = (first..first + 500)
        .map(|n| json!({"service": "Filler", "message": format!("record {n:08} {}", "x".repeat(160))}))
        .collect();
    Value::Array(records)
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    let answer = http_client()
        .post(format!("{url}/v1/records"))
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn stored(url: &str) -> usize {
    let mut count = 0;
    let mut cursor = String::new();
    loop {
        let page: Value = http_client()
            .get(format!("{url}/v1/records?service=Filler&limit=10000{cursor}"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        count += page["records"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return count,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_loses_nothing_acknowledged_and_recovers_when_space_returns() {
    if !can_mount() {
        eprintln!("skipped: a full disk is made with a tmpfs in a private mount namespace, which needs root");
        return;
    }
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let mount = tempfile::tempdir().expect("a mount point");
    // 8 MiB of tmpfs, 3 MiB of it taken by a file the test removes to give space back.
    let script = r#"mount -t tmpfs -o size=8m rollcall-test "$0" && dd if=/dev/zero of="$0/filler" bs=1M count=3 2>/dev/null && exec "$1" logs --data-dir "$0/logs" --listen 127.0.0.1:0 --registry "$2" --segment-size 1MiB --retention-size 1GiB"#;
    let logs = ServerProcess::start_command(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script])
            .arg(mount.path())
            .arg(rollcall())
            .arg(&registry.url),
    );

    // Fill the disk: every batch acknowledged is counted, until the first refusal.
    let mut acknowledged = 0;
    let refusal = loop {
        assert!(acknowledged < 200_000, "the disk never filled");
        let (status, answer) = post(&logs.url, &batch(acknowledged)).await;
        if status != 200 {
            break (status, answer);
        }
        assert_eq!(answer["accepted"], 500);
        acknowledged += 500;
    };
    assert_eq!(refusal.0, 507, "{:?}", refusal.1);
    assert_eq!(refusal.1["error"], "write_failed", "{:?}", refusal.1);
    assert!(
        !refusal.1["message"].as_str().unwrap_or_default().contains("No space"),
        "no internal error text"
    );
    assert_eq!(
        stored(&logs.url).await,
        acknowledged,
        "every acknowledged record is there, no more"
    );

    // Space returns: the service takes records again by itself, without a restart.
    let removed = Command::new("nsenter")
        .args(["-t", &logs.pid().to_string(), "-m", "rm"])
        .arg(mount.path().join("filler"))
        .status()
        .expect("nsenter");
    assert!(removed.success());
    eventually("the log service to take records again", DEADLINE, || async {
        (post(&logs.url, &batch(acknowledged)).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        stored(&logs.url).await,
        acknowledged + 500,
        "nothing acknowledged was lost"
    );
}
