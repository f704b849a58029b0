//! Tokens at the log service: writing needs `logs:write`, reading `logs:read`, each record is
//! stamped with the name of the token that sent it, and tokens are verified by the registry.

use rollcall_logs::LogsConfig;
use rollcall_testkit::{TestRegistry, http_client};
use rollcall_wire::{ErrorBody, LogRecord, RecordPage};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::record;

/// A registry and a log service that both serve nobody without a token, the log service
/// registered with its own token; the registry ships its audit trail when `audit`.
async fn locked(audit: bool) -> (TestRegistry, rollcall_logs::LogService, tempfile::TempDir) {
    let registry = TestRegistry::spawn_with(|config| {
        config.require_tokens = true;
        config.audit_shipping = audit;
    })
    .await;
    let own = registry.token("logs", &["register:LogService"]).await;
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut config = LogsConfig::new("127.0.0.1:0".parse().expect("address"), data_dir.path().join("logs"));
    config.service.registry.clone_from(&registry.url);
    config.service.client.token = Some(own);
    config.require_tokens = true;
    let logs = rollcall_logs::start(config, CancellationToken::new(), None)
        .await
        .expect("starts with its token");
    (registry, logs, data_dir)
}

async fn post(url: &str, token: Option<&str>, records: &serde_json::Value) -> reqwest::Response {
    let request = http_client().post(format!("{url}/v1/records")).json(records);
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.expect("POST /v1/records")
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let request = http_client().get(format!("{url}/v1/records?order=oldest"));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.expect("GET /v1/records")
}

async fn code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body = response.text().await.expect("body");
    let error: ErrorBody = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status} {body:?}: {e}"));
    (status, error.error)
}

#[tokio::test]
async fn writing_and_reading_need_their_scopes_and_records_carry_their_sender() {
    let (registry, logs, _data) = locked(false).await;
    let writer = registry.token("grades", &["logs:write"]).await;
    let reader = registry.token("oncall", &["logs:read"]).await;
    let registry_reader = registry.token("dashboard", &["read"]).await;
    let batch = json!([record("GradingService", "info", "graded"), {
        "service": "GradingService", "message": "claims a sender", "sender": "admin"
    }]);

    assert_eq!(
        code(post(logs.url(), None, &batch).await).await,
        (401, "token_required".to_owned())
    );
    assert_eq!(
        code(post(logs.url(), Some(&reader), &batch).await).await,
        (403, "forbidden".to_owned())
    );
    assert_eq!(
        code(post(logs.url(), Some(&registry_reader), &batch).await).await,
        (403, "forbidden".to_owned())
    );
    let forged = rollcall_testkit::forged_token(&writer);
    assert_eq!(
        code(post(logs.url(), Some(&forged), &batch).await).await,
        (401, "invalid_token".to_owned())
    );
    assert_eq!(post(logs.url(), Some(&writer), &batch).await.status(), 200);

    assert_eq!(
        code(get(logs.url(), None).await).await,
        (401, "token_required".to_owned())
    );
    assert_eq!(
        code(get(logs.url(), Some(&writer)).await).await,
        (403, "forbidden".to_owned())
    );
    let page: RecordPage = get(logs.url(), Some(&reader)).await.json().await.expect("page");
    let senders: Vec<(&str, Option<&str>)> = page
        .records
        .iter()
        .map(|r: &LogRecord| (r.message.as_str(), r.sender.as_deref()))
        .collect();
    assert_eq!(
        senders,
        [("graded", Some("grades")), ("claims a sender", Some("grades"))],
        "the server says who sent each record; a client cannot"
    );
    let seed = http_client()
        .post(format!("{}/log", logs.url()))
        .body("[GradingService] - a seed line")
        .send()
        .await
        .expect("POST /log");
    assert_eq!(seed.status(), 401, "the seed endpoint too");
}

#[tokio::test]
async fn a_token_cannot_be_verified_while_the_registry_is_away() {
    let (registry, logs, _data) = locked(false).await;
    let writer = registry.token("grades", &["logs:write"]).await;
    registry.stop().await;
    let refused = post(logs.url(), Some(&writer), &json!([record("A", "info", "m")])).await;
    assert_eq!(code(refused).await, (503, "auth_unavailable".to_owned()));
}

#[tokio::test]
async fn on_loopback_the_log_service_serves_anonymous_clients_as_before() {
    let logs = crate::TestLogs::spawn().await;
    assert_eq!(
        logs.post_records(&json!([record("A", "info", "m")])).await.status(),
        200
    );
    let page = logs.query("order=oldest").await;
    assert_eq!(page.records[0].sender, None, "sent without a token");
}

#[tokio::test]
async fn every_write_to_the_registry_reaches_the_log_store_as_an_audit_record() {
    let (registry, logs, _data) = locked(true).await;
    let reader = registry.token("oncall", &["logs:read"]).await;
    let dashboard = registry.token("dashboard", &["read"]).await;
    let refused = http_client()
        .post(format!("{}/v1/instances", registry.url))
        .bearer_auth(&dashboard)
        .json(&json!({"ServiceName": "Intruder", "ServiceURL": "http://127.0.0.1:9/x",
            "ServiceUpdateURL": "http://127.0.0.1:9/x/services", "HeartbeatURL": "http://127.0.0.1:9/x/heartbeat"}))
        .send()
        .await
        .expect("POST /v1/instances");
    assert_eq!(refused.status(), 403);

    let audit = rollcall_testkit::eventually(
        "the audit records in the log store",
        rollcall_testkit::DEADLINE,
        || async {
            let text = http_client()
                .get(format!("{}/v1/records?service=registry&order=oldest", logs.url()))
                .bearer_auth(&reader)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let page: RecordPage = serde_json::from_str(&text).ok()?;
            (page.records.len() >= 5).then_some((page, text))
        },
    )
    .await;
    let (page, text) = audit;
    let seen: Vec<(String, String, String, u64)> = page
        .records
        .iter()
        .map(|r| {
            let field = |name: &str| r.fields[name].as_str().unwrap_or_default().to_owned();
            (
                field("action"),
                field("by"),
                field("subject"),
                r.fields["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        seen.contains(&("register".to_owned(), "logs".to_owned(), logs.url().to_owned(), 200)),
        "the log service's own registration: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(action, by, subject, status)| (action.as_str(), by.as_str(), *status)
                == ("token.create", "admin", 201)
                && subject.ends_with("(oncall: logs:read)")),
        "a token's creation, by id, name and scopes: {seen:?}"
    );
    assert!(
        seen.contains(&(
            "register".to_owned(),
            "dashboard".to_owned(),
            "http://127.0.0.1:9/x".to_owned(),
            403
        )),
        "a refused write too: {seen:?}"
    );
    assert!(page.records.iter().all(|r| r.sender.as_deref() == Some("registry")));
    assert!(!text.contains("rc_"), "no token's text is ever recorded");
}
