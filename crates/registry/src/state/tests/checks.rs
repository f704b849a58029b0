//! The rules of the checks an instance may choose: TTL renewals and expiries, its own tries.

use rollcall_wire::Check;

use super::*;

/// Registers a TTL-checked instance of `A` at `url`, registered by `by`, and returns its id.
fn register_ttl(c: &mut Catalog, url: &str, by: Actor, tries: Option<u32>) -> InstanceId {
    let mut command = register_command(registration("A", url, &[]));
    if let Command::Register { check, by: who, .. } = &mut command {
        *check = Check {
            tries,
            ..Check::ttl(Duration::from_secs(5))
        };
        *who = by;
    }
    let events = c.apply(command).expect("register");
    let Some(Event::Registered { id, .. }) = events.first() else {
        panic!("no Registered event: {events:?}")
    };
    *id
}

fn renew(c: &mut Catalog, url: &str, by: Actor, secs: u64) -> Result<Vec<Event>, CommandError> {
    c.apply(Command::Renew {
        url: url.to_owned(),
        by,
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    })
}

fn expire(c: &mut Catalog, url: &str, id: InstanceId, seen: Option<u64>, secs: u64) -> Vec<Event> {
    c.apply(Command::Expire {
        url: url.to_owned(),
        id,
        seen: seen.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
        failure: ProbeFailure {
            public: "not renewed within its TTL".to_owned(),
            detail: "no renewal within 5s".to_owned(),
        },
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
    })
    .expect("expire")
}

fn state(c: &Catalog, url: &str) -> Option<InstanceState> {
    c.instance(url).map(|i| i.state)
}

#[test]
fn a_renewal_is_a_passing_check_that_announces_and_revives() {
    let mut c = catalog();
    let owner = actor("10.0.0.1", None, false);
    let id = register_ttl(&mut c, "http://a1", owner.clone(), None);
    assert_eq!(
        state(&c, "http://a1"),
        Some(InstanceState::Passing),
        "a proven registration"
    );
    for at in 1..=TRIES {
        expire(
            &mut c,
            "http://a1",
            id,
            (at > 1).then(|| u64::from(at - 1)),
            u64::from(at),
        );
    }
    assert_eq!(state(&c, "http://a1"), Some(InstanceState::Critical));
    let events = renew(&mut c, "http://a1", owner, 10).expect("renewed");
    assert_eq!(state(&c, "http://a1"), Some(InstanceState::Passing));
    assert_eq!(changed(&events), ["A"], "dependents are sent it again");
}

#[test]
fn only_the_owner_renews_and_only_a_ttl_checked_instance() {
    let mut c = catalog();
    register_ttl(&mut c, "http://a1", actor("10.0.0.1", Some("t1"), false), None);
    let other = renew(&mut c, "http://a1", actor("10.0.0.1", Some("t2"), false), 1);
    assert_eq!(other, Err(CommandError::NotOwner("http://a1".to_owned())));
    assert!(
        renew(&mut c, "http://a1", actor("10.0.0.9", None, true), 1).is_ok(),
        "an admin may"
    );

    register(&mut c, "A", "http://a2");
    let http = renew(&mut c, "http://a2", Actor::default(), 1);
    assert_eq!(
        http,
        Err(CommandError::NotTtl {
            url: "http://a2".to_owned(),
            kind: "http"
        })
    );
    let unknown = renew(&mut c, "http://nobody", Actor::default(), 1);
    assert_eq!(unknown, Err(CommandError::UnknownInstance("http://nobody".to_owned())));
}

#[test]
fn an_expiry_that_raced_a_renewal_counts_nothing() {
    let mut c = catalog();
    let owner = actor("10.0.0.1", None, false);
    let id = register_ttl(&mut c, "http://a1", owner.clone(), None);
    // The timer saw no check yet; a renewal came in before its expiry was applied.
    renew(&mut c, "http://a1", owner, 4).expect("renewed");
    assert!(expire(&mut c, "http://a1", id, None, 5).is_empty());
    let instance = c.instance("http://a1").expect("listed");
    assert_eq!(
        (instance.state, instance.consecutive_failures),
        (InstanceState::Passing, 0)
    );
}

#[test]
fn an_instance_becomes_critical_after_its_own_tries() {
    let mut c = catalog();
    let id = register_ttl(&mut c, "http://a1", Actor::default(), Some(1));
    let events = expire(&mut c, "http://a1", id, None, 1);
    assert_eq!(
        state(&c, "http://a1"),
        Some(InstanceState::Critical),
        "one try, not {TRIES}"
    );
    assert_eq!(changed(&events), ["A"]);
}
