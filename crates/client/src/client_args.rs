//! How a process calls the registry and the log service ([`ClientArgs`]): the token it presents
//! (`--token-file`, or the `ROLLCALL_TOKEN` variable), sent as an `Authorization: Bearer`
//! header marked sensitive so that it is never logged or shown by `Debug`; and the certificate
//! authorities it trusts for `https://` URLs (`--ca-file`: those only; the platform's roots
//! otherwise).
//!
//! A token file is the recommended way: a variable is inherited by every child process, and a
//! flag would be visible to every user of the machine in the process list, so there is no flag.

use std::path::{Path, PathBuf};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

/// The token a process presents and the authorities it trusts, as every command takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ClientArgs {
    /// A file holding the token to present (`rc_...`), issued by `rollcall token create`.
    #[arg(long, env = "ROLLCALL_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// The token itself, from the environment only (a file is safer: see --token-file).
    #[arg(long = "token", env = "ROLLCALL_TOKEN", hide = true, hide_env_values = true)]
    pub token: Option<String>,

    /// Trust only these certificate authorities (PEM) for https:// registry and log service
    /// URLs [default: the platform's roots].
    #[arg(long, env = "ROLLCALL_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

/// Why a token or the authorities could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientArgsError {
    /// The `--ca-file` could not be read or holds no certificate.
    #[error("cannot use the authorities in {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file (or variable) does not hold one token.
    #[error("{0} does not hold a token (one line, rc_...)")]
    NotAToken(String),
}

impl ClientArgs {
    /// An HTTP client builder presenting the token and trusting the authorities these say.
    pub fn http_client(&self) -> Result<reqwest::ClientBuilder, ClientArgsError> {
        let token = self.read()?;
        let builder = reqwest::Client::builder().default_headers(authorization(token.as_deref()));
        let Some(path) = &self.ca_file else {
            return Ok(builder);
        };
        let failed = |reason: String| ClientArgsError::CaFile {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| failed(e.to_string()))?;
        if roots.is_empty() {
            return Err(failed("no certificate in it".to_owned()));
        }
        Ok(builder.tls_certs_only(roots))
    }

    /// The token: the file's, else the variable's, else none.
    pub fn read(&self) -> Result<Option<String>, ClientArgsError> {
        match (&self.token_file, &self.token) {
            (Some(path), _) => read_token_file(path).map(Some),
            (None, Some(text)) => checked(text, "ROLLCALL_TOKEN").map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// The token in the file at `path` (surrounding whitespace ignored).
pub(crate) fn read_token_file(path: &Path) -> Result<String, ClientArgsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClientArgsError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    checked(&text, &path.display().to_string())
}

fn checked(text: &str, whence: &str) -> Result<String, ClientArgsError> {
    let token = text.trim();
    let one_word = !token.is_empty() && !token.chars().any(|c| c.is_whitespace() || c.is_control());
    if one_word && HeaderValue::from_str(token).is_ok() {
        Ok(token.to_owned())
    } else {
        Err(ClientArgsError::NotAToken(whence.to_owned()))
    }
}

/// The headers that present `token`, if any: for a client's `default_headers`.
pub(crate) fn authorization(token: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(token) = token
        && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_from_the_file_first_then_the_variable() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "rc_from_file\n").expect("write");
        let both = ClientArgs {
            token_file: Some(path.clone()),
            token: Some("rc_from_env".to_owned()),
            ca_file: None,
        };
        assert_eq!(both.read().expect("read"), Some("rc_from_file".to_owned()));
        let env_only = ClientArgs {
            token_file: None,
            token: Some(" rc_from_env ".to_owned()),
            ca_file: None,
        };
        assert_eq!(env_only.read().expect("read"), Some("rc_from_env".to_owned()));
        assert_eq!(ClientArgs::default().read().expect("read"), None);
    }

    #[test]
    fn a_file_that_is_not_one_token_is_refused_and_a_missing_one_named() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "rc_a rc_b\n").expect("write");
        assert!(matches!(read_token_file(&path), Err(ClientArgsError::NotAToken(_))));
        let missing = read_token_file(&dir.path().join("none")).expect_err("missing");
        assert!(missing.to_string().contains("none"), "{missing}");
    }

    #[test]
    fn the_header_is_sensitive_and_absent_without_a_token() {
        let headers = authorization(Some("rc_x"));
        let value = headers.get(AUTHORIZATION).expect("header");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("rc_x"), "Debug hides it");
        assert!(authorization(None).is_empty());
    }
}
