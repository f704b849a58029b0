//! HTTPS: the registry serves its certificate, a client trusting another authority is refused,
//! and a renewed certificate reaches new connections while open streams go on.

use std::time::Duration;

use rollcall_registry::RegistryConfig;
use rollcall_testkit::{DEADLINE, FakeService, TestCa, eventually, fast_config};
use tokio_util::sync::CancellationToken;

/// A client that trusts only the authority in `ca_file`.
fn trusting(ca_file: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(ca_file).expect("CA file");
    let roots = reqwest::Certificate::from_pem_bundle(&pem).expect("PEM");
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// A registry serving HTTPS with a certificate `ca` issued, in a data directory of its own.
async fn https_registry(ca: &TestCa) -> (rollcall_registry::RunningRegistry, CancellationToken, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("data dir");
    let server = ca.issue("registry");
    let mut config: RegistryConfig = fast_config();
    config.data_dir = data.path().join("registry");
    config.tls.tls_cert = Some(server.cert);
    config.tls.tls_key = Some(server.key);
    let shutdown = CancellationToken::new();
    let running = rollcall_registry::start(config, shutdown.clone())
        .await
        .expect("starts");
    (running, shutdown, data)
}

#[tokio::test]
async fn the_registry_serves_https_and_a_client_trusting_another_authority_is_refused() {
    let ca = TestCa::new("rollcall-test");
    let (registry, shutdown, _data) = https_registry(&ca).await;
    assert!(registry.url().starts_with("https://127.0.0.1:"), "{}", registry.url());

    let listed = trusting(&ca.ca_file)
        .get(format!("{}/v1/services", registry.url()))
        .send()
        .await
        .expect("GET over https");
    assert_eq!(listed.status(), 200);

    let stranger = TestCa::new("someone-else");
    let refused = trusting(&stranger.ca_file)
        .get(format!("{}/v1/services", registry.url()))
        .send()
        .await
        .expect_err("a certificate from an authority the client does not trust");
    assert!(refused.is_connect(), "{refused:?}");
    let plain = reqwest::get(format!("{}/v1/services", registry.url().replace("https://", "http://"))).await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()),
        "no plain HTTP on the TLS port"
    );
    shutdown.cancel();
    registry.wait().await.expect("stops");
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_while_open_streams_go_on() {
    let ca = TestCa::new("first-authority");
    let (registry, shutdown, _data) = https_registry(&ca).await;
    let url = registry.url().to_owned();
    let mut events = trusting(&ca.ca_file)
        .get(format!("{url}/v1/events"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("open the event stream");
    assert_eq!(events.status(), 200);

    // The renewal: another authority's certificate, written over the same files.
    let renewed = TestCa::new("second-authority");
    let config_dir = ca.ca_file.parent().expect("dir").to_owned();
    renewed.issue_at(&config_dir, "registry");
    let new_client = trusting(&renewed.ca_file);
    eventually("new connections to get the renewed certificate", DEADLINE, || async {
        let answer = new_client.get(format!("{url}/v1/services")).send().await.ok()?;
        answer.status().is_success().then_some(())
    })
    .await;

    // The stream opened under the first certificate is still served.
    let service = FakeService::spawn("GradingService", &[]).await;
    let registered = new_client
        .post(format!("{url}/services"))
        .json(&service.registration())
        .send()
        .await
        .expect("register over https");
    assert_eq!(registered.status(), 200);
    let mut seen = String::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(chunk)) = events.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: registered") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "the open stream carried the registration: {seen}");
    shutdown.cancel();
    registry.wait().await.expect("stops");
}
