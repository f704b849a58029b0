//! The dashboard's configuration pages: every document at `/ui/config`, and one document at
//! `/ui/config/{namespace}/{service}/{name}` with the release in force, how it stands across
//! the instances that read it, its rollout, its history, and a diff (`?diff=N`: from N-1 to N).
//! Everything shown is escaped by the templates; documents and diffs are shown as text.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use rollcall_wire::{ReleaseView, RolloutStatus};
use serde::Deserialize;

use super::page;
use crate::core::Core;
use crate::releases::DocKey;

/// One row of the list.
pub(crate) struct DocumentRow {
    path: String,
    format: &'static str,
    in_force: u64,
    latest: u64,
    published_at: String,
    rollout: String,
}

#[derive(Template)]
#[template(path = "ui/config_list.html")]
struct ListPage {
    documents: Vec<DocumentRow>,
}

#[derive(Template)]
#[template(path = "ui/config_document.html")]
struct DocumentPage {
    path: String,
    status: RolloutStatus,
    content: String,
    history: Vec<ReleaseView>,
    diff: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DocumentQuery {
    diff: Option<u64>,
    fragment: Option<String>,
}

pub(crate) async fn list(State(core): State<Arc<Core>>, Query(query): Query<DocumentQuery>) -> Response {
    let published = core.published.documents();
    let documents = published
        .list(None)
        .into_iter()
        .map(|document| {
            let key = DocKey {
                namespace: document.latest.namespace.clone(),
                service: document.latest.service.clone(),
                name: document.latest.name.clone(),
            };
            let rollout = published
                .rollout(&key)
                .ok()
                .flatten()
                .map(|r| format!("{} (r{})", r.view().state.replace('_', " "), r.candidate))
                .unwrap_or_default();
            DocumentRow {
                path: key.path(),
                format: document.latest.format.as_str(),
                in_force: document.in_force,
                latest: document.latest.revision,
                published_at: document.latest.published_at,
                rollout,
            }
        })
        .collect();
    drop(published);
    page(
        StatusCode::OK,
        "Configuration",
        &ListPage { documents },
        query.fragment.is_some(),
    )
}

pub(crate) async fn document(
    State(core): State<Arc<Core>>,
    Path((namespace, service, name)): Path<(String, String, String)>,
    Query(query): Query<DocumentQuery>,
) -> Response {
    let fragment = query.fragment.is_some();
    let Ok(key) = DocKey::new(&namespace, &service, &name) else {
        return missing(fragment);
    };
    let (content, history, rollout) = {
        let documents = core.published.documents();
        let Ok(in_force) = documents.in_force(&key) else {
            return missing(fragment);
        };
        let history: Vec<ReleaseView> = documents
            .history(&key)
            .map(|h| h.map(|meta| meta.view(&key)).collect())
            .unwrap_or_default();
        let rollout = documents
            .rollout(&key)
            .ok()
            .flatten()
            .map(crate::releases::rollout::Rollout::view);
        (in_force.content.clone(), history, rollout)
    };
    let readers = crate::rollouts::readers(&core, &key);
    let Ok(mut status) = core.published.progress(&key, readers) else {
        return missing(fragment);
    };
    status.rollout = rollout;
    let diff = match query.diff {
        Some(to) if to > 1 => core.published.diff(&key, to - 1, to).await.ok(),
        _ => None,
    };
    let content_page = DocumentPage {
        path: key.path(),
        status,
        content,
        history,
        diff,
    };
    page(StatusCode::OK, &key.path(), &content_page, fragment)
}

fn missing(fragment: bool) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Unknown document",
        &ListPage { documents: Vec::new() },
        fragment,
    )
}
