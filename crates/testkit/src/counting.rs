//! A listener that counts the connections made to it: the proof, in the address policy's
//! tests, that a refused call was never even attempted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use axum::serve::ListenerExt;
use tokio_util::sync::CancellationToken;

/// An HTTP server on `127.0.0.1:0` that answers every request `200 OK` (so a call that reached
/// it would succeed) and counts the connections it accepted. Stops when dropped.
#[derive(Debug)]
pub struct CountingListener {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl CountingListener {
    /// Starts listening.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let stop = CancellationToken::new();
        let app = Router::new().fallback(any(|| async { StatusCode::OK }));
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
                .expect("serve");
        });
        Self {
            address,
            accepted,
            stop,
        }
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
