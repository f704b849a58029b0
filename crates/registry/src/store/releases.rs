//! The configuration releases' store: every retained release, content included, in a redb
//! database of its own in the data directory (`config.redb`), so that damage to one file costs
//! the catalog or the configuration, never both.
//!
//! One table maps (`namespace/service/name`, revision) to a [`StoredRelease`] (JSON), another
//! each document to its last rollout (JSON of a [`DocRollout`]), so that a restarted registry goes
//! on with a running rollout. Writes are group-committed like the catalog's (`group`): a publish,
//! a rollout's step, are acknowledged once on disk. Opening reads every release back into
//! [`Documents`] (which keeps the latest content of each document and the facts of the rest),
//! then the rollouts; an older release's content is read from disk when asked for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};

use super::group::{Commit, GroupCommit, read_table};
use super::{Durable, StoreError};
use crate::releases::rollout::DocRollout;
use crate::releases::{DocKey, Documents, ReleaseOp, StoredRelease};

/// (`namespace/service/name`, revision) → JSON of a [`StoredRelease`].
const RELEASES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("releases");
/// `namespace/service/name` → JSON of the document's last rollout ([`DocRollout`]).
const ROLLOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rollouts");

/// The name of the database file in the data directory.
pub const RELEASES_FILE: &str = "config.redb";

/// The most memory redb may use to cache the file's pages.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// The configuration releases in one redb file.
#[derive(Debug)]
pub struct ReleaseStore {
    database: Arc<Database>,
    writer: GroupCommit<ReleaseOp>,
    path: PathBuf,
}

impl ReleaseStore {
    /// Opens (creating if needed) the releases in `data_dir` and reads them back.
    pub fn open(data_dir: &Path, commit_seconds: Histogram) -> Result<(Self, Documents), StoreError> {
        let path = data_dir.join(RELEASES_FILE);
        // redb caches up to 1 GiB by default; every latest content is in memory already and
        // older ones are read rarely, so a small cache is enough.
        let database = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError::new(&format!("cannot open {}", path.display()), e))?;
        let documents = read_all(&database)?;
        let database = Arc::new(database);
        let writer = GroupCommit::start("config-writer", Arc::clone(&database), commit_seconds)?;
        Ok((Self { database, writer, path }, documents))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `ops` to be committed with whatever else is queued.
    pub fn write(&self, ops: Vec<ReleaseOp>) -> Durable {
        self.writer.write(ops)
    }

    /// Release `revision` of `key`, read from disk (blocking: call it off the async workers).
    pub fn read(&self, key: &DocKey, revision: u64) -> Result<Option<StoredRelease>, StoreError> {
        let read = self
            .database
            .begin_read()
            .map_err(|e| StoreError::new("cannot start a read", e))?;
        let table = read
            .open_table(RELEASES)
            .map_err(|e| StoreError::new("cannot open the table", e))?;
        let Some(value) = table
            .get((key.path().as_str(), revision))
            .map_err(|e| StoreError::new("cannot read", e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|e| StoreError::new("cannot decode a release", e))
    }

    /// Commits what is queued and stops the writer.
    pub async fn close(&self) {
        self.writer.close().await;
    }
}

fn read_all(database: &Database) -> Result<Documents, StoreError> {
    let mut documents = Documents::new();
    read_table(database, RELEASES, |(path, revision), value| {
        match serde_json::from_slice::<StoredRelease>(value) {
            Ok(release) => {
                documents.restore(release);
            }
            // A release this version cannot read is skipped and said, not fatal.
            Err(error) => tracing::warn!(path, revision, %error, "skipping an unreadable stored release"),
        }
    })?;
    read_table(database, ROLLOUTS, |path, value| {
        match serde_json::from_slice::<DocRollout>(value) {
            Ok(kept) => {
                documents.take_rollout(&kept.key, kept.rollout, None);
            }
            Err(error) => tracing::warn!(path, %error, "skipping an unreadable stored rollout"),
        }
    })?;
    Ok(documents)
}

impl Commit for ReleaseOp {
    fn apply<'a>(transaction: &WriteTransaction, ops: impl Iterator<Item = &'a Self>) -> Result<(), StoreError> {
        let mut table = transaction
            .open_table(RELEASES)
            .map_err(|e| StoreError::new("cannot open the table", e))?;
        let mut rollouts = transaction
            .open_table(ROLLOUTS)
            .map_err(|e| StoreError::new("cannot open the table", e))?;
        for op in ops {
            match op {
                ReleaseOp::Put(release) | ReleaseOp::Promote(release) => {
                    let value = serde_json::to_vec(&**release).map_err(|e| StoreError::new("cannot encode", e))?;
                    table
                        .insert((release.key.path().as_str(), release.meta.revision), value.as_slice())
                        .map_err(|e| StoreError::new("cannot write", e))?;
                }
                ReleaseOp::Purge { key, revision } => {
                    table
                        .remove((key.path().as_str(), *revision))
                        .map_err(|e| StoreError::new("cannot delete", e))?;
                }
                ReleaseOp::Rollout(kept) => {
                    let value = serde_json::to_vec(kept).map_err(|e| StoreError::new("cannot encode", e))?;
                    rollouts
                        .insert(kept.key.path().as_str(), value.as_slice())
                        .map_err(|e| StoreError::new("cannot write", e))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use rollcall_wire::ConfigFormat;

    use super::*;
    use crate::releases::{Draft, RETAINED};

    fn draft(content: String) -> Draft {
        Draft {
            format: ConfigFormat::Text,
            content,
            author: "ops".to_owned(),
            message: String::new(),
            expected: None,
            rolled_back_from: None,
            rollout: None,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[tokio::test]
    async fn acknowledged_releases_are_read_back_and_purged_ones_are_gone() {
        let dir = tempfile::tempdir().expect("dir");
        let key = DocKey::new("prod", "A", "limits").expect("key");
        let (store, mut documents) = ReleaseStore::open(dir.path(), Histogram::new([1.0])).expect("open");
        for n in 0..=RETAINED {
            let (_, ops) = documents.publish(&key, draft(format!("v{n}"))).expect("publish");
            store.write(ops).await.expect("written").expect("durable");
        }
        store.close().await;
        drop(store);

        let (store, documents) = ReleaseStore::open(dir.path(), Histogram::new([1.0])).expect("reopen");
        let latest = documents.latest(&key).expect("latest");
        assert_eq!((latest.meta.revision, latest.content.as_str()), (101, "v100"));
        assert_eq!(documents.history(&key).expect("history").count(), RETAINED);
        assert_eq!(store.read(&key, 1).expect("read"), None, "purged");
        let second = store.read(&key, 2).expect("read").expect("kept");
        assert_eq!(second.content, "v1");
    }
}
