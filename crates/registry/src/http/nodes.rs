//! `GET /v1/nodes`: the registry nodes sharing this catalog as the answering node sees them,
//! each with its share of the probing. A registry alone is one node with every instance.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use rollcall_wire::NodesView;

use crate::core::Core;

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new().route("/v1/nodes", get(nodes))
}

async fn nodes(State(core): State<Arc<Core>>) -> Json<NodesView> {
    Json(core.nodes_view())
}
