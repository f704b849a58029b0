//! The last good release of each document, kept in a local file so that a service starts with
//! its configuration while the registry is away: `{dir}/{namespace}/{service}/{name}.json`,
//! written atomically (a temporary file, fsync, rename, directory fsync), mode 0600.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rollcall_wire::ReleaseEvent;

/// Where one namespace's documents of one service are cached.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache of `service` in `namespace` under `root`.
    pub(crate) fn new(root: &Path, namespace: &str, service: &str) -> Self {
        Self {
            dir: root.join(namespace).join(service),
        }
    }

    /// Every cached release (unreadable files are skipped and said).
    pub(crate) fn read_all(&self) -> Vec<ReleaseEvent> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|e| e == "json"))
            .filter_map(|entry| {
                let read = std::fs::read(entry.path()).map_err(|e| e.to_string());
                match read.and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string())) {
                    Ok(release) => Some(release),
                    Err(error) => {
                        tracing::warn!(path = %entry.path().display(), %error, "skipping an unreadable cached configuration");
                        None
                    }
                }
            })
            .collect()
    }

    /// Keeps `release` as the last good one of its document.
    pub(crate) fn write(&self, release: &ReleaseEvent) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let name = format!("{}.json", release.release.name);
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let mut file = open_private(&temporary)?;
        file.write_all(&serde_json::to_vec(release).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, self.dir.join(&name))?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

/// Creates (or truncates) `path` readable by its owner only.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
