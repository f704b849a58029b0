//! Certificates made at run time for TLS tests (rcgen): a certificate authority and server
//! certificates it signs for `127.0.0.1` and `localhost`, written as PEM files to a temporary
//! directory. No key material is committed to the repository.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A certificate authority of a test, and the directory its files live in.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    dir: tempfile::TempDir,
    /// The authority's certificate (PEM): what a client given `--ca-file` trusts.
    pub ca_file: PathBuf,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// A server certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate chain (the leaf).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl TestCa {
    /// A new authority named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("certificate dir");
        let ca_file = dir.path().join(format!("{name}.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write CA");
        Self {
            issuer: Issuer::new(params, key),
            dir,
            ca_file,
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost` signed by this authority, written
    /// as `{file_name}.pem` and `{file_name}.key` in its directory (replacing files of that
    /// name, as a renewal does).
    pub fn issue(&self, file_name: &str) -> ServerCert {
        self.issue_at(self.dir.path(), file_name)
    }

    /// Like [`TestCa::issue`], into `dir`.
    pub fn issue_at(&self, dir: &Path, file_name: &str) -> ServerCert {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let params = CertificateParams::new(names).expect("server parameters");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        let (cert_file, key_file) = (
            dir.join(format!("{file_name}.pem")),
            dir.join(format!("{file_name}.key")),
        );
        // Written beside and renamed, so a server reloading never reads half a file.
        write_replacing(&cert_file, &cert.pem());
        write_replacing(&key_file, &key.serialize_pem());
        ServerCert {
            cert: cert_file,
            key: key_file,
        }
    }
}

fn write_replacing(path: &Path, text: &str) {
    let temporary = path.with_extension("partial");
    std::fs::write(&temporary, text).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}
