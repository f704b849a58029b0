//! Gray rollouts: a release that goes first to a subset of the live instances, widened step by
//! step after a bake time, rolled back by itself when a gray instance turns critical or rejects
//! it, promoted to everyone after its last step (or by hand).
//!
//! A plan is a list of steps, each a [`Selector`]: a stable percentage of the instances (by a
//! hash of their id, so widening 10 → 50 % keeps the first 10 %), a list of instance ids, or a
//! metadata label. While a rollout runs, an instance in the current step's set runs the
//! candidate and every other instance the release in force before it. Everything here is pure:
//! the registry's timer calls [`Rollout::advance`] with the time and what it knows of the gray
//! instances.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use rollcall_wire::{AckStatus, InstanceState};
use serde::{Deserialize, Serialize};

use super::{DocKey, Documents, ReleaseError, ReleaseOp, StoredRelease};

/// Which instances a step takes in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selector {
    /// This percentage of the instances (1 to 100), chosen by a stable hash of their id.
    Percent(u8),
    /// These instances, by id.
    Instances(BTreeSet<String>),
    /// The instances whose metadata label `key` is `value`.
    Label {
        /// The label.
        key: String,
        /// Its value.
        value: String,
    },
}

impl Selector {
    /// True when the instance `id` with `metadata` is in this step's set.
    pub fn takes(&self, id: &str, metadata: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Percent(percent) => bucket(id) < u32::from(*percent),
            Selector::Instances(ids) => ids.contains(id),
            Selector::Label { key, value } => metadata.get(key) == Some(value),
        }
    }

    /// The step as [`Selector::parse`] reads it.
    pub fn text(&self) -> String {
        match self {
            Selector::Percent(percent) => percent.to_string(),
            Selector::Instances(ids) => format!("instances:{}", ids.iter().cloned().collect::<Vec<_>>().join("+")),
            Selector::Label { key, value } => format!("label:{key}={value}"),
        }
    }

    /// Reads one step: `10` (percent), `instances:ID+ID`, `label:KEY=VALUE`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(ids) = text.strip_prefix("instances:") {
            let ids: BTreeSet<String> = ids.split('+').filter(|id| !id.is_empty()).map(str::to_owned).collect();
            return if ids.is_empty() {
                Err("a step instances:ID+ID names no instance".to_owned())
            } else {
                Ok(Selector::Instances(ids))
            };
        }
        if let Some(label) = text.strip_prefix("label:") {
            return match label.split_once('=') {
                Some((key, value)) if !key.is_empty() => Ok(Selector::Label {
                    key: key.to_owned(),
                    value: value.to_owned(),
                }),
                _ => Err(format!("a step label:KEY=VALUE, not {text:?}")),
            };
        }
        match text.parse::<u8>() {
            Ok(percent @ 1..=100) => Ok(Selector::Percent(percent)),
            _ => Err(format!(
                "a step is a percentage from 1 to 100, instances:ID+ID or label:KEY=VALUE, not {text:?}"
            )),
        }
    }
}

/// The instance's place from 0 to 99 for percentage steps: the first bytes of SHA-256 of its id.
fn bucket(id: &str) -> u32 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    let first = digest.as_ref().first_chunk::<4>().copied().unwrap_or_default();
    u32::from_be_bytes(first) % 100
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum Phase {
    /// Baking at a step.
    Running,
    /// Done: the candidate is in force for everyone.
    Promoted,
    /// Stopped: every instance went back to the release in force before; why.
    RolledBack(String),
}

/// One rollout of a candidate release of a document. Kept with the releases (`config.redb`,
/// and etcd's `rollouts/` keys), so that a restarted registry, or another node, goes on with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The release being rolled out.
    pub candidate: u64,
    /// The release in force before it (what instances outside the gray set run).
    pub base: u64,
    /// The steps, in order.
    pub steps: Vec<Selector>,
    /// The step running (an index into `steps`).
    pub step: usize,
    /// How long each step bakes before the next.
    pub bake: Duration,
    /// When the current step started.
    pub step_since: SystemTime,
    /// Where it stands.
    pub phase: Phase,
}

/// What a gray instance looks like to the rollout's timer.
#[derive(Debug, Clone)]
pub struct GrayInstance {
    /// Its id.
    pub id: String,
    /// Its health.
    pub state: InstanceState,
    /// Its newest report on the document: revision and outcome (and why).
    pub report: Option<(u64, AckStatus, String)>,
}

/// What a call to [`Rollout::advance`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The next step began.
    Widened(usize),
    /// The candidate is in force for everyone.
    Promoted,
    /// Everyone is back on the base release, for this reason.
    RolledBack(String),
}

impl Rollout {
    /// A rollout of `candidate` over `in_force` through `steps`, each baking `bake`, from `at`.
    pub fn new(candidate: u64, in_force: u64, steps: Vec<Selector>, bake: Duration, at: SystemTime) -> Self {
        Self {
            candidate,
            base: in_force,
            steps,
            step: 0,
            bake,
            step_since: at,
            phase: Phase::Running,
        }
    }

    /// True while instance `id` (with `metadata`) is to run the candidate: in the current
    /// step's set of a running rollout, or anyone once it is promoted.
    pub fn runs_candidate(&self, id: &str, metadata: &BTreeMap<String, String>) -> bool {
        match &self.phase {
            Phase::Running => self.steps.get(self.step).is_some_and(|s| s.takes(id, metadata)),
            Phase::Promoted => true,
            Phase::RolledBack(_) => false,
        }
    }

    /// Moves the rollout on at `now`, given the gray instances (those running the candidate):
    /// back when one turned critical or rejected the candidate, on to the next step (or
    /// promoted after the last) once the step baked. Nothing happens to a rollout that ended.
    pub fn advance(&mut self, now: SystemTime, gray: &[GrayInstance]) -> Option<Transition> {
        if self.phase != Phase::Running {
            return None;
        }
        let trouble = gray.iter().find_map(|instance| match &instance.report {
            Some((revision, AckStatus::Rejected, reason)) if *revision == self.candidate => Some(format!(
                "instance {} rejected revision {revision}: {reason}",
                instance.id
            )),
            _ if instance.state == InstanceState::Critical => Some(format!(
                "instance {} turned critical while running revision {}",
                instance.id, self.candidate
            )),
            _ => None,
        });
        if let Some(reason) = trouble {
            return Some(self.roll_back(reason));
        }
        let baked = now.duration_since(self.step_since).unwrap_or_default() >= self.bake;
        if !baked {
            return None;
        }
        Some(self.next_step(now))
    }

    /// The rollout as a document's status shows it.
    pub fn view(&self) -> rollcall_wire::RolloutView {
        let (state, reason) = match &self.phase {
            Phase::Running => ("running", None),
            Phase::Promoted => ("promoted", None),
            Phase::RolledBack(why) => ("rolled_back", Some(why.clone())),
        };
        rollcall_wire::RolloutView {
            candidate: self.candidate,
            base: self.base,
            steps: self.steps.iter().map(Selector::text).collect(),
            step: self.step,
            bake: humantime::format_duration(self.bake).to_string(),
            state: state.to_owned(),
            reason,
            node: None,
        }
    }

    /// The next step now (or the promotion after the last).
    pub fn next_step(&mut self, now: SystemTime) -> Transition {
        if self.step + 1 < self.steps.len() {
            self.step += 1;
            self.step_since = now;
            Transition::Widened(self.step)
        } else {
            self.phase = Phase::Promoted;
            Transition::Promoted
        }
    }

    /// Ends it: everyone back on the base release, saying `why`.
    pub fn roll_back(&mut self, why: String) -> Transition {
        self.phase = Phase::RolledBack(why.clone());
        Transition::RolledBack(why)
    }

    /// The store operation that keeps it as it stands, for `key`.
    pub fn record(&self, key: &DocKey) -> ReleaseOp {
        ReleaseOp::Rollout(DocRollout {
            key: key.clone(),
            rollout: self.clone(),
        })
    }
}

/// A document's rollout as the stores keep it: this node's file, and etcd's `rollouts/` keys,
/// where the node that moved it on wrote it and the others take it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRollout {
    /// The document.
    pub key: DocKey,
    /// The rollout.
    pub rollout: Rollout,
}

impl super::Document {
    /// Starts a rollout of `release` when `plan` says so; a release for everyone ends a running
    /// rollout, which it supersedes. Returns the operation that keeps the rollout, if it changed.
    pub(super) fn start_rollout(
        &mut self,
        plan: Option<(Vec<Selector>, Duration)>,
        release: &StoredRelease,
        at: SystemTime,
    ) -> Option<ReleaseOp> {
        let Some((steps, bake)) = plan else {
            let rollout = self.rollout.as_mut().filter(|r| r.phase == Phase::Running)?;
            rollout.roll_back(format!("superseded by revision {}", release.meta.revision));
            return Some(rollout.record(&release.key));
        };
        let in_force = self.in_force.meta.revision;
        let rollout = Rollout::new(release.meta.revision, in_force, steps, bake, at);
        let record = rollout.record(&release.key);
        self.rollout = Some(rollout);
        Some(record)
    }

    /// After a promotion: the candidate is in force, stored so (no longer staged).
    fn promote_candidate(&mut self) -> ReleaseOp {
        let mut promoted = StoredRelease::clone(&self.latest);
        promoted.meta.staged = false;
        let promoted = Arc::new(promoted);
        if let Some(meta) = self.history.iter_mut().find(|m| m.revision == promoted.meta.revision) {
            meta.staged = false;
        }
        self.latest = Arc::clone(&promoted);
        self.in_force = Arc::clone(&promoted);
        ReleaseOp::Promote(promoted)
    }
}

impl Documents {
    /// What instance `id` (with `metadata`) is to run of `key`: the candidate while it is in a
    /// running rollout's gray set, the release in force otherwise.
    pub fn release_for(
        &self,
        key: &DocKey,
        id: Option<&str>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Arc<StoredRelease>, ReleaseError> {
        let document = self
            .documents
            .get(key)
            .ok_or_else(|| ReleaseError::UnknownDocument(key.path()))?;
        let gray = match (&document.rollout, id) {
            (Some(rollout), Some(id)) => rollout.phase == Phase::Running && rollout.runs_candidate(id, metadata),
            _ => false,
        };
        Ok(Arc::clone(if gray { &document.latest } else { &document.in_force }))
    }

    /// The last rollout of `key`, running or ended.
    pub fn rollout(&self, key: &DocKey) -> Result<Option<&Rollout>, ReleaseError> {
        self.documents
            .get(key)
            .map(|d| d.rollout.as_ref())
            .ok_or_else(|| ReleaseError::UnknownDocument(key.path()))
    }

    /// Every running rollout.
    pub fn running_rollouts(&self) -> Vec<(DocKey, Rollout)> {
        self.documents
            .iter()
            .filter_map(|(key, d)| {
                d.rollout
                    .clone()
                    .filter(|r| r.phase == Phase::Running)
                    .map(|r| (key.clone(), r))
            })
            .collect()
    }

    /// Moves `key`'s running rollout on (see [`Rollout::advance`]); returns what happened and
    /// the store operations that keep it (and a promotion).
    pub fn advance(
        &mut self,
        key: &DocKey,
        now: SystemTime,
        gray: &[GrayInstance],
    ) -> Option<(Transition, Vec<ReleaseOp>)> {
        let document = self.documents.get_mut(key)?;
        let rollout = document.rollout.as_mut()?;
        let transition = rollout.advance(now, gray)?;
        let mut ops = vec![rollout.record(key)];
        if transition == Transition::Promoted {
            ops.insert(0, document.promote_candidate());
        }
        Some((transition, ops))
    }

    /// Promotes `key`'s running rollout to everyone now, or rolls it back (`promote: false`)
    /// saying `why`.
    pub fn settle(
        &mut self,
        key: &DocKey,
        promote: bool,
        why: String,
    ) -> Result<(Transition, Vec<ReleaseOp>), ReleaseError> {
        let document = self
            .documents
            .get_mut(key)
            .ok_or_else(|| ReleaseError::UnknownDocument(key.path()))?;
        let Some(rollout) = document.rollout.as_mut().filter(|r| r.phase == Phase::Running) else {
            return Err(ReleaseError::NoRollout(key.path()));
        };
        if promote {
            rollout.phase = Phase::Promoted;
            let record = rollout.record(key);
            Ok((Transition::Promoted, vec![document.promote_candidate(), record]))
        } else {
            let transition = rollout.roll_back(why);
            Ok((transition, vec![rollout.record(key)]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn ids(count: usize) -> Vec<String> {
        (0..count).map(|n| format!("{n:032x}")).collect()
    }

    fn none() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn gray(id: &str, state: InstanceState, report: Option<(u64, AckStatus, &str)>) -> GrayInstance {
        GrayInstance {
            id: id.to_owned(),
            state,
            report: report.map(|(r, s, why)| (r, s, why.to_owned())),
        }
    }

    #[test]
    fn a_percentage_takes_about_that_share_and_a_wider_one_keeps_it() {
        let ids = ids(1000);
        let ten: Vec<&String> = ids
            .iter()
            .filter(|id| Selector::Percent(10).takes(id, &none()))
            .collect();
        assert!((60..=140).contains(&ten.len()), "{} of 1000", ten.len());
        assert!(
            ten.iter().all(|id| Selector::Percent(50).takes(id, &none())),
            "widening keeps the first"
        );
        assert!(ids.iter().all(|id| Selector::Percent(100).takes(id, &none())));
    }

    #[test]
    fn steps_read_as_percentages_instance_lists_or_labels() {
        assert_eq!(Selector::parse("25"), Ok(Selector::Percent(25)));
        assert_eq!(
            Selector::parse("instances:a+b"),
            Ok(Selector::Instances(BTreeSet::from(["a".to_owned(), "b".to_owned()])))
        );
        let zone = Selector::parse("label:zone=eu-1").expect("label");
        assert!(zone.takes("x", &BTreeMap::from([("zone".to_owned(), "eu-1".to_owned())])));
        assert!(!zone.takes("x", &none()));
        for bad in ["0", "101", "ten", "instances:", "label:=x", "label:zone"] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rollout_widens_after_each_bake_and_is_promoted_after_its_last_step() {
        let mut rollout = Rollout::new(
            5,
            4,
            vec![Selector::Percent(10), Selector::Percent(50)],
            Duration::from_secs(30),
            T0,
        );
        assert_eq!(rollout.advance(T0 + Duration::from_secs(29), &[]), None, "still baking");
        assert_eq!(
            rollout.advance(T0 + Duration::from_secs(30), &[]),
            Some(Transition::Widened(1))
        );
        assert_eq!(rollout.advance(T0 + Duration::from_secs(45), &[]), None);
        assert_eq!(
            rollout.advance(T0 + Duration::from_secs(60), &[]),
            Some(Transition::Promoted)
        );
        assert!(rollout.runs_candidate("anyone", &none()));
        assert_eq!(rollout.advance(T0 + Duration::from_secs(999), &[]), None, "it ended");
    }

    #[test]
    fn a_gray_instance_turning_critical_or_rejecting_the_candidate_rolls_it_back() {
        let steps = vec![Selector::Instances(BTreeSet::from(["a".to_owned()]))];
        let mut critical = Rollout::new(5, 4, steps.clone(), Duration::from_secs(30), T0);
        let down = [gray("a", InstanceState::Critical, Some((5, AckStatus::Applied, "")))];
        assert!(
            matches!(critical.advance(T0, &down), Some(Transition::RolledBack(why)) if why.contains("turned critical"))
        );
        assert!(!critical.runs_candidate("a", &none()), "back on the base");

        let mut rejected = Rollout::new(5, 4, steps, Duration::from_secs(30), T0);
        let refusing = [gray(
            "a",
            InstanceState::Passing,
            Some((5, AckStatus::Rejected, "max is not a number")),
        )];
        let ended = rejected.advance(T0, &refusing);
        assert!(
            matches!(&ended, Some(Transition::RolledBack(why)) if why.contains("max is not a number")),
            "{ended:?}"
        );
        // A rejection of an older release is no reason.
        let mut older = Rollout::new(6, 5, vec![Selector::Percent(100)], Duration::from_secs(30), T0);
        let old = [gray("a", InstanceState::Passing, Some((5, AckStatus::Rejected, "old")))];
        assert_eq!(older.advance(T0, &old), None);
    }
}
