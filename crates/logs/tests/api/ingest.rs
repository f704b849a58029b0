//! Each ingest format with real-world shapes, and bad input.

use std::io::Write;

use rollcall_testkit::{DEADLINE, RawResponse, eventually, fixture, replace_body, send_raw};
use rollcall_wire::{BatchResult, ErrorBody, Level};
use serde_json::json;

use crate::{TestLogs, record};

#[tokio::test]
async fn the_go_log_clients_seed_line_is_answered_as_the_go_service_does() {
    let logs = TestLogs::spawn().await;
    let line = send_raw(&logs.address, &fixture("go-wire/log-line-request.http")).await;
    let expected = RawResponse::parse(&fixture("go-wire/log-line-response.http")).expect("fixture");
    assert_eq!(line.status, expected.status);
    assert!(line.body.is_empty());
    let empty = send_raw(
        &logs.address,
        &replace_body(&fixture("go-wire/log-line-request.http"), b""),
    )
    .await;
    assert_eq!(empty.status, 400);
    let get = logs
        .http
        .get(format!("{}/log", logs.url))
        .send()
        .await
        .expect("GET /log");
    assert_eq!(get.status(), 405);

    let page = logs.query("service=GradingService").await;
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].message, "Student with ID 99 not found");
    assert_eq!(page.records[0].level, Level::Info);
}

#[tokio::test]
async fn a_native_batch_answers_per_record_and_takes_ndjson_and_gzip() {
    let logs = TestLogs::spawn().await;
    let response = logs
        .post_records(&json!([record("A", "info", "one"), {"service": "A", "message": "two", "time": "not a time"}]))
        .await;
    assert_eq!(response.status(), 200);
    let result: BatchResult = response.json().await.expect("a result");
    assert_eq!(result.accepted, 1);
    assert_eq!(result.rejected[0].index, 1);
    assert!(
        result.rejected[0].reason.contains("RFC 3339"),
        "{}",
        result.rejected[0].reason
    );

    let ndjson = "{\"service\":\"A\",\"message\":\"three\"}\n{\"service\":\"A\",\"message\":\"four\"}\n";
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(ndjson.as_bytes()).expect("compress");
    let response = logs
        .http
        .post(format!("{}/v1/records", logs.url))
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(gzip.finish().expect("compress"))
        .send()
        .await
        .expect("POST");
    let result: BatchResult = response.json().await.expect("a result");
    assert_eq!((result.accepted, result.rejected.len()), (2, 0));
    assert_eq!(logs.messages("service=A&order=oldest").await, ["one", "three", "four"]);
    // Counted by format, every format's series there from the start.
    let counted = [
        logs.metric("rollcall_logs_records_accepted_total{format=\"native\"}")
            .await,
        logs.metric("rollcall_logs_records_rejected_total{format=\"native\"}")
            .await,
        logs.metric("rollcall_logs_records_accepted_total{format=\"loki\"}")
            .await,
    ];
    #[allow(clippy::float_cmp)] // small counts are exact in an f64
    let as_expected = counted == [3.0, 1.0, 0.0];
    assert!(as_expected, "accepted, rejected, loki: {counted:?}");
}

#[tokio::test]
async fn the_opentelemetry_sdks_chunked_request_is_stored_with_its_attributes() {
    let logs = TestLogs::spawn().await;
    let response = send_raw(&logs.address, &fixture("log-shippers/otel-js-sdk-logs-request.http")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"{}");
    let page = logs.query("service=grading&order=oldest").await;
    assert_eq!(page.records.len(), 2);
    let (info, error) = (&page.records[0], &page.records[1]);
    assert_eq!((info.level, error.level), (Level::Info, Level::Error));
    assert_eq!(info.fields["student.id"], json!(7), "an intValue written as a number");
    assert_eq!(error.fields["score"], json!(120.5));
    assert_eq!(error.fields["otel.scope"], json!("grades"));
}

#[tokio::test]
async fn loki_pushes_from_python_logging_loki_get_204_and_keep_their_labels() {
    let logs = TestLogs::spawn().await;
    for name in [
        "python-logging-loki-push-warning-request.http",
        "python-logging-loki-push-error-request.http",
    ] {
        let response = send_raw(&logs.address, &fixture(&format!("log-shippers/{name}"))).await;
        assert_eq!(response.status, 204, "{name}");
    }
    let page = logs.query("service=grading&level=error").await;
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].message, "grade store failed: disk full");
    assert_eq!(page.records[0].fields["student_id"], json!("7"));
    assert_eq!(logs.query("service=grading").await.records.len(), 2);
}

#[tokio::test]
async fn the_python_opentelemetry_sdks_protobuf_plain_or_gzip_is_stored_with_its_attributes() {
    let logs = TestLogs::spawn().await;
    for name in [
        "otel-python-proto-logs-request.http",
        "otel-python-proto-gzip-logs-request.http",
    ] {
        let response = send_raw(&logs.address, &fixture(&format!("log-shippers/{name}"))).await;
        assert_eq!(response.status, 200, "{name}");
        assert_eq!(
            response.header("content-type"),
            Some("application/x-protobuf"),
            "answered in protobuf: {name}"
        );
        assert!(
            response.body.is_empty(),
            "an empty ExportLogsServiceResponse: every record stored"
        );
    }
    let page = logs.query("service=GradingService").await;
    assert_eq!(page.records.len(), 2);
    let record = &page.records[0];
    assert_eq!(record.level, Level::Warn);
    assert_eq!(record.message, "grade store slow: 250 ms");
    assert_eq!(record.fields["student_id"], json!(7));
    assert_eq!(record.fields["retry"], json!(true));
    assert_eq!(record.fields["otel.scope"], json!("grading"));
}

#[tokio::test]
async fn winston_lokis_snappy_protobuf_push_gets_204_and_keeps_its_labels() {
    let logs = TestLogs::spawn().await;
    let fixture = fixture("log-shippers/winston-loki-protobuf-push-request.http");
    let response = send_raw(&logs.address, &fixture).await;
    assert_eq!(response.status, 204);
    let page = logs.query("service=Portal&level=error").await;
    assert_eq!(page.records.len(), 1, "service from app, level from the level label");
    let record = &page.records[0];
    assert!(record.message.starts_with("grading answered 503"), "{}", record.message);
    assert_eq!(record.fields["route"], json!("/grades"));
    assert_eq!(record.fields["env"], json!("dev"));
}

/// Sends `body` to `path` as `content_type`; the status and the JSON error's code.
async fn refused(logs: &TestLogs, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let response = logs
        .http
        .post(format!("{}{path}", logs.url))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let error: ErrorBody = response.json().await.expect("a JSON error");
    (status, error.error)
}

#[tokio::test]
async fn protobuf_that_does_not_decode_or_inflate_is_refused_and_a_snappy_bomb_before_it_inflates() {
    let logs = TestLogs::spawn_with(|c| c.max_body = bytesize::ByteSize::kib(64)).await;
    let protobuf = "application/x-protobuf";
    let garbage = vec![0xff; 32];
    assert_eq!(
        refused(&logs, "/v1/logs", protobuf, garbage.clone()).await,
        (400, "invalid_protobuf".to_owned())
    );
    assert_eq!(
        refused(&logs, "/loki/api/v1/push", protobuf, garbage).await,
        (400, "invalid_snappy".to_owned())
    );
    let not_loki = snap::raw::Encoder::new().compress_vec(&[0xff; 32]).expect("compress");
    assert_eq!(
        refused(&logs, "/loki/api/v1/push", protobuf, not_loki).await,
        (400, "invalid_protobuf".to_owned())
    );
    // 1 MiB of one byte compresses to about 48 KiB of snappy, under the limit: refused 413 from
    // the size it declares, before it inflates; a snappy header that claims 4 GiB the same.
    let bomb = snap::raw::Encoder::new()
        .compress_vec(&vec![b'a'; 1 << 20])
        .expect("compress");
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    assert_eq!(
        refused(&logs, "/loki/api/v1/push", protobuf, bomb).await,
        (413, "too_large".to_owned())
    );
    let liar = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    assert_eq!(
        refused(&logs, "/loki/api/v1/push", protobuf, liar).await,
        (413, "too_large".to_owned())
    );
    assert!(logs.query("").await.records.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn times_with_an_offset_or_in_any_epoch_unit_land_at_the_same_instant() {
    let logs = TestLogs::spawn().await;
    let forms = [
        json!("2026-12-03T20:00:00Z"),
        json!("2026-12-03T21:00:00+01:00"),
        json!(1_796_328_000_i64),
        json!(1_796_328_000_000_i64),
        json!(1_796_328_000_000_000_i64),
        json!(1_796_328_000_000_000_000_i64),
        json!(1_796_328_000.0),
    ];
    let batch: Vec<_> = forms
        .iter()
        .map(|time| json!({"service": "Clock", "message": time.to_string(), "time": time}))
        .collect();
    let result: BatchResult = logs.post_records(&json!(batch)).await.json().await.expect("a result");
    assert_eq!(
        (result.accepted, result.rejected.len()),
        (forms.len(), 0),
        "{:?}",
        result.rejected
    );
    // Every form names the same instant: a window of one second around it holds them all.
    let window = "service=Clock&since=2026-12-03T20:59:59.5%2B01:00&until=2026-12-03T20:00:00.5Z";
    assert_eq!(logs.query(window).await.records.len(), forms.len());

    let result: BatchResult = logs
        .post_records(&json!([{"service": "Clock", "message": "m", "time": "3 Dec 2026"}]))
        .await
        .json()
        .await
        .expect("a result");
    let reason = &result.rejected[0].reason;
    assert!(
        reason.contains("RFC 3339") && reason.contains("milliseconds"),
        "names the forms: {reason}"
    );
}

#[tokio::test]
async fn bad_input_gets_a_json_error_that_says_what_is_wrong() {
    let logs = TestLogs::spawn_with(|c| c.max_body = bytesize::ByteSize::kib(4)).await;
    let cases: [(&str, Vec<u8>, u16, &str); 4] = [
        ("/v1/records", b"{not json".to_vec(), 400, "invalid_json"),
        ("/v1/logs", b"[1,2]".to_vec(), 400, "invalid_json"),
        ("/loki/api/v1/push", b"{}".to_vec(), 400, "invalid_json"),
        ("/v1/records", vec![b' '; 8 * 1024], 413, "too_large"),
    ];
    for (path, body, status, code) in cases {
        let response = logs
            .http
            .post(format!("{}{path}", logs.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), status, "{path}");
        let error: ErrorBody = response.json().await.expect("a JSON error");
        assert_eq!(error.error, code, "{path}: {}", error.message);
    }

    // A small gzip body that inflates past the limit is refused too.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b'['; 1 << 20]).expect("compress");
    let response = logs
        .http
        .post(format!("{}/v1/records", logs.url))
        .header("content-encoding", "gzip")
        .body(bomb.finish().expect("compress"))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 413);
    let nothing = logs.query("").await;
    assert!(nothing.records.is_empty(), "nothing was stored: {:?}", nothing.records);
}

#[tokio::test]
async fn ingest_answers_429_with_retry_after_when_the_store_is_behind() {
    // A commit that waits for two requests within a long window holds the first batch in the
    // queue; a second batch finds it full.
    let logs = TestLogs::spawn_with(|c| {
        c.commit_window = std::time::Duration::from_millis(1500);
        c.commit_batch = 2;
        c.max_queued = bytesize::ByteSize::b(400);
    })
    .await;
    let first = {
        let request =
            logs.http
                .post(format!("{}/v1/records", logs.url))
                .json(&json!([record("A", "info", &"x".repeat(300))]));
        tokio::spawn(request.send())
    };
    eventually("the first batch to wait in the queue", DEADLINE, || async {
        (logs.metric("rollcall_logs_queued_bytes").await > 0.0).then_some(())
    })
    .await;
    let second = logs.post_records(&json!([record("A", "info", &"y".repeat(300))])).await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");
    let error: ErrorBody = second.json().await.expect("a JSON error");
    assert_eq!(error.error, "busy");
    assert_eq!(
        first.await.expect("task").expect("POST").status(),
        200,
        "the first batch is stored"
    );
}

#[tokio::test]
async fn an_error_record_is_committed_at_once_and_takes_waiting_records_with_it() {
    // Commits wait for three requests within a window far longer than the test may take: the
    // second request, an error record, must end the wait early.
    let window = std::time::Duration::from_secs(60);
    let logs = TestLogs::spawn_with(|c| {
        c.commit_window = window;
        c.commit_batch = 3;
    })
    .await;
    let started = std::time::Instant::now();
    let waiting = {
        let request = logs.http.post(format!("{}/v1/records", logs.url)).json(&json!([record(
            "A",
            "info",
            "waits for the window"
        )]));
        tokio::spawn(request.send())
    };
    eventually("the info record to wait in the queue", DEADLINE, || async {
        (logs.metric("rollcall_logs_queued_bytes").await > 0.0).then_some(())
    })
    .await;
    let urgent = logs.post_records(&json!([record("A", "error", "cannot wait")])).await;
    assert_eq!(urgent.status(), 200);
    let waited = waiting.await.expect("task").expect("POST");
    assert_eq!(waited.status(), 200);
    assert!(
        started.elapsed() < window / 2,
        "both answered in {:?}, not at the end of the window",
        started.elapsed()
    );
    assert_eq!(logs.query("service=A").await.records.len(), 2);
}

#[tokio::test]
async fn a_client_alone_is_not_held_for_the_commit_window() {
    // Each commit waits for as many requests as the previous one held: one client sending one
    // request at a time is answered as soon as its record is on disk, window or not.
    let window = std::time::Duration::from_secs(60);
    let logs = TestLogs::spawn_with(|c| c.commit_window = window).await;
    let started = std::time::Instant::now();
    for n in 0..3 {
        let response = logs
            .post_records(&json!([record("A", "info", &format!("alone {n}"))]))
            .await;
        assert_eq!(response.status(), 200);
    }
    assert!(
        started.elapsed() < window / 2,
        "three requests took {:?}: a commit waited for the window",
        started.elapsed()
    );
    assert_eq!(logs.query("service=A").await.records.len(), 3);
}
