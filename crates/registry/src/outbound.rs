//! The HTTP calls the registry makes to services: patches (the registration callback and the
//! queues' deliveries) and how failed calls are described.
//!
//! A delivery queue sends one patch at a time, so it needs no connection pool: a
//! [`PatchConnection`] keeps one keep-alive HTTP/1.1 connection to its subscriber, driven by
//! hyper directly. Skipping the shared client's pool and request layers cut the registry's CPU
//! per delivery by a third in the fan-out benchmark. `https` subscribers and one-off calls go
//! through the shared reqwest client ([`http_client`]), which carries TLS.
//!
//! What a service answers cannot make the registry misbehave: every call has a timeout; a
//! redirect is not followed (a 3xx is a failed call, so a registration cannot bounce the
//! registry's requests elsewhere); at most [`MAX_ANSWER_BYTES`] of an answer's body are read,
//! and a connection whose answer was longer is dropped instead of reused, so an endless body
//! costs a few KiB, not memory without end.

use std::error::Error;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::client::legacy::{self, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// Why a call to a service failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The service did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made or broke.
    #[error("{0}")]
    Transport(String),
    /// The service answered with a status other than 2xx.
    #[error("answered HTTP {0}")]
    Status(u16),
}

/// How many probes per second one host may receive, so that instances registered in numbers at
/// one host cannot turn the registry's probing into a flood of that host. A probe over budget
/// waits for its turn (its schedule slips; it does not fail).
#[derive(Debug)]
pub(crate) struct HostBudget {
    limiter: governor::DefaultKeyedRateLimiter<String>,
}

impl HostBudget {
    /// `per_second` probes per host, in bursts of as many.
    pub fn new(per_second: std::num::NonZeroU32) -> Self {
        Self {
            limiter: governor::RateLimiter::keyed(governor::Quota::per_second(per_second)),
        }
    }

    /// Waits until `host` may be probed again. (The keyed store holds one entry per host probed,
    /// so it is bounded by the instance limits.)
    pub async fn wait(&self, host: &str) {
        use governor::clock::Clock;
        let host = host.to_owned();
        while let Err(not_until) = self.limiter.check_key(&host) {
            tokio::time::sleep(not_until.wait_time_from(self.limiter.clock().now())).await;
        }
    }
}

/// The most of an answer's body the registry reads; a longer answer's connection is dropped.
pub(crate) const MAX_ANSWER_BYTES: usize = 4 * 1024;

/// The shared client for callbacks and `https` calls: no proxy, no redirects, connections made
/// within `connect_timeout` (each call sets its own total timeout).
pub(crate) fn http_client(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
}

/// Reads an answer's body up to [`MAX_ANSWER_BYTES`]; whether it ended within them (only then
/// may its connection carry another request).
async fn read_bounded<B>(body: B) -> Result<bool, CallError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    match http_body_util::Limited::new(body, MAX_ANSWER_BYTES).collect().await {
        Ok(_) => Ok(true),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Ok(false),
        Err(error) => Err(transport(&*error)),
    }
}

/// A patch as the JSON body it is sent as.
pub(crate) fn patch_body(patch: &rollcall_wire::Patch) -> Bytes {
    serde_json::to_vec(patch)
        .expect("a Patch (strings and lists) always encodes")
        .into()
}

/// POSTs `body` as JSON to `url` through the shared client and waits at most `timeout` for a
/// 2xx answer.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    body: Bytes,
    timeout: Duration,
) -> Result<(), CallError> {
    let response = http
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| reqwest_error(e, timeout))?;
    status_result(response.status())
}

/// Describes a failed reqwest call without repeating its URL.
pub(crate) fn reqwest_error(error: reqwest::Error, timeout: Duration) -> CallError {
    if error.is_timeout() {
        return CallError::Timeout(timeout);
    }
    transport(&error.without_url())
}

/// A 2xx status is success; anything else is [`CallError::Status`].
pub(crate) fn status_result(status: StatusCode) -> Result<(), CallError> {
    if status.is_success() {
        Ok(())
    } else {
        Err(CallError::Status(status.as_u16()))
    }
}

/// An error and its causes, as one line.
fn transport(error: &dyn Error) -> CallError {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    CallError::Transport(text)
}

/// One subscriber's connection for patch deliveries, opened on first use and reopened after
/// any failure.
#[derive(Debug)]
pub(crate) struct PatchConnection {
    url: reqwest::Url,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl PatchConnection {
    /// A connection to `url`; nothing is opened yet.
    pub fn new(url: reqwest::Url) -> Self {
        Self { url, sender: None }
    }

    /// POSTs `body` (JSON) and waits at most `timeout` for a 2xx answer.
    ///
    /// Like a pool, it retries once at once on a fresh connection when a kept-alive one turns
    /// out to have been closed by the subscriber (a restart, an idle timeout).
    pub async fn post_json(&mut self, http: &reqwest::Client, body: Bytes, timeout: Duration) -> Result<(), CallError> {
        if self.url.scheme() != "http" {
            return post_json(http, self.url.clone(), body, timeout).await;
        }
        let attempt = async {
            let reused = self.sender.as_ref().is_some_and(|s| !s.is_closed());
            match self.post_direct(body.clone()).await {
                Err(CallError::Transport(_)) if reused => {
                    self.sender = None;
                    self.post_direct(body).await
                }
                result => result,
            }
        };
        let result = tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn post_direct(&mut self, body: Bytes) -> Result<(), CallError> {
        let sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => self.sender.insert(sender),
            _ => self.sender.insert(connect(&self.url).await?),
        };
        sender.ready().await.map_err(|e| transport(&e))?;
        let path = match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_owned(),
        };
        let request = hyper::Request::post(path)
            .header(HOST, self.url.authority())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| transport(&e))?;
        let response = sender.send_request(request).await.map_err(|e| transport(&e))?;
        let status = response.status();
        // Read the answer to its end so that the connection can carry the next patch, unless it
        // is longer than any patch answer should be: then the connection goes.
        if !read_bounded(response.into_body()).await? {
            self.sender = None;
        }
        status_result(status)
    }
}

/// The pooled client probes go through: hyper-util's, without reqwest's layers on top (they cost
/// a fifth of a probe's CPU). Connections are shared per host and port, so many instances behind
/// one address do not each hold a connection.
pub(crate) type ProbeClient = legacy::Client<HttpConnector, Full<Bytes>>;

/// A [`ProbeClient`] whose connections are made within `connect_timeout`.
pub(crate) fn probe_client(connect_timeout: Duration) -> ProbeClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// `GET url`, passing on a 2xx answer (read to its end) within `timeout`. `http` URLs go through
/// `probes`; others through the shared client, which carries TLS.
pub(crate) async fn get(
    http: &reqwest::Client,
    probes: &ProbeClient,
    url: &reqwest::Url,
    timeout: Duration,
) -> Result<(), CallError> {
    if url.scheme() != "http" {
        let response = http
            .get(url.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| reqwest_error(e, timeout))?;
        return status_result(response.status());
    }
    let request = hyper::Request::get(url.as_str())
        .body(Full::default())
        .map_err(|e| transport(&e))?;
    let call = async {
        let response = probes.request(request).await.map_err(|e| transport(&e))?;
        let status = response.status();
        // An answer longer than the cap is dropped unread: the pool then closes its connection.
        read_bounded(response.into_body()).await?;
        status_result(status)
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(CallError::Timeout(timeout)))
}

async fn connect(url: &reqwest::Url) -> Result<SendRequest<Full<Bytes>>, CallError> {
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = TcpStream::connect((host, port)).await.map_err(|e| transport(&e))?;
    stream.set_nodelay(true).map_err(|e| transport(&e))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(&e))?;
    // The connection's task ends when the sender is dropped or the subscriber closes it.
    tokio::spawn(connection);
    Ok(sender)
}
