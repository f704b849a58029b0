//! What each instance reported doing with a document's releases (applied, or rejected and
//! why), and how a document's latest release stands across the instances that read it.
//!
//! Reports are kept in memory only: they describe running processes, which report again when
//! they reconnect after a registry restart. Each document keeps at most one report per
//! instance, the newest; reports of instances that left the catalog are dropped when the
//! document's reports are next counted.

use std::collections::HashMap;

use rollcall_wire::{AckStatus, InstanceProgress, InstanceState, RolloutStatus};

use super::DocKey;

/// One instance's newest report on a document.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    revision: u64,
    status: AckStatus,
    reason: String,
}

/// An instance that reads a document, as the catalog lists it.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Its id.
    pub id: String,
    /// Its ServiceURL.
    pub url: String,
    /// Its health.
    pub state: InstanceState,
    /// Its labels (for a rollout's label steps).
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// An instance's report on a release of `key`, as shared between the nodes of one catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedAck {
    /// The document.
    pub key: DocKey,
    /// The report.
    pub ack: rollcall_wire::Ack,
}

/// Every instance's newest report on every document.
#[derive(Debug, Default)]
pub struct Acks {
    reports: HashMap<DocKey, HashMap<String, Report>>,
}

impl Acks {
    /// Records that `instance` did `status` with `revision` of `key`; an older revision than
    /// the one it already reported on changes nothing (reports may arrive out of order).
    pub fn record(&mut self, key: &DocKey, instance: &str, revision: u64, status: AckStatus, reason: String) {
        let reports = self.reports.entry(key.clone()).or_default();
        if reports.get(instance).is_some_and(|known| known.revision > revision) {
            return;
        }
        reports.insert(
            instance.to_owned(),
            Report {
                revision,
                status,
                reason,
            },
        );
    }

    /// The newest report of `instance` on `key`: revision, outcome, reason.
    pub fn report(&self, key: &DocKey, instance: &str) -> Option<(u64, AckStatus, String)> {
        let report = self.reports.get(key)?.get(instance)?;
        Some((report.revision, report.status, report.reason.clone()))
    }

    /// How `revision` of `key` stands across `readers` (ordered as given); reports of
    /// instances no longer among them are dropped.
    pub fn progress(&mut self, key: &DocKey, revision: u64, readers: Vec<Reader>) -> RolloutStatus {
        let reports = self.reports.entry(key.clone()).or_default();
        reports.retain(|id, _| readers.iter().any(|reader| reader.id == *id));
        let mut status = RolloutStatus {
            revision,
            total: readers.len(),
            applied: 0,
            rejected: 0,
            unreachable: 0,
            waiting: 0,
            instances: Vec::with_capacity(readers.len()),
            rollout: None,
        };
        for reader in readers {
            let report = reports.get(&reader.id);
            let on_latest = report.filter(|r| r.revision == revision).map(|r| r.status);
            match on_latest {
                Some(AckStatus::Applied) => status.applied += 1,
                Some(AckStatus::Rejected) => status.rejected += 1,
                None if matches!(reader.state, InstanceState::Suspect | InstanceState::Critical) => {
                    status.unreachable += 1;
                }
                None => status.waiting += 1,
            }
            status.instances.push(InstanceProgress {
                id: reader.id,
                url: reader.url,
                state: reader.state,
                revision: report.map(|r| r.revision),
                status: report.map(|r| r.status),
                reason: report.map(|r| r.reason.clone()).unwrap_or_default(),
            });
        }
        if reports.is_empty() {
            self.reports.remove(key);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DocKey {
        DocKey::new("prod", "A", "limits").expect("key")
    }

    fn reader(id: &str, state: InstanceState) -> Reader {
        Reader {
            id: id.to_owned(),
            url: format!("http://{id}"),
            state,
            metadata: std::collections::BTreeMap::new(),
        }
    }

    #[test]
    fn progress_counts_applied_rejected_unreachable_and_waiting_on_the_latest_revision() {
        let mut acks = Acks::default();
        acks.record(&key(), "a", 2, AckStatus::Applied, String::new());
        acks.record(
            &key(),
            "b",
            2,
            AckStatus::Rejected,
            "maxScore: expected a number".to_owned(),
        );
        acks.record(&key(), "c", 1, AckStatus::Applied, String::new());
        let readers = vec![
            reader("a", InstanceState::Passing),
            reader("b", InstanceState::Passing),
            reader("c", InstanceState::Passing),
            reader("d", InstanceState::Critical),
            reader("e", InstanceState::Passing),
        ];
        let status = acks.progress(&key(), 2, readers);
        let counts = (
            status.total,
            status.applied,
            status.rejected,
            status.unreachable,
            status.waiting,
        );
        assert_eq!(counts, (5, 1, 1, 1, 2));
        assert_eq!(status.instances[1].reason, "maxScore: expected a number");
        assert_eq!(status.instances[2].revision, Some(1), "c still runs revision 1");
    }

    #[test]
    fn a_late_report_on_an_older_revision_changes_nothing_and_leavers_are_forgotten() {
        let mut acks = Acks::default();
        acks.record(&key(), "a", 3, AckStatus::Applied, String::new());
        acks.record(&key(), "a", 2, AckStatus::Rejected, "late".to_owned());
        let status = acks.progress(&key(), 3, vec![reader("a", InstanceState::Passing)]);
        assert_eq!(status.applied, 1);
        let gone = acks.progress(&key(), 3, Vec::new());
        assert_eq!(gone.total, 0);
        assert!(acks.reports.is_empty(), "the instance's report left with it");
    }
}
