//! Central configuration in a service: [`ConfigClient`] keeps every document the service reads
//! (its own and the shared ones of its namespace) up to date, and [`ConfigClient::value`] hands
//! one out as the service's own type, with each new value as it comes.
//!
//! How it stays current:
//! - it holds the registry's stream of the service's documents (`GET
//!   /v1/config/{namespace}/{service}`, server-sent events), reconnecting with backoff; every
//!   connection starts with the latest release of each document, so nothing is missed across a
//!   disconnection;
//! - every 60 s it asks, per document, whether a newer revision exists (`If-None-Match`, a 304
//!   when not): a release the stream should have brought and did not is fetched, applied, and
//!   reported to the registry as a missed push;
//! - it starts from the cache (`cache`: the last good release of each document, mode 0600) at
//!   once, so a service starts with its configuration while the registry is away, marked
//!   [stale](ConfigClient::is_stale) until the stream is back.
//!
//! A new release is decoded into the service's type (`decode`) and checked by the service's own
//! check; one that fails either is rejected (the registry is told why) and the value in force
//! stays. Each outcome is reported (`POST .../acks`) once the client knows its instance id
//! ([`ConfigClient::report_as`]).

mod cache;
mod decode;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use rollcall_wire::{Ack, AckStatus, ReleaseEvent};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::cache::Cache;
use crate::registry_api::RegistryApi;

/// How often each document's revision is checked, in case a push was missed.
pub const REVISION_CHECK: Duration = Duration::from_secs(60);

/// A document as the client holds it: its latest release and whether it came by the periodic
/// check rather than the push.
#[derive(Debug, Clone)]
struct Held {
    release: Arc<ReleaseEvent>,
    missed_push: bool,
}

/// The documents a service reads, kept current from the registry.
#[derive(Debug, Clone)]
pub struct ConfigClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// The registries (one, or several nodes), with their failover.
    registry: RegistryApi,
    namespace: String,
    service: String,
    cache: Option<Cache>,
    /// Document name → its latest release.
    documents: Mutex<HashMap<String, watch::Sender<Option<Held>>>>,
    /// True until the stream delivered the registry's current documents.
    stale: watch::Sender<bool>,
    /// The instance id reports are made as.
    instance: Mutex<Option<String>>,
    /// Document name → what became of its latest release, to report once the id is known.
    outcomes: Mutex<HashMap<String, (Arc<ReleaseEvent>, Ack)>>,
    /// Wakes the stream to reconnect as the instance (a rollout's gray set is per instance).
    reconnect: tokio::sync::Notify,
}

impl ConfigClient {
    /// Starts keeping `service`'s documents in `namespace` current from the registry at `base`
    /// (its base URL), through `http` (which carries the token), until `shutdown`. With
    /// `cache_dir`, documents start from the cache at once and every applied release is kept
    /// there. Returns at once: nothing here waits for the registry.
    pub fn start(
        http: reqwest::Client,
        base: &str,
        namespace: &str,
        service: &str,
        cache_dir: Option<PathBuf>,
        shutdown: CancellationToken,
    ) -> Self {
        Self::start_checking_every(http, base, namespace, service, cache_dir, REVISION_CHECK, shutdown)
    }

    /// [`ConfigClient::start`], checking each document's revision every `check` instead of every
    /// [`REVISION_CHECK`].
    pub fn start_checking_every(
        http: reqwest::Client,
        base: &str,
        namespace: &str,
        service: &str,
        cache_dir: Option<PathBuf>,
        check: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let cache = cache_dir.map(|dir| Cache::new(&dir, namespace, service));
        let inner = Arc::new(Inner {
            registry: RegistryApi::new(http.clone(), base),
            http,
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            cache,
            documents: Mutex::new(HashMap::new()),
            stale: watch::Sender::new(true),
            instance: Mutex::new(None),
            outcomes: Mutex::new(HashMap::new()),
            reconnect: tokio::sync::Notify::new(),
        });
        if let Some(cache) = &inner.cache {
            for release in cache.read_all() {
                inner.offer(release, false);
            }
        }
        tokio::spawn(follow(Arc::clone(&inner), check, shutdown));
        Self { inner }
    }

    /// True while the documents are the cache's (or the last ones seen), not confirmed by the
    /// registry's stream.
    pub fn is_stale(&self) -> bool {
        *self.inner.stale.borrow()
    }

    /// Reports what happens to each release as instance `id` (its `/v1` id) from now on, and
    /// what became of the releases in force when it changes.
    pub fn report_as(&self, id: impl Into<String>) {
        let id = id.into();
        let changed = lock(&self.inner.instance)
            .replace(id.clone())
            .is_none_or(|before| before != id);
        if !changed {
            return;
        }
        // The stream says what this instance is to run once it knows which instance asks.
        self.inner.reconnect.notify_one();
        let outcomes: Vec<_> = lock(&self.inner.outcomes).values().cloned().collect();
        for (release, ack) in outcomes {
            let ack = Ack {
                instance: id.clone(),
                ..ack
            };
            tokio::spawn(Arc::clone(&self.inner).report(release, ack));
        }
    }

    /// Document `name` as a `T`: decoded from each release in its format and checked by
    /// `check`; a release that fails either is rejected and the value in force stays.
    pub fn value<T, C>(&self, name: &str, check: C) -> Watched<T>
    where
        T: DeserializeOwned + Send + Sync + 'static,
        C: Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    {
        let mut releases = self.inner.document(name);
        let (sender, mut receiver) = watch::channel(None);
        let inner = Arc::clone(&self.inner);
        // Decode what is held now at once, so that a value from the cache is there on return.
        let first = releases.borrow_and_update().clone();
        if let Some(held) = first {
            inner.apply(&held, &check, &sender);
        }
        // What is there on return is `current()`; `changed()` waits for the next one.
        receiver.mark_unchanged();
        tokio::spawn(async move {
            while releases.changed().await.is_ok() {
                let held = releases.borrow_and_update().clone();
                if let Some(held) = held {
                    inner.apply(&held, &check, &sender);
                }
                if sender.is_closed() {
                    return;
                }
            }
        });
        Watched { receiver }
    }
}

/// A configuration value in force, and each new one.
#[derive(Debug, Clone)]
pub struct Watched<T> {
    receiver: watch::Receiver<Option<Arc<T>>>,
}

impl<T> Watched<T> {
    /// The value in force, if any release was applied yet.
    pub fn current(&self) -> Option<Arc<T>> {
        self.receiver.borrow().clone()
    }

    /// Waits for the next value applied; `None` once the client stopped.
    pub async fn changed(&mut self) -> Option<Arc<T>> {
        self.receiver.changed().await.ok()?;
        self.receiver.borrow_and_update().clone()
    }
}

impl Inner {
    /// The latest release of document `name`, and each after it.
    fn document(&self, name: &str) -> watch::Receiver<Option<Held>> {
        lock(&self.documents)
            .entry(name.to_owned())
            .or_insert_with(|| watch::Sender::new(None))
            .subscribe()
    }

    /// Takes `release` as its document's unless a newer (or the same) one is held, or whatever
    /// it is when `missed_push` is false and it came from the stream, which says what this
    /// instance is to run (an older release, when a rollout was rolled back). The service's own
    /// document of a name overrides the shared one of that name.
    fn offer(&self, release: ReleaseEvent, missed_push: bool) {
        let mut documents = lock(&self.documents);
        let document = documents
            .entry(release.release.name.clone())
            .or_insert_with(|| watch::Sender::new(None));
        let own = |r: &rollcall_wire::ReleaseView| r.service == self.service;
        document.send_if_modified(|held| {
            let newer = held.as_ref().is_none_or(|h| {
                let (held, offered) = (&h.release.release, &release.release);
                match (own(held), own(offered)) {
                    (true, false) => false,
                    (false, true) => true,
                    _ if missed_push => held.revision < offered.revision,
                    _ => held.revision != offered.revision,
                }
            });
            if newer {
                *held = Some(Held {
                    release: Arc::new(release),
                    missed_push,
                });
            }
            newer
        });
    }

    /// Decodes and checks `held` as a `T`; sends it on when it passes, keeps it in the cache,
    /// and reports either way.
    fn apply<T: DeserializeOwned>(
        self: &Arc<Self>,
        held: &Held,
        check: &(impl Fn(&T) -> Result<(), String> + ?Sized),
        sender: &watch::Sender<Option<Arc<T>>>,
    ) {
        let release = &held.release;
        let decoded = decode::decode::<T>(release.release.format, &release.content).and_then(|value| {
            check(&value)?;
            Ok(value)
        });
        let (status, reason) = match decoded {
            Ok(value) => {
                sender.send_replace(Some(Arc::new(value)));
                if let Some(cache) = &self.cache
                    && let Err(error) = cache.write(release)
                {
                    tracing::warn!(%error, "cannot cache a configuration release");
                }
                (AckStatus::Applied, String::new())
            }
            Err(reason) => {
                tracing::warn!(
                    document = %release.release.name,
                    revision = release.release.revision,
                    %reason,
                    "configuration release rejected; the one before stays in force"
                );
                (AckStatus::Rejected, reason)
            }
        };
        let ack = Ack {
            instance: lock(&self.instance).clone().unwrap_or_default(),
            revision: release.release.revision,
            status,
            reason,
            missed_push: held.missed_push,
        };
        lock(&self.outcomes).insert(release.release.name.clone(), (Arc::clone(release), ack.clone()));
        if !ack.instance.is_empty() {
            tokio::spawn(Arc::clone(self).report(Arc::clone(release), ack));
        }
    }

    /// Tells the registry what became of `release` (once; a report lost is seen as waiting).
    async fn report(self: Arc<Self>, release: Arc<ReleaseEvent>, ack: Ack) {
        let r = &release.release;
        let path = format!("/v1/config/{}/{}/{}/acks", r.namespace, r.service, r.name);
        let sent = self
            .registry
            .send(|base| self.http.post(format!("{base}{path}")).json(&ack).timeout(CALL_TIMEOUT))
            .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "cannot report a configuration release");
        }
    }

    /// Asks whether each held document has a newer release than the one held, and takes it.
    async fn check_revisions(&self) {
        let held: Vec<Arc<ReleaseEvent>> = lock(&self.documents)
            .values()
            .filter_map(|d| d.borrow().as_ref().map(|h| Arc::clone(&h.release)))
            .collect();
        for release in held {
            let r = &release.release;
            let path = format!("/v1/config/{}/{}/{}", r.namespace, r.service, r.name);
            let instance = lock(&self.instance).clone();
            let answer = self
                .registry
                .send(|base| {
                    let mut request = self.http.get(format!("{base}{path}"));
                    if let Some(instance) = &instance {
                        request = request.query(&[("instance", instance)]);
                    }
                    request
                        .header("if-none-match", format!("\"{}\"", r.revision))
                        .timeout(CALL_TIMEOUT)
                })
                .await;
            let Ok(answer) = answer else { return };
            if !answer.status().is_success() {
                continue;
            }
            let Some(fresh) = fresh_release(answer, r).await else {
                continue;
            };
            tracing::warn!(document = %r.name, revision = fresh.release.revision, "a configuration release the stream did not bring was found by the revision check");
            self.offer(fresh, true);
        }
    }
}

/// The release in a `GET` answer for the document `held` names, when it is newer.
async fn fresh_release(answer: reqwest::Response, held: &rollcall_wire::ReleaseView) -> Option<ReleaseEvent> {
    let header = |name: &str| answer.headers().get(name)?.to_str().ok().map(str::to_owned);
    let revision: u64 = header("x-rollcall-revision")?.parse().ok()?;
    if revision <= held.revision {
        return None;
    }
    let sha256 = header("x-rollcall-sha256")?;
    let format = rollcall_wire::ConfigFormat::from_media_type(&header("content-type")?)?;
    let content = answer.text().await.ok()?;
    let release = rollcall_wire::ReleaseView {
        revision,
        format,
        size: content.len() as u64,
        sha256,
        author: String::new(),
        message: String::new(),
        published_at: String::new(),
        rolled_back_from: None,
        ..held.clone()
    };
    Some(ReleaseEvent { release, content })
}

/// Bounds every call but the stream.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Holds the service's stream, reconnecting with backoff, and checks revisions every `check`,
/// until `shutdown`.
async fn follow(inner: Arc<Inner>, check: Duration, shutdown: CancellationToken) {
    let mut delays = crate::backoff::retry_delays();
    let mut checks = tokio::time::interval(check);
    checks.tick().await; // the first tick is now: the stream brings everything first
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = stream_once(&inner, &mut checks) => connected,
        };
        inner.stale.send_replace(true);
        if connected {
            delays = crate::backoff::retry_delays();
        }
        // While the stream is away, the revision checks go on: they are what notices.
        let pause = tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5)));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = &mut pause => break,
                _ = checks.tick() => inner.check_revisions().await,
            }
        }
    }
}

/// One connection of the stream, until it ends; true when it was connected at all.
async fn stream_once(inner: &Inner, checks: &mut tokio::time::Interval) -> bool {
    use eventsource_stream::Eventsource as _;
    let path = format!("/v1/config/{}/{}", inner.namespace, inner.service);
    let instance = lock(&inner.instance).clone();
    let answer = inner
        .registry
        .send(|base| {
            let mut request = inner
                .http
                .get(format!("{base}{path}"))
                .header("accept", "text/event-stream");
            if let Some(instance) = &instance {
                request = request.query(&[("instance", instance)]);
            }
            request
        })
        .await;
    let answer = match answer {
        Ok(answer) if answer.status().is_success() => answer,
        Ok(answer) => {
            tracing::debug!(status = %answer.status(), "the configuration stream was refused");
            return false;
        }
        Err(error) => {
            tracing::debug!(%error, "cannot reach the configuration stream");
            return false;
        }
    };
    let mut events = answer.bytes_stream().eventsource();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = inner.reconnect.notified() => return true,
            _ = checks.tick() => {
                inner.check_revisions().await;
                continue;
            }
        };
        let Some(Ok(event)) = event else {
            return true;
        };
        match event.event.as_str() {
            "release" => match serde_json::from_str::<ReleaseEvent>(&event.data) {
                Ok(release) => inner.offer(release, false),
                Err(error) => tracing::warn!(%error, "an unreadable configuration release"),
            },
            "ready" => {
                inner.stale.send_replace(false);
            }
            // `lagged`: the stream ends; the next connection starts from the latest of each.
            _ => {}
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
