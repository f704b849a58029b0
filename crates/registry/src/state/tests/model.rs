//! The catalog against a reference model, over random sequences of registrations,
//! re-registrations, deregistrations, drains, probe results, time passing and restarts (from
//! what the catalog asked to store). After every step:
//! - the registered service URLs are the model's: every accepted registration, minus every
//!   deregistration and every instance the catalog said it reaped; a restart changes nothing
//!   (nothing deregistered reappears, nothing registered is lost, a drained instance stays
//!   drained and a critical one critical);
//! - no instance is listed twice;
//! - what dependents are given (`providers_of`) is exactly each service's passing and suspect
//!   instances, and a `ProvidersChanged` event is emitted for a service exactly when that set
//!   changed;
//! - the catalog's index never goes back while it runs.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const SERVICES: [&str; 2] = ["A", "B"];
const URLS: usize = 4;

#[derive(Debug, Clone)]
enum Step {
    Register {
        service: usize,
        url: usize,
        requires: bool,
        proven: bool,
    },
    Deregister(usize),
    Drain {
        url: usize,
        drain: bool,
    },
    Probe {
        url: usize,
        pass: bool,
    },
    /// Time passes (seconds), then a failing probe of every instance: old critical ones are reaped.
    Wait(u64),
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..SERVICES.len(), 0..URLS, any::<bool>(), any::<bool>())
            .prop_map(|(service, url, requires, proven)| Step::Register { service, url, requires, proven }),
        1 => (0..URLS).prop_map(Step::Deregister),
        1 => (0..URLS, any::<bool>()).prop_map(|(url, drain)| Step::Drain { url, drain }),
        4 => (0..URLS, any::<bool>()).prop_map(|(url, pass)| Step::Probe { url, pass }),
        1 => (1..120_u64).prop_map(Step::Wait),
        1 => Just(Step::Restart),
    ]
}

fn url(n: usize) -> String {
    format!("http://10.0.0.{n}:8080")
}

/// Each service's discoverable instances, as the listing shows them.
fn discoverable(c: &Catalog) -> BTreeMap<String, BTreeSet<String>> {
    SERVICES
        .iter()
        .map(|s| {
            let urls = c
                .service(s, false)
                .instances
                .into_iter()
                .filter(|i| i.state.is_discoverable())
                .map(|i| i.url)
                .collect();
            ((*s).to_owned(), urls)
        })
        .collect()
}

/// The service URLs the catalog lists, checking that none is listed twice.
fn listed(c: &Catalog) -> BTreeSet<String> {
    let all: Vec<String> = c
        .services(false)
        .into_iter()
        .flat_map(|s| s.instances)
        .map(|i| i.url)
        .collect();
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "an instance is listed twice: {all:?}");
    assert_eq!(c.len(), unique.len());
    unique
}

/// The instances drained, and those critical (both survive a restart).
fn drained(c: &Catalog) -> [BTreeSet<String>; 2] {
    let of = |state| {
        c.services(false)
            .into_iter()
            .flat_map(|s| s.instances)
            .filter(|i| i.state == state)
            .map(|i| i.url)
            .collect()
    };
    [of(InstanceState::Draining), of(InstanceState::Critical)]
}

/// The catalog, what it asked to store, and the model beside it.
struct World {
    c: Catalog,
    disk: BTreeMap<String, StoredInstance>,
    model: BTreeSet<String>,
    now: SystemTime,
}

impl World {
    /// Does `step`; what each command it made answered.
    fn perform(&mut self, step: &Step) -> Vec<Result<Vec<Event>, CommandError>> {
        let c = &mut self.c;
        match step {
            Step::Restart => {
                let (urls, drains) = (listed(c), drained(c));
                *c = catalog();
                c.restore(self.disk.values().cloned().collect());
                assert_eq!(listed(c), urls, "a restart keeps exactly what was registered");
                assert_eq!(
                    drained(c),
                    drains,
                    "a drained instance stays drained, a critical one critical"
                );
                Vec::new()
            }
            Step::Register {
                service,
                url: n,
                requires,
                proven,
            } => {
                let mut registration = registration(SERVICES[*service], &url(*n), &[]);
                if *requires {
                    registration.required_services = vec!["A".to_owned()];
                }
                let mut command = register_command(registration);
                if let Command::Register { proven: p, at, .. } = &mut command {
                    *p = *proven;
                    *at = self.now;
                }
                vec![c.apply(command)]
            }
            Step::Deregister(n) => vec![c.apply(Command::Deregister {
                url: url(*n),
                by: Actor::default(),
            })],
            Step::Drain { url: n, drain } => vec![c.apply(Command::Drain {
                url: url(*n),
                by: Actor::default(),
                drain: *drain,
            })],
            Step::Probe { url: n, pass } => match c.instance(&url(*n)).map(|i| i.id) {
                Some(id) => vec![c.apply(probe_command(&url(*n), id, *pass, self.now))],
                None => Vec::new(),
            },
            Step::Wait(seconds) => {
                self.now += Duration::from_secs(*seconds);
                let current: Vec<(String, InstanceId)> = c
                    .urls()
                    .filter_map(|u| c.instance(u).map(|i| (u.to_owned(), i.id)))
                    .collect();
                current
                    .into_iter()
                    .map(|(u, id)| c.apply(probe_command(&u, id, false, self.now)))
                    .collect()
            }
        }
    }

    /// Keeps what `events` ask to store, follows them in the model, and returns the services
    /// whose providers they announced as changed.
    fn take(&mut self, events: &[Event], step: &Step) -> BTreeSet<String> {
        for op in self.c.store_ops(events) {
            match op {
                StoreOp::Put(stored) => {
                    self.disk.insert(stored.registration.service_url.clone(), stored);
                }
                StoreOp::Delete(gone) => {
                    self.disk.remove(&gone);
                }
                StoreOp::Health(_) | StoreOp::Held(_) => {}
            }
        }
        let mut announced = BTreeSet::new();
        for event in events {
            match event {
                Event::Registered { url, .. } => {
                    self.model.insert(url.clone());
                }
                Event::Deregistered { url, reaped, .. } => {
                    assert!(
                        *reaped || matches!(step, Step::Deregister(_)),
                        "only a deregistration or the reaper removes: {step:?}"
                    );
                    self.model.remove(url);
                }
                Event::ProvidersChanged { service } => {
                    announced.insert(service.clone());
                }
                _ => {}
            }
        }
        announced
    }
}

/// Runs `steps`; panics at the first broken rule.
fn run(steps: &[Step]) {
    let mut world = World {
        c: catalog(),
        disk: BTreeMap::new(),
        model: BTreeSet::new(),
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
    };
    let mut index = world.c.last_index();
    for step in steps {
        world.now += Duration::from_secs(1);
        let before = discoverable(&world.c);
        let mut announced = BTreeSet::new();
        for events in world.perform(step).into_iter().flatten() {
            announced.extend(world.take(&events, step));
        }
        let c = &world.c;
        assert_eq!(listed(c), world.model, "after {step:?}");
        let after = discoverable(c);
        for service in SERVICES {
            let given: BTreeSet<String> = c
                .providers_of(&[service.to_owned()])
                .into_iter()
                .map(|entry| entry.url)
                .collect();
            assert_eq!(given, after[service], "{service}'s providers after {step:?}");
            if !matches!(step, Step::Restart) {
                assert_eq!(
                    announced.contains(service),
                    before[service] != after[service],
                    "{service}: ProvidersChanged exactly when its providers changed, after {step:?}"
                );
            }
        }
        if matches!(step, Step::Restart) {
            index = c.last_index();
        }
        assert!(c.last_index() >= index, "the index went back after {step:?}");
        index = c.last_index();
    }
}

fn probe_command(url: &str, id: InstanceId, pass: bool, at: SystemTime) -> Command {
    let outcome = if pass {
        Ok(())
    } else {
        Err(ProbeFailure {
            public: "no answer".to_owned(),
            detail: "connection refused".to_owned(),
        })
    };
    Command::RecordProbe {
        url: url.to_owned(),
        id,
        outcome,
        at,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_catalog_keeps_its_invariants_through_any_sequence_of_changes_and_restarts(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        run(&steps);
    }
}
