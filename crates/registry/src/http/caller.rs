//! Who a request speaks for, as handlers take it: the [`Caller`] extractor (a verified token,
//! or nobody), and [`require_read`], the layer in front of every reading route (which also
//! marks a read answered while this node cannot reach etcd with [`STALE_HEADER`]).
//!
//! A request that presents a token the registry does not know (revoked, mistyped, another
//! registry's) is refused with 401 `invalid_token` even where anonymous requests are served:
//! a client that means to speak for a token must learn that it does not.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rollcall_wire::Scope;

use crate::auth::{Caller, Grant};
use crate::core::Core;
use crate::error::ApiError;

/// What a request's credentials verified to: verified once per request, by the first layer that
/// needs it (the audit layer, for writes), and kept in the request's extensions.
#[derive(Debug, Clone)]
pub(super) enum Verified {
    /// No token.
    Anonymous,
    /// A token the registry issued.
    Token(Arc<Grant>),
    /// A token it did not issue (or revoked), or a malformed header.
    Invalid,
}

impl Verified {
    /// Verifies the credentials in `headers`.
    pub(super) fn of(core: &Core, headers: &HeaderMap) -> Self {
        match rollcall_http::presented_token(headers) {
            Ok(None) => Verified::Anonymous,
            Ok(Some(text)) => core.tokens.verify(&text).map_or(Verified::Invalid, Verified::Token),
            Err(_) => Verified::Invalid,
        }
    }
}

impl FromRequestParts<Arc<Core>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, core: &Arc<Core>) -> Result<Self, Self::Rejection> {
        let verified = match parts.extensions.get::<Verified>() {
            Some(verified) => verified.clone(),
            None => Verified::of(core, &parts.headers),
        };
        let grant = match verified {
            Verified::Anonymous => None,
            Verified::Token(grant) => Some(grant),
            Verified::Invalid => return Err(ApiError::InvalidToken),
        };
        Ok(Caller::new(
            grant,
            core.config.anonymous(),
            rollcall_http::peer_of(&parts.extensions),
        ))
    }
}

/// Lets a request through when its caller may read the registry (the `read` scope).
pub(super) async fn require_read(State(core): State<Arc<Core>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    // Verified once: a handler's own `Caller` (an admin's view of an instance) takes it from here.
    let verified = Verified::of(&core, &parts.headers);
    parts.extensions.insert(verified);
    let allowed = Caller::from_request_parts(&mut parts, &core)
        .await
        .and_then(|caller| caller.may(&Scope::Read).map_err(ApiError::from));
    match allowed {
        Ok(()) => {
            let mut answer = next.run(Request::from_parts(parts, body)).await;
            if !core.nodes.membership().live {
                answer
                    .headers_mut()
                    .insert(STALE_HEADER, HeaderValue::from_static("etcd-unreachable"));
            }
            answer
        }
        Err(refused) => refused.into_response(),
    }
}

/// Marks a read answered while this node cannot reach etcd: the catalog it shows may miss
/// changes made through other nodes since.
pub const STALE_HEADER: HeaderName = HeaderName::from_static("x-rollcall-stale");
