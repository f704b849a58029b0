//! The routes the runtime mounts beside the service's own: the seed's `/heartbeat` (which
//! feeds the watchdog), `/services` (the registry's patches, applied to the providers) and
//! `/metrics` (what every rollcall service shows: `rollcall_http::observe`, for the service's
//! routes and these alike).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use prometheus_client::registry::Registry;
use rollcall_http::answer::ErrorAnswer;
use rollcall_wire::Patch;

use super::watchdog::ProbeClock;
use crate::providers::Providers;

/// The runtime's routes, with the service's own `router` behind them; with `metrics_of` (the
/// service's name), every request is timed and `/metrics` shows it with what every service
/// shows.
pub(super) fn router(
    providers: Providers,
    probes: Arc<ProbeClock>,
    service: Router,
    metrics_of: Option<&str>,
) -> Router {
    let runtime = Router::new()
        .route("/heartbeat", any(heartbeat))
        .route("/services", post(receive_patch));
    let Some(name) = metrics_of else {
        return runtime
            .with_state(RuntimeState {
                providers,
                probes,
                metrics: Arc::new(Registry::default()),
            })
            .fallback_service(service);
    };
    let mut metrics = Registry::with_prefix("rollcall");
    let timed = rollcall_http::observe::register(&mut metrics, name, env!("CARGO_PKG_VERSION"));
    // Each router times its own routes, where the route each request matched is known.
    let track = || axum::middleware::from_fn_with_state(timed.clone(), rollcall_http::observe::track);
    runtime
        .route("/metrics", get(show_metrics))
        .route_layer(track())
        .with_state(RuntimeState {
            providers,
            probes,
            metrics: Arc::new(metrics),
        })
        .fallback_service(service.layer(track()))
}

#[derive(Clone)]
struct RuntimeState {
    providers: Providers,
    probes: Arc<ProbeClock>,
    metrics: Arc<Registry>,
}

/// `GET /metrics`: the OpenMetrics exposition.
async fn show_metrics(State(state): State<RuntimeState>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.metrics).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The seed heartbeat: any method, 200 with an empty body.
async fn heartbeat(State(state): State<RuntimeState>) -> StatusCode {
    state.probes.probed();
    StatusCode::OK
}

/// The seed patch endpoint: `POST /services` with a Patch.
async fn receive_patch(State(state): State<RuntimeState>, body: Bytes) -> Response {
    match serde_json::from_slice::<Patch>(&body) {
        Ok(patch) => {
            state.providers.apply(&patch);
            StatusCode::OK.into_response()
        }
        Err(error) => ErrorAnswer::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not a valid Patch: {error}"),
        )
        .into_response(),
    }
}
