//! `rollcall repair catalog`: what to do when the registry refuses to start because its catalog
//! file is damaged (truncated by a full disk, a bad sector, a bit flipped).
//!
//! A catalog that opens is left as it is. One that does not is moved aside (never deleted) and
//! replaced by a new catalog holding every instance that can still be read out of the damaged
//! file's bytes: each instance is stored as one JSON object, so a scan finds every object that
//! is still whole and keeps, per ServiceURL, the most recently registered one. Instances lost
//! with the damage come back as their services register again (a rollcall-client service does
//! by itself within a few probe intervals; a Go service when restarted). A salvaged instance
//! may be older than the catalog was (redb keeps freed pages until reused, so a deregistered
//! instance can reappear): the registry probes every salvaged instance, and one that does not
//! answer is reaped after `--deregister-critical-after`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prometheus_client::metrics::histogram::Histogram;

use super::redb::DATABASE_FILE;
use super::{CatalogStore, RedbStore, StoreError, StoreOp, StoredInstance};

/// What [`repair`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// There is no catalog in the directory.
    Missing,
    /// The catalog opens: nothing was changed.
    Sound {
        /// Instances it holds.
        instances: usize,
    },
    /// The catalog did not open: it was moved aside and a new one written.
    Rebuilt {
        /// Why the damaged catalog did not open.
        reason: String,
        /// Where the damaged file now is.
        moved_to: PathBuf,
        /// Instances read out of it into the new catalog.
        salvaged: usize,
    },
}

/// Repairs the catalog in `data_dir` (see the module docs). The registry must be stopped: a
/// catalog another process holds is not touched.
pub async fn repair(data_dir: &Path) -> Result<Repair, StoreError> {
    let path = data_dir.join(DATABASE_FILE);
    if !path.exists() {
        return Ok(Repair::Missing);
    }
    let reason = match RedbStore::open(data_dir, Histogram::new(std::iter::empty())) {
        Ok((store, stored)) => {
            store.close().await;
            return Ok(Repair::Sound {
                instances: stored.len(),
            });
        }
        Err(error) if error.to_string().contains("already open") => {
            return Err(StoreError::new(
                "the catalog is in use",
                "stop the registry before repairing its catalog",
            ));
        }
        Err(error) => error.to_string(),
    };
    let bytes = std::fs::read(&path).map_err(|e| StoreError::new(&format!("cannot read {}", path.display()), e))?;
    let salvaged = salvage(&bytes);
    let moved_to = aside(&path);
    std::fs::rename(&path, &moved_to)
        .map_err(|e| StoreError::new(&format!("cannot move {} aside", path.display()), e))?;
    let (store, _) = RedbStore::open(data_dir, Histogram::new(std::iter::empty()))?;
    let count = salvaged.len();
    let written = store.write(salvaged.into_iter().map(StoreOp::Put).collect()).await;
    store.close().await;
    written.map_err(|_| StoreError::closed())??;
    Ok(Repair::Rebuilt {
        reason,
        moved_to,
        salvaged: count,
    })
}

/// A name beside `path` for the damaged file: `catalog.redb.damaged-<unix seconds>`.
fn aside(path: &Path) -> PathBuf {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{seconds}"));
    PathBuf::from(name)
}

/// Every whole stored instance in `bytes`, the most recently registered per ServiceURL.
pub fn salvage(bytes: &[u8]) -> Vec<StoredInstance> {
    const START: &[u8] = br#"{"id":"#;
    let mut latest: HashMap<String, StoredInstance> = HashMap::new();
    for at in memchr::memmem::find_iter(bytes, START) {
        let mut objects = serde_json::Deserializer::from_slice(&bytes[at..]).into_iter::<StoredInstance>();
        if let Some(Ok(instance)) = objects.next() {
            let url = instance.registration.service_url.clone();
            match latest.get(&url) {
                Some(kept) if kept.registered_at >= instance.registered_at => {}
                _ => {
                    latest.insert(url, instance);
                }
            }
        }
    }
    let mut instances: Vec<StoredInstance> = latest.into_values().collect();
    instances.sort_by(|a, b| a.registration.service_url.cmp(&b.registration.service_url));
    instances
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use rollcall_wire::Registration;

    use super::*;

    fn instance(n: usize) -> StoredInstance {
        let url = format!("http://127.0.0.1:{}/i/{n}", 10_000 + n);
        let registration = Registration {
            service_name: format!("Service{}", n % 7),
            service_url: url.clone(),
            required_services: vec!["LogService".to_owned()],
            service_update_url: format!("{url}/services"),
            heartbeat_url: format!("{url}/heartbeat"),
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(n as u64);
        StoredInstance {
            metadata: BTreeMap::from([("n".to_owned(), n.to_string())]),
            ..StoredInstance::new(format!("{n:032x}"), registration, at)
        }
    }

    async fn catalog_of(dir: &Path, count: usize) -> Vec<StoredInstance> {
        let (store, _) = RedbStore::open(dir, Histogram::new(std::iter::empty())).expect("open");
        let all: Vec<StoredInstance> = (0..count).map(instance).collect();
        for chunk in all.chunks(50) {
            let ops = chunk.iter().cloned().map(StoreOp::Put).collect();
            store.write(ops).await.expect("answered").expect("durable");
        }
        store.close().await;
        all
    }

    #[tokio::test]
    async fn a_sound_catalog_is_left_alone() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(repair(dir.path()).await.expect("repair"), Repair::Missing);
        catalog_of(dir.path(), 10).await;
        assert_eq!(
            repair(dir.path()).await.expect("repair"),
            Repair::Sound { instances: 10 }
        );
    }

    #[tokio::test]
    async fn a_truncated_catalog_is_moved_aside_and_what_is_whole_in_it_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let all = catalog_of(dir.path(), 500).await;
        let path = dir.path().join(DATABASE_FILE);
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() * 6 / 10]).expect("truncate");
        assert!(
            RedbStore::open(dir.path(), Histogram::new(std::iter::empty())).is_err(),
            "the registry refuses a truncated catalog"
        );

        let Repair::Rebuilt { moved_to, salvaged, .. } = repair(dir.path()).await.expect("repair") else {
            panic!("a truncated catalog is rebuilt");
        };
        assert!(moved_to.exists(), "the damaged file is kept");
        let (store, restored) =
            RedbStore::open(dir.path(), Histogram::new(std::iter::empty())).expect("the new catalog opens");
        store.close().await;
        assert_eq!(restored.len(), salvaged);
        assert!(salvaged > 0, "something survives a cut at 60 %");
        assert!(
            restored.iter().all(|r| all.contains(r)),
            "nothing is made up: every salvaged instance is one that was stored"
        );
    }

    #[test]
    fn the_newest_copy_of_an_instance_wins_and_garbage_is_skipped() {
        let old = instance(1);
        let mut new = instance(1);
        new.registered_at += Duration::from_secs(60);
        new.metadata.insert("version".to_owned(), "2".to_owned());
        let mut bytes = b"\x00\x01garbage{\"id\":\"broken".to_vec();
        bytes.extend(serde_json::to_vec(&new).expect("encode"));
        bytes.extend(b"\xff\xfe");
        bytes.extend(serde_json::to_vec(&old).expect("encode"));
        let cut = serde_json::to_vec(&instance(2)).expect("encode");
        bytes.extend(&cut[..cut.len() / 2]);
        assert_eq!(salvage(&bytes), vec![new]);
    }
}
