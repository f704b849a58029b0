//! Tokens at the log service: writing needs `logs:write`, reading `logs:read`, each record is
//! stamped with the name of the token that sent it, and tokens are verified by the registry.

use rollcall_logs::LogsConfig;
use rollcall_testkit::{TestRegistry, http_client};
use rollcall_wire::{ErrorBody, LogRecord, RecordPage};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::record;

/// A registry and a log service that both serve nobody without a token, the log service
/// registered with its own token.
async fn locked() -> (TestRegistry, rollcall_logs::LogService, tempfile::TempDir) {
    let registry = TestRegistry::spawn_with(|config| config.require_tokens = true).await;
    let own = registry.token("logs", &["register:LogService"]).await;
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut config = LogsConfig::new("127.0.0.1:0".parse().expect("address"), data_dir.path().join("logs"));
    config.service.registry.clone_from(&registry.url);
    config.service.token.token = Some(own);
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
    let (registry, logs, _data) = locked().await;
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
    let (registry, logs, _data) = locked().await;
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
