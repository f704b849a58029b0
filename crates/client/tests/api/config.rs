//! The configuration client: typed values following the registry's releases, releases rejected
//! by the service's type or check (and reported so), and a start from the cache with the
//! registry away.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::response::IntoResponse as _;
use rollcall_client::ConfigClient;
use rollcall_testkit::{DEADLINE, FakeService, TestRegistry, eventually, http_client};
use tokio_util::sync::CancellationToken;

const LIMITS: &str = "/v1/config/default/GradingService/limits";

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Limits {
    max: u32,
}

/// The service's own check: at most 100.
fn at_most_100(limits: &Limits) -> Result<(), String> {
    if limits.max <= 100 {
        Ok(())
    } else {
        Err(format!("max {} is over 100", limits.max))
    }
}

async fn publish(registry: &TestRegistry, path: &str, body: &str) {
    let answer = http_client()
        .put(format!("{}{path}", registry.url))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("PUT");
    assert!(answer.status().is_success(), "{}", answer.status());
}

async fn next_max(value: &mut rollcall_client::Watched<Limits>) -> u32 {
    tokio::time::timeout(DEADLINE, value.changed())
        .await
        .expect("a new value within the deadline")
        .expect("the client runs")
        .max
}

/// Runs a first GradingService client against `registry_url` with `cache` until its `limits`
/// value is cached, then stops it; the cached file's path.
async fn cached_by_a_first_client(registry_url: &str, cache: &Path) -> PathBuf {
    let stop = CancellationToken::new();
    let filling = ConfigClient::start(
        reqwest::Client::new(),
        registry_url,
        "default",
        "GradingService",
        Some(cache.to_owned()),
        stop.clone(),
    );
    let mut first = filling.value::<Limits, _>("limits", at_most_100);
    if first.current().is_none() {
        next_max(&mut first).await;
    }
    let cached = cache.join("default/GradingService/limits.json");
    eventually("the release to be cached", DEADLINE, || async {
        cached.exists().then_some(())
    })
    .await;
    stop.cancel();
    cached
}

#[tokio::test]
async fn a_typed_value_follows_releases_and_a_release_the_service_refuses_is_rejected_and_reported() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let id = registry.register_v1(&grades.registration()).await.id;
    publish(&registry, LIMITS, r#"{"max": 100}"#).await;

    let shutdown = CancellationToken::new();
    let client = ConfigClient::start(
        reqwest::Client::new(),
        &registry.url,
        "default",
        "GradingService",
        None,
        shutdown.clone(),
    );
    client.report_as(id);
    let mut limits = client.value::<Limits, _>("limits", at_most_100);
    let first = match limits.current() {
        Some(limits) => limits.max,
        None => next_max(&mut limits).await,
    };
    assert_eq!(first, 100);
    eventually("the stream to be current", DEADLINE, || async {
        (!client.is_stale()).then_some(())
    })
    .await;

    publish(&registry, LIMITS, r#"{"max": 90}"#).await;
    assert_eq!(next_max(&mut limits).await, 90);

    // Refused by the type, then by the service's check: 90 stays in force, and the registry is told.
    publish(&registry, LIMITS, r#"{"max": "lots"}"#).await;
    let rejected = |revision: u64| {
        let registry = &registry;
        async move {
            eventually("the rejection to be reported", DEADLINE, || async {
                let status: rollcall_wire::RolloutStatus =
                    registry.get(&format!("{LIMITS}/status")).await.json().await.ok()?;
                (status.revision == revision && status.rejected == 1).then_some(status)
            })
            .await
        }
    };
    let status = rejected(3).await;
    assert!(
        status.instances[0].reason.contains("invalid type"),
        "{:?}",
        status.instances
    );
    publish(&registry, LIMITS, r#"{"max": 500}"#).await;
    let status = rejected(4).await;
    assert_eq!(status.instances[0].reason, "max 500 is over 100");
    assert_eq!(limits.current().map(|l| l.max), Some(90), "the last good value stays");

    publish(&registry, LIMITS, r#"{"max": 80}"#).await;
    assert_eq!(next_max(&mut limits).await, 80);
    eventually("the release to be reported applied", DEADLINE, || async {
        let status: rollcall_wire::RolloutStatus = registry.get(&format!("{LIMITS}/status")).await.json().await.ok()?;
        (status.revision == 5 && status.applied == 1).then_some(())
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn with_the_registry_away_a_client_starts_from_its_cache_at_once_marked_stale() {
    let registry = TestRegistry::spawn().await;
    let cache = tempfile::tempdir().expect("dir");
    publish(&registry, LIMITS, r#"{"max": 70}"#).await;
    let cached = cached_by_a_first_client(&registry.url, cache.path()).await;
    let mode = std::fs::metadata(&cached).expect("cached").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    registry.stop().await;

    let started = Instant::now();
    let away = ConfigClient::start(
        reqwest::Client::new(),
        &rollcall_testkit::refused_url().await,
        "default",
        "GradingService",
        Some(cache.path().to_owned()),
        CancellationToken::new(),
    );
    let limits = away.value::<Limits, _>("limits", at_most_100);
    let value = limits.current().map(|l| l.max);
    let took = started.elapsed();
    assert_eq!(value, Some(70));
    assert!(took < Duration::from_millis(500), "from the cache in {took:?}");
    assert!(away.is_stale());
}

#[tokio::test]
async fn a_release_the_stream_never_brought_is_found_by_the_revision_check_and_counted_as_missed() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let id = registry.register_v1(&grades.registration()).await.id;
    publish(&registry, LIMITS, r#"{"max": 60}"#).await;
    let cache = tempfile::tempdir().expect("dir");
    cached_by_a_first_client(&registry.url, cache.path()).await;

    // A path to the registry that lets everything through but the stream.
    let upstream = registry.url.clone();
    let proxy = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let upstream = upstream.clone();
        async move {
            let path = request
                .uri()
                .path_and_query()
                .map(ToString::to_string)
                .unwrap_or_default();
            if path.starts_with("/v1/config/default/GradingService?") || path == "/v1/config/default/GradingService" {
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new()).into_response();
            }
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
            let mut forwarded = reqwest::Client::new()
                .request(parts.method, format!("{upstream}{path}"))
                .body(body);
            for (name, value) in &parts.headers {
                if name != "host" {
                    forwarded = forwarded.header(name, value);
                }
            }
            match forwarded.send().await {
                Ok(answer) => {
                    let status = answer.status();
                    let headers = answer.headers().clone();
                    let body = answer.bytes().await.unwrap_or_default().to_vec();
                    let mut response = (status, body).into_response();
                    for (name, value) in &headers {
                        if name != "content-length" && name != "transfer-encoding" {
                            response.headers_mut().insert(name, value.clone());
                        }
                    }
                    response
                }
                Err(_) => (axum::http::StatusCode::BAD_GATEWAY, Vec::new()).into_response(),
            }
        }
    });
    let through_proxy = rollcall_testkit::serve(proxy, CancellationToken::new()).await;

    let client = ConfigClient::start_checking_every(
        reqwest::Client::new(),
        &through_proxy,
        "default",
        "GradingService",
        Some(cache.path().to_owned()),
        Duration::from_millis(200),
        CancellationToken::new(),
    );
    client.report_as(id);
    let mut limits = client.value::<Limits, _>("limits", at_most_100);
    assert_eq!(limits.current().map(|l| l.max), Some(60), "from the cache");
    publish(&registry, LIMITS, r#"{"max": 50}"#).await;
    assert_eq!(next_max(&mut limits).await, 50, "found by the revision check");
    assert!(client.is_stale(), "the stream never came");
    eventually("the miss to be counted", DEADLINE, || async {
        let missed = registry.metric("rollcall_config_push_missed_total").await;
        (missed >= 1.0).then_some(())
    })
    .await;
}
