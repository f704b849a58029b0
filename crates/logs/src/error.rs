//! The log service's one error type: every way a request can fail, and in one `match` the
//! status, code and message each is answered with.
//!
//! Internal failures (a read of the store failing, a query task dying) are logged with their
//! cause where they happen and answered with a generic message: a client learns that the
//! service failed, never the text of an I/O error.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rollcall_http::answer::ErrorAnswer;

use crate::store::StoreError;

/// Why a request to the log service failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The request is wrong; `code` names what, for scripts.
    #[error("{message}")]
    BadRequest {
        /// A stable machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is over the limit (after decompression).
    #[error("the body is larger than {0} bytes: send smaller batches")]
    TooLarge(usize),
    /// A `Content-Encoding` other than identity or gzip.
    #[error("Content-Encoding {0:?} is not supported: send identity or gzip")]
    UnsupportedEncoding(String),
    /// The store refused the records.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Every tail slot is taken.
    #[error("too many tails are open: try again later")]
    TooManyTails,
    /// Reading the store failed (the cause is logged).
    #[error("the log store could not be read; the cause is in the log service's log")]
    ReadFailed,
    /// No token, where one is needed.
    #[error("this request needs a token with the {0} scope (Authorization: Bearer <token>)")]
    TokenRequired(rollcall_wire::Scope),
    /// A token the registry does not know (revoked, mistyped), or a malformed header.
    #[error("the token presented is not valid here (unknown, revoked or malformed)")]
    InvalidToken,
    /// A token without the scope.
    #[error("the token {name:?} does not carry the {wanted} scope")]
    Forbidden {
        /// The token's name.
        name: String,
        /// The scope it lacks.
        wanted: rollcall_wire::Scope,
    },
    /// The registry could not be asked about a token (the cause is logged).
    #[error("the token cannot be verified now (the registry does not answer); try again")]
    AuthUnavailable,
    /// Anything else that should not happen (the cause is logged).
    #[error("the log service failed; the cause is in its log")]
    Internal,
}

impl ApiError {
    /// A 400 answer with `code` and `message`.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A failed read of the store, logged here with its cause.
    pub(crate) fn read_failed(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "cannot read the log store");
        Self::ReadFailed
    }

    /// An internal failure while doing `what`, logged here with its cause.
    pub(crate) fn internal(what: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal failure: {what}");
        Self::Internal
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::UnsupportedEncoding(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding"),
            Self::Store(StoreError::Busy(_)) => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            Self::Store(StoreError::Write) => (StatusCode::INSUFFICIENT_STORAGE, "write_failed"),
            Self::Store(StoreError::Closed) => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Self::TooManyTails => (StatusCode::TOO_MANY_REQUESTS, "too_many_tails"),
            Self::ReadFailed => (StatusCode::INTERNAL_SERVER_ERROR, "read_failed"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::TokenRequired(_) => (StatusCode::UNAUTHORIZED, "token_required"),
            Self::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            Self::AuthUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable"),
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
