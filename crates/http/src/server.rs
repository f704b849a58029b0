//! The accept loop every rollcall server runs: HTTP/1.1 through hyper, with the limits that keep
//! one client from taking the server (or its outbound calls) down.
//!
//! - At most [`ServerLimits::max_connections`] connections are open at once; past it the loop
//!   stops accepting (new connections wait in the kernel's backlog), so inbound sockets can never
//!   use up the file handles that probes, deliveries and data files need. The default is half the
//!   process's open-files limit ([`raise_open_files_limit`] raises it to the hard limit first).
//! - A connection must send a request's whole header within
//!   [`ServerLimits::header_read_timeout`], and the same timeout closes a kept-alive connection
//!   that sends nothing more: an idle or byte-trickling socket is closed, not kept.
//! - Handlers find the peer's address as `axum::extract::ConnectInfo<SocketAddr>`.
//! - [`bind`] asks for a deep accept queue, so a burst of connections is queued, not dropped.
//! - Over TLS (see `crate::tls`) the handshake happens in the connection's own task, bounded
//!   by the header-read timeout, so a slow handshake holds only its own connection.
//! - When the shutdown token fires the loop stops accepting and every open connection is told to
//!   finish the request it is serving and close; `serve` returns once all have.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::tls::Tls;

/// How long a failed `accept` (out of file handles, say) waits before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// Connections the kernel completes and queues for `accept` (the system's `somaxconn` may lower
/// it). With the 128 a plain bind asks for, a burst of a few hundred connections was answered
/// with timeouts here although every one was accepted at once.
const BACKLOG: u32 = 4096;

/// Binds `address` for [`serve`]: address reuse on, and a deep accept queue ([`BACKLOG`]), so
/// that a burst of connections waits to be accepted instead of being dropped.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// The limits one server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once; past it, new ones wait to be accepted.
    pub max_connections: usize,
    /// The longest a connection may take to send a request's header, and may stay idle between
    /// requests.
    pub header_read_timeout: Duration,
}

impl ServerLimits {
    /// Half the process's open-files limit (at least 64) for connections, and 10 s for headers.
    pub fn for_this_process() -> Self {
        let open_files = open_files_limit();
        Self {
            max_connections: usize::try_from(open_files / 2).unwrap_or(usize::MAX).max(64),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self::for_this_process()
    }
}

/// The process's soft limit on open files (1,024 if it cannot be read).
fn open_files_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
        .min(1 << 20)
}

/// Raises the process's soft open-files limit to its hard limit (where the soft one is lower),
/// and returns the soft limit in force. Call it once at start, before serving.
pub fn raise_open_files_limit() -> u64 {
    let resource = rustix::process::Resource::Nofile;
    let limit = rustix::process::getrlimit(resource);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = rustix::process::setrlimit(resource, raised) {
            tracing::warn!(%error, "cannot raise the open-files limit");
        }
    }
    open_files_limit()
}

/// Serves `router` on `listener` within `limits` (over TLS when `tls` is given) until
/// `shutdown` fires, then lets open connections finish their requests and returns once they
/// have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Option<Tls>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    // Open connections: asked to finish gracefully once `closing` fires, waited for at the end.
    let (closing, open) = (CancellationToken::new(), tokio_util::task::TaskTracker::new());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&connections).acquire_owned() => permit.map_err(io::Error::other)?,
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        // Small answers go out at once.
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            request
        });
        let (http, closing) = (http.clone(), closing.clone());
        let Some(tls) = tls.clone() else {
            let connection = http
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            open.spawn(async move {
                if let Err(error) = until_closed(connection, closing).await {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                drop(permit);
            });
            continue;
        };
        open.spawn(async move {
            // The handshake is bounded like a request's header.
            let handshake = tokio::time::timeout(limits.header_read_timeout, tls.acceptor().accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let connection = http
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            if let Err(error) = until_closed(connection, closing).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    closing.cancel();
    open.close();
    open.wait().await;
    Ok(())
}

/// Serves `connection` (upgrades, such as a WebSocket, included) until it ends; once `closing`
/// fires, it finishes the request in flight and ends.
async fn until_closed<I, S, B>(
    connection: http1::UpgradeableConnection<I, S>,
    closing: CancellationToken,
) -> Result<(), hyper::Error>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => return ended,
        () = closing.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    fn start(limits: ServerLimits) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<io::Result<()>>) {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let address = listener.local_addr().expect("address");
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(serve(listener, router, limits, None, shutdown.clone()));
        (address, shutdown, served)
    }

    /// Reads until the server closes the connection; whether it did within `deadline`.
    async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
        let mut buffer = [0u8; 1024];
        tokio::time::timeout(deadline, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn handlers_see_the_peer_address() {
        let (address, shutdown, served) = start(ServerLimits::default());
        let answer = reqwest::get(format!("http://{address}/peer")).await.expect("GET");
        assert_eq!(answer.status(), 200);
        let peer = answer.text().await.expect("body");
        assert!(peer.starts_with("127.0.0.1:"), "{peer}");
        shutdown.cancel();
        served.await.expect("joined").expect("served");
    }

    #[tokio::test]
    async fn a_trickling_or_idle_connection_is_closed_after_the_header_timeout() {
        let limits = ServerLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_millis(300),
        };
        let (address, shutdown, served) = start(limits);
        let started = Instant::now();
        let mut trickling = TcpStream::connect(address).await.expect("connect");
        trickling
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let mut idle = TcpStream::connect(address).await.expect("connect");
        idle.write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("a whole request");
        assert!(closed_within(&mut trickling, Duration::from_secs(5)).await);
        assert!(
            closed_within(&mut idle, Duration::from_secs(5)).await,
            "the kept-alive connection stayed open"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        shutdown.cancel();
        served.await.expect("joined").expect("served");
    }

    #[tokio::test]
    async fn past_the_connection_cap_new_connections_wait_until_one_closes() {
        let limits = ServerLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(30),
        };
        let (address, shutdown, served) = start(limits);
        let first = TcpStream::connect(address).await.expect("connect");
        let _second = TcpStream::connect(address).await.expect("connect");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.get(format!("http://{address}/peer")).send().await }
        });
        // Held in the backlog: two idle sockets take both places.
        let early = tokio::time::timeout(Duration::from_millis(300), async {
            while !waiting.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(early.is_err(), "a third connection was served past the cap of two");
        drop(first);
        let answer = waiting.await.expect("joined").expect("served once a place was free");
        assert_eq!(answer.status(), 200);
        shutdown.cancel();
        served.await.expect("joined").expect("served");
    }
}
