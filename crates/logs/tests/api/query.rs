//! Query filters and paging.

use rollcall_wire::ErrorBody;
use serde_json::json;

use crate::{TestLogs, record};

async fn seeded() -> TestLogs {
    let logs = TestLogs::spawn().await;
    // 250 records over three services and three levels, in five batches (five blocks).
    for batch in 0..5 {
        let records: Vec<_> = (0..50)
            .map(|i| {
                let n = batch * 50 + i;
                let service = ["Grades", "Portal", "Logs"][n % 3];
                let level = ["info", "warn", "error"][n % 5 % 3];
                record(service, level, &format!("record {n}"))
            })
            .collect();
        assert_eq!(logs.post_records(&json!(records)).await.status(), 200);
    }
    logs
}

#[tokio::test]
async fn newest_first_in_pages_of_100_by_default_with_a_cursor() {
    let logs = seeded().await;
    let mut seen = Vec::new();
    let mut query = String::new();
    loop {
        let page = logs.query(&query).await;
        assert!(page.records.len() <= 100);
        seen.extend(page.records.iter().map(|r| r.message.clone()));
        match page.next_cursor {
            Some(cursor) => query = format!("cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..250).rev().map(|n| format!("record {n}")).collect();
    assert_eq!(seen, expected);
    let oldest = logs.messages("order=oldest&limit=3").await;
    assert_eq!(oldest, ["record 0", "record 1", "record 2"]);
}

#[tokio::test]
async fn filters_by_service_level_time_and_substring_combine() {
    let logs = seeded().await;
    let portal_errors = logs.query("service=Portal&level=error&limit=1000").await.records;
    assert!(!portal_errors.is_empty());
    assert!(
        portal_errors
            .iter()
            .all(|r| r.service == "Portal" && r.level == rollcall_wire::Level::Error)
    );
    let expected = (0..250).filter(|n| n % 3 == 1 && n % 5 % 3 == 2).count();
    assert_eq!(portal_errors.len(), expected);

    assert_eq!(logs.messages("contains=record%2012").await.len(), 11, "12 and 120-129");
    assert_eq!(
        logs.messages("contains=record%20249&service=Grades,Logs").await,
        ["record 249"]
    );
    assert!(
        logs.messages("since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(
        logs.messages("since=1h&limit=1000").await.len(),
        250,
        "a duration means that long ago"
    );
}

#[tokio::test]
async fn bad_parameters_are_explained() {
    let logs = TestLogs::spawn().await;
    for (query, code) in [
        ("level=loud", "invalid_level"),
        ("since=yesterday", "invalid_time"),
        ("cursor=abc", "invalid_cursor"),
        ("limit=100000", "invalid_limit"),
        ("order=sideways", "invalid_order"),
        ("limit=-1", "invalid_query"),
    ] {
        let response = logs
            .http
            .get(format!("{}/v1/records?{query}", logs.url))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 400, "{query}");
        let error: ErrorBody = response.json().await.expect("a JSON error");
        assert_eq!(error.error, code, "{query}");
    }
}

#[tokio::test]
async fn a_store_that_cannot_be_read_answers_a_generic_500_without_its_cause() {
    let logs = TestLogs::spawn().await;
    let response = logs
        .post_records(&json!([record("A", "info", "soon unreadable")]))
        .await;
    assert_eq!(response.status(), 200);
    // Cut the segment under the running service: reading the block now hits the end of the file.
    let segment = std::fs::read_dir(logs.data_dir.path().join("logs"))
        .expect("data dir")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|file| file.set_len(0))
        .expect("cut the segment");

    let response = logs
        .http
        .get(format!("{}/v1/records", logs.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 500);
    let error: ErrorBody = response.json().await.expect("a JSON error");
    assert_eq!(error.error, "read_failed");
    assert_eq!(
        error.message,
        "the log store could not be read; the cause is in the log service's log"
    );
}
