//! Black-box tests of the grading service: in-process on `127.0.0.1:0`, registered with an
//! in-process registry, answering the captured Go requests as the Go service did (bugs fixed).

mod students;

use rollcall_client::RunningService;
use rollcall_grades::GradesConfig;
use rollcall_testkit::TestRegistry;
use tokio_util::sync::CancellationToken;

/// A grading service with its registry and data directory.
struct TestGrades {
    url: String,
    address: String,
    registry: TestRegistry,
    data_dir: tempfile::TempDir,
    service: RunningService,
    http: reqwest::Client,
}

impl TestGrades {
    async fn spawn() -> Self {
        let registry = TestRegistry::spawn().await;
        Self::start(registry, tempfile::tempdir().expect("data dir")).await
    }

    async fn start(registry: TestRegistry, data_dir: tempfile::TempDir) -> Self {
        let mut config = GradesConfig::new("127.0.0.1:0".parse().expect("address"), data_dir.path().join("grades"));
        config.service.registry.clone_from(&registry.url);
        let service = rollcall_grades::start(config, CancellationToken::new(), None)
            .await
            .expect("grading service starts");
        Self {
            url: service.url().to_owned(),
            address: service.local_addr().to_string(),
            registry,
            data_dir,
            service,
            http: rollcall_testkit::http_client(),
        }
    }

    /// Stops it and starts it again on the same data directory.
    async fn restart(self) -> Self {
        self.service.stop().await;
        Self::start(self.registry, self.data_dir).await
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).send().await.expect("GET")
    }

    /// `POST /students/{id}/grades` with `body` as it is.
    async fn add_grade(&self, student: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/students/{student}/grades", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST grade")
    }
}
