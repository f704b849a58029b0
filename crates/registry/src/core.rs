//! The registry's shared core: the catalog behind its lock, and the reactions to its events.
//!
//! Every change goes through [`Core::apply`]: the command is applied under the catalog's write
//! lock, the lock is released, and only then are the events acted on (probers started,
//! dependents' delivery queues woken). No lock is ever held across an `.await` or any I/O.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use rollcall_wire::InstanceState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::RegistryConfig;
use crate::health;
use crate::notify::Notifier;
use crate::state::{Catalog, Command, CommandError, Event, HealthPolicy};

/// What every handler and background task of one registry shares.
#[derive(Debug)]
pub(crate) struct Core {
    catalog: RwLock<Catalog>,
    /// Per-subscriber delivery queues.
    pub notifier: Notifier,
    /// The process's one HTTP client; every call sets its own timeout.
    pub http: reqwest::Client,
    /// The configuration the registry was started with.
    pub config: RegistryConfig,
    /// Cancelled when the registry stops; every background task watches it.
    pub shutdown: CancellationToken,
    /// Tracks background tasks so that shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl Core {
    /// A core with an empty catalog.
    pub fn new(config: RegistryConfig, shutdown: CancellationToken) -> Result<Arc<Self>, reqwest::Error> {
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
            catalog: RwLock::new(Catalog::new(policy)),
            notifier: Notifier::default(),
            http,
            config,
            shutdown,
            tasks: TaskTracker::new(),
        }))
    }

    /// Reads the catalog. The guard must be dropped before any `.await`.
    pub fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        // A panic while holding the lock cannot leave the catalog half-changed (apply either
        // finishes or unwinds before mutating), so a poisoned lock is still safe to read.
        self.catalog.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `command` and reacts to its events once the lock is released.
    pub fn apply(self: &Arc<Self>, command: Command) -> Result<Vec<Event>, CommandError> {
        let events = self
            .catalog
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .apply(command)?;
        self.react(&events);
        Ok(events)
    }

    fn react(self: &Arc<Self>, events: &[Event]) {
        for event in events {
            match event {
                Event::Registered { id, url, .. } => {
                    tracing::info!(%url, id, "instance registered");
                    health::spawn_prober(self, url.clone(), *id);
                }
                Event::Deregistered { id, url, reaped } => {
                    tracing::info!(%url, id, reaped, "instance deregistered");
                    self.notifier.remove(url, *id);
                }
                Event::StateChanged { id, url, from, to } => {
                    tracing::info!(%url, id, from = from.as_str(), to = to.as_str(), "instance state changed");
                    if *to == InstanceState::Passing {
                        // It may have missed patches while it was failing: bring it up to date.
                        self.notifier.wake(std::iter::once(url.as_str()));
                    }
                }
                Event::ProvidersChanged { service } => {
                    let catalog = self.catalog();
                    self.notifier.wake(catalog.dependents_of(service));
                }
            }
        }
    }
}
