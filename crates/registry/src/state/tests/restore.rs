//! What survives a restart and what a subscriber is taken to hold: stored drains, public ids,
//! registrants, and the holdings a registration's callback or a restore gives a subscriber.

use super::*;

#[test]
fn a_drain_is_stored_and_a_restored_drained_instance_stays_out_of_rotation() {
    let mut c = catalog();
    register(&mut c, "A", "http://a");
    let drain = |drain| Command::Drain {
        url: "http://a".to_owned(),
        by: Actor::default(),
        drain,
    };
    let events = c.apply(drain(true)).expect("drain");
    let ops = c.store_ops(&events);
    let [StoreOp::Put(stored)] = ops.as_slice() else {
        panic!("one put: {ops:?}")
    };
    assert!(stored.draining);
    let mut restarted = catalog();
    restarted.restore(vec![stored.clone()]);
    assert_eq!(
        restarted.instance("http://a").map(|i| i.state),
        Some(InstanceState::Draining)
    );
    assert!(restarted.providers_of(&["A".to_owned()]).is_empty());
    let events = c.apply(drain(false)).expect("undrain");
    assert!(matches!(c.store_ops(&events).as_slice(), [StoreOp::Put(s)] if !s.draining));
}

#[test]
fn a_url_keeps_its_public_id_across_re_registrations_and_restores() {
    let mut c = catalog();
    register(&mut c, "A", "http://a");
    let mut again = register_command(registration("A", "http://a", &[]));
    if let Command::Register { new_instance_id, .. } = &mut again {
        *new_instance_id = "another".to_owned();
    }
    let events = c.apply(again).expect("register");
    let stored: Vec<StoredInstance> = c
        .store_ops(&events)
        .into_iter()
        .filter_map(|op| match op {
            StoreOp::Put(stored) => Some(stored),
            StoreOp::Delete(_) | StoreOp::Health(_) | StoreOp::Held(_) => None,
        })
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, "id-http://a");

    let mut restored = catalog();
    let events = restored.restore(stored);
    assert_eq!(events.len(), 1);
    assert!(changed(&events).is_empty(), "a restore announces nothing");
    let instance = restored.instance_by_id("id-http://a").expect("found by id");
    assert_eq!(instance.registration.service_url, "http://a");
}

fn holds(events: &[Event]) -> Vec<(String, BTreeSet<PatchEntry>)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Registered { url, holds, .. } => Some((url.clone(), holds.clone())),
            _ => None,
        })
        .collect()
}

fn entry(name: &str, url: &str) -> PatchEntry {
    PatchEntry {
        name: name.to_owned(),
        url: url.to_owned(),
    }
}

#[test]
fn a_registration_holds_what_its_callback_delivered() {
    let mut c = catalog();
    let mut command = register_command(registration("P", "http://p", &["A"]));
    if let Command::Register { delivered, .. } = &mut command {
        delivered.insert(entry("A", "http://a"));
    }
    let events = c.apply(command).expect("register");
    assert_eq!(
        holds(&events),
        [("http://p".to_owned(), BTreeSet::from([entry("A", "http://a")]))]
    );
}

#[test]
fn an_instance_stored_before_registrants_were_recorded_reads_back_without_one() {
    let mut c = catalog();
    register(&mut c, "A", "http://a");
    let stored = c.instances.get("http://a").expect("registered").stored();
    let mut json = serde_json::to_value(&stored).expect("encodes");
    json.as_object_mut().expect("an object").remove("registrant");
    let read: StoredInstance = serde_json::from_value(json).expect("an older record still reads");
    assert_eq!(read.registrant, Registrant::default());
    assert_eq!(read.registration, stored.registration);
}

#[test]
fn a_restored_subscriber_holds_what_the_restored_catalog_offers_it() {
    let stored = |name: &str, url: &str, required: &[&str]| {
        StoredInstance::new(
            format!("id-{url}"),
            registration(name, url, required),
            SystemTime::UNIX_EPOCH,
        )
    };
    let mut c = catalog();
    // The dependent comes back before its providers: it still holds them all.
    let events = c.restore(vec![
        stored("P", "http://p", &["A"]),
        stored("A", "http://a1", &[]),
        stored("A", "http://a2", &[]),
    ]);
    let all = BTreeSet::from([entry("A", "http://a1"), entry("A", "http://a2")]);
    assert_eq!(
        holds(&events),
        [
            ("http://p".to_owned(), all),
            ("http://a1".to_owned(), BTreeSet::new()),
            ("http://a2".to_owned(), BTreeSet::new()),
        ]
    );
}
