//! The seed endpoint against byte-exact captures of what Go services send and what the Go
//! registry answers, and bad input on every endpoint.

use rollcall_testkit::{FakeService, RawResponse, TestRegistry, body_of, fixture, replace_body, send_raw};
use rollcall_wire::{ErrorBody, Patch, Registration};

/// The service URL a captured message names: a Registration's `ServiceURL`, the one provider of
/// a patch, or a DELETE's plain-text body.
fn captured_url(message: &[u8]) -> String {
    let body = body_of(message);
    if let Ok(registration) = serde_json::from_slice::<Registration>(body)
        && !registration.service_url.is_empty()
    {
        return registration.service_url;
    }
    if let Ok(patch) = serde_json::from_slice::<Patch>(body)
        && let Some(entry) = patch.added.iter().chain(&patch.removed).next()
    {
        return entry.url.clone();
    }
    String::from_utf8_lossy(body).trim().to_owned()
}

/// The body of captured message `name` with the URL it names swapped for `url`.
fn captured_body_for(name: &str, url: &str) -> String {
    let message = fixture(name);
    String::from_utf8_lossy(body_of(&message)).replace(&captured_url(&message), url)
}

/// A captured Go request with the URL it names swapped for the fake's real one.
fn go_request(name: &str, fake: &FakeService) -> Vec<u8> {
    replace_body(&fixture(name), captured_body_for(name, &fake.url).as_bytes())
}

fn host_of(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Asserts `actual` has the captured answer's status and, like it, an empty body.
fn assert_answers_like(actual: &RawResponse, captured: &str) {
    let expected = RawResponse::parse(&fixture(captured)).expect("captured response parses");
    assert_eq!(actual.status, expected.status, "status differs from {captured}");
    if expected.status == 200 {
        assert_eq!(actual.body, expected.body, "body differs from {captured}");
    }
}

fn error_of(response: &RawResponse) -> ErrorBody {
    assert_eq!(response.header("content-type"), Some("application/json"));
    serde_json::from_slice(&response.body).expect("a JSON error body")
}

#[tokio::test]
async fn go_registration_and_deregistration_bytes_get_the_seed_answers() {
    let registry = TestRegistry::spawn().await;
    let grading = FakeService::spawn("GradingService", &["LogService"]).await;

    let request = go_request("go-wire/registry-register-request.http", &grading);
    assert!(request.ends_with(b"}\n"), "Go's encoder ends the body with a newline");
    let answer = send_raw(host_of(&registry.url), &request).await;
    assert_answers_like(&answer, "go-wire/registry-register-response.http");
    let listed = registry.service("GradingService").await;
    assert_eq!(listed.instances.len(), 1);
    assert_eq!(listed.instances[0].required_services, ["LogService"]);
    assert_eq!(grading.patches().len(), 1, "the callback came before the 200");

    let request = go_request("go-wire/registry-deregister-request.http", &grading);
    let answer = send_raw(host_of(&registry.url), &request).await;
    assert_answers_like(&answer, "go-wire/registry-deregister-response.http");
    assert!(registry.service("GradingService").await.instances.is_empty());

    // A Go service's graceful stop sends the DELETE twice: the second finds nothing.
    let answer = send_raw(host_of(&registry.url), &request).await;
    assert_answers_like(&answer, "go-wire/registry-deregister-unknown-response.http");
    assert_eq!(error_of(&answer).error, "unknown_instance");
}

#[tokio::test]
async fn go_portal_registration_receives_every_provider_it_requires() {
    let registry = TestRegistry::spawn().await;
    let logs = FakeService::spawn("LogService", &[]).await;
    let grades = FakeService::spawn("GradingService", &["LogService"]).await;
    let portal = FakeService::spawn("Portal", &["LogService", "GradingService"]).await;
    let request = go_request("go-wire/registry-register-logservice-request.http", &logs);
    assert_eq!(send_raw(host_of(&registry.url), &request).await.status, 200);
    super::register(&registry, &grades).await;

    let request = go_request("go-wire/registry-register-portal-request.http", &portal);
    assert_eq!(send_raw(host_of(&registry.url), &request).await.status, 200);
    let first = portal.patches().into_iter().next().expect("the initial patch");
    let mut added = first.added.clone();
    added.sort();
    let mut expected = vec![logs.entry(), grades.entry()];
    expected.sort();
    assert_eq!(added, expected);
    assert!(first.removed.is_empty());
}

#[tokio::test]
async fn lower_case_keys_and_null_lists_are_accepted() {
    let registry = TestRegistry::spawn().await;
    let fake = FakeService::spawn("Lower", &[]).await;
    let body = format!(
        r#"{{"servicename":"Lower","serviceurl":"{0}","requiredservices":null,"serviceupdateurl":"{0}/services","heartbeaturl":"{0}/heartbeat"}}"#,
        fake.url
    );
    let response = registry.register_raw(body).await;
    assert_eq!(response.status(), 200);
    let listed = registry.service("Lower").await;
    assert_eq!(listed.instances.len(), 1);
    assert!(listed.instances[0].required_services.is_empty());
}

#[tokio::test]
async fn bad_json_answers_the_seeds_400_with_a_reason() {
    let registry = TestRegistry::spawn().await;
    let request = replace_body(&fixture("go-wire/registry-register-request.http"), b"{bad json");
    let answer = send_raw(host_of(&registry.url), &request).await;
    assert_answers_like(&answer, "go-wire/registry-register-badjson-response.http");
    let error = error_of(&answer);
    assert_eq!(error.error, "invalid_json");
    assert!(error.message.contains("Registration"), "{}", error.message);
}

#[tokio::test]
async fn other_methods_on_the_seed_endpoint_answer_405() {
    let registry = TestRegistry::spawn().await;
    let request = b"GET /services HTTP/1.1\r\nHost: localhost:3000\r\nUser-Agent: Go-http-client/1.1\r\n\r\n";
    let answer = send_raw(host_of(&registry.url), request).await;
    assert_answers_like(&answer, "go-wire/registry-get-response.http");
    assert_eq!(error_of(&answer).error, "method_not_allowed");
}

#[tokio::test]
async fn invalid_registrations_answer_400_and_leave_nothing() {
    let registry = TestRegistry::spawn().await;
    let fake = FakeService::spawn("Valid", &[]).await;
    let good = serde_json::to_value(fake.registration()).expect("encode");
    let with = |field: &str, value: serde_json::Value| {
        let mut body = good.clone();
        body[field] = value;
        body.to_string()
    };
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().expect("object").remove(field);
        body.to_string()
    };
    let cases = [
        ("missing ServiceName", without("ServiceName"), "ServiceName"),
        ("missing HeartbeatURL", without("HeartbeatURL"), "HeartbeatURL"),
        (
            "relative ServiceURL",
            with("ServiceURL", "/grades".into()),
            "ServiceURL",
        ),
        (
            "non-http update URL",
            with("ServiceUpdateURL", "ftp://127.0.0.1/x".into()),
            "http or https",
        ),
        ("number for a name", with("ServiceName", 7.into()), "Registration"),
        (
            "empty required name",
            with("RequiredServices", serde_json::json!([""])),
            "RequiredServices",
        ),
        ("array body", "[]".to_owned(), "Registration"),
        ("empty body", String::new(), "Registration"),
    ];
    for (case, body, mentions) in cases {
        let response = registry.register_raw(body).await;
        assert_eq!(response.status(), 400, "{case}");
        let error: ErrorBody = response.json().await.expect("JSON error");
        assert!(
            error.message.contains(mentions),
            "{case}: {:?} should mention {mentions}",
            error.message
        );
    }
    let huge = with("ServiceName", "x".repeat(rollcall_registry::MAX_BODY_BYTES).into());
    let response = registry.register_raw(huge).await;
    assert_eq!(response.status(), 400);
    let error: ErrorBody = response.json().await.expect("JSON error");
    assert_eq!(error.error, "body_too_large");

    assert!(
        registry.services().await.services.is_empty(),
        "no invalid registration was kept"
    );
    assert_eq!(
        fake.patch_arrivals(),
        0,
        "no callback was made for an invalid registration"
    );
}

#[tokio::test]
async fn v1_errors_are_json_and_say_what_is_wrong() {
    let registry = TestRegistry::spawn().await;
    let response = registry.get("/v1/nothing-here").await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<ErrorBody>().await.expect("JSON").error, "not_found");

    let response = registry.get("/v1/services?passing=maybe").await;
    assert_eq!(response.status(), 400);
    let error: ErrorBody = response.json().await.expect("JSON");
    assert!(error.message.contains("maybe"));

    let response = reqwest::Client::new()
        .post(format!("{}/v1/services", registry.url))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.json::<ErrorBody>().await.expect("JSON").error,
        "method_not_allowed"
    );
}

#[tokio::test]
async fn patches_are_the_bytes_the_go_registry_sends() {
    let registry = TestRegistry::spawn().await;
    let dependent = FakeService::spawn("Dependent", &["LogService"]).await;
    super::register(&registry, &dependent).await;
    let logs = FakeService::spawn("LogService", &[]).await;
    super::register(&registry, &logs).await;
    dependent.wait_for_patches(2).await;
    assert_eq!(registry.deregister(&logs.url).await.status(), 200);
    dependent.wait_for_patches(3).await;

    let raw = dependent.raw_patches();
    let expected = |name: &str| captured_body_for(name, &logs.url);
    assert_eq!(
        raw[0].1, r#"{"Added":[],"Removed":[]}"#,
        "the initial patch, with [] where Go sent null"
    );
    assert_eq!(raw[1].1, expected("go-wire/registry-patch-added.http"));
    assert_eq!(raw[2].1, expected("go-wire/registry-patch-removed.http"));
    for (content_type, _) in &raw {
        assert_eq!(content_type.as_deref(), Some("application/json"));
    }
}
