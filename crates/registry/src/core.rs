//! The registry's shared core: the catalog behind its lock, and the reactions to its events.
//!
//! Every change goes through [`Core::apply`]: under the catalog's write lock the command is
//! applied and the store operations it implies are queued (so the disk sees changes in the
//! catalog's order); the lock is released; the caller waits until those operations are on disk;
//! only then are the events acted on (probers started, dependents' delivery queues woken). So
//! nothing is announced that a crash could still take back, and no lock is ever held across an
//! `.await` or any I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use rollcall_wire::InstanceState;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::RegistryConfig;
use crate::events::EventLog;
use crate::health;
use crate::lookups::LookupCache;
use crate::metrics::{Metrics, Snapshot};
use crate::notify::Notifier;
use crate::outbound::{ProbeClient, probe_client};
use crate::state::{Catalog, Command, CommandError, Event, HealthPolicy, InstanceId};
use crate::store::{Store, StoreError, StoredInstance};

/// Why a change was not applied or not made durable.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The catalog refused the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The catalog changed in memory but could not be written to disk: not acknowledged.
    #[error("the catalog could not be written: {0}")]
    Storage(StoreError),
}

/// Past this many watched services, entries nobody waits on are swept before adding one.
const SWEEP_WATCHES_AT: usize = 1024;

/// Where the catalog's change counter starts: the time in microseconds, so that indexes keep
/// growing across restarts and a client's index from before a restart never matches by chance.
fn first_index() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX / 2)
}

/// A new public instance id: 128 random bits as 32 hex digits.
pub fn new_instance_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What every handler and background task of one registry shares.
#[derive(Debug)]
pub(crate) struct Core {
    catalog: RwLock<Catalog>,
    /// The durable copy of the catalog.
    pub store: Store,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// Per-subscriber delivery queues.
    pub notifier: Notifier,
    /// The process's HTTP client for one-off calls (and TLS); every call sets its own timeout.
    pub http: reqwest::Client,
    /// The pooled client probes go through.
    pub probes: ProbeClient,
    /// The configuration the registry was started with.
    pub config: RegistryConfig,
    /// Cancelled when the registry stops; every background task watches it.
    pub shutdown: CancellationToken,
    /// Tracks background tasks so that shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Recent catalog events and the live feed of `/v1/events`.
    pub events: EventLog,
    /// Encoded answers of `GET /v1/services/{name}`, while current.
    pub lookups: LookupCache,
    /// Blocking queries waiting on one service: its latest index.
    service_watches: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The prober of each registration in the catalog, stopped when it leaves or is replaced.
    probers: Mutex<HashMap<InstanceId, AbortHandle>>,
    /// Blocking queries waiting on the whole catalog: the latest catalog-wide index.
    catalog_watch: watch::Sender<u64>,
}

impl Core {
    /// A core with an empty catalog, writing to `store`.
    pub fn new(
        config: RegistryConfig,
        store: Store,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(config.health_timeout.min(config.notify_timeout))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let policy = HealthPolicy {
            tries: config.health_tries,
            deregister_critical_after: config.deregister_critical_after,
        };
        Ok(Arc::new(Self {
            catalog: RwLock::new(Catalog::new(policy, first_index())),
            store,
            metrics,
            notifier: Notifier::default(),
            http,
            probes: probe_client(config.health_timeout),
            config,
            shutdown,
            tasks: TaskTracker::new(),
            events: EventLog::new(first_index()),
            lookups: LookupCache::default(),
            service_watches: Mutex::new(HashMap::new()),
            probers: Mutex::new(HashMap::new()),
            catalog_watch: watch::Sender::new(0),
        }))
    }

    /// Reads the catalog. The guard must be dropped before any `.await`.
    pub fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        // A panic while holding the lock cannot leave the catalog half-changed (apply either
        // finishes or unwinds before mutating), so a poisoned lock is still safe to read.
        self.catalog.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `command`, waits until what it changed is on disk, then reacts to its events.
    pub async fn apply(self: &Arc<Self>, command: Command) -> Result<Vec<Event>, ApplyError> {
        let (events, ()) = self.apply_and_read(command, |_, _| ()).await?;
        Ok(events)
    }

    /// Like [`Core::apply`], and also returns what `read` takes from the catalog as the command
    /// left it, under the same lock: a concurrent change cannot come in between.
    pub async fn apply_and_read<T>(
        self: &Arc<Self>,
        command: Command,
        read: impl FnOnce(&Catalog, &[Event]) -> T,
    ) -> Result<(Vec<Event>, T), ApplyError> {
        let (events, read, durable) = {
            let mut catalog = self.catalog.write().unwrap_or_else(PoisonError::into_inner);
            let events = catalog.apply(command)?;
            self.events.record(&catalog, &events);
            let ops = catalog.store_ops(&events);
            let read = read(&catalog, &events);
            (events, read, (!ops.is_empty()).then(|| self.store.write(ops)))
        };
        if let Some(durable) = durable {
            match durable.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(ApplyError::Storage(error)),
                Err(_) => return Err(ApplyError::Storage(StoreError::closed())),
            }
        }
        self.react(&events);
        Ok((events, read))
    }

    /// Loads instances read back from the store: each is probed again, and each subscriber is
    /// assumed to hold what the restored catalog offers it, so that a restart announces nothing
    /// by itself (in particular no empty provider list); the probes announce what changed.
    pub fn restore(self: &Arc<Self>, stored: Vec<StoredInstance>) {
        let mut catalog = self.catalog.write().unwrap_or_else(PoisonError::into_inner);
        let events = catalog.restore(stored);
        let subscriptions: Vec<_> = events
            .iter()
            .filter_map(|event| match event {
                Event::Registered { id, url, .. } => catalog.current(url, *id),
                _ => None,
            })
            .map(|instance| {
                let held = catalog.providers_of(&instance.registration.required_services);
                (instance.registration.clone(), instance.id, held)
            })
            .collect();
        drop(catalog);
        tracing::info!(instances = subscriptions.len(), "catalog restored");
        self.react(&events);
        for (registration, id, held) in subscriptions {
            self.notifier.subscribe(self, &registration, id, held);
        }
    }

    /// The metrics exposition, with the catalog's gauges as they are now.
    pub fn metrics_text(&self) -> String {
        let mut snapshot = Snapshot::default();
        for state in self.catalog().states() {
            snapshot.count(state);
        }
        (snapshot.queues, snapshot.queues_behind) = self.notifier.counts();
        self.metrics.encode(&snapshot)
    }

    /// A receiver that changes when the index of `service` (or, for `None`, of the catalog) does.
    /// Take it before reading the index, so that no change can slip in between.
    pub fn watch(&self, service: Option<&str>) -> watch::Receiver<u64> {
        let Some(service) = service else {
            return self.catalog_watch.subscribe();
        };
        let mut watches = self.service_watches.lock().unwrap_or_else(PoisonError::into_inner);
        if watches.len() >= SWEEP_WATCHES_AT && !watches.contains_key(service) {
            // Entries nobody waits on any more, for services that have not changed since.
            watches.retain(|_, sender| sender.receiver_count() > 0);
        }
        watches
            .entry(service.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    fn wake_watchers(&self, service: &str, index: u64) {
        self.catalog_watch.send_replace(index);
        let mut watches = self.service_watches.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = watches.get(service) {
            if sender.receiver_count() == 0 {
                watches.remove(service); // nobody waits any more
            } else {
                sender.send_replace(index);
            }
        }
    }

    /// Takes the handle of registration `id`'s prober out of the map (the prober calls it as it
    /// ends, so that the map holds only live probers).
    pub fn forget_prober(&self, id: InstanceId) -> Option<AbortHandle> {
        self.probers.lock().unwrap_or_else(PoisonError::into_inner).remove(&id)
    }

    fn react(self: &Arc<Self>, events: &[Event]) {
        for event in events {
            match event {
                Event::Registered { id, url, replaced } => {
                    tracing::debug!(%url, id, "instance registered");
                    // Spawned under the lock, so that a prober that ends at once (its registration
                    // already gone) finds its entry to remove.
                    let mut probers = self.probers.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(replaced) = replaced.and_then(|old| probers.remove(&old)) {
                        replaced.abort();
                    }
                    probers.insert(*id, health::spawn_prober(self, url.clone(), *id));
                }
                Event::Deregistered { id, url, reaped, .. } => {
                    if *reaped {
                        self.metrics.reaped.inc();
                    } else {
                        self.metrics.deregistrations.inc();
                    }
                    tracing::info!(%url, id, reaped, "instance deregistered");
                    self.notifier.remove(url, *id);
                    if let Some(prober) = self.forget_prober(*id) {
                        prober.abort();
                    }
                }
                Event::StateChanged { id, url, from, to } => {
                    tracing::info!(%url, id, from = from.as_str(), to = to.as_str(), "instance state changed");
                    if *to == InstanceState::Passing {
                        // It may have missed patches while it was failing: bring it up to date.
                        self.notifier.wake(std::iter::once(url.as_str()));
                    }
                }
                Event::IndexChanged { service, index } => self.wake_watchers(service, *index),
                Event::ProvidersChanged { service } => {
                    let catalog = self.catalog();
                    self.notifier.wake(catalog.dependents_of(service));
                }
            }
        }
    }
}
