//! `/v1/config`: publishing documents as releases, compare-and-set, history, diff, rollback,
//! blocking reads, and what survives a restart.

use std::time::Duration;

use axum::http::StatusCode;
use rollcall_testkit::{DEADLINE, TestRegistry, eventually, http_client};
use rollcall_wire::{ErrorBody, ReleaseView};

const LIMITS: &str = "/v1/config/prod/GradingService/limits";

/// `PUT path` with `body` as `content_type`, and `headers`.
async fn put(
    registry: &TestRegistry,
    path: &str,
    content_type: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http_client()
        .put(format!("{}{path}", registry.url))
        .header("content-type", content_type)
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("PUT")
}

async fn publish_json(registry: &TestRegistry, body: &str, headers: &[(&str, &str)]) -> ReleaseView {
    let response = put(registry, LIMITS, "application/json", body, headers).await;
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("a release")
}

async fn error_of(response: reqwest::Response) -> (StatusCode, ErrorBody) {
    let status = response.status();
    (status, response.json().await.expect("a JSON error"))
}

#[tokio::test]
async fn a_published_document_is_served_with_its_revision_and_publishes_compare_and_set() {
    let registry = TestRegistry::spawn().await;
    let first = put(
        &registry,
        LIMITS,
        "application/json",
        r#"{"maxScore": 100}"#,
        &[("x-rollcall-message", "first")],
    )
    .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.headers()["etag"], "\"1\"");
    let first: ReleaseView = first.json().await.expect("release");
    assert_eq!(
        (first.revision, first.author.as_str(), first.message.as_str()),
        (1, "anonymous", "first")
    );

    let read = registry.get(LIMITS).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.headers()["content-type"], "application/json");
    assert_eq!(read.headers()["x-rollcall-revision"], "1");
    assert_eq!(
        read.headers()["x-rollcall-sha256"].to_str().ok(),
        Some(first.sha256.as_str())
    );
    assert_eq!(read.text().await.expect("body"), r#"{"maxScore": 100}"#);

    let second = publish_json(&registry, r#"{"maxScore": 90}"#, &[("if-match", "\"1\"")]).await;
    assert_eq!(second.revision, 2);
    let (status, stale) = error_of(put(&registry, LIMITS, "application/json", "{}", &[("if-match", "1")]).await).await;
    assert_eq!(
        (status, stale.error.as_str()),
        (StatusCode::CONFLICT, "revision_conflict")
    );
    assert!(stale.message.contains("revision 2"), "{}", stale.message);
    let (status, exists) =
        error_of(put(&registry, LIMITS, "application/json", "{}", &[("if-none-match", "*")]).await).await;
    assert_eq!(
        (status, exists.error.as_str()),
        (StatusCode::CONFLICT, "revision_conflict")
    );

    // The cheap revision check: unchanged is a 304 without the document.
    let unchanged = http_client()
        .get(format!("{}{LIMITS}", registry.url))
        .header("if-none-match", "\"2\"")
        .send()
        .await
        .expect("GET");
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn bad_documents_and_paths_are_refused_with_what_is_wrong_and_nothing_is_published() {
    let registry = TestRegistry::spawn().await;
    let (status, malformed) = error_of(put(&registry, LIMITS, "application/yaml", "a: 1\nb: [1, 2\n", &[]).await).await;
    assert_eq!(
        (status, malformed.error.as_str()),
        (StatusCode::BAD_REQUEST, "malformed_document")
    );
    assert!(malformed.message.contains("line 3, column 1"), "{}", malformed.message);
    let (status, json) = error_of(put(&registry, LIMITS, "application/json", "{\"a\": }", &[]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json.message.contains("line 1, column 7"), "{}", json.message);

    let (status, unknown_type) = error_of(put(&registry, LIMITS, "application/octet-stream", "x", &[]).await).await;
    assert_eq!(
        (status, unknown_type.error.as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let big = format!("\"{}\"", "x".repeat(1024 * 1024));
    let (status, too_big) = error_of(put(&registry, LIMITS, "application/json", &big, &[]).await).await;
    assert_eq!(
        (status, too_big.error.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    let (status, bad_path) =
        error_of(put(&registry, "/v1/config/prod/Grading%20Service/x", "text/plain", "x", &[]).await).await;
    assert_eq!(
        (status, bad_path.error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_config_path")
    );

    let (status, unknown) = error_of(registry.get(LIMITS).await).await;
    assert_eq!(
        (status, unknown.error.as_str()),
        (StatusCode::NOT_FOUND, "unknown_document")
    );
    let listed: serde_json::Value = registry.get("/v1/config").await.json().await.expect("JSON");
    assert_eq!(listed["documents"], serde_json::json!([]), "nothing was published");
}

#[tokio::test]
async fn history_diff_and_rollback_keep_every_release_and_never_rewrite_one() {
    let registry = TestRegistry::spawn().await;
    for max in [100, 90, 80] {
        publish_json(&registry, &format!("{{\n  \"maxScore\": {max}\n}}\n"), &[]).await;
    }
    let diff = registry
        .get(&format!("{LIMITS}/diff"))
        .await
        .text()
        .await
        .expect("diff");
    assert!(
        diff.contains("-  \"maxScore\": 90") && diff.contains("+  \"maxScore\": 80"),
        "{diff}"
    );

    let rolled = http_client()
        .post(format!("{}{LIMITS}/rollback?to=1", registry.url))
        .header("if-match", "\"3\"")
        .send()
        .await
        .expect("POST rollback");
    assert_eq!(rolled.status(), StatusCode::OK);
    let rolled: ReleaseView = rolled.json().await.expect("release");
    assert_eq!((rolled.revision, rolled.rolled_back_from), (4, Some(1)));
    assert_eq!(rolled.message, "rollback to revision 1");
    let now = registry.get(LIMITS).await.text().await.expect("body");
    assert!(now.contains("100"), "{now}");
    let old = registry
        .get(&format!("{LIMITS}?revision=2"))
        .await
        .text()
        .await
        .expect("body");
    assert!(old.contains("90"), "{old}");

    let history: serde_json::Value = registry
        .get(&format!("{LIMITS}/history"))
        .await
        .json()
        .await
        .expect("JSON");
    let revisions: Vec<u64> = history["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .filter_map(|r| r["revision"].as_u64())
        .collect();
    assert_eq!(revisions, [4, 3, 2, 1], "newest first, nothing rewritten");
    let (status, missing) = error_of(registry.get(&format!("{LIMITS}?revision=9")).await).await;
    assert_eq!(
        (status, missing.error.as_str()),
        (StatusCode::NOT_FOUND, "unknown_revision")
    );
}

#[tokio::test]
async fn a_blocking_read_answers_as_soon_as_a_newer_revision_is_published() {
    let registry = TestRegistry::spawn().await;
    publish_json(&registry, "1", &[]).await;
    let waiting = {
        let url = format!("{}{LIMITS}?index=1&wait=10s", registry.url);
        tokio::spawn(async move { http_client().get(url).send().await.expect("GET") })
    };
    // Held (counted among the blocking queries) while nothing newer exists.
    eventually("the read to be held", DEADLINE, || async {
        (registry.metric("rollcall_blocking_queries").await >= 1.0).then_some(())
    })
    .await;
    assert!(!waiting.is_finished(), "answered before a new revision");
    publish_json(&registry, "2", &[]).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(answer.headers()["x-rollcall-revision"], "2");
}

#[tokio::test]
async fn published_releases_survive_a_restart() {
    let registry = TestRegistry::spawn().await;
    publish_json(&registry, r#"{"maxScore": 100}"#, &[]).await;
    publish_json(&registry, r#"{"maxScore": 90}"#, &[]).await;
    let registry = registry.restart().await;
    let read = registry.get(LIMITS).await;
    assert_eq!(read.headers()["x-rollcall-revision"], "2");
    assert_eq!(read.text().await.expect("body"), r#"{"maxScore": 90}"#);
    let first = registry.get(&format!("{LIMITS}?revision=1")).await;
    assert_eq!(first.text().await.expect("body"), r#"{"maxScore": 100}"#);
}

#[tokio::test]
async fn publishing_needs_a_config_scope_matching_the_document_and_reading_needs_read() {
    let registry = TestRegistry::spawn_with(|config| config.require_tokens = true).await;
    let prod = registry.token("prod-config", &["config:prod/*", "read"]).await;
    let reader = registry.token("reader", &["read"]).await;
    let put_as = |token: String, path: &'static str| {
        http_client()
            .put(format!("{}{path}", registry.url))
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body("x")
            .send()
    };
    assert_eq!(
        put_as(prod.clone(), LIMITS).await.expect("PUT").status(),
        StatusCode::CREATED
    );
    let staging = put_as(prod, "/v1/config/staging/GradingService/limits")
        .await
        .expect("PUT");
    assert_eq!(staging.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        put_as(reader.clone(), LIMITS).await.expect("PUT").status(),
        StatusCode::FORBIDDEN
    );
    let read = http_client()
        .get(format!("{}{LIMITS}", registry.url))
        .bearer_auth(reader)
        .send()
        .await
        .expect("GET");
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(
        registry.get(LIMITS).await.status(),
        StatusCode::UNAUTHORIZED,
        "no token"
    );
}

#[tokio::test]
async fn a_service_s_stream_carries_its_own_and_the_shared_documents_first_whole_then_live() {
    let registry = TestRegistry::spawn().await;
    let publish = |path: &'static str, body: &'static str| {
        let registry = &registry;
        async move {
            let response = put(registry, path, "text/plain", body, &[]).await;
            assert!(response.status().is_success(), "{}", response.status());
        }
    };
    publish("/v1/config/prod/_shared/flags", "shared-1").await;
    publish(LIMITS, "own-1").await;
    publish("/v1/config/prod/Portal/theme", "not-ours").await;
    publish("/v1/config/staging/GradingService/limits", "not-this-namespace").await;

    let mut stream =
        rollcall_testkit::SseClient::connect(&format!("{}/v1/config/prod/GradingService", registry.url), None).await;
    let mut next_release = async || {
        let message = stream.next().await.expect("an event");
        (message.event.clone(), message)
    };
    let mut first = Vec::new();
    for _ in 0..2 {
        let (event, message) = next_release().await;
        assert_eq!(event, "release");
        let release: rollcall_wire::ReleaseEvent = message.json();
        first.push(format!(
            "{}/{}@{}",
            release.release.service, release.content, release.release.revision
        ));
    }
    assert_eq!(first, ["GradingService/own-1@1", "_shared/shared-1@1"]);
    assert_eq!(next_release().await.0, "ready");

    publish("/v1/config/prod/Portal/theme", "still-not-ours").await;
    publish(LIMITS, "own-2").await;
    let (event, message) = next_release().await;
    assert_eq!(event, "release");
    let release: rollcall_wire::ReleaseEvent = message.json();
    assert_eq!((release.content.as_str(), release.release.revision), ("own-2", 2));
    assert_eq!(message.id.as_deref(), Some("prod/GradingService/limits@2"));
}

#[tokio::test]
async fn instances_report_applied_or_rejected_and_the_status_counts_them() {
    let registry = TestRegistry::spawn().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let grades = rollcall_testkit::FakeService::spawn("GradingService", &[]).await;
        let view: rollcall_wire::InstanceView = registry.register_v1(&grades.registration()).await;
        ids.push((view.id, grades));
    }
    let portal = rollcall_testkit::FakeService::spawn("Portal", &[]).await;
    let portal_id = registry.register_v1(&portal.registration()).await.id;
    publish_json(&registry, r#"{"maxScore": 100}"#, &[]).await;
    let ack = |body: serde_json::Value| {
        http_client()
            .post(format!("{}{LIMITS}/acks", registry.url))
            .json(&body)
            .send()
    };
    let applied = ack(serde_json::json!({"instance": ids[0].0, "revision": 1, "status": "applied"}))
        .await
        .expect("POST");
    assert_eq!(applied.status(), StatusCode::NO_CONTENT);
    let rejected = serde_json::json!({"instance": ids[1].0, "revision": 1, "status": "rejected", "reason": "maxScore must be at most 100", "missed_push": true});
    assert_eq!(ack(rejected).await.expect("POST").status(), StatusCode::NO_CONTENT);

    let status: rollcall_wire::RolloutStatus = registry
        .get(&format!("{LIMITS}/status"))
        .await
        .json()
        .await
        .expect("status");
    assert_eq!(
        (
            status.revision,
            status.total,
            status.applied,
            status.rejected,
            status.waiting
        ),
        (1, 3, 1, 1, 1)
    );
    let reasons: Vec<&str> = status
        .instances
        .iter()
        .map(|i| i.reason.as_str())
        .filter(|r| !r.is_empty())
        .collect();
    assert_eq!(reasons, ["maxScore must be at most 100"]);
    let counted = (
        registry.metric("rollcall_config_push_missed_total").await,
        registry.metric("rollcall_config_acks_total{status=\"rejected\"}").await,
    );
    #[allow(clippy::float_cmp, reason = "counters are whole numbers")]
    let one_each = counted == (1.0, 1.0);
    assert!(one_each, "{counted:?}");

    let (status, unknown) = error_of(
        ack(serde_json::json!({"instance": "nobody", "revision": 1, "status": "applied"}))
            .await
            .expect("POST"),
    )
    .await;
    assert_eq!(
        (status, unknown.error.as_str()),
        (StatusCode::NOT_FOUND, "unknown_instance")
    );
    let (status, other) = error_of(
        ack(serde_json::json!({"instance": portal_id, "revision": 1, "status": "applied"}))
            .await
            .expect("POST"),
    )
    .await;
    assert_eq!((status, other.error.as_str()), (StatusCode::BAD_REQUEST, "invalid_ack"));
    let (status, future) = error_of(
        ack(serde_json::json!({"instance": ids[2].0, "revision": 9, "status": "applied"}))
            .await
            .expect("POST"),
    )
    .await;
    assert_eq!(
        (status, future.error.as_str()),
        (StatusCode::NOT_FOUND, "unknown_revision")
    );
}

#[tokio::test]
async fn a_reader_resuming_from_a_purged_revision_gets_the_whole_document_not_an_error() {
    let registry = TestRegistry::spawn().await;
    for n in 1..=101 {
        publish_json(&registry, &n.to_string(), &[]).await;
    }
    let (status, purged) = error_of(registry.get(&format!("{LIMITS}?revision=1")).await).await;
    assert_eq!(
        (status, purged.error.as_str()),
        (StatusCode::NOT_FOUND, "unknown_revision")
    );
    assert!(
        purged.message.contains("revisions 2 to 101 are kept"),
        "{}",
        purged.message
    );
    // A blocking read from revision 1, long purged: answered at once, with the latest.
    let started = std::time::Instant::now();
    let resumed = registry.get(&format!("{LIMITS}?index=1&wait=30s")).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(resumed.headers()["x-rollcall-revision"], "101");
    assert_eq!(resumed.text().await.expect("body"), "101");
}

#[tokio::test]
async fn a_document_with_a_schema_beside_it_must_meet_it() {
    let registry = TestRegistry::spawn().await;
    let schema = r#"{"type": "object", "required": ["maxScore"], "properties": {"maxScore": {"type": "integer", "maximum": 100}}}"#;
    let (status, not_schema) = error_of(
        put(
            &registry,
            &format!("{LIMITS}.schema"),
            "application/json",
            r#"{"type": 5}"#,
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, not_schema.error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_schema")
    );
    let remote = r#"{"$ref": "http://127.0.0.1:9/elsewhere.json"}"#;
    let (_, fetches) =
        error_of(put(&registry, &format!("{LIMITS}.schema"), "application/json", remote, &[]).await).await;
    assert_eq!(fetches.error, "invalid_schema", "a remote $ref is refused, not fetched");
    let published = put(&registry, &format!("{LIMITS}.schema"), "application/json", schema, &[]).await;
    assert_eq!(published.status(), StatusCode::CREATED);

    let (status, over) = error_of(put(&registry, LIMITS, "application/yaml", "maxScore: 120\n", &[]).await).await;
    assert_eq!(
        (status, over.error.as_str()),
        (StatusCode::BAD_REQUEST, "schema_violation")
    );
    assert!(over.message.contains("at /maxScore"), "{}", over.message);
    let fits = put(&registry, LIMITS, "application/yaml", "maxScore: 90\n", &[]).await;
    assert_eq!(fits.status(), StatusCode::CREATED);
}
