//! Tails: the last N matches, live records, resume, and `dropped` for a slow client.

use rollcall_testkit::SseClient;
use rollcall_wire::LogRecord;
use serde_json::json;

use crate::{TestLogs, record};

#[tokio::test]
async fn a_tail_starts_with_the_last_matches_then_follows_and_resumes() {
    let logs = TestLogs::spawn().await;
    let past: Vec<_> = (0..5).map(|n| record("Grades", "info", &format!("past {n}"))).collect();
    logs.post_records(&json!(past)).await;
    logs.post_records(&json!([record("Portal", "info", "other service")]))
        .await;

    let url = format!("{}/v1/records/tail?service=Grades&last=2", logs.url);
    let mut tail = SseClient::connect(&url, None).await;
    let mut next = async || tail.next().await.expect("an event");
    let first = next().await;
    assert_eq!(first.event, "record");
    assert_eq!(first.json::<LogRecord>().message, "past 3");
    assert_eq!(next().await.json::<LogRecord>().message, "past 4");

    logs.post_records(&json!([
        record("Portal", "info", "skip me"),
        record("Grades", "warn", "live")
    ]))
    .await;
    let live = next().await;
    assert_eq!(live.json::<LogRecord>().message, "live");
    let live_id = live.id.expect("an id");

    logs.post_records(&json!([record("Grades", "info", "while away")]))
        .await;
    let mut resumed = SseClient::connect(&url, Some(&live_id)).await;
    let message = resumed.next().await.expect("an event");
    assert_eq!(
        message.json::<LogRecord>().message,
        "while away",
        "resumes right after the last id"
    );
}

#[tokio::test]
async fn a_client_too_slow_to_keep_up_gets_a_dropped_event_and_ingest_does_not_wait() {
    let logs = TestLogs::spawn_with(|c| c.commit_window = std::time::Duration::ZERO).await;
    let mut tail = SseClient::connect(&format!("{}/v1/records/tail?last=0", logs.url), None).await;
    // Far more than the socket buffers and the 1,024 blocks a tail may fall behind: the tail is
    // not read meanwhile, and every batch is still acknowledged.
    let big = "x".repeat(20 * 1024);
    for n in 0..1500 {
        let response = logs
            .post_records(&json!([record("Grades", "info", &format!("{n} {big}"))]))
            .await;
        assert_eq!(response.status(), 200);
    }
    let mut dropped = None;
    while dropped.is_none() {
        let event = tail.next().await.expect("an event");
        if event.event == "dropped" {
            dropped = Some(event.json::<serde_json::Value>()["count"].as_u64().expect("a count"));
        }
    }
    assert!(dropped.expect("dropped") > 0);
    assert!(logs.metric("rollcall_logs_tail_dropped_records_total").await > 0.0);
}

#[tokio::test]
async fn the_number_of_tails_is_bounded() {
    let logs = TestLogs::spawn_with(|c| c.max_tails = 1).await;
    let _first = SseClient::connect(&format!("{}/v1/records/tail", logs.url), None).await;
    let second = logs
        .http
        .get(format!("{}/v1/records/tail", logs.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(second.status(), 429);
}
