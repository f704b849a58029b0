//! The two routes the runtime mounts beside the service's own: the seed's `/heartbeat` (which
//! feeds the watchdog) and `/services` (the registry's patches, applied to the providers).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use rollcall_http::answer::ErrorAnswer;
use rollcall_wire::Patch;

use super::watchdog::ProbeClock;
use crate::providers::Providers;

/// The runtime's routes, with the service's own `router` behind them.
pub(super) fn router(providers: Providers, probes: Arc<ProbeClock>, service: Router) -> Router {
    Router::new()
        .route("/heartbeat", any(heartbeat))
        .route("/services", post(receive_patch))
        .with_state(RuntimeState { providers, probes })
        .fallback_service(service)
}

#[derive(Clone)]
struct RuntimeState {
    providers: Providers,
    probes: Arc<ProbeClock>,
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
