//! `GET /v1/services` and `GET /v1/services/{name}`.

use axum::http::StatusCode;
use rollcall_testkit::{DEADLINE, FakeService, HeartbeatMode, TestRegistry, eventually};
use rollcall_wire::InstanceState;

use super::register;

#[tokio::test]
async fn listing_shows_every_instance_with_its_state_and_last_check() {
    let registry = TestRegistry::spawn().await;
    let good = FakeService::spawn("GradingService", &["LogService"]).await;
    let bad = FakeService::spawn("GradingService", &[]).await;
    let logs = FakeService::spawn("LogService", &[]).await;
    for service in [&good, &bad, &logs] {
        register(&registry, service).await;
    }
    bad.set_heartbeat(HeartbeatMode::Failing(StatusCode::INTERNAL_SERVER_ERROR));
    registry
        .wait_for_state("GradingService", &bad.url, InstanceState::Critical)
        .await;
    let good_view = registry
        .wait_for_state("GradingService", &good.url, InstanceState::Passing)
        .await;

    let all = registry.services().await;
    let names: Vec<&str> = all.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["GradingService", "LogService"]);
    assert_eq!(all.service("GradingService").map(|s| s.instances.len()), Some(2));
    assert_eq!(good_view.heartbeat_url, format!("{}/heartbeat", good.url));
    assert_eq!(good_view.update_url, format!("{}/services", good.url));
    assert_eq!(good_view.required_services, ["LogService"]);
    assert!(
        good_view.registered_at.ends_with('Z'),
        "RFC 3339 UTC: {}",
        good_view.registered_at
    );

    let passing = registry.get("/v1/services/GradingService?passing").await;
    assert_eq!(passing.status(), 200);
    let passing: rollcall_wire::ServiceView = passing.json().await.expect("JSON");
    let urls: Vec<&str> = passing.instances.iter().map(|i| i.url.as_str()).collect();
    assert_eq!(urls, [good.url.as_str()]);
}

#[tokio::test]
async fn a_repeated_lookup_follows_every_change_of_the_service() {
    // Lookups are served from encoded answers; none may outlive the listing it shows.
    let registry = TestRegistry::spawn().await;
    let first = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &first).await;
    let lookup = || async {
        let response = registry.get("/v1/services/GradingService").await;
        assert_eq!(response.headers()["content-type"], "application/json");
        let index: u64 = response.headers()["x-rollcall-index"]
            .to_str()
            .expect("text")
            .parse()
            .expect("a number");
        (
            index,
            response.json::<rollcall_wire::ServiceView>().await.expect("JSON"),
        )
    };
    let (index, before) = lookup().await;
    assert_eq!(lookup().await, (index, before.clone()), "nothing changed in between");

    // A probe changes what is listed (its time), not the index.
    let checked_at = before.instances[0].last_check_at.clone();
    eventually("a lookup to show a newer probe", DEADLINE, || async {
        let (now_index, view) = lookup().await;
        (view.instances[0].last_check_at != checked_at).then_some(now_index)
    })
    .await;

    let second = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &second).await;
    let (grown_index, grown) = lookup().await;
    assert!(grown_index > index);
    assert_eq!(grown.instances.len(), 2);

    second.set_heartbeat(HeartbeatMode::Failing(StatusCode::INTERNAL_SERVER_ERROR));
    registry
        .wait_for_state("GradingService", &second.url, InstanceState::Critical)
        .await;
    let passing: rollcall_wire::ServiceView = registry
        .get("/v1/services/GradingService?passing")
        .await
        .json()
        .await
        .expect("JSON");
    let urls: Vec<&str> = passing.instances.iter().map(|i| i.url.as_str()).collect();
    assert_eq!(urls, [first.url.as_str()]);

    assert_eq!(registry.deregister(&first.url).await.status(), 200);
    let (_, shrunk) = lookup().await;
    let urls: Vec<&str> = shrunk.instances.iter().map(|i| i.url.as_str()).collect();
    assert_eq!(urls, [second.url.as_str()]);
}

#[tokio::test]
async fn a_service_nobody_registered_is_an_empty_list() {
    let registry = TestRegistry::spawn().await;
    let response = registry.get("/v1/services/Nobody").await;
    assert_eq!(response.status(), 200);
    let view: rollcall_wire::ServiceView = response.json().await.expect("JSON");
    assert_eq!(view.name, "Nobody");
    assert!(view.instances.is_empty());
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint_served() {
    let registry = TestRegistry::spawn().await;
    let response = registry.get("/v1/openapi.json").await;
    assert_eq!(response.status(), 200);
    let document: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    let served = [
        ("/services", "post"),
        ("/services", "delete"),
        ("/v1/instances", "post"),
        ("/v1/instances/{id}", "get"),
        ("/v1/instances/{id}", "delete"),
        ("/v1/services", "get"),
        ("/v1/services/{name}", "get"),
        ("/v1/events", "get"),
        ("/metrics", "get"),
        ("/v1/nodes", "get"),
        ("/v1/sd/prometheus", "get"),
        ("/v1/openapi.json", "get"),
        ("/v1/tokens", "get"),
        ("/v1/tokens", "post"),
        ("/v1/tokens/self", "get"),
        ("/v1/tokens/{id}", "delete"),
        ("/v1/instances/{id}/drain", "post"),
        ("/v1/instances/{id}/undrain", "post"),
        ("/v1/instances/{id}/ttl", "put"),
        ("/v1/config", "get"),
        ("/v1/config/{namespace}/{service}", "get"),
        ("/v1/config/{namespace}/{service}/{name}", "put"),
        ("/v1/config/{namespace}/{service}/{name}", "get"),
        ("/v1/config/{namespace}/{service}/{name}/history", "get"),
        ("/v1/config/{namespace}/{service}/{name}/diff", "get"),
        ("/v1/config/{namespace}/{service}/{name}/rollback", "post"),
        ("/v1/config/{namespace}/{service}/{name}/acks", "post"),
        ("/v1/config/{namespace}/{service}/{name}/status", "get"),
        ("/v1/config/{namespace}/{service}/{name}/rollout/promote", "post"),
        ("/v1/config/{namespace}/{service}/{name}/rollout/abort", "post"),
    ];
    for (path, method) in served {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is not described"
        );
        // And the registry serves it: no 405, and no 404 from the router's fallback (a route's own
        // 404, such as an unknown instance id, is fine).
        let probe = path
            .replace("{id}", "x")
            .replace("{name}", "x")
            .replace("{namespace}", "x")
            .replace("{service}", "x");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let answer = reqwest::Client::new()
            .request(method.clone(), format!("{}{probe}", registry.url))
            .timeout(std::time::Duration::from_secs(2))
            .send()
            .await
            .expect("request");
        let status = answer.status();
        assert_ne!(status, 405, "{method} {path} is described but not served");
        if status == 404 {
            let error: rollcall_wire::ErrorBody = answer.json().await.expect("JSON error");
            assert_ne!(error.error, "not_found", "{method} {path} is described but not served");
        }
    }
    let paths = document["paths"].as_object().expect("paths").len();
    assert_eq!(paths, 26, "a path is described that the list above does not check");
}

#[tokio::test]
async fn a_registry_alone_is_one_live_node_probing_every_instance() {
    let registry = TestRegistry::spawn().await;
    let service = FakeService::spawn("A", &[]).await;
    registry.register(&service.registration()).await;
    let nodes: rollcall_wire::NodesView = reqwest::get(format!("{}/v1/nodes", registry.url))
        .await
        .expect("GET /v1/nodes")
        .json()
        .await
        .expect("JSON");
    assert!(nodes.live);
    assert_eq!(nodes.nodes.len(), 1);
    assert_eq!(nodes.nodes[0].id, nodes.this);
    assert_eq!(nodes.nodes[0].instances, 1);
}
