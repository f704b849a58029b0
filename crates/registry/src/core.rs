//! The registry's shared core: the catalog behind its lock, its durable store, and what every
//! handler and task reads (clients, configuration, the event log, watches).
//!
//! Every change goes through [`Core::apply`]: under the catalog's write lock the command is
//! applied and the store operations it implies are queued (so the disk sees changes in the
//! catalog's order); the lock is released; the caller waits until those operations are durable;
//! only then are the events handed to the [`React`] port (probers started, delivery queues
//! started and woken: `crate::reactions`). So nothing is announced that a crash could still take
//! back, no lock is ever held across an `.await` or any I/O, and every path that changes the
//! catalog (a handler, a probe, a restore) reacts the same way. The core knows the reactions
//! only through the port, so the tasks that call back into it (probers) import no circle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::SystemTime;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::Audit;
use crate::auth::Tokens;
use crate::config::RegistryConfig;
use crate::echoes::Echoes;
use crate::events::EventLog;
use crate::lookups::LookupCache;
use crate::metrics::{Metrics, Snapshot};
use crate::nodes::{Membership, Nodes};
use crate::outbound::{HostBudget, Outbound};
use crate::published::Published;
use crate::state::{Catalog, Command, CommandError, Event, HealthPolicy, Limits, SharedHeld, StoreOp, StoredInstance};
use crate::store::{CatalogStore, Change, Fed, Feed, StoreError};

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

/// The services whose listing `events` changed.
fn touched(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::IndexChanged { service, .. } => Some(service.clone()),
            _ => None,
        })
        .collect()
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

/// What acts on the catalog's events once they are durable: the other side of the core.
pub(crate) trait React: Send + Sync + std::fmt::Debug {
    /// Acts on `events`, which `core` just applied and made durable, in their order.
    fn react(&self, core: &Arc<Core>, events: &[Event]);

    /// The number of delivery queues, and of those with changes their subscriber lacks.
    fn queue_counts(&self) -> (usize, usize);

    /// The subscribers (their service URLs) that still hold `entry`: have not acknowledged its
    /// removal.
    fn holders(&self, entry: &rollcall_wire::PatchEntry) -> Vec<String>;

    /// Notified whenever a subscriber acknowledged a patch (its holdings changed).
    fn acknowledged(&self) -> &tokio::sync::Notify;

    /// Takes in what a subscriber acknowledged holding, as another node shared it.
    fn take_held(&self, url: &str, held: std::collections::BTreeSet<rollcall_wire::PatchEntry>);
}

/// What every handler and background task of one registry shares.
#[derive(Debug)]
pub(crate) struct Core {
    catalog: RwLock<Catalog>,
    /// The durable copy of the catalog.
    store: Arc<dyn CatalogStore>,
    /// This node among the nodes sharing the catalog, and which instances it probes.
    pub nodes: Nodes,
    /// The published configuration documents.
    pub published: Published,
    /// What acts on applied events.
    reactions: Box<dyn React>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// Every call to a service goes through it.
    pub outbound: Outbound,
    /// The tokens the registry issued.
    pub tokens: Tokens,
    /// Every write asked for, on its way to the log service.
    pub audit: Audit,
    /// How often each host may be probed.
    pub probe_budget: HostBudget,
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
    /// Blocking queries waiting on the whole catalog: the latest catalog-wide index.
    catalog_watch: watch::Sender<u64>,
    /// This node's own changes to a shared catalog, waiting for their revision.
    echoes: Echoes,
}

impl Core {
    /// A core with an empty catalog, writing to `store`, serving the `published` configuration,
    /// reacting through `reactions`, calling services through `outbound`, verifying `tokens`.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one part the core is made of, built by `serve`"
    )]
    pub fn new(
        config: RegistryConfig,
        store: Arc<dyn CatalogStore>,
        nodes: Nodes,
        published: Published,
        reactions: Box<dyn React>,
        outbound: Outbound,
        tokens: Tokens,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let limits = Limits {
            instances: config.max_instances as usize,
            per_service: config.max_instances_per_service as usize,
        };
        let policy = HealthPolicy {
            tries: config.health_tries,
            deregister_critical_after: config.deregister_critical_after,
        };
        let mut catalog = Catalog::new(policy, limits, first_index());
        if config.etcd.is_set() {
            catalog = catalog.sharing_health();
        }
        Arc::new(Self {
            catalog: RwLock::new(catalog),
            store,
            nodes,
            published,
            reactions,
            metrics,
            outbound,
            tokens,
            audit: Audit::default(),
            probe_budget: HostBudget::new(
                std::num::NonZeroU32::new(config.max_probes_per_host).unwrap_or(std::num::NonZeroU32::MIN),
            ),
            config,
            shutdown,
            tasks: TaskTracker::new(),
            events: EventLog::new(first_index()),
            lookups: LookupCache::default(),
            service_watches: Mutex::new(HashMap::new()),
            catalog_watch: watch::Sender::new(0),
            echoes: Echoes::default(),
        })
    }

    /// Reads the catalog. The guard must be dropped before any `.await`.
    pub fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        // A panic while holding the lock cannot leave the catalog half-changed (apply either
        // finishes or unwinds before mutating), so a poisoned lock is still safe to read.
        self.catalog.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `command`, waits until what it changed is durable, then reacts to its events.
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
        let (events, read, durable, waiting) = {
            let mut catalog = self.catalog.write().unwrap_or_else(PoisonError::into_inner);
            let events = catalog.apply(command)?;
            let ops = catalog.store_ops(&events);
            // Shared: the events and indexes wait for the write's revision (`crate::echoes`).
            let waiting = if self.config.etcd.is_set() {
                let described = EventLog::describe(&catalog, &events);
                self.echoes.wait(&ops, described, touched(&events))
            } else {
                self.events.record(&catalog, &events);
                None
            };
            let read = read(&catalog, &events);
            (events, read, (!ops.is_empty()).then(|| self.store.write(ops)), waiting)
        };
        if let Some(durable) = durable {
            let failed = match durable.await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(_) => Some(StoreError::closed()),
            };
            if let Some(error) = failed {
                if let Some(waiting) = &waiting {
                    self.echoes.forget(waiting);
                }
                return Err(ApplyError::Storage(error));
            }
        }
        self.react(&events);
        Ok((events, read))
    }

    fn react(self: &Arc<Self>, events: &[Event]) {
        for event in events {
            // Index 0: a shared catalog's change whose revision is not known yet.
            if let Event::IndexChanged { service, index } = event
                && *index > 0
            {
                self.wake_watchers(service, *index);
            }
        }
        self.reactions.react(self, events);
    }

    /// Loads instances read back from the store and reacts as to registrations: each is probed
    /// again and its subscriber's queue starts from what the restored catalog offers it (see
    /// `Catalog::restore`), so a restart announces nothing by itself.
    pub fn restore(self: &Arc<Self>, stored: Vec<StoredInstance>) {
        let events = self
            .catalog
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .restore(stored);
        tracing::info!(instances = events.len(), "catalog restored");
        self.react(&events);
    }

    /// Takes in, until the registry stops, the changes other registry nodes make to a shared
    /// catalog: each is applied and reacted to as a local change is (probers, dependents,
    /// blocking queries, `/v1/events`), but not written: it is durable already.
    pub fn follow(self: &Arc<Self>, mut feed: Feed, read_at: u64) {
        self.events.start_at(read_at);
        let core = Arc::clone(self);
        self.tasks.spawn(async move {
            loop {
                let change = tokio::select! {
                    change = feed.recv() => change,
                    () = core.shutdown.cancelled() => None,
                };
                let Some(change) = change else { return };
                core.take_in(change).await;
            }
        });
    }

    async fn take_in(self: &Arc<Self>, fed: Fed) {
        let Fed { revision, change } = fed;
        let (command, whole) = match change {
            Change::Release(release) => return self.published.take_in(*release).await,
            Change::Rollout(kept) => return self.published.take_rollout(*kept).await,
            Change::One(StoreOp::Held(shared)) => return self.reactions.take_held(&shared.url, shared.held),
            Change::Echo(key) => return self.echoed(&key, revision),
            Change::Token(id, value) => return self.tokens.take_in(&id, value).await,
            Change::Ack(shared) => return self.published.take_ack(&shared.key, &shared.ack),
            Change::One(op) => (Command::Replicate(op), false),
            Change::All(all) => (Command::Resync(all), true),
        };
        let events = {
            let mut catalog = self.catalog.write().unwrap_or_else(PoisonError::into_inner);
            // Taking in a change is never refused: the node that made it checked it.
            let Ok(mut events) = catalog.apply(command) else { return };
            if whole {
                // The changes in between are not known one by one: event streams start over.
                self.echoes.clear();
                self.events.reset(&catalog);
            } else {
                self.events.record_at(revision, EventLog::describe(&catalog, &events));
            }
            let moved = catalog.index_at(&touched(&events), revision);
            events.extend(moved);
            events
        };
        self.react(&events);
    }

    /// This node's own write of `key` came back at `revision`: the change it was part of takes
    /// its place in the shared order (its events and indexes), if it has not yet.
    fn echoed(self: &Arc<Self>, key: &str, revision: u64) {
        let Some(waiting) = self.echoes.echoed(key) else { return };
        let moved = {
            let mut catalog = self.catalog.write().unwrap_or_else(PoisonError::into_inner);
            self.events.record_at(revision, waiting.described.clone());
            catalog.index_at(&waiting.services, revision)
        };
        self.react(&moved);
    }

    /// Shares what the subscriber at `url` acknowledged holding with the other nodes, when the
    /// catalog is shared (without waiting: a node that takes the deliveries over before it is
    /// written sends the patch again).
    pub fn share_held(&self, url: &str, held: &std::collections::BTreeSet<rollcall_wire::PatchEntry>) {
        if self.config.etcd.is_set() {
            drop(self.store.write(vec![StoreOp::Held(SharedHeld {
                url: url.to_owned(),
                held: held.clone(),
            })]));
        }
    }

    /// Makes what is queued durable and closes the stores.
    pub async fn close_store(&self) {
        self.store.close().await;
        self.published.close().await;
    }

    /// How many live subscribers still hold `entry` (a drained or removed provider whose
    /// `Removed` patch they have not acknowledged yet). A critical subscriber (presumed dead, so
    /// sending nothing) is not waited for.
    /// Waits until no live subscriber holds `entry`, at most until `deadline` (or shutdown);
    /// how many still do then. Woken by each acknowledged patch, and every 100 ms besides (a
    /// subscriber turning critical is not waited for, and says nothing).
    pub async fn until_let_go(&self, entry: &rollcall_wire::PatchEntry, deadline: tokio::time::Instant) -> usize {
        loop {
            let acknowledged = self.reactions.acknowledged().notified();
            tokio::pin!(acknowledged);
            acknowledged.as_mut().enable();
            let holders = self.holders(entry);
            if holders == 0 || tokio::time::Instant::now() >= deadline || self.shutdown.is_cancelled() {
                return holders;
            }
            let recheck = (tokio::time::Instant::now() + std::time::Duration::from_millis(100)).min(deadline);
            tokio::select! {
                () = acknowledged => {}
                () = tokio::time::sleep_until(recheck) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
    }

    pub fn holders(&self, entry: &rollcall_wire::PatchEntry) -> usize {
        let holders = self.reactions.holders(entry);
        let catalog = self.catalog();
        holders
            .iter()
            .filter(|url| {
                catalog
                    .instance(url)
                    .is_some_and(|i| i.state != rollcall_wire::InstanceState::Critical)
            })
            .count()
    }

    /// The metrics exposition, with the catalog's gauges as they are now.
    pub fn metrics_text(&self) -> String {
        let mut snapshot = Snapshot::default();
        for state in self.catalog().states() {
            snapshot.count(state);
        }
        (snapshot.queues, snapshot.queues_behind) = self.reactions.queue_counts();
        let (membership, shares) = self.node_shares();
        snapshot.node_live = membership.live;
        snapshot.nodes = membership.nodes.len();
        snapshot.node_instances = shares.get(&self.nodes.me().id).copied().unwrap_or_default();
        self.metrics.encode(&snapshot)
    }

    /// The live nodes as this node sees them, each with its share (`GET /v1/nodes`, the
    /// dashboard).
    pub fn nodes_view(&self) -> rollcall_wire::NodesView {
        let (membership, shares) = self.node_shares();
        let nodes = membership
            .nodes
            .into_values()
            .map(|node| rollcall_wire::NodeView {
                instances: shares.get(&node.id).copied().unwrap_or_default(),
                id: node.id,
                url: node.url,
                started_at: node.started_at,
            })
            .collect();
        rollcall_wire::NodesView {
            this: self.nodes.me().id.clone(),
            live: membership.live,
            nodes,
        }
    }

    /// The live set as this node sees it, and how many instances of the catalog each live node
    /// probes.
    pub fn node_shares(&self) -> (Membership, HashMap<String, usize>) {
        let membership = self.nodes.membership();
        let mut shares: HashMap<&String, usize> = HashMap::new();
        for url in self.catalog().urls() {
            if let Some(owner) = crate::nodes::owner(url, membership.nodes.keys()) {
                *shares.entry(owner).or_default() += 1;
            }
        }
        let shares = shares.into_iter().map(|(id, n)| (id.clone(), n)).collect();
        (membership, shares)
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
}

impl crate::audit::Destination for Core {
    fn log_service(&self) -> Option<(url::Url, crate::outbound::Client)> {
        let (records, registrant) = {
            let catalog = self.catalog();
            let entry = catalog.providers_of(&["LogService".to_owned()]).into_iter().next()?;
            let registrant = catalog.instance(&entry.url).and_then(|i| i.registrant.peer);
            (format!("{}/v1/records", entry.url.trim_end_matches('/')), registrant)
        };
        Some((url::Url::parse(&records).ok()?, self.outbound.client(registrant)))
    }

    fn stopping(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
