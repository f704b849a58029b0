//! Who may write and read the log service: a token's scopes, as the registry (the token
//! authority) says them, or nobody where anonymous requests are served.
//!
//! A presented token is verified by asking the registry `GET /v1/tokens/self` with it; the
//! answer is kept for [`VALID_FOR`] (a refusal for [`REFUSED_FOR`], so that a flood of bad
//! tokens is not a flood of the registry), in a map of at most [`MAX_CACHED`] tokens. A revoked
//! token is therefore refused here within [`VALID_FOR`] of its revocation. When the registry
//! cannot be asked, a request with an unknown token is answered 503 and nothing is cached.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rollcall_client::{ClientArgs, ClientArgsError};
use rollcall_http::Anonymous;
use rollcall_wire::{Scope, TokenView};

use crate::error::ApiError;

/// How long a verified token is trusted without asking the registry again.
pub const VALID_FOR: Duration = Duration::from_secs(30);
/// How long a token the registry refused stays refused without asking again.
pub const REFUSED_FOR: Duration = Duration::from_secs(5);
/// The most tokens remembered.
pub const MAX_CACHED: usize = 10_000;
/// The largest answer read from the registry.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// How long asking the registry may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sender {
    /// Nobody, where that is allowed.
    Anonymous,
    /// The holder of a token: its name, as stamped on the records it sends.
    Token(Arc<str>),
}

impl Sender {
    /// The token's name, if any.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Sender::Anonymous => None,
            Sender::Token(name) => Some(name),
        }
    }
}

/// What the registry said about a token.
#[derive(Debug, Clone)]
enum Verdict {
    Valid { name: Arc<str>, scopes: Arc<[Scope]> },
    Refused,
}

/// The log service's door.
#[derive(Debug)]
pub(crate) struct Access {
    anonymous: Anonymous,
    /// `{registry}/v1/tokens/self`.
    introspect: String,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Verdict, Instant)>>,
}

impl Access {
    /// Requests without a token served by `anonymous`; tokens verified by the registry at
    /// `registry` (its base URL), trusting the authorities `client` names for https.
    pub(crate) fn new(anonymous: Anonymous, registry: &str, client: &ClientArgs) -> Result<Self, ClientArgsError> {
        // Only the authorities: the token asked about is the one presented, not the service's.
        let authorities = ClientArgs {
            ca_file: client.ca_file.clone(),
            ..ClientArgs::default()
        };
        let http = authorities
            .http_client()?
            .no_proxy()
            .timeout(ASK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientArgsError::CaFile {
                path: client.ca_file.clone().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            anonymous,
            introspect: format!("{registry}/v1/tokens/self"),
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Who sent a request from `peer` with `headers`, if it may do what `wanted` allows.
    pub(crate) async fn check(&self, headers: &HeaderMap, peer: IpAddr, wanted: &Scope) -> Result<Sender, ApiError> {
        let token = rollcall_http::presented_token(headers).map_err(|_| ApiError::InvalidToken)?;
        let Some(token) = token else {
            return if self.anonymous.permits(peer) {
                Ok(Sender::Anonymous)
            } else {
                Err(ApiError::TokenRequired(wanted.clone()))
            };
        };
        match self.verdict(&token).await? {
            Verdict::Refused => Err(ApiError::InvalidToken),
            Verdict::Valid { name, scopes } if scopes.iter().any(|s| s.allows(wanted)) => Ok(Sender::Token(name)),
            Verdict::Valid { name, .. } => Err(ApiError::Forbidden {
                name: name.to_string(),
                wanted: wanted.clone(),
            }),
        }
    }

    async fn verdict(&self, token: &str) -> Result<Verdict, ApiError> {
        let now = Instant::now();
        if let Some((verdict, until)) = self.lock().get(token)
            && *until > now
        {
            return Ok(verdict.clone());
        }
        let verdict = self.ask(token).await?;
        let until = now
            + match verdict {
                Verdict::Valid { .. } => VALID_FOR,
                Verdict::Refused => REFUSED_FOR,
            };
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), (verdict.clone(), until));
        Ok(verdict)
    }

    /// Asks the registry what `token` may do.
    async fn ask(&self, token: &str) -> Result<Verdict, ApiError> {
        let unavailable = |cause: &dyn std::fmt::Display| {
            tracing::warn!(%cause, registry = %self.introspect, "cannot verify a token with the registry");
            ApiError::AuthUnavailable
        };
        let mut response = self
            .http
            .get(&self.introspect)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unavailable(&e.without_url()))?;
        match response.status().as_u16() {
            200 => {}
            401 => return Ok(Verdict::Refused),
            other => return Err(unavailable(&format!("it answered HTTP {other}"))),
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(&e.without_url()))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(unavailable(&"its answer is too long"));
            }
            body.extend_from_slice(&chunk);
        }
        let view: TokenView = serde_json::from_slice(&body).map_err(|e| unavailable(&e))?;
        Ok(Verdict::Valid {
            name: view.name.into(),
            scopes: view.scopes.into(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Verdict, Instant)>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
