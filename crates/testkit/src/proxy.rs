//! A TCP proxy a test can cut: [`TcpProxy`] forwards every connection made to it to one target
//! until [`TcpProxy::sever`] drops every connection at once and refuses new ones (they are
//! accepted and closed), as a network partition would look to the side that dialled;
//! [`TcpProxy::heal`] lets connections through again.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on `127.0.0.1:0`, stopped when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    severed: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (severed, watching) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *watching.borrow() {
                    continue;
                }
                tokio::spawn(forward(inbound, target, watching.clone()));
            }
        });
        Self { addr, severed, task }
    }

    /// Where to connect instead of the target, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every open connection and refuses new ones, until [`Self::heal`].
    pub fn sever(&self) {
        self.severed.send_replace(true);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.severed.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.sever();
        self.task.abort();
    }
}

/// Copies both ways between `inbound` and a new connection to `target` until either side
/// closes or the proxy is severed.
async fn forward(mut inbound: TcpStream, target: SocketAddr, mut severed: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = severed.wait_for(|severed| *severed) => {}
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_severed_proxy_drops_its_connections_and_a_healed_one_forwards_again() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let proxy = TcpProxy::start(target).await;
        let round_trip = || async {
            let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
            stream.write_all(b"ping").await.ok()?;
            let mut answer = [0; 4];
            stream.read_exact(&mut answer).await.ok()?;
            Some((answer, stream))
        };
        let (answer, mut open) = round_trip().await.expect("forwarded");
        assert_eq!(&answer, b"ping");

        proxy.sever();
        let mut rest = Vec::new();
        let read = open.read_to_end(&mut rest).await;
        assert!(read.is_err() || rest.is_empty(), "the open connection was dropped");
        assert!(round_trip().await.is_none(), "a new connection is closed at once");

        proxy.heal();
        let (answer, _) = round_trip().await.expect("forwarded again");
        assert_eq!(&answer, b"ping");
    }
}
