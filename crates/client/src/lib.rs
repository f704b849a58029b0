//! rollcall-client: what a Rust service embeds to take part in rollcall.
//!
//! - [`Service`]: the service runtime. It listens, mounts the seed's `/heartbeat` and
//!   `/services` routes beside the service's own router, registers (retrying while the registry
//!   is away), registers again when the registry forgets it, and on shutdown drains (dependents
//!   let go first), deregisters exactly once and stops within a deadline. It is probed by the
//!   registry, or renews itself within a TTL ([`Liveness`]).
//! - [`Providers`]: the instances of each required service, kept up to date by the registry's
//!   patches, with a load-balanced, lock-free [`Providers::get`].
//! - [`ConfigClient`]: the central configuration a service reads, kept current by the
//!   registry's push (checked every minute), from a local cache while the registry is away, and
//!   handed out as the service's own types ([`Watched`]); each release applied or rejected is
//!   reported back.
//! - [`LogShipping`]: a `tracing` layer that ships every record to the log service in batches,
//!   never blocking the application.
//! - [`ServiceArgs`]: the `--listen`, `--advertise` and `--registry` flags every rollcall
//!   service command shares.
//! - [`ClientArgs`]: the token a process presents to the registry and the log service
//!   (`--token-file`, `ROLLCALL_TOKEN`), sent as a sensitive `Authorization` header;
//! - [`shutdown_on_signals`]: the one SIGINT/SIGTERM handler, for the runtime and for a binary
//!   that stops other work on the same signals.
//!
//! It registers and deregisters in the seed protocol, so it works with the rollcall registry and
//! with the original Go registry alike; what the Go registry lacks (the listing that tells it was
//! forgotten, draining, TTL liveness) it uses when the rollcall registry offers it. The crate's README has a complete example service.

mod args;
mod backoff;
mod client_args;
mod config;
mod error;
mod logs;
mod providers;
mod registry_api;
mod runtime;
mod signals;

pub use args::{DEFAULT_REGISTRY, ServiceArgs, first_registry, registry_base_url, registry_base_urls};
pub use client_args::{ClientArgs, ClientArgsError};
pub use config::{ConfigClient, REVISION_CHECK, Watched};
pub use error::{RegistryError, StartError};
pub use logs::{LogLayer, LogShipping, OwnRecords, ShippingConfig};
pub use providers::{NoProvider, Policy, Provider, Providers};
pub use registry_api::Liveness;
pub use runtime::{RunningService, Service, ServiceBuilder};
pub use signals::{cancel_on_signals, shutdown_on_signals};

/// The README's example, compiled and checked as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
