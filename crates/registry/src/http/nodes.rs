//! `GET /v1/nodes`: the registry nodes sharing this catalog as the answering node sees them,
//! each with its share of the probing. A registry alone is one node with every instance.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use rollcall_wire::{NodeView, NodesView};

use crate::core::Core;

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new().route("/v1/nodes", get(nodes))
}

async fn nodes(State(core): State<Arc<Core>>) -> Json<NodesView> {
    Json(nodes_view(&core))
}

/// The live nodes as `core`'s node sees them, each with its share (also shown by the dashboard).
pub(crate) fn nodes_view(core: &Core) -> NodesView {
    let (membership, shares) = core.node_shares();
    let nodes = membership
        .nodes
        .into_values()
        .map(|node| NodeView {
            instances: shares.get(&node.id).copied().unwrap_or_default(),
            id: node.id,
            url: node.url,
            started_at: node.started_at,
        })
        .collect();
    NodesView {
        this: core.nodes.me().id.clone(),
        live: membership.live,
        nodes,
    }
}
