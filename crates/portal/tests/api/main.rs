//! Black-box tests of the portal: in-process with a registry and real (or fake) grading
//! services on `127.0.0.1:0`, pages fetched over HTTP, and a real browser.

mod browser;
mod pages;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use rollcall_client::RunningService;
use rollcall_portal::PortalConfig;
use rollcall_testkit::{DEADLINE, FakeService, TestRegistry, body_of, eventually, fixture};
use tokio_util::sync::CancellationToken;

/// A portal and a grading service registered with one registry.
struct System {
    registry: TestRegistry,
    grades: Option<RunningService>,
    grades_data: tempfile::TempDir,
    portal: RunningService,
    http: reqwest::Client,
}

impl System {
    async fn spawn() -> Self {
        let registry = TestRegistry::spawn().await;
        let grades_data = tempfile::tempdir().expect("data dir");
        let grades = Some(start_grades(&registry, &grades_data).await);
        let portal = start_portal(&registry).await;
        Self {
            registry,
            grades,
            grades_data,
            portal,
            http: rollcall_testkit::http_client_without_redirects(),
        }
    }

    /// `GET {path}` on the portal: the status and the page.
    async fn page(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.portal.url()))
            .send()
            .await
            .expect("GET");
        (response.status().as_u16(), response.text().await.expect("page"))
    }

    /// Submits the add-grade form for student `id`.
    async fn submit(&self, id: u32, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}/students/{id}/grades", self.portal.url()))
            .form(form)
            .send()
            .await
            .expect("POST form")
    }
}

async fn start_grades(registry: &TestRegistry, data: &tempfile::TempDir) -> RunningService {
    let mut config =
        rollcall_grades::GradesConfig::new("127.0.0.1:0".parse().expect("address"), data.path().join("grades"));
    config.service.registry.clone_from(&registry.url);
    rollcall_grades::start(config, CancellationToken::new(), None)
        .await
        .expect("grades start")
}

async fn start_portal(registry: &TestRegistry) -> RunningService {
    let mut config = PortalConfig::new("127.0.0.1:0".parse().expect("address"));
    config.service.registry.clone_from(&registry.url);
    rollcall_portal::start(config, CancellationToken::new(), None)
        .await
        .expect("portal starts")
}

/// A fake grading service answering the captured Go student list, counting its requests.
async fn counting_grading_service(registry: &TestRegistry) -> (FakeService, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let routes = Router::new().route(
        "/students",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                let body = body_of(&fixture("go-wire/grades-get-students-response.http")).to_vec();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let service = FakeService::spawn_with_routes("GradingService", &["LogService"], routes).await;
    assert_eq!(registry.register(&service.registration()).await.status(), 200);
    (service, hits)
}

/// Waits until the portal's page at `path` answers `status`.
async fn wait_for_status(system: &System, path: &str, status: u16) -> String {
    eventually(&format!("{path} to answer {status}"), DEADLINE, || async {
        let (got, page) = system.page(path).await;
        (got == status).then_some(page)
    })
    .await
}
