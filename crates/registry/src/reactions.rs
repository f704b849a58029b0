//! The registry's reactions: what the running tasks do about each catalog event, in one place.
//!
//! The catalog decides (`crate::state`), the core makes it durable (`crate::core`), and
//! [`Reactor`] acts: a registration starts the instance's prober and, if it requires services or
//! asked for its configuration by webhook, its delivery queue, from what it already holds; a
//! deregistration stops both; a recovery or a
//! change of providers wakes the queues concerned. Whatever made the change (the seed endpoint,
//! `/v1/instances`, a probe, a restore after a restart) goes through this one path, so none of
//! them can forget a step.

use std::sync::Arc;

use rollcall_wire::InstanceState;

use crate::core::{Core, React};
use crate::health::Probers;
use crate::notify::{ConfigFeed, NAMESPACE_LABEL, Notifier};
use crate::state::Event;

/// Owns the probers and the delivery queues, and acts on events.
#[derive(Debug, Default)]
pub(crate) struct Reactor {
    probers: Probers,
    notifier: Notifier,
}

/// The configuration feed of an instance that asked for one (a `ConfigUpdateURL`).
fn config_feed(instance: &crate::state::Instance) -> Option<ConfigFeed> {
    let url = url::Url::parse(instance.config_url.as_deref()?).ok()?;
    Some(ConfigFeed {
        url,
        instance: instance.instance_id.clone(),
        service: instance.registration.service_name.clone(),
        namespace: instance
            .metadata
            .get(NAMESPACE_LABEL)
            .cloned()
            .unwrap_or_else(|| "default".to_owned()),
        delivered: std::sync::Mutex::default(),
    })
}

impl React for Reactor {
    fn react(&self, core: &Arc<Core>, events: &[Event]) {
        for event in events {
            match event {
                Event::Registered {
                    id,
                    url,
                    replaced,
                    holds,
                } => {
                    tracing::debug!(%url, id, "instance registered");
                    if let Some(replaced) = replaced {
                        self.probers.stop(*replaced);
                    }
                    // Read back: a newer registration of the URL, or its removal, may already
                    // have been applied, and then reacted to first.
                    let instance = core
                        .catalog()
                        .current(url, *id)
                        .map(|i| (i.registration.clone(), i.registrant.peer, config_feed(i)));
                    if let Some((registration, registrant, config)) = instance {
                        self.probers.start(core, url.clone(), *id);
                        self.notifier
                            .subscribe(core, &registration, registrant, *id, holds.clone(), config);
                    }
                }
                Event::Deregistered { id, url, reaped, view } => {
                    if *reaped {
                        core.metrics.reaped.inc();
                    } else {
                        core.metrics.deregistrations.inc();
                    }
                    // Named by the id the API shows, beside its URL.
                    tracing::info!(%url, instance = %view.id, reaped, "instance deregistered");
                    self.notifier.remove(url, *id);
                    self.probers.stop(*id);
                }
                Event::StateChanged { id, url, from, to } => {
                    let public = core.catalog().current(url, *id).map(|i| i.instance_id.clone());
                    tracing::info!(
                        %url,
                        instance = public.as_deref().unwrap_or("-"),
                        from = from.as_str(),
                        to = to.as_str(),
                        "instance state changed"
                    );
                    if *to == InstanceState::Passing {
                        // It may have missed patches while it was failing: bring it up to date.
                        self.notifier.wake(std::iter::once(url.as_str()));
                    }
                }
                Event::ProvidersChanged { service } => {
                    let catalog = core.catalog();
                    self.notifier.wake(catalog.dependents_of(service));
                }
                // The core wakes blocking queries itself.
                Event::IndexChanged { .. } | Event::Renewed { .. } => {}
            }
        }
    }

    fn queue_counts(&self) -> (usize, usize) {
        self.notifier.counts()
    }

    fn holders(&self, entry: &rollcall_wire::PatchEntry) -> Vec<String> {
        self.notifier.holders(entry)
    }

    fn acknowledged(&self) -> &tokio::sync::Notify {
        self.notifier.acknowledged()
    }

    fn take_held(&self, url: &str, held: std::collections::BTreeSet<rollcall_wire::PatchEntry>) {
        self.notifier.take_held(url, held);
    }
}
