//! Browser-facing defences every rollcall server applies, so that a web page a user happens to
//! visit can neither read from nor write to a service on their machine.
//!
//! - **Host allow-list** (against DNS rebinding): a request is answered only when its `Host` is
//!   an IP address, `localhost`, or one of the names the service is told to answer for
//!   (`--allowed-hosts`, and a service's own advertised host). A rebinding attack needs a name
//!   of the attacker's, so it is refused with **421** `misdirected_request`.
//! - **No cross-site writes** (against CSRF): a request that is not `GET`, `HEAD` or `OPTIONS`
//!   is refused with **403** `cross_site_request` when the browser says it comes from anywhere
//!   but the server's own pages (`Sec-Fetch-Site` other than `same-origin` or `none`; without
//!   that header, an `Origin` that is not the server's own). Programs (the Go services, curl, the rollcall client) send neither header and are not
//!   affected.
//! - **Headers on every answer**: `X-Content-Type-Options: nosniff` and
//!   `Referrer-Policy: same-origin` (nothing leaks to other sites); an HTML page also gets a Content Security Policy (scripts,
//!   styles and connections from the page's own origin only, no framing) and
//!   `X-Frame-Options: DENY`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::answer::ErrorAnswer;

/// The Content Security Policy of every HTML page. Styles may be inline (the dashboard inlines
/// its stylesheet); scripts may not.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The host names a server answers for besides IP addresses and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    names: Arc<[String]>,
}

impl Guard {
    /// A guard answering for IP addresses, `localhost` and `names` (compared without case).
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            names: names
                .into_iter()
                .map(|name| name.as_ref().trim_end_matches('.').to_ascii_lowercase())
                .filter(|name| !name.is_empty())
                .collect(),
        }
    }

    /// `router` behind the guard's checks and headers.
    pub fn protect<S>(self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.layer(axum::middleware::from_fn_with_state(self, check))
    }

    /// Whether a `Host` header's host (port dropped) may be answered.
    fn allows(&self, host_header: &str) -> bool {
        let host = host_of(host_header);
        host.parse::<IpAddr>().is_ok() || host == "localhost" || self.names.contains(&host)
    }
}

/// The host of a `Host` header value, lower case, without its port or a trailing dot.
fn host_of(value: &str) -> String {
    let host = if let Some(rest) = value.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default() // an IPv6 literal
    } else {
        value.rsplit_once(':').map_or(value, |(host, _)| host)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a request says its body is JSON (`Content-Type: application/json`, parameters
/// allowed). A JSON write must: a page of another site can send `text/plain` or a form without
/// the browser asking the server first, but not `application/json`.
pub fn says_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether a write comes from another site, by what the browser says.
fn cross_site(request: &Request) -> bool {
    let headers = request.headers();
    let fetched_from_elsewhere = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| matches!(site, "cross-site" | "same-site"));
    let foreign_origin = headers.get(header::ORIGIN).is_some_and(|origin| {
        let own = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority);
        match (origin, own) {
            (Some(origin), Some(own)) => !origin.eq_ignore_ascii_case(own),
            _ => true, // "null", or nothing to compare with
        }
    });
    fetched_from_elsewhere || foreign_origin
}

async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if let Some(host) = request.headers().get(header::HOST)
        && !host.to_str().is_ok_and(|host| guard.allows(host))
    {
        let host = String::from_utf8_lossy(host.as_bytes()).into_owned();
        return ErrorAnswer::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            format!(
                "this server does not answer for host {host:?}: use its IP address or localhost, or start it with --allowed-hosts"
            ),
        )
        .into_response();
    }
    let write = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if write && cross_site(&request) {
        return ErrorAnswer::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "a page of another site may not write here",
        )
        .into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not "no-referrer": with it, browsers send `Origin: null` on a page's own form posts.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    let html = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
    if html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_compared_without_port_case_or_trailing_dot() {
        let guard = Guard::new(["Registry.Internal."]);
        for allowed in [
            "127.0.0.1:3000",
            "[::1]:3000",
            "10.1.2.3",
            "localhost:3000",
            "LOCALHOST",
            "registry.internal:3000",
            "registry.internal.",
        ] {
            assert!(guard.allows(allowed), "{allowed}");
        }
        for refused in ["attacker.example:3000", "localhost.attacker.example", "internal", ""] {
            assert!(!guard.allows(refused), "{refused}");
        }
    }
}
