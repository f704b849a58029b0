//! Changes another registry node made to the shared store, taken into this node's catalog.

use super::*;

/// What node `a` stores after applying `command`: the change its peers replicate.
fn stored_after(a: &mut Catalog, command: Command) -> Vec<StoreOp> {
    let events = a.apply(command).expect("applied");
    a.store_ops(&events)
}

fn replicate(b: &mut Catalog, ops: Vec<StoreOp>) -> Vec<Event> {
    ops.into_iter()
        .flat_map(|op| b.apply(Command::Replicate(op)).expect("replicated"))
        .collect()
}

#[test]
fn a_registration_made_elsewhere_is_listed_pending_with_its_id_until_probed_here() {
    let (mut a, mut b) = (catalog(), catalog());
    let ops = stored_after(&mut a, register_command(registration("A", "http://a", &[])));
    let events = replicate(&mut b, ops);
    let held = b.instance("http://a").expect("listed");
    assert_eq!(
        held.state,
        InstanceState::Pending,
        "announced here once a probe here passes"
    );
    assert_eq!(held.instance_id, a.instance("http://a").expect("a").instance_id);
    assert!(matches!(events.first(), Some(Event::Registered { .. })), "{events:?}");
    assert_eq!(providers_changes(&events), 0);
}

#[test]
fn the_echo_of_a_nodes_own_write_changes_nothing() {
    let mut a = catalog();
    let ops = stored_after(&mut a, register_command(registration("A", "http://a", &[])));
    let events = replicate(&mut a, ops);
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_drain_made_elsewhere_takes_the_instance_out_of_rotation_here_and_an_undrain_puts_it_back() {
    let (mut a, mut b) = (catalog(), catalog());
    for c in [&mut a, &mut b] {
        register(c, "A", "http://a");
    }
    let drain = |drain| Command::Drain {
        url: "http://a".to_owned(),
        by: Actor::default(),
        drain,
    };
    let events = replicate(&mut b, stored_after(&mut a, drain(true)));
    assert_eq!(b.instance("http://a").map(|i| i.state), Some(InstanceState::Draining));
    assert_eq!(changed(&events), ["A"], "dependents lose it");
    let events = replicate(&mut b, stored_after(&mut a, drain(false)));
    assert_eq!(b.instance("http://a").map(|i| i.state), Some(InstanceState::Passing));
    assert_eq!(changed(&events), ["A"], "and get it back");
}

#[test]
fn a_deregistration_made_elsewhere_removes_the_instance_and_tells_its_dependents() {
    let (mut a, mut b) = (catalog(), catalog());
    for c in [&mut a, &mut b] {
        register(c, "A", "http://a");
    }
    let deregister = Command::Deregister {
        url: "http://a".to_owned(),
        by: Actor::default(),
    };
    let events = replicate(&mut b, stored_after(&mut a, deregister));
    assert!(b.instance("http://a").is_none());
    assert!(matches!(
        events.first(),
        Some(Event::Deregistered { reaped: false, .. })
    ));
    assert_eq!(changed(&events), ["A"]);
}

#[test]
fn a_new_registration_at_a_held_address_replaces_the_old_one_and_takes_the_new_id() {
    let (mut a, mut b) = (catalog(), catalog());
    register(&mut b, "A", "http://a");
    let mut fresh = register_command(registration("A", "http://a", &[]));
    if let Command::Register { new_instance_id, .. } = &mut fresh {
        *new_instance_id = "fresh".to_owned();
    }
    replicate(&mut b, stored_after(&mut a, fresh));
    assert_eq!(b.instance("http://a").map(|i| i.instance_id.as_str()), Some("fresh"));
    assert_eq!(b.len(), 1);
}

#[test]
fn a_resync_holds_exactly_the_shared_catalog() {
    let (mut a, mut b) = (catalog(), catalog());
    register(&mut b, "Gone", "http://gone");
    register(&mut b, "A", "http://a");
    register(&mut a, "A", "http://a");
    register(&mut a, "New", "http://new");
    let all: Vec<StoredInstance> = ["http://a", "http://new"]
        .iter()
        .map(|url| a.instance(url).expect("held").stored())
        .collect();
    let events = b.apply(Command::Resync(all)).expect("resync");
    assert!(b.instance("http://gone").is_none());
    assert!(b.instance("http://new").is_some());
    assert_eq!(b.len(), 2);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Deregistered { url, .. } if url == "http://a")),
        "what both hold stays: {events:?}"
    );
}

#[test]
fn the_health_the_probing_node_finds_is_shared_and_taken_in_by_the_others() {
    let (mut a, mut b) = (catalog().sharing_health(), catalog().sharing_health());
    let (id, events) = register(&mut a, "A", "http://a");
    let ops = a.store_ops(&events);
    assert!(
        ops.iter()
            .any(|op| matches!(op, StoreOp::Health(h) if h.state == InstanceState::Passing)),
        "a registration shares its first state: {ops:?}"
    );
    replicate(&mut b, ops);
    assert_eq!(b.instance("http://a").map(|i| i.state), Some(InstanceState::Passing));

    let mut events = Vec::new();
    for second in 1..=u64::from(TRIES) {
        events.extend(probe(&mut a, "http://a", id, false, second));
    }
    let ops = a.store_ops(&events);
    assert!(
        ops.iter().all(|op| matches!(op, StoreOp::Health(_))),
        "health goes apart from the registration: {ops:?}"
    );
    let taken_in = replicate(&mut b, ops);
    assert_eq!(b.instance("http://a").map(|i| i.state), Some(InstanceState::Critical));
    assert_eq!(changed(&taken_in), ["A"], "b's dependents lose it too");
}

#[test]
fn a_catalog_that_does_not_share_health_stores_none() {
    let mut a = catalog();
    let (id, mut events) = register(&mut a, "A", "http://a");
    events.extend(probe(&mut a, "http://a", id, false, 1));
    assert!(!a.store_ops(&events).iter().any(|op| matches!(op, StoreOp::Health(_))));
}

#[test]
fn a_shared_catalogs_indexes_are_the_revisions_of_its_changes_and_never_move_back() {
    let mut a = catalog().sharing_health();
    let (_, events) = register(&mut a, "A", "http://a");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::IndexChanged { service, index: 0 } if service == "A")),
        "touched, its revision not known yet: {events:?}"
    );
    assert_eq!(a.index_of("A"), 0);
    let moved = a.index_at(&["A".to_owned()], 42);
    assert_eq!(
        moved,
        [Event::IndexChanged {
            service: "A".to_owned(),
            index: 42
        }]
    );
    assert!(a.index_at(&["A".to_owned()], 40).is_empty(), "never back");
    assert_eq!((a.index_of("A"), a.last_index()), (42, 42));

    let mut restarted = catalog().sharing_health();
    let mut stored = a.instance("http://a").expect("held").stored();
    stored.revision = 42;
    restarted.restore(vec![stored]);
    assert_eq!(restarted.index_of("A"), 42, "a node starting reads the same index");
}
