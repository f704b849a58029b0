//! The registry's one error type and how it is answered over HTTP: statuses and codes in one
//! `match`, rendered through [`ErrorAnswer`]; unknown paths and methods get the shared
//! `json_fallbacks`.
//!
//! Every error answers `{"error": code, "message": ...}` with `application/json`. On the seed
//! endpoints the status codes are the seed's (400 for any refused registration, 500 for the
//! deregistration of an unknown URL), so unchanged Go clients behave as before; the body only
//! adds the explanation they never had.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rollcall_http::answer::ErrorAnswer;

use crate::auth::Denied;
use crate::core::ApplyError;
use crate::published::PublishError;
use crate::releases::ReleaseError;
use crate::state::CommandError;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong; `code` names what, for scripts.
    #[error("{message}")]
    BadRequest {
        /// A stable machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `DELETE /services` named a ServiceURL nobody registered (the seed answers 500).
    #[error("no instance is registered with ServiceURL {0:?}")]
    UnknownInstance(String),
    /// The registry is stopping.
    #[error("the registry is shutting down")]
    ShuttingDown,
    /// No instance has this id.
    #[error("no instance has id {0:?}")]
    UnknownInstanceId(String),
    /// The change could not be made durable, so it is not acknowledged.
    #[error("{0}")]
    Storage(String),
    /// A request body is over the limit.
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The catalog admits no more instances (of this service, or in all).
    #[error("{0}")]
    TooManyInstances(String),
    /// The request presents a token this registry did not issue, or revoked.
    #[error("the token presented is not valid here (unknown, revoked or malformed)")]
    InvalidToken,
    /// The caller may not do this (no token where one is needed, or a token without the scope).
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The instance belongs to another token or address.
    #[error("{0}")]
    NotOwner(String),
    /// A TTL renewal for an instance checked otherwise.
    #[error("{0}")]
    NotTtl(String),
    /// No token has this id.
    #[error("no token has id {0:?}")]
    UnknownToken(String),
    /// The registry keeps no more tokens.
    #[error("{0}")]
    TooManyTokens(String),
    /// A JSON write without `Content-Type: application/json`.
    #[error("send the body as Content-Type: application/json")]
    UnsupportedMediaType,
    /// A rollout over a service none of whose instances is live.
    #[error("{0}")]
    NoLiveInstance(String),
    /// A document published without a format it could be told by.
    #[error(
        "say the document's format with ?format=json|yaml|toml|properties|text or its Content-Type (application/json, application/yaml, application/toml, text/x-java-properties, text/plain)"
    )]
    UnsupportedDocumentType,
    /// A configuration document, or release, that cannot be published or found.
    #[error(transparent)]
    Release(#[from] ReleaseError),
}

impl ApiError {
    /// A 400 answer with `code` and `message`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::UnknownInstance(_) => (StatusCode::INTERNAL_SERVER_ERROR, "unknown_instance"),
            Self::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Self::UnknownInstanceId(_) => (StatusCode::NOT_FOUND, "unknown_instance"),
            Self::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::TooManyInstances(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_instances"),
            Self::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::Denied(Denied::TokenRequired(_)) => (StatusCode::UNAUTHORIZED, "token_required"),
            Self::Denied(Denied::MissingScope { .. }) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotOwner(_) => (StatusCode::FORBIDDEN, "not_owner"),
            Self::NotTtl(_) => (StatusCode::CONFLICT, "not_ttl"),
            Self::UnknownToken(_) => (StatusCode::NOT_FOUND, "unknown_token"),
            Self::TooManyTokens(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_tokens"),
            Self::UnsupportedMediaType | Self::UnsupportedDocumentType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::NoLiveInstance(_) => (StatusCode::CONFLICT, "no_live_instance"),
            Self::Release(error) => match error {
                ReleaseError::BadKey(_) => (StatusCode::BAD_REQUEST, "invalid_config_path"),
                ReleaseError::Malformed { .. } => (StatusCode::BAD_REQUEST, "malformed_document"),
                ReleaseError::InvalidSchema(_) => (StatusCode::BAD_REQUEST, "invalid_schema"),
                ReleaseError::SchemaViolation { .. } => (StatusCode::BAD_REQUEST, "schema_violation"),
                ReleaseError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
                ReleaseError::MessageTooLong => (StatusCode::BAD_REQUEST, "invalid_message"),
                ReleaseError::Conflict { .. } => (StatusCode::CONFLICT, "revision_conflict"),
                ReleaseError::UnknownDocument(_) => (StatusCode::NOT_FOUND, "unknown_document"),
                ReleaseError::UnknownRevision { .. } => (StatusCode::NOT_FOUND, "unknown_revision"),
                ReleaseError::FirstRelease(_) | ReleaseError::NoRollout(_) => (StatusCode::CONFLICT, "rollout_refused"),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status == StatusCode::UNAUTHORIZED {
            return rollcall_http::unauthorized(code, self.to_string());
        }
        ErrorAnswer::new(status, code, self.to_string()).into_response()
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::UnknownInstance(url) => ApiError::UnknownInstance(url),
            not_owner @ CommandError::NotOwner(_) => ApiError::NotOwner(not_owner.to_string()),
            not_ttl @ CommandError::NotTtl { .. } => ApiError::NotTtl(not_ttl.to_string()),
            full @ (CommandError::TooManyInstances(_) | CommandError::TooManyOfService { .. }) => {
                ApiError::TooManyInstances(full.to_string())
            }
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(error: ApplyError) -> Self {
        match error {
            ApplyError::Command(command) => command.into(),
            ApplyError::Storage(storage) => {
                tracing::error!(%storage, "a change could not be made durable");
                ApiError::Storage(
                    "the registry could not store its catalog durably (on disk, or in etcd); the change is not acknowledged".to_owned(),
                )
            }
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::Release(release) => release.into(),
            PublishError::Storage(storage) => {
                tracing::error!(%storage, "the configuration store failed");
                ApiError::Storage(
                    "the registry could not read or write its configuration store; a publish is not acknowledged"
                        .to_owned(),
                )
            }
        }
    }
}
