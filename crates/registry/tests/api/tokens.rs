//! Tokens and ownership: who may register, read, deregister and administer, over real HTTP.

use rollcall_testkit::{FakeService, TestRegistry, http_client};
use rollcall_wire::{ErrorBody, TokenView};
use serde_json::json;

use super::register;

/// A registry that serves nobody without a token, as one listening beyond loopback does.
async fn locked_registry() -> TestRegistry {
    TestRegistry::spawn_with(|config| config.require_tokens = true).await
}

/// `POST /v1/instances` for `service`, presenting `token` if given.
async fn register_v1(registry: &TestRegistry, service: &FakeService, token: Option<&str>) -> reqwest::Response {
    let request = http_client()
        .post(format!("{}/v1/instances", registry.url))
        .json(&service.registration());
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.expect("POST /v1/instances")
}

async fn get_with(registry: &TestRegistry, path: &str, token: Option<&str>) -> reqwest::Response {
    let request = http_client().get(format!("{}{path}", registry.url));
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.expect("GET")
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: ErrorBody = response.json().await.expect("JSON error");
    (status, body.error)
}

#[tokio::test]
async fn without_a_token_nothing_is_served_where_tokens_are_required() {
    let registry = locked_registry().await;
    let grades = FakeService::spawn("GradingService", &[]).await;

    let response = register_v1(&registry, &grades, None).await;
    assert_eq!(
        response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some(r#"Basic realm="rollcall", charset="UTF-8""#),
        "a browser is asked for a token"
    );
    assert_eq!(error_code(response).await, (401, "token_required".to_owned()));
    let seed = registry.register(&grades.registration()).await;
    assert_eq!(error_code(seed).await, (401, "token_required".to_owned()));
    for path in [
        "/v1/services",
        "/v1/services/GradingService",
        "/v1/events",
        "/metrics",
        "/ui",
    ] {
        assert_eq!(get_with(&registry, path, None).await.status(), 401, "GET {path}");
    }
    assert_eq!(
        get_with(&registry, "/v1/openapi.json", None).await.status(),
        200,
        "the API's description is public"
    );
}

#[tokio::test]
async fn a_token_may_do_what_its_scopes_allow_and_nothing_else() {
    let registry = locked_registry().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let reader = registry.token("dashboard", &["read"]).await;
    let other = registry.token("portal", &["register:Portal"]).await;
    let grading = registry.token("grades", &["register:Grading*"]).await;

    assert_eq!(
        error_code(register_v1(&registry, &grades, Some(&reader)).await).await,
        (403, "forbidden".to_owned())
    );
    assert_eq!(
        error_code(register_v1(&registry, &grades, Some(&other)).await).await,
        (403, "forbidden".to_owned())
    );
    let forged = rollcall_testkit::forged_token(&grading);
    assert_eq!(
        error_code(register_v1(&registry, &grades, Some(&forged)).await).await,
        (401, "invalid_token".to_owned())
    );
    assert_eq!(register_v1(&registry, &grades, Some(&grading)).await.status(), 201);

    assert_eq!(
        get_with(&registry, "/v1/services/GradingService", Some(&grading))
            .await
            .status(),
        403,
        "register is not read"
    );
    let listed = get_with(&registry, "/v1/services/GradingService", Some(&reader)).await;
    assert_eq!(listed.status(), 200);
    let listed: rollcall_wire::ServiceView = listed.json().await.expect("JSON");
    assert_eq!(listed.instances.len(), 1);
    // Basic authentication, as a browser sends it, with the token as the password.
    let basic = http_client()
        .get(format!("{}/ui", registry.url))
        .basic_auth("anyone", Some(&reader))
        .send()
        .await
        .expect("GET /ui");
    assert_eq!(basic.status(), 200);
}

#[tokio::test]
async fn only_admins_issue_list_and_revoke_tokens_and_a_revoked_token_stops_at_once() {
    let registry = TestRegistry::spawn().await; // anonymous writes are served here, but not these
    let anonymous = http_client()
        .get(format!("{}/v1/tokens", registry.url))
        .send()
        .await
        .expect("GET");
    assert_eq!(error_code(anonymous).await, (401, "token_required".to_owned()));
    let reader = registry.token("ci", &["read"]).await;
    let as_reader = get_with(&registry, "/v1/tokens", Some(&reader)).await;
    assert_eq!(error_code(as_reader).await, (403, "forbidden".to_owned()));

    let admin = registry.admin_token().await;
    let listing = get_with(&registry, "/v1/tokens", Some(&admin))
        .await
        .text()
        .await
        .expect("text");
    assert!(
        !listing.contains(&reader) && !listing.contains(&admin),
        "a listing never shows a token's text"
    );
    let listed: Vec<TokenView> = serde_json::from_str(&listing).expect("JSON");
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["admin", "ci"],
        "oldest first (this registry does not ship an audit trail, so it made no token of its own)"
    );

    let me: TokenView = get_with(&registry, "/v1/tokens/self", Some(&reader))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!((me.name.as_str(), me.scopes.len()), ("ci", 1));
    let revoke = http_client()
        .delete(format!("{}/v1/tokens/{}", registry.url, me.id))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(revoke.status(), 204);
    let after = get_with(&registry, "/v1/services", Some(&reader)).await;
    assert_eq!(error_code(after).await, (401, "invalid_token".to_owned()));

    let bad_request = http_client()
        .post(format!("{}/v1/tokens", registry.url))
        .bearer_auth(&admin)
        .json(&json!({"name": "x", "scopes": ["superuser"]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(error_code(bad_request).await, (400, "invalid_json".to_owned()));
}

#[tokio::test]
async fn an_instance_is_deregistered_or_replaced_only_by_the_token_that_registered_it_or_an_admin() {
    let registry = locked_registry().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let owner = registry.token("grades", &["register:GradingService"]).await;
    let rival = registry.token("intruder", &["register:*"]).await;
    let created: rollcall_wire::InstanceView = register_v1(&registry, &grades, Some(&owner))
        .await
        .json()
        .await
        .expect("JSON");

    assert_eq!(
        error_code(register_v1(&registry, &grades, Some(&rival)).await).await,
        (403, "not_owner".to_owned())
    );
    let delete = |token: String| {
        let url = format!("{}/v1/instances/{}", registry.url, created.id);
        async move {
            http_client()
                .delete(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("DELETE")
        }
    };
    assert_eq!(
        error_code(delete(rival.clone()).await).await,
        (403, "not_owner".to_owned())
    );
    let seed_delete = http_client()
        .delete(&registry.services_url)
        .bearer_auth(&rival)
        .body(grades.url.clone())
        .send()
        .await
        .expect("DELETE /services");
    assert_eq!(error_code(seed_delete).await, (403, "not_owner".to_owned()));
    let seed_replace = http_client()
        .post(&registry.services_url)
        .bearer_auth(&rival)
        .json(&grades.registration())
        .send()
        .await
        .expect("POST /services");
    assert_eq!(
        error_code(seed_replace).await,
        (400, "not_owner".to_owned()),
        "the seed refuses with 400"
    );

    assert_eq!(delete(registry.admin_token().await).await.status(), 204, "an admin may");
    assert_eq!(register_v1(&registry, &grades, Some(&owner)).await.status(), 201);
    let created_again: rollcall_wire::InstanceView = get_with(
        &registry,
        "/v1/services/GradingService",
        Some(&registry.admin_token().await),
    )
    .await
    .json::<rollcall_wire::ServiceView>()
    .await
    .expect("JSON")
    .instances
    .remove(0);
    let mine = http_client()
        .delete(format!("{}/v1/instances/{}", registry.url, created_again.id))
        .bearer_auth(&owner)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(mine.status(), 204, "and so may its own token");
}

#[tokio::test]
async fn on_loopback_a_seed_service_registers_anonymously_and_only_its_own_address_deregisters_it() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &grades).await;

    // Another local process: the same machine, another loopback address.
    let neighbour = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let refused = neighbour
        .delete(&registry.services_url)
        .body(grades.url.clone())
        .send()
        .await
        .expect("DELETE /services");
    assert_eq!(error_code(refused).await, (403, "not_owner".to_owned()));
    assert_eq!(registry.service("GradingService").await.instances.len(), 1);
    assert_eq!(
        registry.deregister(&grades.url).await.status(),
        200,
        "its own address may"
    );
}

#[tokio::test]
async fn only_an_admin_sees_how_a_probe_failed_and_everyone_else_one_text() {
    let registry = TestRegistry::spawn().await;
    let grades = FakeService::spawn("GradingService", &[]).await;
    let created: rollcall_wire::InstanceView = register_v1(&registry, &grades, None).await.json().await.expect("JSON");
    grades.stop();
    let path = format!("/v1/instances/{}", created.id);
    let failed = rollcall_testkit::eventually("a failed probe", rollcall_testkit::DEADLINE, || async {
        let view: rollcall_wire::InstanceView = get_with(&registry, &path, None).await.json().await.ok()?;
        view.last_error.is_some().then_some(view)
    })
    .await;
    assert_eq!(
        failed.last_error.as_deref(),
        Some("no answer"),
        "a refused port looks like any silence"
    );
    assert_eq!(failed.last_error_detail, None, "details are for admins");
    let admin = registry.admin_token().await;
    let detailed: rollcall_wire::InstanceView = get_with(&registry, &path, Some(&admin))
        .await
        .json()
        .await
        .expect("JSON");
    let detail = detailed.last_error_detail.expect("an admin sees the details");
    assert_ne!(detail, "no answer", "{detail}");
}
