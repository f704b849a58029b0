//! What the catalog answers: look-ups by URL and id, the providers a dependent should hold,
//! the listings and their indexes and versions. Reading only; the rules that change the catalog
//! are in `mod.rs`.

use std::collections::BTreeSet;

use rollcall_wire::{InstanceState, PatchEntry, ServiceView};

use super::{Catalog, Instance, InstanceId};

impl Catalog {
    /// The index of `service`: it changes whenever its listing does (0 if it never had an
    /// instance).
    pub fn index_of(&self, service: &str) -> u64 {
        self.indexes.get(service).copied().unwrap_or(0)
    }

    /// The catalog-wide index: it changes whenever any service's does.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The version of `service`'s listing, while it has instances: it changes whenever anything
    /// `GET /v1/services/{name}` shows changes, so an answer encoded at one version can be served
    /// again for as long as the version stays the same.
    pub fn version_of(&self, service: &str) -> Option<u64> {
        self.versions.get(service).copied()
    }

    /// The instance with public id `instance_id`.
    pub fn instance_by_id(&self, instance_id: &str) -> Option<&Instance> {
        self.instances.get(self.by_instance_id.get(instance_id)?)
    }

    /// The instance registered at `url`.
    pub fn instance(&self, url: &str) -> Option<&Instance> {
        self.instances.get(url)
    }

    /// Registration `id` of `url`, while it is the current one.
    pub fn current(&self, url: &str, id: InstanceId) -> Option<&Instance> {
        self.instances.get(url).filter(|i| i.id == id)
    }

    /// The discoverable providers of each service in `services`: what a dependent should hold.
    pub fn providers_of(&self, services: &[String]) -> BTreeSet<PatchEntry> {
        services
            .iter()
            .filter_map(|name| self.by_service.get(name))
            .flatten()
            .filter_map(|url| self.instances.get(url)?.provides())
            .collect()
    }

    /// service URLs of the instances that require `service`.
    pub fn dependents_of(&self, service: &str) -> impl Iterator<Item = &str> {
        self.dependents.get(service).into_iter().flatten().map(String::as_str)
    }

    /// Every service with its instances, ordered by name then URL; `passing_only` keeps only
    /// passing instances.
    pub fn services(&self, passing_only: bool) -> Vec<ServiceView> {
        self.by_service
            .keys()
            .map(|name| self.service(name, passing_only))
            .collect()
    }

    /// One service and its instances (none when nothing is registered under `name`).
    pub fn service(&self, name: &str, passing_only: bool) -> ServiceView {
        let instances = self
            .by_service
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|url| self.instances.get(url))
            .filter(|i| !passing_only || i.state == InstanceState::Passing)
            .map(Instance::view)
            .collect();
        ServiceView {
            name: name.to_owned(),
            instances,
        }
    }

    /// The state of every instance.
    pub fn states(&self) -> impl Iterator<Item = InstanceState> + '_ {
        self.instances.values().map(|i| i.state)
    }

    /// Every registered instance's ServiceURL.
    pub fn urls(&self) -> impl Iterator<Item = &str> + '_ {
        self.instances.keys().map(String::as_str)
    }

    /// Number of registered instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}
