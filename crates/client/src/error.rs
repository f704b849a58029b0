//! What can go wrong when a service starts or talks to its registry.

use std::net::SocketAddr;

/// A registry call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No answer: the registry is down, unreachable or too slow.
    #[error("the registry is unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The registry answered with an error status; `message` is what it said.
    #[error("the registry refused with {status}: {message}")]
    Refused {
        /// The HTTP status code.
        status: u16,
        /// The registry's explanation (empty from a Go registry).
        message: String,
    },
    /// The service was asked to stop before the call succeeded.
    #[error("stopped before the registry answered")]
    Cancelled,
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The listener's own address could not be read.
    #[error("cannot read the listening address: {0}")]
    LocalAddress(#[source] std::io::Error),
    /// The HTTP client could not be built (no TLS roots, for example).
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The token file or the `--ca-file` could not be read.
    #[error(transparent)]
    ClientArgs(#[from] crate::client_args::ClientArgsError),
    /// The certificate to serve HTTPS with could not be loaded.
    #[error("cannot serve HTTPS: {0}")]
    Tls(#[from] rollcall_http::TlsError),
    /// Listening beyond loopback without a token and without `--allow-anonymous`.
    #[error(
        "listening on {0}, beyond loopback, needs a token for the registry (--token-file or ROLLCALL_TOKEN); pass --allow-anonymous to start without one"
    )]
    TokenRequired(SocketAddr),
    /// Registration failed and the service was asked to fail fast, or it was asked to stop
    /// before it could register.
    #[error("cannot register: {0}")]
    Register(#[source] RegistryError),
}
