//! Every request the registry makes to a service goes through here: registration callbacks,
//! probes (HTTP, and TCP connections) and patch deliveries. One policy for all of them, so that what a service registers
//! or answers cannot make the registry misbehave toward it or anyone else:
//!
//! - every connection is made under the address policy ([`policy`]), checked at every connect
//!   after DNS resolution ([`dial`]): a registration may only point at its own address;
//! - a redirect is never followed (a 3xx is a failed call, so a registration cannot bounce the
//!   registry's requests elsewhere);
//! - every call has a connect timeout and a total timeout;
//! - at most [`MAX_ANSWER_BYTES`] of an answer's body are read, and a connection whose answer was
//!   longer is dropped instead of reused, so an endless body costs a few KiB;
//! - probes to one host share a budget ([`HostBudget`]), so the registry is no amplifier.
//!
//! Calls go through a pooled [`Client`] per registrant address (its connector knows whose
//! policy to apply), which carries TLS. A delivery queue sends one patch at a time, so it needs
//! no pool: a [`PatchConnection`] keeps one keep-alive HTTP/1.1 connection to its subscriber,
//! driven by hyper directly; skipping the pool's layers cut the registry's CPU per delivery by a
//! third in the fan-out benchmark.

mod dial;
mod policy;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::error::Error;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy;
use hyper_util::rt::{TokioExecutor, TokioIo};
use url::Url;

use dial::{Connector, Dialer};
pub(crate) use dial::{Resolve, SystemResolver};
pub(crate) use policy::{AddressPolicy, Refusal};

/// Why a call to a service failed.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The address policy refused every address the host has; nothing was connected to.
    #[error("refused by the address policy: {0}")]
    Refused(Refusal),
    /// The host name has no address.
    #[error("the host name does not resolve")]
    Unresolved,
}

impl CallError {
    /// What may be said about the failure to anyone: one text for a target that refused, was
    /// filtered, timed out or does not resolve, so that registering and listing cannot be used
    /// to map which addresses answer; a status is the service's own answer. The details go to
    /// the registry's log.
    pub fn public(&self) -> String {
        match self {
            CallError::Status(status) => format!("answered HTTP {status}"),
            CallError::Refused(_) => "refused by the address policy".to_owned(),
            CallError::Timeout(_) | CallError::Transport(_) | CallError::Unresolved => "no answer".to_owned(),
        }
    }

    /// An error and its causes, as one line.
    fn transport(error: &dyn Error) -> Self {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        Self::Transport(text)
    }

    /// What a pooled client's error was: the dialer's own error when it is in the chain.
    fn from_client(error: &legacy::Error) -> Self {
        let mut source: Option<&(dyn Error + 'static)> = Some(error);
        while let Some(cause) = source {
            if let Some(call) = cause.downcast_ref::<CallError>() {
                return call.clone();
            }
            source = cause.source();
        }
        Self::transport(error)
    }
}

/// The probes each host may receive: `per_second`, in bursts of as many, so that instances
/// registered in numbers at one host cannot turn the registry's probing into a flood of that
/// host. A probe over budget waits for its turn (its schedule slips; it does not fail).
///
/// Each probe reserves its turn when it asks (the generic cell rate algorithm, with the turn
/// handed out instead of retried): a thousand probes waiting on one host sleep once each until
/// their own turn, where retrying an "is it my turn?" check woke them all at every turn (a
/// burst of `/v1` registrations at one host, each probed at once, cost 400 µs of CPU per
/// registration that way).
#[derive(Debug)]
pub(crate) struct HostBudget {
    /// Time between two probes of one host.
    period: Duration,
    /// How far ahead of its pace a host may be (the burst).
    tolerance: Duration,
    /// Host -> the theoretical time of its next probe.
    next: Mutex<HashMap<String, tokio::time::Instant>>,
}

/// Past this many hosts, those whose next probe is already due are forgotten.
const SWEEP_HOSTS_AT: usize = 4096;

impl HostBudget {
    /// `per_second` probes per host, in bursts of as many.
    pub fn new(per_second: std::num::NonZeroU32) -> Self {
        let period = Duration::from_secs(1) / per_second.get();
        Self {
            period,
            tolerance: period * (per_second.get() - 1),
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until `host` may be probed: takes the host's next turn and sleeps until it.
    pub async fn wait(&self, host: &str) {
        let now = tokio::time::Instant::now();
        let turn = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            if next.len() >= SWEEP_HOSTS_AT && !next.contains_key(host) {
                next.retain(|_, due| *due > now);
            }
            let due = next.get(host).copied().unwrap_or(now).max(now);
            next.insert(host.to_owned(), due + self.period);
            due.checked_sub(self.tolerance).map_or(now, |turn| turn.max(now))
        };
        if turn > now {
            tokio::time::sleep_until(turn).await;
        }
    }
}

/// The most of an answer's body the registry reads; a longer answer's connection is dropped.
pub(crate) const MAX_ANSWER_BYTES: usize = 4 * 1024;

/// Past this many registrant addresses, the cached clients are dropped and made again as used
/// (a client in use lives on in its users), so the cache is bounded whoever registers.
const MAX_CACHED_CLIENTS: usize = 1024;

/// The outbound side of the registry: the policy, the dialer and a client per registrant.
#[derive(Debug)]
pub(crate) struct Outbound {
    dialer: Arc<Dialer>,
    tls: rustls::ClientConfig,
    clients: Mutex<HashMap<Option<IpAddr>, Client>>,
}

impl Outbound {
    /// Calls under `policy`, resolving names through `resolver`, connecting within
    /// `connect_timeout`, verifying servers' certificates with the authorities in `ca_file`
    /// only, or with the platform's roots.
    pub fn new(
        policy: AddressPolicy,
        resolver: Arc<dyn Resolve>,
        connect_timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, OutboundTlsError> {
        use rustls_platform_verifier::BuilderVerifierExt;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
        let tls = match ca_file {
            Some(path) => builder.with_root_certificates(roots(path)?),
            None => builder.with_platform_verifier()?,
        }
        .with_no_client_auth();
        Ok(Self {
            dialer: Arc::new(Dialer::new(policy, resolver, connect_timeout)),
            tls,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The pooled client for calls made on behalf of a registration from `registrant`.
    pub fn client(&self, registrant: Option<IpAddr>) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if clients.len() >= MAX_CACHED_CLIENTS && !clients.contains_key(&registrant) {
            clients.clear();
        }
        clients
            .entry(registrant)
            .or_insert_with(|| {
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(self.tls.clone())
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(Connector::new(Arc::clone(&self.dialer), registrant));
                Client(
                    legacy::Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(Duration::from_secs(90))
                        .build(connector),
                )
            })
            .clone()
    }

    /// Opens a TCP connection to `url`'s host and port for a registration from `registrant`,
    /// within `timeout`, and closes it at once (a TCP check: nothing is sent).
    pub async fn connect(&self, registrant: Option<IpAddr>, url: &Url, timeout: Duration) -> Result<(), CallError> {
        let host = url.host_str().ok_or(CallError::Unresolved)?;
        let port = url.port_or_known_default().unwrap_or(80);
        tokio::time::timeout(timeout, self.dialer.dial(registrant, host, port))
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)))
            .map(drop)
    }

    /// Whether `url`'s host, resolved now, has an address a registration from `registrant` may
    /// be called at; nothing is connected to.
    pub async fn check(&self, registrant: Option<IpAddr>, url: &Url) -> Result<(), CallError> {
        let host = url.host_str().ok_or(CallError::Unresolved)?;
        let port = url.port_or_known_default().unwrap_or(80);
        self.dialer.addresses(registrant, host, port).await.map(drop)
    }
}

/// Why TLS for calls to services could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OutboundTlsError {
    /// rustls refused the configuration (no usable platform roots, say).
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The `--ca-file` could not be read or holds no certificate.
    #[error("cannot read the authorities in {path}: {reason}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The certificate authorities in the PEM file at `path`.
fn roots(path: &std::path::Path) -> Result<rustls::RootCertStore, OutboundTlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let failed = |reason: String| OutboundTlsError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| failed(e.to_string()))? {
        roots
            .add(cert.map_err(|e| failed(e.to_string()))?)
            .map_err(|e| failed(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(failed("no certificate in it".to_owned()));
    }
    Ok(roots)
}

/// A pooled client whose connections are made for one registrant. Connections are shared per
/// host and port, so many instances behind one address do not each hold a connection.
#[derive(Debug, Clone)]
pub(crate) struct Client(legacy::Client<HttpsConnector<Connector>, Full<Bytes>>);

impl Client {
    /// `GET url`, passing on a 2xx answer within `timeout`.
    pub async fn get(&self, url: &Url, timeout: Duration) -> Result<(), CallError> {
        let request = hyper::Request::get(url.as_str())
            .body(Full::default())
            .map_err(|e| CallError::transport(&e))?;
        self.send(request, timeout).await
    }

    /// POSTs `body` as JSON to `url`, passing on a 2xx answer within `timeout`.
    pub async fn post_json(&self, url: &Url, body: Bytes, timeout: Duration) -> Result<(), CallError> {
        let request = hyper::Request::post(url.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| CallError::transport(&e))?;
        self.send(request, timeout).await
    }

    /// POSTs `body`, log records as NDJSON, to `url` with `authorization`, passing on a 2xx
    /// answer within `timeout`.
    pub async fn post_records(
        &self,
        url: &Url,
        body: Bytes,
        authorization: &hyper::header::HeaderValue,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let request = hyper::Request::post(url.as_str())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .header(hyper::header::AUTHORIZATION, authorization.clone())
            .body(Full::new(body))
            .map_err(|e| CallError::transport(&e))?;
        self.send(request, timeout).await
    }

    async fn send(&self, request: hyper::Request<Full<Bytes>>, timeout: Duration) -> Result<(), CallError> {
        let call = async {
            let response = self.0.request(request).await.map_err(|e| CallError::from_client(&e))?;
            let status = response.status();
            // An answer longer than the cap is dropped unread: the pool then closes its
            // connection.
            read_bounded(response.into_body()).await?;
            status_result(status)
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)))
    }
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
        Err(error) => Err(CallError::transport(&*error)),
    }
}

/// A patch as the JSON body it is sent as.
pub(crate) fn patch_body(patch: &rollcall_wire::Patch) -> Bytes {
    serde_json::to_vec(patch)
        .expect("a Patch (strings and lists) always encodes")
        .into()
}

/// A 2xx status is success; anything else is [`CallError::Status`].
fn status_result(status: StatusCode) -> Result<(), CallError> {
    if status.is_success() {
        Ok(())
    } else {
        Err(CallError::Status(status.as_u16()))
    }
}

/// One subscriber's connection for patch deliveries, opened on first use and reopened after
/// any failure.
#[derive(Debug)]
pub(crate) struct PatchConnection {
    url: Url,
    registrant: Option<IpAddr>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl PatchConnection {
    /// A connection to `url` for a subscriber registered from `registrant`; nothing is opened
    /// yet.
    pub fn new(url: Url, registrant: Option<IpAddr>) -> Self {
        Self {
            url,
            registrant,
            sender: None,
        }
    }

    /// POSTs `body` (JSON) and waits at most `timeout` for a 2xx answer.
    ///
    /// Like a pool, it retries once at once on a fresh connection when a kept-alive one turns
    /// out to have been closed by the subscriber (a restart, an idle timeout).
    pub async fn post_json(&mut self, outbound: &Outbound, body: Bytes, timeout: Duration) -> Result<(), CallError> {
        if self.url.scheme() != "http" {
            let client = outbound.client(self.registrant);
            return client.post_json(&self.url, body, timeout).await;
        }
        let attempt = async {
            let reused = self.sender.as_ref().is_some_and(|s| !s.is_closed());
            match self.post_direct(&outbound.dialer, body.clone()).await {
                Err(CallError::Transport(_)) if reused => {
                    self.sender = None;
                    self.post_direct(&outbound.dialer, body).await
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

    async fn post_direct(&mut self, dialer: &Dialer, body: Bytes) -> Result<(), CallError> {
        let sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => self.sender.insert(sender),
            _ => self.sender.insert(self.connect(dialer).await?),
        };
        sender.ready().await.map_err(|e| CallError::transport(&e))?;
        let path = match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_owned(),
        };
        let request = hyper::Request::post(path)
            .header(HOST, self.url.authority())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| CallError::transport(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| CallError::transport(&e))?;
        let status = response.status();
        // Read the answer to its end so that the connection can carry the next patch, unless it
        // is longer than any patch answer should be: then the connection goes.
        if !read_bounded(response.into_body()).await? {
            self.sender = None;
        }
        status_result(status)
    }

    async fn connect(&self, dialer: &Dialer) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port_or_known_default().unwrap_or(80);
        let stream = dialer.dial(self.registrant, host, port).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CallError::transport(&e))?;
        // The connection's task ends when the sender is dropped or the subscriber closes it.
        tokio::spawn(connection);
        Ok(sender)
    }
}
