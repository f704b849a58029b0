//! The rules of releases, each a test named as the sentence it checks.

use std::time::{Duration, SystemTime};

use super::*;

fn key() -> DocKey {
    DocKey::new("prod", "GradingService", "limits").expect("key")
}

fn draft(content: &str, expected: Option<u64>) -> Draft {
    Draft {
        format: ConfigFormat::Json,
        content: content.to_owned(),
        author: "ops".to_owned(),
        message: "why".to_owned(),
        expected,
        rolled_back_from: None,
        rollout: None,
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(60),
    }
}

fn publish(documents: &mut Documents, content: &str) -> Arc<StoredRelease> {
    documents.publish(&key(), draft(content, None)).expect("published").0
}

#[test]
fn each_publish_makes_the_next_revision_with_its_hash_and_a_store_op() {
    let mut documents = Documents::new();
    let (first, ops) = documents
        .publish(&key(), draft(r#"{"max": 100}"#, Some(0)))
        .expect("published");
    assert_eq!(first.meta.revision, 1);
    assert_eq!(first.meta.size, 12);
    assert_eq!(first.meta.sha256.len(), 64);
    assert_eq!(ops, [ReleaseOp::Put(Arc::clone(&first))]);
    let second = publish(&mut documents, r#"{"max": 90}"#);
    assert_eq!(second.meta.revision, 2);
    assert_ne!(second.meta.sha256, first.meta.sha256);
    assert_eq!(documents.latest(&key()).expect("latest").content, r#"{"max": 90}"#);
}

#[test]
fn a_publish_over_a_revision_that_is_not_the_current_one_is_a_conflict_naming_the_current() {
    let mut documents = Documents::new();
    publish(&mut documents, "{}");
    publish(&mut documents, "[]");
    let stale = documents.publish(&key(), draft("1", Some(1)));
    assert_eq!(
        stale.map(|_| ()),
        Err(ReleaseError::Conflict {
            path: "prod/GradingService/limits".to_owned(),
            expected: 1,
            current: 2
        })
    );
    let create_only = documents.publish(&key(), draft("1", Some(0)));
    assert!(matches!(create_only, Err(ReleaseError::Conflict { current: 2, .. })));
    assert_eq!(
        documents.latest(&key()).expect("latest").meta.revision,
        2,
        "nothing published"
    );
}

#[test]
fn malformed_oversized_or_long_winded_drafts_are_refused_and_change_nothing() {
    let mut documents = Documents::new();
    let malformed = documents.publish(&key(), draft("{\"a\": }", None));
    assert!(
        matches!(&malformed, Err(ReleaseError::Malformed { malformed, .. }) if malformed.line == 1 && malformed.column == 7),
        "{malformed:?}"
    );
    let big = format!("\"{}\"", "x".repeat(MAX_DOCUMENT_BYTES));
    assert!(matches!(
        documents.publish(&key(), draft(&big, None)),
        Err(ReleaseError::TooLarge(_))
    ));
    let mut long = draft("{}", None);
    long.message = "m".repeat(MAX_MESSAGE_BYTES + 1);
    assert_eq!(
        documents.publish(&key(), long).map(|_| ()),
        Err(ReleaseError::MessageTooLong)
    );
    assert!(documents.is_empty());
}

#[test]
fn only_the_newest_releases_are_retained_and_the_publish_that_pushes_one_out_purges_it() {
    let mut documents = Documents::new();
    for n in 0..RETAINED {
        publish(&mut documents, &n.to_string());
    }
    let (release, ops) = documents.publish(&key(), draft("\"next\"", None)).expect("published");
    let purge = ReleaseOp::Purge {
        key: key(),
        revision: 1,
    };
    assert_eq!(ops, [ReleaseOp::Put(release), purge]);
    assert_eq!(documents.history(&key()).expect("history").count(), RETAINED);
    assert!(matches!(
        documents.meta(&key(), 1),
        Err(ReleaseError::UnknownRevision {
            oldest: 2,
            latest: 101,
            ..
        })
    ));
    assert_eq!(documents.meta(&key(), 2).map(|m| m.revision), Ok(2));
}

#[test]
fn restored_releases_in_any_order_rebuild_the_same_documents() {
    let mut published = Documents::new();
    let releases: Vec<_> = ["1", "2", "3"].iter().map(|c| publish(&mut published, c)).collect();
    let mut restored = Documents::new();
    for release in releases.iter().rev() {
        assert!(restored.restore(StoredRelease::clone(release)).is_empty());
    }
    assert_eq!(restored.latest(&key()).expect("latest").content, "3");
    let revisions: Vec<u64> = restored.history(&key()).expect("history").map(|m| m.revision).collect();
    assert_eq!(revisions, [3, 2, 1], "newest first");
    assert_eq!(restored.list(None), published.list(None));
}

#[test]
fn a_key_is_three_plain_segments() {
    assert!(DocKey::new("prod", SHARED, "feature-flags.v2").is_ok());
    for (ns, service, name) in [("", "a", "b"), ("a", "..", "b"), ("a", "b", "c/d"), ("a b", "c", "d")] {
        assert!(
            matches!(DocKey::new(ns, service, name), Err(ReleaseError::BadKey(_))),
            "{ns}/{service}/{name}"
        );
    }
    assert!(DocKey::new(&"n".repeat(MAX_SEGMENT_BYTES + 1), "a", "b").is_err());
}
