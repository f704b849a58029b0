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

/// Posts `batches` batches of 100 records (one block each), `n` numbered from 0.
async fn post_numbered_batches(logs: &TestLogs, batches: usize) {
    for batch in 0..batches {
        let records: Vec<_> = (0..100)
            .map(|i| record("A", "info", &format!("record {}", batch * 100 + i)))
            .collect();
        let response = logs.post_records(&json!(records)).await;
        assert_eq!(response.status(), 200);
    }
}

/// Flips one bit of the segment at `path`, at the first occurrence of `needle` (inside a
/// record's stored line, so inside a block's payload).
fn flip_a_bit_in(path: &std::path::Path, needle: &str) {
    let mut bytes = std::fs::read(path).expect("read the segment");
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("the needle is in the segment");
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("write the segment back");
}

fn numbered(messages: &[String]) -> Vec<usize> {
    messages
        .iter()
        .map(|m| m.trim_start_matches("record ").parse().expect("a numbered record"))
        .collect()
}

#[tokio::test]
async fn a_bit_flipped_in_the_middle_of_a_segment_loses_only_the_damaged_block() {
    let mut logs = TestLogs::spawn().await;
    post_numbered_batches(&logs, 30).await;
    logs.stop().await;
    flip_a_bit_in(&newest_segment(&logs), "record 1500\"");
    let logs = logs.restart(|_| {}).await;

    let kept = numbered(&logs.messages("order=oldest&limit=10000").await);
    let expected: Vec<usize> = (0..3000).filter(|n| !(1500..1600).contains(n)).collect();
    assert_eq!(kept, expected, "every block but the damaged one is kept");
    assert!((logs.metric("rollcall_logs_damaged_blocks_total").await - 1.0).abs() < f64::EPSILON);
    assert!(
        logs.metric("rollcall_logs_torn_blocks_total").await.abs() < f64::EPSILON,
        "damage is not a torn tail"
    );
    logs.post_records(&json!([record("A", "info", "record 3000")])).await;
    assert_eq!(
        logs.messages("limit=1").await,
        ["record 3000"],
        "writing goes on after the kept blocks"
    );
}

#[tokio::test]
async fn a_block_damaged_under_a_running_service_is_never_served() {
    let logs = TestLogs::spawn().await;
    post_numbered_batches(&logs, 3).await;
    flip_a_bit_in(&newest_segment(&logs), "record 150\"");
    for _ in 0..2 {
        let kept = numbered(&logs.messages("order=oldest&limit=10000").await);
        let expected: Vec<usize> = (0..100).chain(200..300).collect();
        assert_eq!(kept, expected);
    }
    let damaged = logs.metric("rollcall_logs_damaged_blocks_total").await;
    assert!(
        (damaged - 1.0).abs() < f64::EPSILON,
        "counted once, not per read: {damaged}"
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
