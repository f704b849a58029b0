//! Who may change what: a registration made with a token yields to that token (or an admin), an
//! anonymous one to its address, one whose registrant was never recorded to anyone.

use super::*;

fn register_as(c: &mut Catalog, url: &str, by: Actor) -> Result<Vec<Event>, CommandError> {
    let mut command = register_command(registration("A", url, &[]));
    if let Command::Register { by: who, .. } = &mut command {
        *who = by;
    }
    c.apply(command)
}

fn deregister_as(c: &mut Catalog, url: &str, by: Actor) -> Result<Vec<Event>, CommandError> {
    c.apply(Command::Deregister {
        url: url.to_owned(),
        by,
    })
}

#[test]
fn a_registration_made_with_a_token_is_changed_only_by_that_token_or_an_admin() {
    let mut c = catalog();
    register_as(&mut c, "http://a", actor("10.0.0.1", Some("t1"), false)).expect("register");
    let not_owner = Err(CommandError::NotOwner("http://a".to_owned()));
    assert_eq!(
        register_as(&mut c, "http://a", actor("10.0.0.1", Some("t2"), false)),
        not_owner
    );
    assert_eq!(
        register_as(&mut c, "http://a", actor("10.0.0.1", None, false)),
        not_owner,
        "not even from its address"
    );
    assert_eq!(
        deregister_as(&mut c, "http://a", actor("10.0.0.1", Some("t2"), false)),
        not_owner
    );
    assert_eq!(c.len(), 1, "refusals change nothing");
    assert!(
        register_as(&mut c, "http://a", actor("10.0.0.9", Some("t1"), false)).is_ok(),
        "its token, from anywhere"
    );
    assert!(deregister_as(&mut c, "http://a", actor("10.0.0.2", Some("admin"), true)).is_ok());
    assert!(c.is_empty());
}

#[test]
fn an_anonymous_registration_is_changed_only_from_its_address() {
    let mut c = catalog();
    register_as(&mut c, "http://a", actor("127.0.0.1", None, false)).expect("register");
    let not_owner = Err(CommandError::NotOwner("http://a".to_owned()));
    assert_eq!(
        deregister_as(&mut c, "http://a", actor("127.0.0.2", None, false)),
        not_owner
    );
    assert_eq!(
        register_as(&mut c, "http://a", actor("127.0.0.2", None, false)),
        not_owner
    );
    // The same service restarting, now with a token, takes its registration over.
    register_as(&mut c, "http://a", actor("127.0.0.1", Some("t1"), false)).expect("taken over");
    assert_eq!(
        deregister_as(&mut c, "http://a", actor("127.0.0.1", None, false)),
        not_owner
    );
    assert!(deregister_as(&mut c, "http://a", actor("127.0.0.1", Some("t1"), false)).is_ok());
}

#[test]
fn an_instance_whose_registrant_was_never_recorded_yields_to_anyone() {
    let mut c = catalog();
    c.restore(vec![StoredInstance::new(
        "old".to_owned(),
        registration("A", "http://a", &[]),
        SystemTime::UNIX_EPOCH,
    )]);
    assert!(deregister_as(&mut c, "http://a", actor("10.0.0.1", None, false)).is_ok());
}

#[test]
fn unknown_deregistration_is_refused_and_changes_nothing() {
    let mut c = catalog();
    register(&mut c, "A", "http://a");
    let result = c.apply(Command::Deregister {
        url: "http://b".to_owned(),
        by: Actor::default(),
    });
    assert_eq!(result, Err(CommandError::UnknownInstance("http://b".to_owned())));
    assert_eq!(c.len(), 1);
}
