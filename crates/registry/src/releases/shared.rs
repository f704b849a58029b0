//! What a node takes in of the configuration that others change, when registry nodes share a
//! catalog (over etcd), beyond new releases ([`Documents::restore`]): a release it holds already
//! but in other words (its file is older than etcd: promoted since, or corrected), and a
//! rollout's progress, which may promote its candidate or, when this node's own promotion lost a
//! race, stage it again.
//!
//! Invariants, as for every document: the release in force is the newest one not staged; the
//! latest's content and the one in force's are in memory. Putting an older release back in
//! force needs its content, which only the store has: the caller reads it first
//! ([`Documents::falls_back_to`]) and hands it in.

use std::sync::Arc;

use super::rollout::{Phase, Rollout};
use super::{DocKey, Documents, ReleaseOp, StoredRelease};

impl Documents {
    /// The release that goes back in force if release `revision` of `key` is staged (again):
    /// the newest not staged before it, when `revision` is the one in force now.
    pub fn falls_back_to(&self, key: &DocKey, revision: u64) -> Option<u64> {
        let document = self.documents.get(key)?;
        if document.in_force.meta.revision != revision {
            return None;
        }
        let older = document.history.iter().rev().filter(|meta| meta.revision < revision);
        older.into_iter().find(|meta| !meta.staged).map(|meta| meta.revision)
    }

    /// Takes in `release`, held here already at its revision but in other words; `base` (read
    /// as [`Self::falls_back_to`] says) goes back in force when `release` is staged and was in
    /// force. Returns what keeps it in this node's file (nothing when nothing changed).
    pub fn retake(&mut self, release: Arc<StoredRelease>, base: Option<Arc<StoredRelease>>) -> Vec<ReleaseOp> {
        let Some(document) = self.documents.get_mut(&release.key) else {
            return Vec::new();
        };
        let revision = release.meta.revision;
        let Some(held) = document.history.iter_mut().find(|meta| meta.revision == revision) else {
            return Vec::new();
        };
        if *held == release.meta {
            return Vec::new();
        }
        *held = release.meta.clone();
        if document.latest.meta.revision == revision {
            document.latest = Arc::clone(&release);
        }
        let in_force = document.in_force.meta.revision;
        if !release.meta.staged && revision >= in_force {
            document.in_force = Arc::clone(&release);
        } else if release.meta.staged
            && revision == in_force
            && let Some(base) = base
        {
            document.in_force = base;
        }
        vec![ReleaseOp::Put(release)]
    }

    /// Takes in the state of `key`'s rollout another node kept: it becomes the document's
    /// rollout unless this node knows a later one, and its candidate (while it is the latest
    /// release) is in force exactly when the rollout was promoted. `base` as for
    /// [`Self::retake`]. Returns what keeps it in this node's file.
    pub fn take_rollout(&mut self, key: &DocKey, rollout: Rollout, base: Option<Arc<StoredRelease>>) -> Vec<ReleaseOp> {
        let Some(document) = self.documents.get_mut(key) else {
            return Vec::new();
        };
        if document
            .rollout
            .as_ref()
            .is_some_and(|r| r.candidate > rollout.candidate)
        {
            return Vec::new();
        }
        let staged = rollout.phase != Phase::Promoted;
        let candidate = (document.latest.meta.revision == rollout.candidate && document.latest.meta.staged != staged)
            .then(|| {
                let mut candidate = StoredRelease::clone(&document.latest);
                candidate.meta.staged = staged;
                Arc::new(candidate)
            });
        let mut ops = vec![rollout.record(key)];
        document.rollout = Some(rollout);
        if let Some(candidate) = candidate {
            ops.extend(self.retake(candidate, base));
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use rollcall_wire::ConfigFormat;

    use super::*;
    use crate::releases::Draft;
    use crate::releases::rollout::Selector;

    fn draft(content: &str, rollout: bool) -> Draft {
        Draft {
            format: ConfigFormat::Text,
            content: content.to_owned(),
            author: "ops".to_owned(),
            message: String::new(),
            expected: None,
            rolled_back_from: None,
            rollout: rollout.then(|| (vec![Selector::Percent(10)], Duration::from_secs(30))),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    /// Two nodes' documents, both holding release 1 in force and candidate 2 rolling out.
    fn two_nodes(key: &DocKey) -> (Documents, Documents, Rollout) {
        let mut here = Documents::new();
        here.publish(key, draft("v1", false)).expect("first");
        here.publish(key, draft("v2", true)).expect("candidate");
        let mut there = Documents::new();
        for revision in 1..=2 {
            there.restore(StoredRelease::clone(&release_of(&here, key, revision)));
        }
        let rollout = here.rollout(key).expect("known").cloned().expect("a rollout");
        there.take_rollout(key, rollout.clone(), None);
        (here, there, rollout)
    }

    fn release_of(documents: &Documents, key: &DocKey, revision: u64) -> Arc<StoredRelease> {
        let latest = documents.latest(key).expect("latest");
        let in_force = documents.in_force(key).expect("in force");
        Arc::clone(if latest.meta.revision == revision {
            latest
        } else {
            in_force
        })
    }

    #[test]
    fn a_rollout_promoted_by_another_node_puts_its_candidate_in_force_here() {
        let key = DocKey::new("prod", "A", "limits").expect("key");
        let (mut here, mut there, _) = two_nodes(&key);
        assert_eq!(there.in_force(&key).expect("in force").content, "v1");

        let (_, ops) = here.settle(&key, true, String::new()).expect("promoted");
        let Some(ReleaseOp::Rollout(kept)) = ops.last().cloned() else {
            panic!("a promotion keeps the rollout: {ops:?}")
        };
        let kept = there.take_rollout(&key, kept.rollout, None);
        assert_eq!(there.in_force(&key).expect("in force").content, "v2");
        assert!(!there.meta(&key, 2).expect("held").staged, "no longer staged");
        assert!(
            kept.iter()
                .any(|op| matches!(op, ReleaseOp::Put(release) if !release.meta.staged)),
            "kept promoted in this node's file: {kept:?}"
        );
    }

    #[test]
    fn a_promotion_that_lost_a_race_is_staged_again_and_the_base_goes_back_in_force() {
        let key = DocKey::new("prod", "A", "limits").expect("key");
        let (_, mut there, rollout) = two_nodes(&key);
        let base = release_of(&there, &key, 1);
        there.settle(&key, true, String::new()).expect("promoted here");
        assert_eq!(there.in_force(&key).expect("in force").meta.revision, 2);

        // etcd holds the other node's rollback: this node's promotion was refused.
        let mut rolled_back = rollout;
        rolled_back.roll_back("aborted by ops".to_owned());
        assert_eq!(there.falls_back_to(&key, 2), Some(1));
        there.take_rollout(&key, rolled_back, Some(base));
        assert_eq!(there.in_force(&key).expect("in force").content, "v1");
        assert!(there.meta(&key, 2).expect("held").staged);
        let state = there.rollout(&key).expect("known").expect("a rollout").view().state;
        assert_eq!(state, "rolled_back");
    }

    #[test]
    fn an_older_rollouts_state_does_not_replace_a_later_one() {
        let key = DocKey::new("prod", "A", "limits").expect("key");
        let (mut here, mut there, first) = two_nodes(&key);
        here.publish(&key, draft("v3", true)).expect("a later candidate");
        there.restore(StoredRelease::clone(&release_of(&here, &key, 3)));
        let later = here.rollout(&key).expect("known").cloned().expect("a rollout");
        there.take_rollout(&key, later, None);

        assert!(there.take_rollout(&key, first, None).is_empty());
        assert_eq!(there.rollout(&key).expect("known").expect("a rollout").candidate, 3);
    }

    #[test]
    fn a_release_held_in_other_words_is_taken_as_the_store_has_it() {
        let key = DocKey::new("prod", "A", "limits").expect("key");
        let (_, mut there, _) = two_nodes(&key);
        let mut promoted = StoredRelease::clone(&release_of(&there, &key, 2));
        promoted.meta.staged = false;
        let promoted = Arc::new(promoted);
        assert_eq!(there.retake(Arc::clone(&promoted), None).len(), 1);
        assert_eq!(there.in_force(&key).expect("in force").content, "v2");
        assert!(there.retake(promoted, None).is_empty(), "the same words change nothing");
    }
}
