//! The runtime's lifecycle: listen, register, serve, stay registered, deregister once.

use std::time::{Duration, Instant};

use rollcall_client::RunningService;
use rollcall_client::{RegistryError, StartError};
use rollcall_testkit::{DEADLINE, SeedRegistry, TestRegistry, eventually, refused_url};
use rollcall_wire::{InstanceState, InstanceView};
use tokio_util::sync::CancellationToken;

use crate::service;

#[tokio::test]
async fn a_service_registers_serves_its_routes_and_deregisters_on_shutdown() {
    let registry = TestRegistry::spawn().await;
    let shutdown = CancellationToken::new();
    let running = service(&registry.url, "HelloService", &[])
        .start(shutdown.clone())
        .await
        .expect("starts");
    let url = running.url().to_owned();
    assert_eq!(url, format!("http://{}", running.local_addr()));

    let listed = registry
        .instance("HelloService", &url)
        .await
        .expect("registered once started");
    assert_eq!(listed.heartbeat_url, format!("{url}/heartbeat"));
    registry
        .wait_for_state("HelloService", &url, InstanceState::Passing)
        .await;
    let hello = reqwest::get(format!("{url}/hello")).await.expect("GET /hello");
    assert_eq!(hello.text().await.expect("body"), "hello");
    let heartbeat = reqwest::get(format!("{url}/heartbeat")).await.expect("GET /heartbeat");
    assert_eq!(heartbeat.status(), 200);
    assert!(heartbeat.text().await.expect("body").is_empty());

    let started = Instant::now();
    shutdown.cancel();
    running.wait().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped within its deadline"
    );
    assert!(
        registry.service("HelloService").await.instances.is_empty(),
        "deregistered"
    );
    assert!(reqwest::get(format!("{url}/hello")).await.is_err(), "no longer serving");
}

#[tokio::test]
async fn stopping_deregisters_exactly_once_as_the_seed_protocol_says() {
    let registry = SeedRegistry::spawn().await;
    let running = service(&registry.url, "HelloService", &[])
        .start(CancellationToken::new())
        .await
        .expect("starts");
    let url = running.url().to_owned();
    running.stop().await;

    let deletes: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "one DELETE, not the original's two");
    assert_eq!(deletes[0].content_type.as_deref(), Some("text/plain"));
    assert_eq!(deletes[0].body, url.as_bytes());
    assert!(registry.registrations().is_empty());
}

#[tokio::test]
async fn an_unreachable_registry_is_retried_until_it_answers() {
    // A registry that hangs up on every connection, counting the attempts.
    let broken = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = broken.local_addr().expect("address");
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&attempts);
    let hanging_up = tokio::spawn(async move {
        while let Ok((connection, _)) = broken.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(connection);
        }
    });
    let starting =
        tokio::spawn(service(&format!("http://{address}"), "HelloService", &[]).start(CancellationToken::new()));
    eventually("the service to try registering again", DEADLINE, || async {
        (attempts.load(std::sync::atomic::Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    assert!(!starting.is_finished(), "start waits for the registry");

    // Then a real registry takes over the address.
    hanging_up.abort();
    let _ = hanging_up.await;
    let registry = TestRegistry::spawn_at(address, |_| {}).await;
    let running = tokio::time::timeout(DEADLINE, starting)
        .await
        .expect("registered once the registry answers")
        .expect("task")
        .expect("starts");
    assert!(registry.instance("HelloService", running.url()).await.is_some());
    running.stop().await;
}

#[tokio::test]
async fn fail_fast_reports_an_unreachable_registry() {
    let error = service(&refused_url().await, "HelloService", &[])
        .fail_fast(true)
        .start(CancellationToken::new())
        .await
        .expect_err("no registry");
    assert!(
        matches!(error, StartError::Register(RegistryError::Unreachable(_))),
        "{error}"
    );
}

#[tokio::test]
async fn a_refused_registration_says_why() {
    let registry = TestRegistry::spawn().await;
    let error = service(&registry.url, "HelloService", &[])
        .advertise(refused_url().await)
        .fail_fast(true)
        .start(CancellationToken::new())
        .await
        .expect_err("the registry cannot call back an advertised URL where nothing listens");
    let StartError::Register(RegistryError::Refused { status, message }) = &error else {
        panic!("expected a refusal, got {error}");
    };
    assert_eq!(*status, 400);
    assert!(message.contains("could not be delivered"), "{message}");
}

/// With the registry probing every second, a forgotten service must be back within two
/// intervals: the runtime notices 1.5 longest gaps of silence.
async fn back_within_two_intervals(registry: &TestRegistry, url: &str, forgotten_at: Instant) {
    eventually("the service to register again", DEADLINE, || async {
        registry.instance("HelloService", url).await
    })
    .await;
    let back_after = forgotten_at.elapsed();
    assert!(back_after < Duration::from_secs(2), "back after {back_after:?}");
}

/// A registry probing every second, and a service registered with it that has been probed three
/// times (so it has measured the registry's interval); with the service's instance.
async fn service_seen_probed() -> (TestRegistry, RunningService, InstanceView) {
    let registry = TestRegistry::spawn_with(|config| config.health_interval = Duration::from_secs(1)).await;
    let running = service(&registry.url, "HelloService", &[])
        .expected_health_interval(Duration::from_secs(1))
        .start(CancellationToken::new())
        .await
        .expect("starts");
    let checks = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let instance = eventually("three probes of the service", DEADLINE, || async {
        let instance = registry.instance("HelloService", running.url()).await?;
        let mut checks = checks.borrow_mut();
        checks.extend(instance.last_check_at.clone());
        (checks.len() >= 3).then_some(instance)
    })
    .await;
    (registry, running, instance)
}

#[tokio::test]
async fn the_service_is_back_after_the_registry_restarts_empty() {
    let (registry, running, _) = service_seen_probed().await;
    let forgotten_at = Instant::now();
    let registry = registry.restart_empty().await;
    assert!(
        registry.services().await.services.is_empty(),
        "the registry forgot everything"
    );
    back_within_two_intervals(&registry, running.url(), forgotten_at).await;
    running.stop().await;
}

#[tokio::test]
async fn the_service_is_back_after_the_registry_drops_it() {
    let (registry, running, instance) = service_seen_probed().await;

    // As a reaper would: the instance is gone from the catalog, and so are its probes.
    let forgotten_at = Instant::now();
    assert_eq!(
        registry
            .delete(&format!("/v1/instances/{}", instance.id))
            .await
            .status(),
        204
    );
    back_within_two_intervals(&registry, running.url(), forgotten_at).await;
    running.stop().await;
}

#[tokio::test]
async fn the_patch_endpoint_answers_bad_input_as_the_seed_does() {
    let registry = TestRegistry::spawn().await;
    let running = service(&registry.url, "HelloService", &[])
        .start(CancellationToken::new())
        .await
        .expect("starts");
    let http = reqwest::Client::new();
    let patch_url = format!("{}/services", running.url());
    let bad = http.post(&patch_url).body("{bad json").send().await.expect("POST");
    assert_eq!(bad.status(), 400);
    let error: rollcall_wire::ErrorBody = bad.json().await.expect("a JSON error");
    assert_eq!(error.error, "invalid_json");
    let get = http.get(&patch_url).send().await.expect("GET");
    assert_eq!(get.status(), 405);
    let unknown = http
        .get(format!("{}/nowhere", running.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        unknown.status(),
        404,
        "the service's own router answers everything else"
    );
    running.stop().await;
}

#[tokio::test]
async fn sigterm_stops_the_service_which_deregisters_once() {
    let registry = SeedRegistry::spawn().await;
    let running = service(&registry.url, "HelloService", &[])
        .handle_signals(true)
        .start(CancellationToken::new())
        .await
        .expect("starts");
    // The runtime's handler is installed once `start` returns: this process does not die.
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    tokio::time::timeout(DEADLINE, running.wait())
        .await
        .expect("SIGTERM stopped the service");
    let deletes = registry.requests().iter().filter(|r| r.method == "DELETE").count();
    assert_eq!(deletes, 1);
}

#[tokio::test]
async fn a_service_with_a_token_registers_where_tokens_are_required_and_deregisters_itself() {
    let registry = TestRegistry::spawn_with(|config| config.require_tokens = true).await;
    let without = service(&registry.url, "HelloService", &[])
        .fail_fast(true)
        .start(CancellationToken::new())
        .await
        .expect_err("no token");
    let StartError::Register(RegistryError::Refused { status, .. }) = &without else {
        panic!("expected a refusal, got {without}");
    };
    assert_eq!(*status, 401);

    let token = registry.token("hello", &["register:HelloService"]).await;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("hello.token");
    std::fs::write(&path, format!("{token}\n")).expect("write");
    let running = service(&registry.url, "HelloService", &[])
        .token_file(&path)
        .fail_fast(true)
        .start(CancellationToken::new())
        .await
        .expect("starts with its token");
    let url = running.url().to_owned();
    let admin = registry.admin_token().await;
    let listed = || async {
        let answer = reqwest::Client::new()
            .get(format!("{}/v1/services/HelloService", registry.url))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("GET");
        answer
            .json::<rollcall_wire::ServiceView>()
            .await
            .expect("JSON")
            .instances
    };
    assert_eq!(
        listed().await.iter().map(|i| i.url.as_str()).collect::<Vec<_>>(),
        [url.as_str()]
    );
    running.stop().await;
    assert!(listed().await.is_empty(), "its own token deregistered it");
}

#[tokio::test]
async fn a_missing_token_file_stops_the_start_and_names_the_file() {
    let registry = TestRegistry::spawn().await;
    let error = service(&registry.url, "HelloService", &[])
        .token_file("/nonexistent/hello.token")
        .start(CancellationToken::new())
        .await
        .expect_err("no file");
    assert!(matches!(error, StartError::ClientArgs(_)), "{error}");
    assert!(error.to_string().contains("/nonexistent/hello.token"), "{error}");
}

#[tokio::test]
async fn over_https_a_service_registers_with_its_authority_and_the_registry_probes_it() {
    let ca = rollcall_testkit::TestCa::new("rollcall-test");
    let (registry_cert, service_cert) = (ca.issue("registry"), ca.issue("service"));
    let data = tempfile::tempdir().expect("data dir");
    let mut config = rollcall_testkit::fast_config();
    config.data_dir = data.path().join("registry");
    config.tls.tls_cert = Some(registry_cert.cert);
    config.tls.tls_key = Some(registry_cert.key);
    // The registry calls the service over https too: it trusts the same authority.
    config.ca_file = Some(ca.ca_file.clone());
    let stop_registry = CancellationToken::new();
    let registry = rollcall_registry::start(config, stop_registry.clone())
        .await
        .expect("registry");

    let stranger = rollcall_testkit::TestCa::new("someone-else");
    let refused = service(registry.url(), "HelloService", &[])
        .ca_file(&stranger.ca_file)
        .fail_fast(true)
        .start(CancellationToken::new())
        .await
        .expect_err("the registry's certificate is not from the authority it trusts");
    assert!(
        matches!(refused, StartError::Register(RegistryError::Unreachable(_))),
        "{refused}"
    );

    let running = service(registry.url(), "HelloService", &[])
        .ca_file(&ca.ca_file)
        .tls(&service_cert.cert, &service_cert.key)
        .fail_fast(true)
        .start(CancellationToken::new())
        .await
        .expect("registers over https");
    assert!(running.url().starts_with("https://127.0.0.1:"), "{}", running.url());
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca.ca_file).expect("CA")).expect("PEM"))
        .build()
        .expect("client");
    let url = format!("{}/v1/services/HelloService", registry.url());
    eventually("the service to be probed over https and passing", DEADLINE, || async {
        let view: rollcall_wire::ServiceView = http.get(&url).send().await.ok()?.json().await.ok()?;
        let instance = view.instances.into_iter().find(|i| i.url == running.url())?;
        (instance.state == InstanceState::Passing && instance.last_check_at.is_some()).then_some(())
    })
    .await;
    running.stop().await;
    stop_registry.cancel();
    registry.wait().await.expect("registry stops");
}

#[tokio::test]
async fn a_registry_back_empty_has_the_service_again_within_a_second() {
    // Probes every 100 ms make the watchdog quick too; with probes every 30 s only the listing
    // can bring the service back this fast.
    let registry = TestRegistry::spawn_with(|config| config.health_interval = Duration::from_secs(30)).await;
    let running = service(&registry.url, "HelloService", &[])
        .expected_health_interval(Duration::from_secs(30))
        .start(CancellationToken::new())
        .await
        .expect("starts");
    let url = running.url().to_owned();
    let registry = registry.restart_empty().await;
    let answering = Instant::now();
    eventually("the service to register again", DEADLINE, || async {
        registry.instance("HelloService", &url).await
    })
    .await;
    assert!(
        answering.elapsed() < Duration::from_secs(1),
        "back after {:?}",
        answering.elapsed()
    );
    running.stop().await;
}

#[tokio::test]
async fn a_stopping_service_keeps_serving_until_its_dependents_let_go_of_it() {
    let registry = TestRegistry::spawn().await;
    let running = service(&registry.url, "HelloService", &[])
        .start(CancellationToken::new())
        .await
        .expect("starts");
    let url = running.url().to_owned();
    let dependent = caller_of_hello(&registry).await;
    let entry = rollcall_wire::PatchEntry {
        name: "HelloService".to_owned(),
        url: url.clone(),
    };
    dependent
        .wait_for_providers(&std::collections::BTreeSet::from([entry.clone()]))
        .await;

    // A caller that never retries, calling as fast as it can while the service stops.
    let calling = tokio::spawn({
        let url = url.clone();
        async move {
            let http = reqwest::Client::new();
            let mut last_answer = None;
            while let Ok(answer) = http.get(format!("{url}/hello")).send().await {
                if answer.status().is_success() {
                    last_answer = Some(Instant::now());
                }
            }
            last_answer
        }
    });
    running.stop().await;
    let last_answer = calling.await.expect("caller").expect("it answered");
    let told = dependent
        .arrival_of(&entry, true)
        .expect("the dependent was sent Removed");
    assert!(
        told < last_answer,
        "the service stopped serving before its dependent let go of it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_of_two_instances_under_load_fails_none_of_a_single_attempt_callers_requests() {
    let registry = TestRegistry::spawn().await;
    let first = service(&registry.url, "HelloService", &[])
        .start(CancellationToken::new())
        .await
        .expect("starts");
    let second = service(&registry.url, "HelloService", &[])
        .start(CancellationToken::new())
        .await
        .expect("starts");
    // The caller learns its providers from the registry's patches, like a Go service, and makes
    // one attempt per request at the next one.
    let dependent = caller_of_hello(&registry).await;
    let entry = |url: &str| rollcall_wire::PatchEntry {
        name: "HelloService".to_owned(),
        url: url.to_owned(),
    };
    let both = std::collections::BTreeSet::from([entry(first.url()), entry(second.url())]);
    dependent.wait_for_providers(&both).await;

    let dependent = std::sync::Arc::new(dependent);
    let load = rollcall_testkit::SteadyLoad::of_dependent(dependent.clone(), "HelloService", "/hello", Duration::ZERO);
    load.wait_for_more(100).await; // load before the stop
    first.stop().await;
    dependent
        .wait_for_providers(&std::collections::BTreeSet::from([entry(second.url())]))
        .await;
    load.wait_for_more(100).await; // and after it
    let tally = load.stop().await;
    assert!(tally.sent > 50, "the load ran: {tally:?}");
    assert_eq!(tally.failed, 0, "requests failed while an instance stopped: {tally:?}");
    second.stop().await;
}

/// A fake dependent of `HelloService` registered with `registry` as a Go service would.
async fn caller_of_hello(registry: &TestRegistry) -> rollcall_testkit::FakeService {
    let dependent = rollcall_testkit::FakeService::spawn("Caller", &["HelloService"]).await;
    assert_eq!(registry.register(&dependent.registration()).await.status(), 200);
    dependent
}
