//! rollcall-http: what every rollcall HTTP server shares, so that the four services answer and
//! defend themselves alike.
//!
//! - [`answer`]: an error as every rollcall service answers it (`{"error", "message"}` JSON,
//!   statuses decided by each service's one error type), and the 404/405 fallbacks;
//! - [`Defences`]: the layer in front of every router: a [`Guard`] (a `Host` allow-list against
//!   DNS rebinding, no cross-site writes, security headers on every answer) and
//!   [`WriteLimits`] (writes in flight bounded, shed past the bound with 503, each bounded in
//!   time with 408);
//! - [`presented_token`] and [`Anonymous`]: who a request speaks for (a token, or nobody where
//!   that is allowed), read alike by every server;
//! - [`serve`]: the accept loop every server runs instead of `axum::serve`: a cap on open
//!   connections sized from the process's open-files limit, a header-read timeout that is also
//!   the idle keep-alive timeout, the peer's address for handlers, and a graceful stop;
//! - [`observe`]: what every `/metrics` shows (build, process, request durations by route);
//! - [`Tls`]: HTTPS with rustls (`--tls-cert`, `--tls-key`: [`TlsArgs`]), the certificate
//!   reloaded from its files without dropping open connections.

pub mod answer;
mod credentials;
mod defences;
pub mod observe;
mod server;
mod tls;

pub use credentials::{Anonymous, MalformedCredentials, peer_of, presented_token, unauthorized};
pub use defences::{Defences, Defended, Guard, SaysJson, WriteLimits, says_json};
pub use server::{ServerLimits, bind, raise_open_files_limit, serve};
pub use tls::{RELOAD_CHECK, Tls, TlsArgs, TlsError};
