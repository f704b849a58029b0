//! The audit trail's door: a layer in front of every write (registrations, deregistrations,
//! token operations) that records, whatever the answer, what was asked, by whom (the token's
//! name, `anonymous`, or `invalid token`), from where, about what, and the status it got.
//!
//! What a request is about is often in its body, which only the handler reads: a handler
//! names it through the [`Subject`] the layer hands it. A request refused before its handler
//! read that far is recorded with its path.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::caller::Verified;
use crate::audit::AuditRecord;
use crate::core::Core;

/// What an audited request is about, named by its handler once it knows.
#[derive(Debug, Clone, Default)]
pub(super) struct Subject(Arc<Mutex<Option<String>>>);

impl Subject {
    /// Names what the request is about: a ServiceURL, a token's id.
    pub(super) fn set(&self, subject: impl Into<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(subject.into());
    }

    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Subject {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Subject>().cloned().unwrap_or_default())
    }
}

/// Records every write that passes through, with its answer's status.
pub(super) async fn audited(State(core): State<Arc<Core>>, mut request: Request, next: Next) -> Response {
    let action = match (request.method(), request.uri().path()) {
        (&Method::POST, "/services" | "/v1/instances") => "register",
        (&Method::POST, path) if path.starts_with("/v1/instances/") && path.ends_with("/drain") => "drain",
        (&Method::POST, path) if path.starts_with("/v1/instances/") && path.ends_with("/undrain") => "undrain",
        (&Method::DELETE, path) if path == "/services" || path.starts_with("/v1/instances/") => "deregister",
        (&Method::PUT, path) if path.starts_with("/v1/config/") => "config.publish",
        (&Method::POST, path) if path.starts_with("/v1/config/") && path.ends_with("/rollback") => "config.rollback",
        (&Method::POST, "/v1/tokens") => "token.create",
        (&Method::DELETE, path) if path.starts_with("/v1/tokens/") => "token.revoke",
        _ => return next.run(request).await,
    };
    let peer = rollcall_http::peer_of(request.extensions());
    let verified = Verified::of(&core, request.headers());
    let by = match &verified {
        Verified::Anonymous => "anonymous".to_owned(),
        Verified::Token(grant) => grant.name.clone(),
        Verified::Invalid => "invalid token".to_owned(),
    };
    // The handler's `Caller` takes it from here instead of verifying the token again.
    request.extensions_mut().insert(verified);
    let path = request.uri().path().to_owned();
    let subject = Subject::default();
    request.extensions_mut().insert(subject.clone());
    let response = next.run(request).await;
    let record = AuditRecord {
        at: SystemTime::now(),
        action,
        by,
        peer,
        subject: subject.take().unwrap_or(path),
        status: response.status().as_u16(),
    };
    core.audit.record(&core.metrics, record);
    response
}
