//! The registry's HTTP surface: the seed endpoints and the `/v1` API, merged and layered once.
//!
//! Who may do what is decided here too: every write checks its [`Caller`](crate::auth::Caller)
//! (the scope it needs depends on the service it changes), every read needs the `read` scope
//! (anonymous callers have it where they are served at all; see `crate::auth`).
//!
//! Every request body is limited to [`MAX_BODY_BYTES`]; every request is bounded in time (writes
//! by a timeout, blocking queries by their `wait` and by shutdown) so that a graceful shutdown
//! always finishes; unknown paths and wrong methods answer JSON errors.

mod audited;
mod caller;
mod config;
mod config_push;
mod discovery;
mod events;
#[cfg(test)]
mod fuzz;
mod instances;
mod metrics;
mod nodes;
mod openapi;
mod seed;
mod services;
mod tokens;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::core::Core;
use rollcall_http::answer::json_fallbacks;
use rollcall_http::{Defences, Guard, WriteLimits};

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The registry's router over `core`.
pub(crate) fn router(core: Arc<Core>) -> Router {
    // Registrations wait for their callback and for the disk: bound them. Blocking queries are
    // bounded by their own `wait` (and end on shutdown), so they are not cut here.
    let request_timeout = core.config.notify_timeout + Duration::from_secs(5);
    let writes = Router::new()
        .merge(seed::router())
        .merge(instances::router())
        .merge(config::router())
        .merge(config_push::router())
        .merge(tokens::router())
        .route_layer(middleware::from_fn_with_state(core.clone(), audited::audited))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ));
    // Writes check their caller themselves (what they need depends on what they change);
    // everything that shows the catalog needs the read scope.
    let reads = Router::new()
        .merge(services::router())
        .merge(instances::reads())
        .merge(config::reads())
        .merge(config_push::reads())
        .merge(events::router())
        .merge(metrics::router())
        .merge(nodes::router())
        .merge(discovery::router())
        .merge(crate::ui::router())
        .route_layer(middleware::from_fn_with_state(core.clone(), caller::require_read));
    let routes = Router::new().merge(writes).merge(reads).merge(openapi::router());
    // Registrations wait for a commit (and the seed's for a callback): 1,024 at once is far
    // past what the disk turns around, and bounds what waits in memory. (The layer above answers
    // a slow write first, with the 503 the API documents.)
    let writes_in_flight = WriteLimits {
        concurrent: 1024,
        timeout: request_timeout + Duration::from_secs(1),
    };
    let defences = Defences::new(Guard::new(&core.config.allowed_hosts), writes_in_flight);
    let track = middleware::from_fn_with_state(core.metrics.http.clone(), rollcall_http::observe::track);
    json_fallbacks(routes)
        .layer(track)
        .layer(defences)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A 500 here is the seed's answer to an unknown deregistration, not a fault: log at debug.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
        .with_state(core)
}
