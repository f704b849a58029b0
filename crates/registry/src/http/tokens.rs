//! `/v1/tokens`: issuing, listing and revoking tokens (admin tokens only, from anywhere), and
//! `GET /v1/tokens/self`, which tells any token holder (and the log service, verifying a token
//! presented to it) what the token may do.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use rollcall_http::SaysJson;
use rollcall_wire::{CreatedToken, NewToken, Scope, TokenView};

use super::audited::Subject;
use super::validate::{self, Dialect};
use crate::auth::{Caller, TokenError};
use crate::core::Core;
use crate::error::ApiError;

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/v1/tokens", get(list).post(create))
        .route("/v1/tokens/self", get(introspect))
        .route("/v1/tokens/{id}", delete(revoke))
}

#[tracing::instrument(level = "debug", skip_all)]
async fn list(State(core): State<Arc<Core>>, caller: Caller) -> Result<Json<Vec<TokenView>>, ApiError> {
    caller.may(&Scope::Admin)?;
    Ok(Json(core.tokens.list()))
}

/// `201 Created` with the token's text, shown this once.
#[tracing::instrument(level = "debug", skip_all)]
async fn create(
    State(core): State<Arc<Core>>,
    caller: Caller,
    subject: Subject,
    json: SaysJson,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.may(&Scope::Admin)?;
    validate::json_content_type(json, Dialect::V1)?;
    let body = body.map_err(|r| validate::body_error(&r, Dialect::V1))?;
    let request: NewToken = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not a token request ({{\"name\": ..., \"scopes\": [...]}}): {e}"),
        )
    })?;
    let (view, token) = core.tokens.create(&request).await.map_err(token_error)?;
    subject.set(format!("{} ({}: {})", view.id, view.name, scopes_text(&view.scopes)));
    Ok((StatusCode::CREATED, Json(CreatedToken { view, token })))
}

#[tracing::instrument(level = "debug", skip_all, fields(token = %id))]
async fn revoke(State(core): State<Arc<Core>>, caller: Caller, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    caller.may(&Scope::Admin)?;
    if !core.tokens.revoke(&id).await.map_err(token_error)? {
        return Err(ApiError::UnknownToken(id));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The presented token as listed; 401 without one.
async fn introspect(State(core): State<Arc<Core>>, caller: Caller) -> Result<Json<TokenView>, ApiError> {
    let Caller::Token(grant) = caller else {
        return Err(crate::auth::Denied::TokenRequired(Scope::Read).into());
    };
    core.tokens.view(&grant.id).map(Json).ok_or(ApiError::InvalidToken)
}

fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn token_error(error: TokenError) -> ApiError {
    match error {
        TokenError::Invalid(message) => ApiError::bad_request("invalid_token_request", message),
        TokenError::TooMany => ApiError::TooManyTokens(error.to_string()),
        TokenError::File(file) => {
            tracing::error!(%file, "the token list could not be written");
            ApiError::Storage("the registry could not write its token list; nothing changed".to_owned())
        }
        TokenError::Shared(shared) => {
            tracing::error!(%shared, "a token could not be shared with the other registry nodes");
            ApiError::Storage(
                "the registry could not share the token with its other nodes (etcd); nothing changed".to_owned(),
            )
        }
    }
}
