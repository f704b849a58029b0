//! Making connections under the address policy: every name is resolved, every address it
//! resolves to is judged by [`AddressPolicy`], and only allowed ones are connected to. This
//! happens at every connect (a pooled client calls [`Connector`] for each new connection), so a
//! name that resolved to an allowed address at registration and to a forbidden one later is
//! refused then, without a connection being attempted.
//!
//! Resolution goes through [`Resolve`]: the system's resolver, or in tests one that answers
//! what the test needs (a name that changes its answer), since a test cannot run its own DNS
//! server for the system's resolver here.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::CallError;
use super::policy::{AddressPolicy, Refusal};

/// Resolves a host name to socket addresses.
pub(crate) trait Resolve: fmt::Debug + Send + Sync {
    /// The addresses `host` has, each with `port`.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// The system's resolver (`getaddrinfo`, on tokio's blocking pool).
#[derive(Debug)]
pub(crate) struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Resolves, judges and connects.
#[derive(Debug)]
pub(crate) struct Dialer {
    policy: AddressPolicy,
    resolver: Arc<dyn Resolve>,
    connect_timeout: Duration,
}

impl Dialer {
    /// A dialer applying `policy`, resolving through `resolver`, connecting within
    /// `connect_timeout`.
    pub fn new(policy: AddressPolicy, resolver: Arc<dyn Resolve>, connect_timeout: Duration) -> Self {
        Self {
            policy,
            resolver,
            connect_timeout,
        }
    }

    /// The addresses of `host` (a name or an IP literal, bracketed or not) that a call made
    /// for a registration from `registrant` may connect to, resolved now; refused when there is
    /// none, with the reason the first address was refused.
    pub async fn addresses(
        &self,
        registrant: Option<IpAddr>,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, CallError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let resolved = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::time::timeout(self.connect_timeout, self.resolver.resolve(host, port)).await {
                Ok(Ok(addresses)) if !addresses.is_empty() => addresses,
                Ok(_) | Err(_) => return Err(CallError::Unresolved),
            },
        };
        let mut refusal = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|address| match self.policy.check(registrant, *address) {
                Ok(()) => true,
                Err(why) => {
                    refusal.get_or_insert(why);
                    false
                }
            })
            .collect();
        match refusal {
            Some(why) if allowed.is_empty() => Err(CallError::Refused(why)),
            _ => Ok(allowed),
        }
    }

    /// A TCP connection to `host:port` for a registration from `registrant`: to the first
    /// allowed address that accepts, within the connect timeout.
    pub async fn dial(&self, registrant: Option<IpAddr>, host: &str, port: u16) -> Result<TcpStream, CallError> {
        let addresses = self.addresses(registrant, host, port).await?;
        let attempts = async {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for address in addresses {
                match TcpStream::connect(address).await {
                    Ok(stream) => return Ok(stream),
                    Err(error) => last = error,
                }
            }
            Err(last)
        };
        let stream = match tokio::time::timeout(self.connect_timeout, attempts).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(CallError::transport(&error)),
            Err(_) => return Err(CallError::Timeout(self.connect_timeout)),
        };
        let (local, peer) = (stream.local_addr(), stream.peer_addr());
        if let (Ok(local), Ok(peer)) = (local, peer)
            && self.policy.is_self(local, peer)
        {
            return Err(CallError::Refused(Refusal::OwnSocket(peer)));
        }
        stream.set_nodelay(true).map_err(|e| CallError::transport(&e))?;
        Ok(stream)
    }
}

/// The connector of a pooled client serving one registrant: each new connection is dialled
/// under the policy.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    dialer: Arc<Dialer>,
    registrant: Option<IpAddr>,
}

impl Connector {
    /// Connections for calls made on behalf of a registration from `registrant`.
    pub fn new(dialer: Arc<Dialer>, registrant: Option<IpAddr>) -> Self {
        Self { dialer, registrant }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, CallError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (dialer, registrant) = (Arc::clone(&self.dialer), self.registrant);
        Box::pin(async move {
            let host = uri.host().ok_or(CallError::Unresolved)?;
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            dialer.dial(registrant, host, port).await.map(TokioIo::new)
        })
    }
}
