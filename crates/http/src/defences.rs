//! The defences every rollcall server puts in front of its router, as one tower layer
//! ([`Defences`]), so that a web page a user visits can neither read from nor write to a service
//! on their machine, and a flood of writes cannot take one down.
//!
//! - **Host allow-list** (against DNS rebinding): a request is answered only when its `Host` is
//!   an IP address, `localhost`, or one of the names the service is told to answer for
//!   (`--allowed-hosts`, and a service's own advertised host). A rebinding attack needs a name
//!   of the attacker's, so it is refused with **421** `misdirected_request`.
//! - **No cross-site writes** (against CSRF): a request that is not `GET`, `HEAD` or `OPTIONS`
//!   is refused with **403** `cross_site_request` when the browser says it comes from another
//!   site (`Sec-Fetch-Site: cross-site` or `same-site`), or when its `Origin` is not the server's
//!   own (or `null`). Programs (the Go services, curl, the rollcall client) send neither header
//!   and are not affected.
//! - **Writes under pressure** ([`WriteLimits`]): past so many writes in flight a new one is
//!   answered at once with **503** `overloaded` and `Retry-After: 1` instead of queueing (reads
//!   go on: blocking queries and event streams are long by design and bounded by their own
//!   rules); a write that takes longer than its bound (a body trickled in byte by byte, say) is
//!   answered **408** `request_timeout` and its connection closed.
//! - **Headers on every answer**: `X-Content-Type-Options: nosniff` and
//!   `Referrer-Policy: same-origin` (nothing leaks to other sites; with `no-referrer`, browsers
//!   send `Origin: null` on a page's own form posts); an HTML page also gets a Content Security
//!   Policy (scripts, styles and connections from the page's own origin only, no framing) and
//!   `X-Frame-Options: DENY`.
//!
//! It is a hand-written layer rather than `axum::middleware::from_fn`, which boxes and clones
//! the rest of the stack for every request: this sits on every request of every service.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::answer::ErrorAnswer;

/// The Content Security Policy of every HTML page. Styles may be inline (the dashboard inlines
/// its stylesheet); scripts may not.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

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

    /// Whether a `Host` header's host (port dropped) may be answered.
    fn allows(&self, host_header: &str) -> bool {
        let host = host_of(host_header);
        host.parse::<IpAddr>().is_ok()
            || host.eq_ignore_ascii_case("localhost")
            || self.names.iter().any(|name| name.eq_ignore_ascii_case(host))
    }
}

/// The host of a `Host` header value, without its port or a trailing dot.
fn host_of(value: &str) -> &str {
    let host = if let Some(rest) = value.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default() // an IPv6 literal
    } else {
        value.rsplit_once(':').map_or(value, |(host, _)| host)
    };
    host.trim_end_matches('.')
}

/// Whether a request says its body is JSON (`Content-Type: application/json`, parameters
/// allowed). A JSON write must: a page of another site can send `text/plain` or a form without
/// the browser asking the server first, but not `application/json`.
pub fn says_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether a request says its body is JSON, as an extractor that reads the header in place
/// (taking a `HeaderMap` would copy every header of every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaysJson(pub bool);

impl<S: Sync> axum::extract::FromRequestParts<S> for SaysJson {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(says_json(&parts.headers)))
    }
}

/// Whether a write comes from another site, by what the browser says: `Sec-Fetch-Site`, and the
/// `Origin` against the `Host`.
fn cross_site(headers: &HeaderMap) -> bool {
    let fetched_from_elsewhere = headers
        .get(SEC_FETCH_SITE)
        .is_some_and(|site| matches!(site.as_bytes(), b"cross-site" | b"same-site"));
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

/// How many writes may run at once, and how long each may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    /// Writes in flight at once; past it, new ones are shed (503).
    pub concurrent: usize,
    /// The longest one write may take, its body included (408 past it).
    pub timeout: Duration,
}

impl Default for WriteLimits {
    /// 1,024 writes at once, 30 s each.
    fn default() -> Self {
        Self {
            concurrent: 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The layer: a [`Guard`] and [`WriteLimits`] in front of a router
/// (`router.layer(Defences::new(guard, limits))`).
#[derive(Debug, Clone)]
pub struct Defences {
    guard: Guard,
    writes_in_flight: Arc<Semaphore>,
    write_timeout: Duration,
}

impl Defences {
    /// The defences of `guard` and `writes`.
    pub fn new(guard: Guard, writes: WriteLimits) -> Self {
        Self {
            guard,
            writes_in_flight: Arc::new(Semaphore::new(writes.concurrent)),
            write_timeout: writes.timeout,
        }
    }

    /// The answer that refuses `request` before the router sees it, if any.
    fn refusal(&self, request: &Request) -> Option<Response> {
        let headers = request.headers();
        if let Some(host) = headers.get(header::HOST)
            && !host.to_str().is_ok_and(|host| self.guard.allows(host))
        {
            let host = String::from_utf8_lossy(host.as_bytes());
            return Some(
                ErrorAnswer::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "misdirected_request",
                    format!(
                        "this server does not answer for host {host:?}: use its IP address or localhost, or start it with --allowed-hosts"
                    ),
                )
                .into_response(),
            );
        }
        if is_write(request.method()) && cross_site(headers) {
            return Some(
                ErrorAnswer::new(
                    StatusCode::FORBIDDEN,
                    "cross_site_request",
                    "a page of another site may not write here",
                )
                .into_response(),
            );
        }
        None
    }
}

impl<S> Layer<S> for Defences {
    type Service = Defended<S>;

    fn layer(&self, inner: S) -> Defended<S> {
        Defended {
            inner,
            defences: self.clone(),
        }
    }
}

/// A service behind [`Defences`].
#[derive(Debug, Clone)]
pub struct Defended<S> {
    inner: S,
    defences: Defences,
}

impl<S> Service<Request> for Defended<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let Some(refusal) = self.defences.refusal(&request) {
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        let write = is_write(request.method());
        let permit = if write {
            match Arc::clone(&self.defences.writes_in_flight).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return Box::pin(std::future::ready(Ok(overloaded()))),
            }
        } else {
            None
        };
        // Called at once (the inner service was made ready by `poll_ready`), so nothing of the
        // stack is cloned per request.
        let answered = self.inner.call(request);
        let timeout = self.defences.write_timeout;
        Box::pin(async move {
            let mut response = if write {
                tokio::time::timeout(timeout, answered)
                    .await
                    .unwrap_or_else(|_| Ok(timed_out(timeout)))?
            } else {
                answered.await?
            };
            drop(permit);
            add_headers(response.headers_mut());
            Ok(response)
        })
    }
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn overloaded() -> Response {
    let mut answer = ErrorAnswer::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many writes are in flight: try again in a moment",
    )
    .into_response();
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    answer
}

fn timed_out(timeout: Duration) -> Response {
    let mut answer = ErrorAnswer::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!("the request took longer than {timeout:?}"),
    )
    .into_response();
    answer
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    answer
}

fn add_headers(headers: &mut HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
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
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{ServerLimits, bind, serve};

    /// A server behind `limits` whose `POST /slow` holds until `release`, and `POST /body`
    /// reads its body.
    fn start(limits: WriteLimits, release: Arc<Notify>) -> (SocketAddr, CancellationToken) {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let address = listener.local_addr().expect("address");
        let router = Router::new()
            .route(
                "/slow",
                post(move || {
                    let release = Arc::clone(&release);
                    async move { release.notified().await }
                }),
            )
            .route("/body", post(|body: String| async move { body }))
            .layer(Defences::new(Guard::default(), limits));
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, router, ServerLimits::default(), None, shutdown.clone()));
        (address, shutdown)
    }

    #[tokio::test]
    async fn past_the_limit_a_write_is_shed_at_once_and_reads_go_on() {
        let release = Arc::new(Notify::new());
        let limits = WriteLimits {
            concurrent: 1,
            timeout: Duration::from_secs(30),
        };
        let (address, shutdown) = start(limits, Arc::clone(&release));
        let http = reqwest::Client::new();
        let held = tokio::spawn({
            let http = http.clone();
            async move { http.post(format!("http://{address}/slow")).send().await }
        });
        // Until the first write is in flight, a second may still get its place: poll.
        let shed = loop {
            let answer = http
                .post(format!("http://{address}/body"))
                .body("x")
                .send()
                .await
                .expect("POST");
            if answer.status() == 503 {
                break answer;
            }
        };
        assert_eq!(shed.headers()["retry-after"], "1");
        let error: rollcall_wire::ErrorBody = shed.json().await.expect("a JSON error");
        assert_eq!(error.error, "overloaded");
        release.notify_one();
        assert_eq!(held.await.expect("joined").expect("answered").status(), 200);
        let after = http
            .post(format!("http://{address}/body"))
            .body("x")
            .send()
            .await
            .expect("POST");
        assert_eq!(after.status(), 200, "the place is free again");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_write_that_trickles_its_body_is_cut_off() {
        let limits = WriteLimits {
            concurrent: 8,
            timeout: Duration::from_millis(300),
        };
        let (address, shutdown) = start(limits, Arc::new(Notify::new()));
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(b"POST /body HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nabc")
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("answered and closed within the deadline")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
        shutdown.cancel();
    }

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
