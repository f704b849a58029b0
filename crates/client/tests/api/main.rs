//! Black-box tests of rollcall-client: services built with the runtime, against an in-process
//! rollcall registry or a seed-only one, over real HTTP on loopback.

mod config;
mod failover;
mod lifecycle;
mod logs;
mod providers;
mod seed;
mod ttl;

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use rollcall_client::{Service, ServiceBuilder};

/// A service for tests: no signal handling (the token stops it), a short shutdown deadline,
/// and the registry's test health interval as its first guess.
fn service(registry: &str, name: &str, required: &[&str]) -> ServiceBuilder {
    Service::builder(name)
        .requires(required.iter().copied())
        .registry(registry)
        .router(Router::new().route("/hello", get(|| async { "hello" })))
        .handle_signals(false)
        .shutdown_deadline(Duration::from_secs(5))
        .expected_health_interval(Duration::from_millis(100))
}

/// A writer tests can read back: where the log shipper's fallback goes.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
