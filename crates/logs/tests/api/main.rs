//! Black-box tests of the log service: in-process on `127.0.0.1:0`, registered with an
//! in-process registry, over real HTTP; captured shipper requests replayed byte for byte.

mod access;
mod durability;
mod ingest;
mod logql;
mod query;
mod shipping;
mod tail;

use rollcall_logs::{LogService, LogsConfig};
use rollcall_testkit::TestRegistry;
use rollcall_wire::RecordPage;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A log service with its registry and data directory.
struct TestLogs {
    url: String,
    address: String,
    registry: TestRegistry,
    data_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    service: Option<LogService>,
    http: reqwest::Client,
}

impl TestLogs {
    async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    async fn spawn_with(configure: impl FnOnce(&mut LogsConfig)) -> Self {
        let registry = TestRegistry::spawn().await;
        let data_dir = tempfile::tempdir().expect("data dir");
        let mut config = config(&registry, &data_dir);
        configure(&mut config);
        Self::start(registry, data_dir, config).await
    }

    async fn start(registry: TestRegistry, data_dir: tempfile::TempDir, config: LogsConfig) -> Self {
        let shutdown = CancellationToken::new();
        let service = rollcall_logs::start(config, shutdown.clone(), None)
            .await
            .expect("log service starts");
        Self {
            url: service.url().to_owned(),
            address: service.local_addr().to_string(),
            registry,
            data_dir,
            shutdown,
            service: Some(service),
            http: rollcall_testkit::http_client(),
        }
    }

    /// Stops it gracefully and starts it again on the same data directory.
    async fn restart(mut self, configure: impl FnOnce(&mut LogsConfig)) -> Self {
        self.stop().await;
        let mut config = config(&self.registry, &self.data_dir);
        configure(&mut config);
        let (registry, data_dir) = (self.registry, self.data_dir);
        Self::start(registry, data_dir, config).await
    }

    async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(service) = self.service.take() {
            service.wait().await;
        }
    }

    /// `POST /v1/records` with `records` as a JSON array.
    async fn post_records(&self, records: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/records", self.url))
            .json(records)
            .send()
            .await
            .expect("POST /v1/records")
    }

    /// `GET /v1/records?{query}`.
    async fn query(&self, query: &str) -> RecordPage {
        let response = self
            .http
            .get(format!("{}/v1/records?{query}", self.url))
            .send()
            .await
            .expect("GET /v1/records");
        assert_eq!(response.status(), 200, "query {query}");
        response.json().await.expect("a page")
    }

    async fn messages(&self, query: &str) -> Vec<String> {
        self.query(query).await.records.into_iter().map(|r| r.message).collect()
    }

    /// The value of one metric line, e.g. `rollcall_logs_segments`.
    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics");
        rollcall_testkit::metric(&text, name).unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }
}

fn config(registry: &TestRegistry, data_dir: &tempfile::TempDir) -> LogsConfig {
    let mut config = LogsConfig::new("127.0.0.1:0".parse().expect("address"), data_dir.path().join("logs"));
    config.service.registry.clone_from(&registry.url);
    config
}

/// A record for the native API.
fn record(service: &str, level: &str, message: &str) -> serde_json::Value {
    json!({"service": service, "level": level, "message": message})
}
