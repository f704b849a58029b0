//! Test helpers for rollcall: spawn the registry in-process on `127.0.0.1:0`, stand up fake
//! services whose heartbeat and patch endpoints a test controls (and a fake log service, and a
//! registry that speaks only the seed protocol as the Go original does), start real etcd
//! clusters and cut connections to them through a proxy, replay captured wire
//! fixtures, and wait for conditions with a deadline instead of sleeping.
//!
//! Helpers are named after the domain (`registry.register(..)`, `service.providers()`) so that
//! tests read like the behaviour they check.

pub mod bench;
mod browser;
mod certs;
mod counting;
mod etcd;
mod fake_service;
mod fleet;
mod log_sink;
mod process;
mod proxy;
mod raw_http;
mod registry;
mod rolling;
mod seed_registry;
mod sse;
pub mod wrk;

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use browser::Browser;
pub use certs::{ServerCert, TestCa};
pub use counting::CountingListener;
pub use etcd::EtcdCluster;
pub use fake_service::{FakeService, HeartbeatMode, PatchMode};
pub use fleet::FakeFleet;
pub use log_sink::LogSink;
pub use process::{ServerProcess, cpu_and_rss};
pub use proxy::TcpProxy;
pub use raw_http::{RawResponse, body_of, fixture, replace_body, send_raw};
pub use registry::{TestRegistry, fast_config};
pub use rolling::{SteadyLoad, Tally, roll};
pub use seed_registry::{SeedRegistry, SeedRequest};
pub use sse::{SseClient, SseMessage};

/// How long tests wait for something that should happen "soon" before they fail.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// `GET url` with [`http_client`], read as JSON: `None` when it cannot be (nobody answers yet,
/// or the answer is not JSON of that shape), for tests that poll with [`eventually`].
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Option<T> {
    http_client().get(url).send().await.ok()?.json().await.ok()
}

/// The HTTP client tests use: no proxy (everything is on loopback), every request bounded by
/// [`DEADLINE`].
pub fn http_client() -> reqwest::Client {
    http_client_builder().build().expect("client")
}

/// Like [`http_client`], but a redirect is answered to the test instead of followed, for pages
/// that redirect.
pub fn http_client_without_redirects() -> reqwest::Client {
    http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn http_client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().no_proxy().timeout(DEADLINE)
}

/// Polls `check` every 10 ms until it yields `Some`, and returns that; panics naming `what`
/// once `deadline` has passed.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Watches an instance through `read` until its registry recorded a check (a probe or a
/// renewal) `span` after the watch began, asserting at every look that it is listed and
/// passing: an instance kept alive all along. Fails after [`DEADLINE`] plus `span`.
pub async fn passing_throughout<F, Fut>(span: Duration, mut read: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<rollcall_wire::InstanceView>>,
{
    let since = std::time::SystemTime::now() + span;
    eventually("checks recorded over the whole span", DEADLINE + span, || {
        let look = read();
        async move {
            let instance = look.await.expect("the instance is listed");
            assert_eq!(instance.state, rollcall_wire::InstanceState::Passing, "{instance:?}");
            let last = humantime::parse_rfc3339_weak(instance.last_check_at.as_deref()?).ok()?;
            (last >= since).then_some(())
        }
    })
    .await;
}

/// `token` with its last digit changed: the right id and shape, a wrong secret.
pub fn forged_token(token: &str) -> String {
    let mut forged = token.to_owned();
    let last = forged.pop().unwrap_or('0');
    forged.push(if last == '0' { '1' } else { '0' });
    forged
}

/// The value of the sample `name` (with its labels, e.g. `x_total{format="seed"}`) in a
/// Prometheus or OpenMetrics text exposition, if it is there.
pub fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The median and the 99th percentile of `samples` (sorted in place), as benchmarks report them.
///
/// Panics on an empty slice.
pub fn median_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = (q * samples.len() as f64).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1]
    };
    (at(0.5), at(0.99))
}

/// Serves `app` on `127.0.0.1:0` until `stop` is cancelled, and returns its base URL
/// (`http://127.0.0.1:PORT`).
pub async fn serve(app: axum::Router, stop: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .expect("serve");
    });
    url
}

/// The sections a benchmark run asks for: `cargo bench ... -- fan-out` names some (a part of a
/// section's name is enough); naming none asks for all.
pub fn wanted_sections() -> impl Fn(&str) -> bool {
    let named: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    move |section| named.is_empty() || named.iter().any(|n| section.contains(n.as_str()))
}

/// A URL on loopback where nothing listens: connections to it are refused.
pub async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}")
}
