//! An in-process registry on `127.0.0.1:0` with a temporary data directory, and domain-named
//! helpers to talk to it over real HTTP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rollcall_registry::{RegistryConfig, RunError};
use rollcall_wire::{InstanceState, InstanceView, Registration, ServiceView, ServicesView};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{DEADLINE, eventually};

/// A configuration with fast health checks, so that tests see state changes in well under a
/// second: probes every 100 ms, 100 ms timeout, 3 tries, 50 ms between retries.
pub fn fast_config() -> RegistryConfig {
    let mut config = RegistryConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), std::env::temp_dir());
    config.health_interval = Duration::from_millis(100);
    config.health_timeout = Duration::from_millis(100);
    config.health_tries = 3;
    config.health_retry_delay = Duration::from_millis(50);
    config.notify_timeout = Duration::from_secs(1);
    // Tests that count a log service's records would count the audit trail too; the tests of
    // the audit trail turn it back on.
    config.audit_shipping = false;
    config
}

/// A registry running in this process.
#[derive(Debug)]
pub struct TestRegistry {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The seed endpoint, `{url}/services`.
    pub services_url: String,
    address: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), RunError>>>,
    http: reqwest::Client,
    config: RegistryConfig,
    data_dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts a registry with [`fast_config`].
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts a registry with [`fast_config`] changed by `configure`.
    pub async fn spawn_with(configure: impl FnOnce(&mut RegistryConfig)) -> Self {
        Self::spawn_at(SocketAddr::from(([127, 0, 0, 1], 0)), configure).await
    }

    /// Starts a registry on `address` (one a service was told to use before it existed).
    pub async fn spawn_at(address: SocketAddr, configure: impl FnOnce(&mut RegistryConfig)) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data dir");
        let mut config = fast_config();
        config.data_dir = data_dir.path().join("registry");
        configure(&mut config);
        Self::start(config, data_dir, address).await
    }

    /// Stops this registry gracefully and starts a new one on the same data directory and the
    /// same port, as an operator's restart does.
    pub async fn restart(mut self) -> Self {
        self.stop_in_place().await;
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("temporary data dir"));
        Self::start(self.config.clone(), data_dir, self.address).await
    }

    /// Stops this registry and starts a new one on the same port with an empty data directory:
    /// a registry that lost everything it knew.
    pub async fn restart_empty(mut self) -> Self {
        self.stop_in_place().await;
        let data_dir = tempfile::tempdir().expect("temporary data dir");
        let mut config = self.config.clone();
        config.data_dir = data_dir.path().join("registry");
        Self::start(config, data_dir, self.address).await
    }

    async fn stop_in_place(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("registry task").expect("registry run");
        }
    }

    async fn start(config: RegistryConfig, data_dir: tempfile::TempDir, address: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(address).await.expect("bind registry");
        let address = listener.local_addr().expect("registry address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(rollcall_registry::run(listener, config.clone(), shutdown.clone()));
        let url = format!("http://{address}");
        let http = crate::http_client();
        // Serving once its catalog and tokens are open: what it logs while starting is over.
        let description = format!("{url}/v1/openapi.json");
        eventually("the registry to serve", DEADLINE, || async {
            let answer = http.get(&description).send().await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
        Self {
            services_url: format!("{url}/services"),
            url,
            address,
            shutdown,
            task: Some(task),
            http,
            config,
            data_dir,
        }
    }

    /// The admin token the registry wrote to its data directory on its first start (waiting
    /// for the registry to have started).
    pub async fn admin_token(&self) -> String {
        let path = self.config.data_dir.join("admin.token");
        eventually("the admin token to be written", DEADLINE, || async {
            std::fs::read_to_string(&path).ok().map(|text| text.trim().to_owned())
        })
        .await
    }

    /// A new token named `name` with `scopes` (`"read"`, `"register:grades*"`, ...), issued
    /// with the admin token.
    pub async fn token(&self, name: &str, scopes: &[&str]) -> String {
        let response = self
            .http
            .post(format!("{}/v1/tokens", self.url))
            .bearer_auth(self.admin_token().await)
            .json(&serde_json::json!({ "name": name, "scopes": scopes }))
            .send()
            .await
            .expect("POST /v1/tokens");
        assert_eq!(response.status(), 201, "token {name} {scopes:?}");
        let created: rollcall_wire::CreatedToken = response.json().await.expect("token JSON");
        created.token
    }

    /// `POST /services` with `registration` as JSON, as a Go client sends it.
    pub async fn register(&self, registration: &Registration) -> reqwest::Response {
        let body = serde_json::to_vec(registration).expect("encode");
        self.register_raw(body).await
    }

    /// Starts `POST /services` with `registration` in a task of its own, for tests that look at
    /// the registry while the registration is still waiting for its callback.
    pub fn register_in_background(
        &self,
        registration: &Registration,
    ) -> JoinHandle<reqwest::Result<reqwest::Response>> {
        let request = self.http.post(&self.services_url).json(registration).send();
        tokio::spawn(request)
    }

    /// `POST /services` with exactly `body`.
    pub async fn register_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(&self.services_url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /services")
    }

    /// `DELETE /services` with the ServiceURL as a text body.
    pub async fn deregister(&self, service_url: &str) -> reqwest::Response {
        self.http
            .delete(&self.services_url)
            .header("content-type", "text/plain")
            .body(service_url.to_owned())
            .send()
            .await
            .expect("DELETE /services")
    }

    /// `POST /v1/instances` with `body` as JSON.
    pub async fn register_instance(&self, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/instances", self.url))
            .json(body)
            .send()
            .await
            .expect("POST /v1/instances")
    }

    /// Registers `registration` through `POST /v1/instances`: the instance as the answer lists it.
    pub async fn register_v1(&self, registration: &Registration) -> InstanceView {
        self.register_instance(&serde_json::to_value(registration).expect("encode"))
            .await
            .json()
            .await
            .expect("the instance")
    }

    /// `DELETE {path}` on the registry.
    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http
            .delete(format!("{}{path}", self.url))
            .send()
            .await
            .expect("DELETE")
    }

    /// `POST {path}` with no body on the registry (`/v1/instances/{id}/drain`, say).
    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .send()
            .await
            .expect("POST")
    }

    /// `GET {path}` on the registry.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).send().await.expect("GET")
    }

    /// The value of one sample of `GET /metrics`, such as `rollcall_probers`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        crate::metric(&text, name).unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// `GET /v1/services`.
    pub async fn services(&self) -> ServicesView {
        self.get("/v1/services").await.json().await.expect("services JSON")
    }

    /// `GET /v1/services/{name}`.
    pub async fn service(&self, name: &str) -> ServiceView {
        self.get(&format!("/v1/services/{name}"))
            .await
            .json()
            .await
            .expect("service JSON")
    }

    /// The listed instance with ServiceURL `url` of service `name`.
    pub async fn instance(&self, name: &str, url: &str) -> Option<InstanceView> {
        self.service(name).await.instances.into_iter().find(|i| i.url == url)
    }

    /// Waits until the instance `url` of `name` is listed in `state`, and returns it.
    pub async fn wait_for_state(&self, name: &str, url: &str, state: InstanceState) -> InstanceView {
        eventually(&format!("{url} to be {}", state.as_str()), DEADLINE, || async {
            self.instance(name, url).await.filter(|i| i.state == state)
        })
        .await
    }

    /// Stops the registry and returns how long it took to stop.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.stop_in_place().await;
        started.elapsed()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
