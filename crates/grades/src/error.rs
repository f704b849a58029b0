//! The grading service's one error type: every way a request can fail, and in one `match` the
//! status, code and message each is answered with.
//!
//! A database failure is logged with its cause where it happens and answered with a generic
//! 500: a client never sees `SQLite`'s text.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rollcall_http::answer::ErrorAnswer;

/// Why a request to the grading service failed.
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
    /// The body could not be read (over the limit, or cut off).
    #[error("{}", .0.body_text())]
    Body(BytesRejection),
    /// A JSON write without `Content-Type: application/json`.
    #[error("send the body as Content-Type: application/json")]
    UnsupportedMediaType,
    /// No student has this id (as the client wrote it).
    #[error("no student has the id {0}")]
    StudentNotFound(String),
    /// The grade book failed (the cause is logged).
    #[error("the grade book failed; see the service's log")]
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

    /// A database failure, logged here with its cause.
    pub(crate) fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "grade book failure");
        Self::Internal
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Body(rejection) => (rejection.status(), "invalid_body"),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::StudentNotFound(_) => (StatusCode::NOT_FOUND, "student_not_found"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        ErrorAnswer::new(status, code, self.to_string()).into_response()
    }
}
