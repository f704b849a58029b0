//! The catalog's rules, each a test named as the sentence it checks, and the helpers they share.
//! Along the catalog's seams: here registration, health and indexes; `ownership` who may change
//! what; `restore` what survives a restart and what a subscriber holds; `checks` the checks an
//! instance may choose (TTL renewals and expiries, its own tries); `replica` changes other
//! registry nodes made, taken in; `model` every rule at once, against a reference model, over
//! random sequences of changes and restarts (proptest).

mod checks;
mod model;
mod ownership;
mod replica;
mod restore;

use super::*;

const TRIES: u32 = 3;
const REAP_AFTER: Duration = Duration::from_secs(60);
fn catalog() -> Catalog {
    catalog_with(Limits {
        instances: 1_000,
        per_service: 1_000,
    })
}

fn catalog_with(limits: Limits) -> Catalog {
    Catalog::new(
        HealthPolicy {
            tries: TRIES,
            deregister_critical_after: REAP_AFTER,
        },
        limits,
        1_000,
    )
}

#[test]
fn registrations_past_the_limits_are_refused_but_re_registrations_never_are() {
    let mut c = catalog_with(Limits {
        instances: 3,
        per_service: 2,
    });
    register(&mut c, "A", "http://a1");
    register(&mut c, "A", "http://a2");
    let third_a = c.apply(register_command(registration("A", "http://a3", &[])));
    assert_eq!(
        third_a,
        Err(CommandError::TooManyOfService {
            service: "A".to_owned(),
            limit: 2
        })
    );
    register(&mut c, "B", "http://b1");
    let fourth = c.apply(register_command(registration("C", "http://c1", &[])));
    assert_eq!(fourth, Err(CommandError::TooManyInstances(3)));
    assert_eq!(c.len(), 3, "nothing was added");
    // A URL already held may always register again (a restart of that instance).
    assert!(c.apply(register_command(registration("A", "http://a1", &[]))).is_ok());
    c.apply(Command::Deregister {
        url: "http://b1".to_owned(),
        by: Actor::default(),
    })
    .expect("deregister");
    assert!(
        c.apply(register_command(registration("C", "http://c1", &[]))).is_ok(),
        "room again"
    );
}

fn registration(name: &str, url: &str, required: &[&str]) -> Registration {
    Registration {
        service_name: name.to_owned(),
        service_url: url.to_owned(),
        required_services: required.iter().map(|s| (*s).to_owned()).collect(),
        service_update_url: format!("{url}/services"),
        heartbeat_url: format!("{url}/heartbeat"),
    }
}

fn register_command(registration: Registration) -> Command {
    Command::Register {
        new_instance_id: format!("id-{}", registration.service_url),
        registration,
        metadata: BTreeMap::new(),
        check: rollcall_wire::Check::default(),
        config_url: None,
        by: Actor::default(),
        delivered: BTreeSet::new(),
        proven: true,
        at: SystemTime::UNIX_EPOCH,
    }
}

/// A `/v1/instances` registration: not proven alive by a callback.
fn unproven(registration: Registration) -> Command {
    let mut command = register_command(registration);
    if let Command::Register { proven, .. } = &mut command {
        *proven = false;
    }
    command
}

fn providers_changes(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::ProvidersChanged { .. }))
        .count()
}

#[test]
fn an_unproven_registration_is_pending_and_announced_by_its_first_passing_probe() {
    let mut c = catalog();
    let events = c.apply(unproven(registration("A", "http://a", &[]))).expect("register");
    assert_eq!(providers_changes(&events), 0, "nothing announced yet");
    let Some(Event::Registered { id, .. }) = events.first() else {
        panic!("{events:?}")
    };
    assert_eq!(c.instance("http://a").map(|i| i.state), Some(InstanceState::Pending));
    assert!(
        c.providers_of(&["A".to_owned()]).is_empty(),
        "dependents do not hold it"
    );
    let events = probe(&mut c, "http://a", *id, true, 1);
    assert_eq!(providers_changes(&events), 1, "announced now");
    assert_eq!(c.providers_of(&["A".to_owned()]).len(), 1);
}

#[test]
fn a_pending_instance_that_never_answers_is_never_announced() {
    let mut c = catalog();
    let events = c
        .apply(unproven(registration("A", "http://dead", &[])))
        .expect("register");
    let Some(Event::Registered { id, .. }) = events.first() else {
        panic!("{events:?}")
    };
    for n in 0..5 {
        let events = probe(&mut c, "http://dead", *id, false, n);
        assert_eq!(providers_changes(&events), 0, "probe {n}: {events:?}");
        let state = c.instance("http://dead").map(|i| i.state);
        assert!(
            matches!(state, Some(InstanceState::Pending | InstanceState::Critical)),
            "never suspect (which dependents hold): {state:?}"
        );
    }
    assert_eq!(
        c.instance("http://dead").map(|i| i.state),
        Some(InstanceState::Critical)
    );
}

#[test]
fn a_drained_instance_is_out_of_rotation_whatever_its_probes_say_until_undrained() {
    let mut c = catalog();
    let (id, _) = register(&mut c, "A", "http://a");
    let drain = |drain| Command::Drain {
        url: "http://a".to_owned(),
        by: Actor::default(),
        drain,
    };
    let events = c.apply(drain(true)).expect("drain");
    assert_eq!(providers_changes(&events), 1, "dependents are told at once");
    assert!(c.providers_of(&["A".to_owned()]).is_empty());
    assert!(
        probe(&mut c, "http://a", id, true, 1)
            .iter()
            .all(|e| !matches!(e, Event::StateChanged { .. }))
    );
    for n in 2..8 {
        probe(&mut c, "http://a", id, false, n);
    }
    assert_eq!(
        c.instance("http://a").map(|i| i.state),
        Some(InstanceState::Draining),
        "failures neither"
    );
    assert!(
        c.apply(drain(true)).expect("again").is_empty(),
        "draining twice changes nothing"
    );
    let events = c.apply(drain(false)).expect("undrain");
    assert_eq!(providers_changes(&events), 1, "back in rotation");
    assert_eq!(c.instance("http://a").map(|i| i.state), Some(InstanceState::Passing));
    let stranger = Command::Drain {
        url: "http://nowhere".to_owned(),
        by: Actor::default(),
        drain: true,
    };
    assert_eq!(
        c.apply(stranger),
        Err(CommandError::UnknownInstance("http://nowhere".to_owned()))
    );
}

#[test]
fn re_registering_a_held_address_unproven_keeps_it_held() {
    let mut c = catalog();
    register(&mut c, "A", "http://a");
    let events = c.apply(unproven(registration("A", "http://a", &[]))).expect("register");
    assert_eq!(providers_changes(&events), 0, "no Removed, no Added: {events:?}");
    assert_eq!(c.instance("http://a").map(|i| i.state), Some(InstanceState::Passing));
}

fn register(c: &mut Catalog, name: &str, url: &str) -> (InstanceId, Vec<Event>) {
    let events = c
        .apply(register_command(registration(name, url, &[])))
        .expect("register");
    let Some(Event::Registered { id, .. }) = events.first() else {
        panic!("no Registered event: {events:?}")
    };
    (*id, events)
}

fn probe(c: &mut Catalog, url: &str, id: InstanceId, ok: bool, secs: u64) -> Vec<Event> {
    let outcome = if ok {
        Ok(())
    } else {
        Err(ProbeFailure {
            public: "answered HTTP 503".to_owned(),
            detail: "answered HTTP 503".to_owned(),
        })
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    c.apply(Command::RecordProbe {
        url: url.to_owned(),
        id,
        outcome,
        at,
    })
    .expect("probe")
}

fn changed(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ProvidersChanged { service } => Some(service.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn registering_the_same_url_twice_keeps_one_entry_and_announces_once() {
    let mut c = catalog();
    let (_, first) = register(&mut c, "A", "http://a");
    let (_, again) = register(&mut c, "A", "http://a");
    assert_eq!(changed(&first), ["A"]);
    assert!(
        changed(&again).is_empty(),
        "identical re-registration changes no provider set"
    );
    assert_eq!(c.len(), 1);
    assert_eq!(c.service("A", false).instances.len(), 1);
}

#[test]
fn re_registering_a_url_under_another_name_moves_it() {
    let mut c = catalog();
    register(&mut c, "A", "http://x");
    let (_, events) = register(&mut c, "B", "http://x");
    assert_eq!(changed(&events), ["A", "B"]);
    assert!(c.service("A", false).instances.is_empty());
    assert_eq!(c.services(false).len(), 1, "an emptied service is no longer listed");
}

#[test]
fn failures_below_tries_make_suspect_without_changing_providers() {
    let mut c = catalog();
    let (id, _) = register(&mut c, "A", "http://a");
    for n in 1..TRIES {
        let events = probe(&mut c, "http://a", id, false, u64::from(n));
        assert!(changed(&events).is_empty());
        assert_eq!(c.instance("http://a").map(|i| i.state), Some(InstanceState::Suspect));
    }
    let events = probe(&mut c, "http://a", id, true, 10);
    assert!(changed(&events).is_empty());
    assert_eq!(c.instance("http://a").map(|i| i.consecutive_failures), Some(0));
}

#[test]
fn tries_failures_make_critical_and_recovery_restores() {
    let mut c = catalog();
    let (id, _) = register(&mut c, "A", "http://a");
    let mut events = Vec::new();
    for n in 1..=TRIES {
        events = probe(&mut c, "http://a", id, false, u64::from(n));
    }
    assert_eq!(changed(&events), ["A"]);
    assert!(c.providers_of(&["A".to_owned()]).is_empty());
    assert_eq!(c.service("A", false).instances[0].state, InstanceState::Critical);
    assert!(c.service("A", true).instances.is_empty(), "?passing hides it");

    let events = probe(&mut c, "http://a", id, true, 20);
    assert_eq!(changed(&events), ["A"]);
    assert_eq!(c.providers_of(&["A".to_owned()]).len(), 1);
}

#[test]
fn critical_for_too_long_is_reaped() {
    let mut c = catalog();
    let (id, _) = register(&mut c, "A", "http://a");
    for n in 1..=TRIES {
        probe(&mut c, "http://a", id, false, u64::from(n));
    }
    assert!(
        probe(&mut c, "http://a", id, false, 30).is_empty(),
        "still within the grace"
    );
    let events = probe(&mut c, "http://a", id, false, u64::from(TRIES) + REAP_AFTER.as_secs());
    assert!(matches!(events.first(), Some(Event::Deregistered { reaped: true, .. })));
    assert!(c.is_empty());
}

#[test]
fn results_for_a_replaced_registration_are_ignored() {
    let mut c = catalog();
    let (old, _) = register(&mut c, "A", "http://a");
    let (new, _) = register(&mut c, "A", "http://a");
    assert_ne!(old, new);
    for n in 0..5 {
        assert!(probe(&mut c, "http://a", old, false, n).is_empty());
    }
    assert_eq!(c.instance("http://a").map(|i| i.state), Some(InstanceState::Passing));
}

#[test]
fn a_service_index_moves_only_when_its_listing_does() {
    let mut c = catalog();
    assert_eq!(c.index_of("A"), 0);
    let (id, events) = register(&mut c, "A", "http://a");
    let first = c.index_of("A");
    assert!(first > 1_000);
    assert!(events.contains(&Event::IndexChanged {
        service: "A".to_owned(),
        index: first
    }));

    register(&mut c, "B", "http://b");
    assert_eq!(c.index_of("A"), first, "another service's change leaves A alone");
    assert!(
        probe(&mut c, "http://a", id, true, 1).is_empty(),
        "a passing probe changes nothing"
    );
    assert_eq!(c.index_of("A"), first);

    probe(&mut c, "http://a", id, false, 2);
    assert!(c.index_of("A") > first, "passing -> suspect is a change");
    assert_eq!(c.last_index(), c.index_of("A"));
}

#[test]
fn dependents_are_indexed_by_required_service() {
    let mut c = catalog();
    let reg = registration("Portal", "http://p", &["LogService", "GradingService"]);
    c.apply(register_command(reg)).expect("register");
    assert_eq!(c.dependents_of("GradingService").collect::<Vec<_>>(), ["http://p"]);
    c.apply(Command::Deregister {
        url: "http://p".to_owned(),
        by: Actor::default(),
    })
    .expect("deregister");
    assert_eq!(c.dependents_of("GradingService").count(), 0);
}

#[test]
fn a_service_that_leaves_takes_its_version_along_and_comes_back_with_a_new_one() {
    let mut c = catalog();
    register(&mut c, "A", "http://a");
    let before = c.version_of("A").expect("A has instances");
    for n in 0..100 {
        let url = format!("http://churn/{n}");
        register(&mut c, &format!("Churn{n}"), &url);
        c.apply(Command::Deregister {
            url,
            by: Actor::default(),
        })
        .expect("deregister");
    }
    assert_eq!(
        c.versions.len(),
        1,
        "only A, which still has an instance, keeps a version"
    );
    c.apply(Command::Deregister {
        url: "http://a".to_owned(),
        by: Actor::default(),
    })
    .expect("deregister");
    assert_eq!(c.version_of("A"), None);
    register(&mut c, "A", "http://a");
    assert!(c.version_of("A").expect("A is back") > before, "never an old version");
}

fn actor(peer: &str, token: Option<&str>, admin: bool) -> Actor {
    Actor {
        registrant: Registrant {
            peer: Some(peer.parse().expect("ip")),
            token: token.map(str::to_owned),
        },
        admin,
    }
}
