//! The embedded catalog store: every registration, in a redb database in the data directory.
//!
//! One table maps a ServiceURL to a [`StoredInstance`] (JSON). Health is not stored: after a
//! restart every instance is probed again.
//!
//! Writes are group-committed by one writer thread (`group`): each acknowledgement means "on
//! disk", batches apply whole and in the order they were queued.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, TableDefinition, WriteTransaction};

use super::group::{Commit, GroupCommit, read_table};
use super::{CatalogStore, Durable, StoreError, StoreFuture, StoreOp, StoredInstance};

/// ServiceURL → JSON of a [`StoredInstance`].
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");

/// The name of the database file in the data directory.
pub const DATABASE_FILE: &str = "catalog.redb";

/// The catalog in one redb file.
#[derive(Debug)]
pub struct RedbStore {
    writer: GroupCommit<StoreOp>,
    path: PathBuf,
}

impl RedbStore {
    /// Opens (creating if needed) the catalog in `data_dir` and reads every stored instance.
    /// Fails if another registry holds the same data directory.
    pub fn open(data_dir: &Path, commit_seconds: Histogram) -> Result<(Self, Vec<StoredInstance>), StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let database =
            Database::create(&path).map_err(|e| StoreError::new(&format!("cannot open {}", path.display()), e))?;
        let stored = read_all(&database)?;
        let writer = GroupCommit::start("catalog-writer", Arc::new(database), commit_seconds)?;
        Ok((Self { writer, path }, stored))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CatalogStore for RedbStore {
    /// Queues `ops` to be committed with whatever else is queued.
    fn write(&self, ops: Vec<StoreOp>) -> Durable {
        self.writer.write(ops)
    }

    /// Commits what is queued and closes the database file.
    fn close(&self) -> StoreFuture<'_> {
        Box::pin(self.writer.close())
    }
}

fn read_all(database: &Database) -> Result<Vec<StoredInstance>, StoreError> {
    let mut stored = Vec::new();
    read_table(database, INSTANCES, |url, value| {
        match serde_json::from_slice::<StoredInstance>(value) {
            Ok(instance) => stored.push(instance),
            // A record this version cannot read is skipped, not fatal: the instance will register again.
            Err(error) => tracing::warn!(url, %error, "skipping an unreadable stored instance"),
        }
    })?;
    Ok(stored)
}

impl Commit for StoreOp {
    fn apply<'a>(transaction: &WriteTransaction, ops: impl Iterator<Item = &'a Self>) -> Result<(), StoreError> {
        let mut table = transaction
            .open_table(INSTANCES)
            .map_err(|e| StoreError::new("cannot open the table", e))?;
        for op in ops {
            match op {
                StoreOp::Put(instance) => {
                    let value = serde_json::to_vec(instance).map_err(|e| StoreError::new("cannot encode", e))?;
                    table
                        .insert(instance.registration.service_url.as_str(), value.as_slice())
                        .map_err(|e| StoreError::new("cannot write", e))?;
                }
                StoreOp::Delete(url) => {
                    table
                        .remove(url.as_str())
                        .map_err(|e| StoreError::new("cannot delete", e))?;
                }
                // Neither is kept here: a restarted registry probes again, and takes each
                // subscriber to hold what the restored catalog offers it.
                StoreOp::Health(_) | StoreOp::Held(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::contract::{self, Backend};

    /// The embedded store in a temporary directory.
    struct Redb(tempfile::TempDir);

    impl Redb {
        fn new() -> Self {
            Self(tempfile::tempdir().expect("dir"))
        }
    }

    impl Backend for Redb {
        const NAME: &'static str = "redb";

        async fn open(&self) -> (Box<dyn CatalogStore>, Vec<StoredInstance>) {
            let (store, stored) = RedbStore::open(self.0.path(), histogram()).expect("open");
            (Box::new(store), stored)
        }

        fn location(&self) -> String {
            self.0.path().display().to_string()
        }
    }

    fn histogram() -> Histogram {
        Histogram::new([1.0])
    }

    /// Opens the store at `location` for the crash test's child process.
    pub(crate) fn open_at(location: &str) -> Box<dyn CatalogStore> {
        Box::new(RedbStore::open(Path::new(location), histogram()).expect("open").0)
    }

    #[tokio::test]
    async fn what_was_acknowledged_is_read_back_after_reopening() {
        contract::what_was_acknowledged_is_read_back_after_reopening(&Redb::new()).await;
    }

    #[tokio::test]
    async fn batches_take_effect_whole_and_in_the_order_they_were_queued() {
        contract::batches_take_effect_whole_and_in_the_order_they_were_queued(&Redb::new()).await;
    }

    #[tokio::test]
    async fn writers_queued_together_are_all_acknowledged() {
        contract::writers_queued_together_are_all_acknowledged(&Redb::new()).await;
    }

    #[tokio::test]
    async fn a_kill_9_between_write_and_acknowledgement_loses_nothing_acknowledged_and_no_half_batch() {
        contract::a_kill_9_between_write_and_acknowledgement_loses_nothing_acknowledged_and_no_half_batch(&Redb::new())
            .await;
    }

    #[tokio::test]
    async fn a_second_registry_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().expect("dir");
        let (_store, _) = RedbStore::open(dir.path(), histogram()).expect("open");
        let error = RedbStore::open(dir.path(), histogram()).expect_err("already open");
        assert!(error.to_string().contains("catalog.redb"), "{error}");
    }
}
