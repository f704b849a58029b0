//! Stopping on SIGINT and SIGTERM: the one signal handler of every rollcall process (the
//! binary's servers, `rollcall up`, and any service the runtime runs).

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGINT or SIGTERM. The handlers are installed before this
/// returns, so a signal that arrives afterwards never takes the default "terminate at once".
/// The waiting task ends when `shutdown` is cancelled by anything else. Call it within a tokio
/// runtime.
pub fn cancel_on_signals(shutdown: &CancellationToken) {
    let shutdown = shutdown.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (interrupt, terminate) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot listen for SIGINT and SIGTERM: only the shutdown token stops this process");
                return;
            }
        };
        tokio::spawn(async move {
            let (mut interrupt, mut terminate) = (interrupt, terminate);
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT received: stopping"),
                _ = terminate.recv() => tracing::info!("SIGTERM received: stopping"),
                () = shutdown.cancelled() => return,
            }
            shutdown.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received: stopping"),
            () = shutdown.cancelled() => return,
        }
        shutdown.cancel();
    });
}

/// A new shutdown token, cancelled by SIGINT or SIGTERM (see [`cancel_on_signals`]).
pub fn shutdown_on_signals() -> CancellationToken {
    let shutdown = CancellationToken::new();
    cancel_on_signals(&shutdown);
    shutdown
}
