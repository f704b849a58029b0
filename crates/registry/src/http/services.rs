//! `GET /v1/services` and `GET /v1/services/{name}`: what the registry holds, as JSON.
//!
//! `?passing` (or `?passing=true`) keeps only passing instances. A service with no instance
//! answers 200 with an empty list, so that a client can ask for a service before it exists.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use rollcall_wire::{ServiceView, ServicesView};
use serde::Deserialize;

use crate::core::Core;
use crate::error::ApiError;

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/services", get(list_services))
        .route("/v1/services/{name}", get(get_service))
}

/// The query string both listing endpoints take.
#[derive(Debug, Deserialize)]
struct ListQuery {
    passing: Option<String>,
}

impl ListQuery {
    fn passing_only(query: Result<Query<Self>, QueryRejection>) -> Result<bool, ApiError> {
        let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
        match query.passing.as_deref() {
            None | Some("false" | "0") => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(
                "invalid_query",
                format!("passing must be true or false, not {other:?}"),
            )),
        }
    }
}

#[tracing::instrument(skip_all)]
async fn list_services(
    State(core): State<Arc<Core>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ServicesView>, ApiError> {
    let passing_only = ListQuery::passing_only(query)?;
    Ok(Json(ServicesView {
        services: core.catalog().services(passing_only),
    }))
}

#[tracing::instrument(skip_all, fields(service = %name))]
async fn get_service(
    State(core): State<Arc<Core>>,
    Path(name): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ServiceView>, ApiError> {
    let passing_only = ListQuery::passing_only(query)?;
    Ok(Json(core.catalog().service(&name, passing_only)))
}
