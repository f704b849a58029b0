//! In-crate tests of the whole registry over real HTTP, for what the API tests cannot set up:
//! a catalog store whose commits are held, or fail; a name that resolves differently later.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::RegistryConfig;
use crate::metrics::Metrics;
use crate::outbound::{Resolve, SystemResolver};
use crate::store::{CatalogStore, Durable, RedbStore, StoreError, StoreFuture, StoreOp};

/// A store that answers every write only once released, or fails every write.
#[derive(Debug)]
struct Gated {
    inner: RedbStore,
    released: Arc<Notify>,
    fail: bool,
}

impl CatalogStore for Gated {
    fn write(&self, ops: Vec<StoreOp>) -> Durable {
        let written = self.inner.write(ops);
        let (answer, durable) = tokio::sync::oneshot::channel();
        let (released, fail) = (Arc::clone(&self.released), self.fail);
        tokio::spawn(async move {
            let result = written.await.unwrap_or_else(|_| Err(StoreError::closed()));
            if fail {
                let _ = answer.send(Err(StoreError::new(
                    "cannot commit",
                    "I/O error: No space left on device",
                )));
                return;
            }
            released.notified().await;
            let _ = answer.send(result);
        });
        durable
    }

    fn close(&self) -> StoreFuture<'_> {
        self.inner.close()
    }
}

/// A registry serving over `store`, and what stops it.
struct Running {
    url: String,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<Result<(), crate::RunError>>,
    _data: tempfile::TempDir,
}

/// A registry whose commits wait for `gate` (or fail), probing once an hour.
async fn serve(gate: Arc<Notify>, fail: bool) -> Running {
    serve_with(Some((gate, fail)), Duration::from_secs(3600), Arc::new(SystemResolver)).await
}

/// A registry whose commits wait for the gate (or fail) when one is given, probing every
/// `health_interval`, resolving names through `resolver`.
async fn serve_with(
    gate: Option<(Arc<Notify>, bool)>,
    health_interval: Duration,
    resolver: Arc<dyn Resolve>,
) -> Running {
    let data = tempfile::tempdir().expect("dir");
    let metrics = Metrics::default();
    let (inner, _) = RedbStore::open(data.path(), metrics.commit_seconds.clone()).expect("open");
    let (config_store, documents) =
        crate::store::ReleaseStore::open(data.path(), metrics.config_commit_seconds.clone()).expect("open");
    let store: Arc<dyn CatalogStore> = match gate {
        Some((released, fail)) => Arc::new(Gated { inner, released, fail }),
        None => Arc::new(inner),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let mut config = RegistryConfig::new("127.0.0.1:0".parse().expect("address"), data.path().to_owned());
    config.health_interval = health_interval;
    config.health_retry_delay = health_interval;
    let shutdown = CancellationToken::new();
    let (tokens, _) = crate::auth::Tokens::open(data.path()).expect("tokens");
    let stores = crate::Stores {
        catalog: store,
        stored: Vec::new(),
        feed: None,
        published: crate::published::Published::new(config_store, documents, None),
        tokens_shared: None,
    };
    let me = crate::nodes::NodeInfo::new(&url);
    let served = tokio::spawn(crate::serve(
        listener,
        config,
        stores,
        crate::nodes::Nodes::alone(me),
        tokens,
        metrics,
        resolver,
        (shutdown.clone(), None),
    ));
    Running {
        url,
        shutdown,
        served,
        _data: data,
    }
}

fn registration(url: &str) -> serde_json::Value {
    serde_json::json!({
        "ServiceName": "A", "ServiceURL": url, "RequiredServices": [],
        "ServiceUpdateURL": format!("{url}/services"), "HeartbeatURL": format!("{url}/heartbeat"),
        "Metadata": {},
    })
}

#[tokio::test]
async fn no_registration_is_acknowledged_while_its_commit_is_held() {
    let gate = Arc::new(Notify::new());
    let registry = serve(Arc::clone(&gate), false).await;
    let http = reqwest::Client::new();
    let request = http
        .post(format!("{}/v1/instances", registry.url))
        .json(&registration("http://127.0.0.1:9/a"))
        .send();
    let mut request = std::pin::pin!(request);
    // Held: no answer comes, however long it is given.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut request).await;
    assert!(early.is_err(), "answered before the commit: {early:?}");
    gate.notify_one();
    let response = request.await.expect("answered once released");
    assert_eq!(response.status(), 201);
    registry.shutdown.cancel();
    registry.served.await.expect("joined").expect("stopped cleanly");
}

#[tokio::test]
async fn a_failed_commit_answers_503_without_its_cause() {
    let registry = serve(Arc::new(Notify::new()), true).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/instances", registry.url))
        .json(&registration("http://127.0.0.1:9/a"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 503);
    let error: rollcall_wire::ErrorBody = response.json().await.expect("a JSON error");
    assert_eq!(error.error, "storage_unavailable");
    assert_eq!(
        error.message,
        "the registry could not store its catalog durably (on disk, or in etcd); the change is not acknowledged"
    );
    registry.shutdown.cancel();
    registry.served.await.expect("joined").expect("stopped cleanly");
}

#[tokio::test]
async fn a_name_rebound_after_registration_is_refused_at_every_probe_and_never_called() {
    let target = rollcall_testkit::CountingListener::start().await;
    // The registration's two URLs are checked with the first answers; then the name moves to
    // an address Linux connects to loopback through.
    let resolver = Arc::new(crate::outbound::tests::Rebinding::new(
        "rebinding.test",
        ["127.0.0.1", "127.0.0.1", "0.0.0.0"],
    ));
    let registry = serve_with(None, Duration::from_millis(50), resolver).await;
    let base = format!("http://rebinding.test:{}", target.port());
    let response = reqwest::Client::new()
        .post(format!("{}/v1/instances", registry.url))
        .json(&registration(&base))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 201);
    let view: rollcall_wire::InstanceView = response.json().await.expect("the instance");
    let listed = rollcall_testkit::eventually("the probe to be refused", rollcall_testkit::DEADLINE, || async {
        let instance: rollcall_wire::InstanceView = reqwest::get(format!("{}/v1/instances/{}", registry.url, view.id))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (instance.consecutive_failures >= 2).then_some(instance)
    })
    .await;
    let error = listed.last_error.unwrap_or_default();
    assert!(error.contains("refused by the address policy"), "{error}");
    assert_eq!(target.connections(), 0, "the rebound name was connected to");
    registry.shutdown.cancel();
    registry.served.await.expect("joined").expect("stopped cleanly");
}
