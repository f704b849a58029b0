//! Browser-facing defences: a foreign `Host` (DNS rebinding) and a cross-site write (CSRF) are
//! refused; every answer carries the security headers.

use axum::http::header;
use rollcall_testkit::{FakeService, TestRegistry};
use rollcall_wire::ErrorBody;

#[tokio::test]
async fn a_request_for_a_foreign_host_name_is_misdirected() {
    let registry = TestRegistry::spawn_with(|c| c.allowed_hosts = vec!["registry.internal".to_owned()]).await;
    let http = rollcall_testkit::http_client();
    let port = registry.url.rsplit(':').next().expect("a port").to_owned();
    for host in [
        format!("attacker.example:{port}"),
        "localhost.attacker.example".to_owned(),
    ] {
        let response = http
            .get(format!("{}/v1/services", registry.url))
            .header(header::HOST, &host)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 421, "{host}");
        let error: ErrorBody = response.json().await.expect("JSON error");
        assert_eq!(error.error, "misdirected_request");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("registry.internal:{port}"),
    ] {
        let response = http
            .get(format!("{}/v1/services", registry.url))
            .header(header::HOST, &host)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200, "{host}");
    }
}

#[tokio::test]
async fn a_write_from_another_site_is_refused_and_programs_are_not_affected() {
    let registry = TestRegistry::spawn().await;
    let service = FakeService::spawn("A", &[]).await;
    let http = rollcall_testkit::http_client();
    let post = || {
        http.post(format!("{}/services", registry.url))
            .json(&service.registration())
    };
    for (name, value) in [
        ("origin", "http://attacker.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let response = post().header(name, value).send().await.expect("POST");
        assert_eq!(response.status(), 403, "{name}: {value}");
        let error: ErrorBody = response.json().await.expect("JSON error");
        assert_eq!(error.error, "cross_site_request");
    }
    assert!(
        registry.services().await.services.is_empty(),
        "a refused write left a trace"
    );
    // A program sends neither header; the dashboard's own pages say same-origin.
    assert_eq!(post().send().await.expect("POST").status(), 200);
    let same_origin = post()
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("POST");
    assert_eq!(same_origin.status(), 200);
}

#[tokio::test]
async fn answers_carry_the_security_headers_and_pages_a_content_security_policy() {
    let registry = TestRegistry::spawn().await;
    let json = registry.get("/v1/services").await;
    assert_eq!(json.headers()["x-content-type-options"], "nosniff");
    assert_eq!(json.headers()["referrer-policy"], "same-origin");
    assert!(json.headers().get("content-security-policy").is_none());
    let page = registry.get("/ui").await;
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().expect("ASCII");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
}

#[tokio::test]
async fn a_json_write_must_say_it_is_json() {
    let registry = TestRegistry::spawn().await;
    let service = FakeService::spawn("A", &[]).await;
    let body = serde_json::to_string(&service.registration()).expect("encode");
    let http = rollcall_testkit::http_client();
    for (path, status) in [("/services", 400), ("/v1/instances", 415)] {
        // What a page of another site can send without asking first.
        for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
            let response = http
                .post(format!("{}{path}", registry.url))
                .header(header::CONTENT_TYPE, content_type)
                .body(body.clone())
                .send()
                .await
                .expect("POST");
            assert_eq!(response.status(), status, "{path} {content_type}");
            let error: ErrorBody = response.json().await.expect("JSON error");
            assert_eq!(error.error, "unsupported_media_type");
        }
    }
    assert!(registry.services().await.services.is_empty());
}
