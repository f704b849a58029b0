//! TLS for every rollcall server: `--tls-cert` and `--tls-key` ([`TlsArgs`]), served with
//! rustls, the certificate reloaded from its files while the server runs.
//!
//! The files are PEM: the certificate chain (leaf first) and its private key (PKCS#8, PKCS#1
//! or SEC1). Every [`RELOAD_CHECK`] the files' modification times are looked at; when either
//! changed, both are read again and, if they make a valid pair, new connections are served
//! with them, while connections already open go on with the certificate they started with
//! (nothing is dropped). A pair that does not load is logged and the previous one kept, so a
//! half-written renewal cannot take the server down. Only TLS 1.2 and 1.3, HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the certificate's files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The flags of a server that may serve TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first); reloaded when the file
    /// changes. Needs --tls-key.
    #[arg(long, env = "ROLLCALL_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(long, env = "ROLLCALL_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The two files, when both were given.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }

    /// `https` when TLS is configured, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.files().is_some() { "https" } else { "http" }
    }
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("cannot read {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refused them.
    #[error("the certificate and key cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server's TLS: the acceptor, whose certificate follows its files.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Loads `cert` and `key`, and watches them for changes until `stop` fires.
    pub fn load(cert: &Path, key: &Path, stop: CancellationToken) -> Result<Self, TlsError> {
        let current = Arc::new(Reloading(ArcSwap::from_pointee(certified_key(cert, key)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio::spawn(watch(cert.to_owned(), key.to_owned(), current, stop));
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor that performs handshakes.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// The certificate new connections are served with.
#[derive(Debug)]
struct Reloading(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let unreadable = |path: &Path, reason: &dyn std::fmt::Display| TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| unreadable(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(cert, &e))?;
    if chain.is_empty() {
        return Err(unreadable(cert, &"no certificate in it"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable(key, &e))?;
    let provider = aws_lc_rs::default_provider();
    Ok(CertifiedKey::from_der(chain, key_der, &provider)?)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads the pair whenever either file's modification time changes.
async fn watch(cert: PathBuf, key: PathBuf, current: Arc<Reloading>, stop: CancellationToken) {
    let mut seen = (modified(&cert), modified(&key));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RELOAD_CHECK) => {}
        }
        let now = (modified(&cert), modified(&key));
        if now == seen {
            continue;
        }
        seen = now;
        let (cert, key) = (cert.clone(), key.clone());
        let loaded = tokio::task::spawn_blocking(move || certified_key(&cert, &key)).await;
        match loaded {
            Ok(Ok(pair)) => {
                current.0.store(Arc::new(pair));
                tracing::info!("TLS certificate reloaded: new connections use it");
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "the new TLS certificate does not load; still serving the previous one");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let (cert_file, key_file) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_file, cert.pem()).expect("write");
        std::fs::write(&key_file, key.serialize_pem()).expect("write");
        (cert_file, key_file)
    }

    #[test]
    fn a_certificate_loads_only_with_its_own_key_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = pair(dir.path(), "a");
        let (_, other_key) = pair(dir.path(), "b");
        assert!(certified_key(&cert, &key).is_ok());
        assert!(
            matches!(certified_key(&cert, &other_key), Err(TlsError::Rustls(_))),
            "a key that is not the certificate's"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let error = certified_key(&empty, &key).expect_err("no certificate");
        assert!(error.to_string().contains("empty.pem"), "{error}");
    }
}
