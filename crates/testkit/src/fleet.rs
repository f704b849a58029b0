//! Many cheap fake instances behind one listener, for load tests and benchmarks: instance `n`
//! lives at `{url}/i/{n}`, and its `/heartbeat` and `/services` both answer 200.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::any;
use rollcall_wire::Registration;
use tokio_util::sync::CancellationToken;

/// One HTTP server standing in for any number of healthy instances.
#[derive(Debug)]
pub struct FakeFleet {
    /// The server's base URL.
    pub url: String,
    heartbeats: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl FakeFleet {
    /// Starts the server on `127.0.0.1:0`.
    pub async fn spawn() -> Self {
        let heartbeats = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&heartbeats);
        let app = Router::new().route(
            "/i/{n}/{endpoint}",
            any(move |Path((_, endpoint)): Path<(String, String)>| {
                if endpoint == "heartbeat" {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                async { StatusCode::OK }
            }),
        );
        let stop = CancellationToken::new();
        let url = crate::serve(app, stop.clone()).await;
        Self { url, heartbeats, stop }
    }

    /// Heartbeat probes the fleet has answered, in all.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats.load(Ordering::Relaxed)
    }

    /// The registration of instance `n`, providing `service`.
    pub fn registration(&self, n: usize, service: &str) -> Registration {
        let url = format!("{}/i/{n}", self.url);
        Registration {
            service_name: service.to_owned(),
            service_update_url: format!("{url}/services"),
            heartbeat_url: format!("{url}/heartbeat"),
            service_url: url,
            required_services: Vec::new(),
        }
    }
}

impl Drop for FakeFleet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
