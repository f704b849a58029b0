//! The providers a service knows of: for each required service, the set of instance URLs the
//! registry's patches announced, and a load-balancing pick among them.
//!
//! Invariants:
//! - a set never holds the same URL twice, whatever the patches repeat;
//! - within one patch `Added` is applied before `Removed` (as the Go client does), and removing
//!   a URL that is not held, or adding one that is, changes nothing;
//! - the patch a registry sends while a service registers lists every provider it should hold,
//!   so it replaces the sets of the required services instead of adding to them (this is how a
//!   service that re-registers forgets providers that vanished while the registry forgot it);
//! - lookups read an immutable snapshot through [`ArcSwap`]: no lock, so patches never stall
//!   requests; writers (patches) are serialised by a mutex that lookups never touch;
//! - an instance URL keeps its in-flight counter across patches, so "power of two choices"
//!   keeps seeing the load it placed before a patch.
//!
//! About half of this file is its tests (unit tests and proptests of every invariant above and
//! of each policy's spread); the code itself is one concept and stays one room.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use rand::Rng;
use rollcall_wire::Patch;
use tokio::sync::watch;

/// How [`Providers::get`] chooses among the instances of a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Policy {
    /// Each instance in turn: even spread when requests cost about the same.
    #[default]
    RoundRobin,
    /// A uniformly random instance: no shared counter at all.
    Random,
    /// Two random instances, and the one with fewer requests in flight (counted by the
    /// [`Provider`] guards alive): steers away from slow or overloaded instances.
    PowerOfTwoChoices,
}

/// No instance of the service is known: it is not registered, none is passing, or the registry
/// has not told this service yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no provider of {service} is available")]
pub struct NoProvider {
    /// The service that was asked for.
    pub service: String,
}

/// One instance picked by [`Providers::get`]. While it is alive it counts as a request in flight
/// to that instance: keep it for the duration of the call.
#[derive(Debug)]
pub struct Provider {
    endpoint: Arc<Endpoint>,
}

impl Provider {
    fn new(endpoint: &Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            endpoint: Arc::clone(endpoint),
        }
    }

    /// The instance's base URL (its ServiceURL), e.g. `http://127.0.0.1:6000`.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }
}

impl Clone for Provider {
    fn clone(&self) -> Self {
        Self::new(&self.endpoint)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url())
    }
}

#[derive(Debug)]
struct Endpoint {
    url: String,
    in_flight: AtomicUsize,
}

impl Endpoint {
    fn new(url: &str) -> Arc<Self> {
        Arc::new(Self {
            url: url.to_owned(),
            in_flight: AtomicUsize::new(0),
        })
    }
}

/// The instances of one service, in the order they were announced.
#[derive(Debug, Default)]
struct ProviderSet {
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

type Table = HashMap<String, Arc<ProviderSet>>;

/// The provider sets of every service this service requires, shared by every clone.
///
/// Cloning is cheap; all clones see the same sets.
#[derive(Clone)]
pub struct Providers {
    inner: Arc<Inner>,
}

struct Inner {
    policy: AtomicU8,
    table: ArcSwap<Table>,
    writer: Mutex<Writer>,
}

/// What only patch writers touch.
#[derive(Default)]
struct Writer {
    /// One sender per watched service.
    watches: HashMap<String, watch::Sender<Vec<String>>>,
    /// Set while the service registers: the next patch lists every provider of these services.
    full_list_expected_for: Option<Vec<String>>,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.inner.table.load();
        let mut map = f.debug_map();
        for (service, set) in table.iter() {
            map.entry(
                service,
                &set.endpoints.iter().map(|e| e.url.as_str()).collect::<Vec<_>>(),
            );
        }
        map.finish()
    }
}

impl Default for Providers {
    fn default() -> Self {
        Self::new(Policy::default())
    }
}

impl Providers {
    /// Empty sets, picking by `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy: AtomicU8::new(policy as u8),
                table: ArcSwap::from_pointee(Table::new()),
                writer: Mutex::new(Writer::default()),
            }),
        }
    }

    /// The policy [`get`](Self::get) picks by.
    pub fn policy(&self) -> Policy {
        match self.inner.policy.load(Ordering::Relaxed) {
            x if x == Policy::Random as u8 => Policy::Random,
            x if x == Policy::PowerOfTwoChoices as u8 => Policy::PowerOfTwoChoices,
            _ => Policy::RoundRobin,
        }
    }

    /// Changes the policy for every clone, from the next pick on.
    pub fn set_policy(&self, policy: Policy) {
        self.inner.policy.store(policy as u8, Ordering::Relaxed);
    }

    /// Picks one instance of `service` by the policy, or says that none is known.
    pub fn get(&self, service: &str) -> Result<Provider, NoProvider> {
        let table = self.inner.table.load();
        let endpoints = table.get(service).map(|set| (set, set.endpoints.as_slice()));
        let Some((set, endpoints @ [first, ..])) = endpoints else {
            return Err(NoProvider {
                service: service.to_owned(),
            });
        };
        let picked = match (self.policy(), endpoints.len()) {
            (_, 1) => first,
            (Policy::RoundRobin, n) => &endpoints[set.next.fetch_add(1, Ordering::Relaxed) % n],
            (Policy::Random, n) => &endpoints[rand::rng().random_range(0..n)],
            (Policy::PowerOfTwoChoices, n) => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let (a, b) = (&endpoints[a], &endpoints[b]);
                if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) {
                    b
                } else {
                    a
                }
            }
        };
        Ok(Provider::new(picked))
    }

    /// Every known instance URL of `service`, in the order they were announced.
    pub fn urls(&self, service: &str) -> Vec<String> {
        self.inner
            .table
            .load()
            .get(service)
            .map(|set| set.endpoints.iter().map(|e| e.url.clone()).collect())
            .unwrap_or_default()
    }

    /// Follows the instance URLs of `service`: the receiver holds the current list and is
    /// marked changed whenever a patch changes it.
    pub fn watch(&self, service: &str) -> watch::Receiver<Vec<String>> {
        let mut writer = self.writer();
        if let Some(sender) = writer.watches.get(service) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(self.urls(service));
        writer.watches.insert(service.to_owned(), sender);
        receiver
    }

    /// Applies one patch: adds its `Added` entries, then forgets its `Removed` ones.
    pub fn apply(&self, patch: &Patch) {
        let mut writer = self.writer();
        match writer.full_list_expected_for.take() {
            Some(required) => self.replace(&mut writer, &required, patch),
            None => self.update(&mut writer, patch),
        }
    }

    /// Marks the next patch as the full list a registry sends on registration: it will replace
    /// the sets of `required` (and of any service it names) instead of adding to them.
    pub(crate) fn expect_full_list(&self, required: &[String]) {
        self.writer().full_list_expected_for = Some(required.to_vec());
    }

    /// Forgets a full-list expectation that no patch fulfilled (the registration failed).
    pub(crate) fn cancel_full_list(&self) {
        self.writer().full_list_expected_for = None;
    }

    fn update(&self, writer: &mut Writer, patch: &Patch) {
        let table = self.inner.table.load_full();
        let mut lists: HashMap<String, Vec<Arc<Endpoint>>> = HashMap::new();
        for entry in &patch.added {
            let list = list_of(&mut lists, &table, &entry.name);
            if !list.iter().any(|e| e.url == entry.url) {
                list.push(Endpoint::new(&entry.url));
            }
        }
        for entry in &patch.removed {
            list_of(&mut lists, &table, &entry.name).retain(|e| e.url != entry.url);
        }
        self.publish(writer, &table, lists);
    }

    fn replace(&self, writer: &mut Writer, required: &[String], patch: &Patch) {
        let table = self.inner.table.load_full();
        let mut lists: HashMap<String, Vec<Arc<Endpoint>>> =
            required.iter().map(|name| (name.clone(), Vec::new())).collect();
        for entry in &patch.added {
            let list = lists.entry(entry.name.clone()).or_default();
            if list.iter().any(|e| e.url == entry.url) {
                continue;
            }
            // Keep the instance's in-flight count when it was already known.
            let known = table
                .get(&entry.name)
                .and_then(|set| set.endpoints.iter().find(|e| e.url == entry.url).cloned());
            list.push(known.unwrap_or_else(|| Endpoint::new(&entry.url)));
        }
        for entry in &patch.removed {
            if let Some(list) = lists.get_mut(&entry.name) {
                list.retain(|e| e.url != entry.url);
            }
        }
        self.publish(writer, &table, lists);
    }

    /// Stores the changed lists as a new snapshot and tells the watchers of changed services.
    fn publish(&self, writer: &Writer, table: &Table, lists: HashMap<String, Vec<Arc<Endpoint>>>) {
        let mut next = table.clone();
        let mut changed = Vec::new();
        for (name, endpoints) in lists {
            let before = table.get(&name).map_or(&[][..], |set| set.endpoints.as_slice());
            let same = before.len() == endpoints.len() && before.iter().zip(&endpoints).all(|(a, b)| a.url == b.url);
            if same {
                continue;
            }
            if endpoints.is_empty() {
                next.remove(&name);
            } else {
                let set = ProviderSet {
                    endpoints,
                    next: AtomicUsize::new(0),
                };
                next.insert(name.clone(), Arc::new(set));
            }
            changed.push(name);
        }
        if changed.is_empty() {
            return;
        }
        self.inner.table.store(Arc::new(next));
        for name in changed {
            if let Some(sender) = writer.watches.get(&name) {
                sender.send_replace(self.urls(&name));
            }
        }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // The writer state stays consistent even if a holder panicked: every change to it is a
        // single assignment or a published snapshot.
        self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The list being built for `name`, starting from its current set.
fn list_of<'l>(
    lists: &'l mut HashMap<String, Vec<Arc<Endpoint>>>,
    table: &Table,
    name: &str,
) -> &'l mut Vec<Arc<Endpoint>> {
    lists
        .entry(name.to_owned())
        .or_insert_with(|| table.get(name).map(|set| set.endpoints.clone()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use rollcall_wire::PatchEntry;

    use super::*;

    fn entry(name: &str, url: &str) -> PatchEntry {
        PatchEntry {
            name: name.into(),
            url: url.into(),
        }
    }

    fn added(entries: &[(&str, &str)]) -> Patch {
        Patch {
            added: entries.iter().map(|(n, u)| entry(n, u)).collect(),
            removed: vec![],
        }
    }

    fn removed(entries: &[(&str, &str)]) -> Patch {
        Patch {
            added: vec![],
            removed: entries.iter().map(|(n, u)| entry(n, u)).collect(),
        }
    }

    #[test]
    fn patches_add_and_remove_without_duplicates() {
        let providers = Providers::default();
        providers.apply(&added(&[
            ("Logs", "http://a"),
            ("Logs", "http://a"),
            ("Logs", "http://b"),
        ]));
        providers.apply(&added(&[("Logs", "http://a")]));
        assert_eq!(providers.urls("Logs"), ["http://a", "http://b"]);
        providers.apply(&removed(&[("Logs", "http://a"), ("Logs", "http://a")]));
        assert_eq!(providers.urls("Logs"), ["http://b"]);
    }

    #[test]
    fn removing_the_unknown_and_null_lists_change_nothing() {
        let providers = Providers::default();
        providers.apply(&removed(&[("Logs", "http://a"), ("Grades", "http://g")]));
        let null_patch: Patch = serde_json::from_str(r#"{"Added":null,"Removed":null}"#).expect("decodes");
        providers.apply(&null_patch);
        assert!(providers.urls("Logs").is_empty());
        providers.apply(&added(&[("Logs", "http://a")]));
        providers.apply(&null_patch);
        assert_eq!(providers.urls("Logs"), ["http://a"]);
    }

    #[test]
    fn within_a_patch_added_comes_before_removed() {
        let providers = Providers::default();
        let both = Patch {
            added: vec![entry("Logs", "http://a"), entry("Logs", "http://b")],
            removed: vec![entry("Logs", "http://a")],
        };
        providers.apply(&both);
        assert_eq!(providers.urls("Logs"), ["http://b"]);
    }

    #[test]
    fn an_empty_set_is_a_typed_error_not_a_panic() {
        let providers = Providers::default();
        assert_eq!(providers.get("Grades").expect_err("nothing known").service, "Grades");
        providers.apply(&added(&[("Grades", "http://g")]));
        assert_eq!(providers.get("Grades").expect("known").url(), "http://g");
        providers.apply(&removed(&[("Grades", "http://g")]));
        let error = providers.get("Grades").expect_err("all removed");
        assert_eq!(error.to_string(), "no provider of Grades is available");
    }

    #[test]
    fn the_registration_patch_replaces_the_required_sets() {
        let providers = Providers::default();
        providers.apply(&added(&[("Logs", "http://old"), ("Grades", "http://g1")]));
        providers.expect_full_list(&["Logs".into(), "Grades".into()]);
        providers.apply(&added(&[("Logs", "http://new")]));
        assert_eq!(providers.urls("Logs"), ["http://new"]);
        assert!(providers.urls("Grades").is_empty());
        // Only the one patch is a full list; the next ones add as usual.
        providers.apply(&added(&[("Grades", "http://g2")]));
        assert_eq!(providers.urls("Logs"), ["http://new"]);
        assert_eq!(providers.urls("Grades"), ["http://g2"]);
    }

    #[test]
    fn the_registration_patch_holds_each_url_once_and_applies_its_removals() {
        let providers = Providers::default();
        providers.apply(&added(&[("Logs", "http://old")]));
        providers.expect_full_list(&["Logs".into()]);
        providers.apply(&Patch {
            added: vec![
                entry("Logs", "http://a"),
                entry("Logs", "http://b"),
                entry("Logs", "http://a"),
                entry("Logs", "http://c"),
            ],
            removed: vec![entry("Logs", "http://b"), entry("Logs", "http://old")],
        });
        assert_eq!(providers.urls("Logs"), ["http://a", "http://c"]);
    }

    #[test]
    fn a_registration_that_failed_leaves_the_next_patch_adding() {
        let providers = Providers::default();
        providers.apply(&added(&[("Logs", "http://a")]));
        providers.expect_full_list(&["Logs".into()]);
        providers.cancel_full_list();
        providers.apply(&added(&[("Logs", "http://b")]));
        assert_eq!(
            providers.urls("Logs"),
            ["http://a", "http://b"],
            "added to, not replaced"
        );
    }

    #[test]
    fn the_policy_read_is_the_policy_set() {
        let providers = Providers::default();
        assert_eq!(providers.policy(), Policy::RoundRobin);
        for policy in [Policy::Random, Policy::PowerOfTwoChoices, Policy::RoundRobin] {
            providers.set_policy(policy);
            assert_eq!(providers.clone().policy(), policy, "every clone picks by it");
        }
    }

    #[test]
    fn random_picks_follow_no_cycle() {
        // Round robin over two instances alternates; random repeats an instance about every
        // other pick (missing every repeat in 200 picks has a chance of 2^-199).
        let providers = set_of(2, Policy::Random);
        let sequence: Vec<String> = (0..200)
            .map(|_| providers.get("S").expect("known").url().to_owned())
            .collect();
        let repeats = sequence.windows(2).filter(|pair| pair[0] == pair[1]).count();
        assert!(repeats > 0, "random picks alternated like round robin: {sequence:?}");
    }

    #[tokio::test]
    async fn a_watch_sees_each_change_of_its_service_only() {
        let providers = Providers::default();
        let mut logs = providers.watch("Logs");
        assert!(logs.borrow_and_update().is_empty());
        providers.apply(&added(&[("Grades", "http://g")]));
        assert!(!logs.has_changed().expect("open"));
        providers.apply(&added(&[("Logs", "http://a")]));
        logs.changed().await.expect("open");
        assert_eq!(*logs.borrow_and_update(), ["http://a"]);
        providers.apply(&added(&[("Logs", "http://a")]));
        assert!(!logs.has_changed().expect("open"), "a no-op patch is not a change");
    }

    #[test]
    fn power_of_two_choices_between_two_always_takes_the_less_loaded() {
        let providers = Providers::new(Policy::PowerOfTwoChoices);
        providers.apply(&added(&[("S", "http://a"), ("S", "http://b")]));
        let mut held = Vec::new();
        for _ in 0..51 {
            held.push(providers.get("S").expect("known"));
            let on_a = held.iter().filter(|p| p.url() == "http://a").count();
            assert!(on_a.abs_diff(held.len() - on_a) <= 1, "{on_a} of {} on a", held.len());
        }
        // Released requests stop counting.
        held.retain(|p| p.url() == "http://a");
        assert_eq!(providers.get("S").expect("known").url(), "http://b");
    }

    fn picks(providers: &Providers, count: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..count {
            let provider = providers.get("S").expect("known");
            *counts.entry(provider.url().to_owned()).or_insert(0) += 1;
        }
        counts
    }

    fn set_of(size: usize, policy: Policy) -> Providers {
        let providers = Providers::new(policy);
        let urls: Vec<String> = (0..size).map(|i| format!("http://10.0.0.{i}")).collect();
        let entries: Vec<(&str, &str)> = urls.iter().map(|u| ("S", u.as_str())).collect();
        providers.apply(&added(&entries));
        providers
    }

    proptest! {
        #[test]
        fn round_robin_spreads_evenly(size in 1usize..20, rounds in 1usize..50, extra in 0usize..20) {
            let providers = set_of(size, Policy::RoundRobin);
            let counts = picks(&providers, size * rounds + extra % size);
            prop_assert_eq!(counts.len(), size);
            let (min, max) = (counts.values().min().copied(), counts.values().max().copied());
            prop_assert!(max.unwrap_or(0) - min.unwrap_or(0) <= 1, "{:?}", counts);
        }

        #[test]
        fn random_reaches_every_instance_near_its_share(size in 2usize..8) {
            let providers = set_of(size, Policy::Random);
            let per_instance = 2_000;
            let counts = picks(&providers, size * per_instance);
            prop_assert_eq!(counts.len(), size);
            // 2,000 expected picks: a share outside ±20% is more than 9 standard deviations off.
            for count in counts.values() {
                prop_assert!(count.abs_diff(per_instance) < per_instance / 5, "{:?}", counts);
            }
        }

        #[test]
        fn a_registration_patch_holds_what_it_adds_and_not_what_it_removes(
            old in proptest::collection::vec(0u8..6, 0..6),
            added in proptest::collection::vec(0u8..6, 0..12),
            removed in proptest::collection::vec(0u8..6, 0..4),
        ) {
            let url = |n: &u8| format!("http://10.0.0.{n}");
            let providers = Providers::default();
            providers.apply(&Patch { added: old.iter().map(|n| entry("S", &url(n))).collect(), removed: vec![] });
            providers.expect_full_list(&["S".into()]);
            providers.apply(&Patch {
                added: added.iter().map(|n| entry("S", &url(n))).collect(),
                removed: removed.iter().map(|n| entry("S", &url(n))).collect(),
            });
            // The added URLs in order of first appearance, without the removed ones: nothing of
            // the old set survives, nothing appears twice.
            let mut expected: Vec<String> = Vec::new();
            for n in &added {
                if !removed.contains(n) && !expected.contains(&url(n)) {
                    expected.push(url(n));
                }
            }
            prop_assert_eq!(providers.urls("S"), expected);
        }

        #[test]
        fn power_of_two_choices_keeps_held_load_even(size in 2usize..10, held in 1usize..100) {
            let providers = set_of(size, Policy::PowerOfTwoChoices);
            let guards: Vec<Provider> = (0..held * size).map(|_| providers.get("S").expect("known")).collect();
            let mut counts = BTreeMap::<&str, usize>::new();
            for guard in &guards {
                *counts.entry(guard.url()).or_insert(0) += 1;
            }
            if held >= 10 {
                // An idle instance is one of the two choices with probability about 2/size per
                // pick: after 10 picks per instance, missing it has a chance below e^-20.
                prop_assert_eq!(counts.len(), size);
            }
            // Each pick goes to the less loaded of two, so the fullest instance stays within a few
            // requests of the mean (log log n above it, with high probability).
            let max = counts.values().max().copied().unwrap_or(0);
            prop_assert!(max <= held + 4, "{:?}", counts);
        }
    }
}
