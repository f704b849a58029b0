//! What survives: restarts, torn tails, rotation and retention.

use std::io::Write;

use serde_json::json;

use crate::{TestLogs, record};

#[tokio::test]
async fn records_survive_a_restart_and_a_torn_tail_is_cut_off() {
    let logs = TestLogs::spawn().await;
    logs.post_records(&json!([record("A", "info", "one"), record("A", "error", "two")]))
        .await;
    let logs = logs.restart(|_| {}).await;
    assert_eq!(logs.messages("order=oldest").await, ["one", "two"]);

    // A crash mid-write leaves half a block behind: it is cut off and counted on restart.
    let mut logs = logs;
    logs.stop().await;
    let segment = newest_segment(&logs);
    let mut file = std::fs::OpenOptions::new().append(true).open(&segment).expect("open");
    file.write_all(b"RCB1\x10\x00\x00\x00\xff\xff")
        .expect("append a torn block");
    drop(file);
    let logs = logs.restart(|_| {}).await;
    let torn = logs.metric("rollcall_logs_torn_blocks_total").await;
    assert!((torn - 1.0).abs() < f64::EPSILON, "{torn} torn blocks");
    assert_eq!(logs.messages("order=oldest").await, ["one", "two"]);
    logs.post_records(&json!([record("A", "info", "three")])).await;
    assert_eq!(
        logs.messages("order=oldest").await,
        ["one", "two", "three"],
        "ids go on after the cut"
    );
}

#[tokio::test]
async fn zeroed_space_left_by_a_crash_is_cut_off_without_loss_or_a_torn_count() {
    // The active segment's file runs ahead of its blocks with zeros, cut back on a clean stop;
    // after a crash the zeros are still there, and opening the store must take them for unused
    // space, not for a torn block.
    let mut logs = TestLogs::spawn().await;
    logs.post_records(&json!([record("A", "info", "one"), record("A", "info", "two")]))
        .await;
    logs.stop().await;
    let segment = newest_segment(&logs);
    let written = std::fs::metadata(&segment).expect("segment").len();
    let mut file = std::fs::OpenOptions::new().append(true).open(&segment).expect("open");
    file.write_all(&vec![0; 1 << 20]).expect("append zeros");
    drop(file);
    let logs = logs.restart(|_| {}).await;
    let torn = logs.metric("rollcall_logs_torn_blocks_total").await;
    assert!(torn.abs() < f64::EPSILON, "{torn} torn blocks");
    assert_eq!(logs.messages("order=oldest").await, ["one", "two"]);
    logs.post_records(&json!([record("A", "info", "three")])).await;
    assert_eq!(logs.messages("order=oldest").await, ["one", "two", "three"]);
    let mut logs = logs;
    logs.stop().await;
    assert!(
        std::fs::metadata(&segment).expect("segment").len() < written + 1024,
        "the zeros were cut off and the next block written where they began"
    );
}

#[tokio::test]
async fn segments_rotate_by_size_and_the_oldest_go_beyond_the_retention_size() {
    let logs = TestLogs::spawn_with(|c| {
        c.segment_size = bytesize::ByteSize::kib(4);
        c.retention_size = bytesize::ByteSize::kib(16);
    })
    .await;
    for n in 0..100 {
        let message = format!("record {n} {}", "x".repeat(200));
        logs.post_records(&json!([record("A", "info", &message)])).await;
    }
    let segments = logs.metric("rollcall_logs_segments").await;
    let disk = logs.metric("rollcall_logs_disk_bytes").await;
    assert!((2.0..=6.0).contains(&segments), "{segments} segments");
    assert!(disk <= 20.0 * 1024.0, "{disk} bytes on disk");
    assert!(logs.metric("rollcall_logs_segments_deleted_total").await > 0.0);
    let newest = logs.query("limit=1").await.records;
    assert!(newest[0].message.starts_with("record 99 "));
    let oldest = logs.query("order=oldest&limit=1").await.records;
    assert!(
        !oldest[0].message.starts_with("record 0 "),
        "the oldest records are gone"
    );
}

/// The path of the newest segment file of a stopped log service.
fn newest_segment(logs: &TestLogs) -> std::path::PathBuf {
    std::fs::read_dir(logs.data_dir.path().join("logs"))
        .expect("segments")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .max()
        .expect("a segment")
}
