//! The dashboard at `/ui`: the whole system at a glance, live; and the configuration
//! (`config`: every document, one document with its instances, rollout, history and diffs).
//!
//! Pages are rendered on the server from askama templates compiled into the binary, so they work
//! without JavaScript (the filter is then a plain GET form); the stylesheet is inlined, so the
//! first render needs one request. A small script (`app.js`, also compiled in) follows
//! `/v1/events` and, on each change, fetches the same page with `?fragment=1` (its main content
//! alone) to swap it in. Nothing is fetched from elsewhere.

mod config;
mod model;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use rollcall_wire::{InstanceView, NodesView};
use serde::Deserialize;
use tower_http::compression::CompressionLayer;

use crate::core::Core;
use model::{Graph, ServiceSummary};

const SCRIPT: &str = include_str!("../../assets/app.js");
const STYLESHEET: &str = include_str!("../../assets/style.css");

pub(crate) fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/ui", get(overview))
        .route("/ui/", get(overview))
        .route("/ui/services/{name}", get(service))
        .route("/ui/config", get(config::list))
        .route("/ui/config/{namespace}/{service}/{name}", get(config::document))
        .route(
            "/ui/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLESHEET) }),
        )
        .layer(CompressionLayer::new())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    #[serde(default)]
    filter: String,
    /// Set by the script: answer the main content alone.
    fragment: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/layout.html")]
struct Layout<'a> {
    title: &'a str,
    content: &'a str,
    /// Inlined: one request less before the first render.
    stylesheet: &'static str,
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct Overview {
    filter: String,
    services: Vec<ServiceSummary>,
    graph: Graph,
    nodes: NodesView,
}

#[derive(Template)]
#[template(path = "ui/service.html")]
struct ServicePage {
    s: ServiceSummary,
    instances: Vec<InstanceView>,
}

/// The page, or its main content alone when the script asks for it.
fn page(status: StatusCode, title: &str, content: &impl Template, fragment: bool) -> Response {
    let rendered = content.render().and_then(|content| {
        if fragment {
            Ok(content)
        } else {
            Layout {
                title,
                content: &content,
                stylesheet: STYLESHEET,
            }
            .render()
        }
    });
    match rendered {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a dashboard page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render").into_response()
        }
    }
}

async fn overview(State(core): State<Arc<Core>>, query: Result<Query<PageQuery>, QueryRejection>) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let views = core.catalog().services(false);
    let services = model::summarize(&views);
    let graph = model::graph(&services);
    let wanted = query.filter.trim().to_lowercase();
    let services = services
        .into_iter()
        .filter(|s| wanted.is_empty() || s.name.to_lowercase().contains(&wanted))
        .collect();
    let overview = Overview {
        filter: query.filter.trim().to_owned(),
        services,
        graph,
        nodes: core.nodes_view(),
    };
    page(StatusCode::OK, "Services", &overview, query.fragment.is_some())
}

async fn service(
    State(core): State<Arc<Core>>,
    Path(name): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let views = core.catalog().services(false);
    let Some(summary) = model::summarize(&views).into_iter().find(|s| s.name == name) else {
        let missing = Overview {
            filter: name.clone(),
            services: Vec::new(),
            graph: Graph::default(),
            nodes: core.nodes_view(),
        };
        return page(
            StatusCode::NOT_FOUND,
            "Unknown service",
            &missing,
            query.fragment.is_some(),
        );
    };
    let instances = views
        .into_iter()
        .find(|v| v.name == name)
        .map(|v| v.instances)
        .unwrap_or_default();
    let page_content = ServicePage { s: summary, instances };
    page(StatusCode::OK, &name, &page_content, query.fragment.is_some())
}
