//! The token list on disk, and the admin token's file: each written whole to a temporary file
//! beside it (mode 0600), synced, renamed over the old one and the directory synced, so that a
//! crash leaves either the old file or the new one, never a mix.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoredToken;

/// Why the token list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done: "read", "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The list is not what the registry writes (damaged or edited by hand).
    #[error(
        "{path} is damaged ({reason}); restore it from a backup, or move it away to start over with a new admin token (every other token is then revoked)"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The operating system gave no random bytes.
    #[error("no random bytes for a new token")]
    NoRandomness,
    /// The write was interrupted (the registry is stopping).
    #[error("the token list's write was interrupted")]
    Interrupted,
}

/// The file's shape; `version` leaves room for a change of it.
#[derive(Serialize, Deserialize)]
struct TokenList {
    version: u32,
    tokens: Vec<StoredToken>,
}

/// The tokens in `path`, or `None` when there is no file (the first start).
pub(super) fn read(path: &Path) -> Result<Option<Vec<StoredToken>>, TokenFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokenFileError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let list: TokenList = serde_json::from_slice(&bytes).map_err(|e| TokenFileError::Damaged {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Some(list.tokens))
}

/// Replaces `path` with `tokens`.
pub(super) fn write(path: &Path, tokens: &[StoredToken]) -> Result<(), TokenFileError> {
    let list = TokenList {
        version: 1,
        tokens: tokens.to_vec(),
    };
    let mut bytes = serde_json::to_vec_pretty(&list).unwrap_or_default();
    bytes.push(b'\n');
    replace(path, &bytes)
}

/// Replaces `path` with `text` and a newline.
pub(super) fn write_secret(path: &Path, text: &str) -> Result<(), TokenFileError> {
    replace(path, format!("{text}\n").as_bytes())
}

fn replace(path: &Path, bytes: &[u8]) -> Result<(), TokenFileError> {
    let failed = |source| TokenFileError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    // tempfile creates the file with mode 0600, which the rename keeps.
    let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    temporary.write_all(bytes).map_err(failed)?;
    temporary.as_file().sync_all().map_err(failed)?;
    temporary.persist(path).map_err(|e| failed(e.error))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(failed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn files_are_readable_by_their_owner_only() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("admin.token");
        write_secret(&path, "rc_x").expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "rc_x\n");
    }

    #[test]
    fn a_damaged_list_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, b"{\"version\":1,\"tok").expect("write");
        let error = read(&path).expect_err("damaged");
        assert!(error.to_string().contains("move it away"), "{error}");
        assert!(read(&dir.path().join("none.json")).expect("absent").is_none());
    }
}
