//! Error answers over HTTP.
//!
//! Every rollcall service answers an error with a status and an [`ErrorBody`]; each service's
//! one error enum decides the status, code and message in one `match` and renders them through
//! [`ErrorAnswer`], and every router ends in [`json_fallbacks`], so that an unknown path or a
//! wrong method is answered alike everywhere.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use rollcall_wire::ErrorBody;

/// An error answer: a status and `{"error": code, "message": ...}`. A 429 also says
/// `Retry-After: 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code (`invalid_json`, `not_found`, ...).
    pub code: &'static str,
    /// What is wrong, in words, for people. Never an internal error's text.
    pub message: String,
}

impl ErrorAnswer {
    /// An answer with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ErrorAnswer {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// `router`, answering an unknown path with 404 `not_found` and a known path with the wrong
/// method with 405 `method_not_allowed`, both naming what was asked for.
pub fn json_fallbacks<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .fallback(|request: Request| async move {
            ErrorAnswer::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such endpoint: {}", request.uri().path()),
            )
        })
        .method_not_allowed_fallback(|request: Request| async move {
            ErrorAnswer::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("method {} is not allowed here", request.method()),
            )
        })
}
