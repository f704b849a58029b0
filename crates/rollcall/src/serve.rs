//! Running one service of the system in this process, the same way for all four: start it with
//! a token that SIGINT and SIGTERM cancel, announce its URL on stdout (the line `rollcall up`,
//! scripts and tests wait for), and wait until it has stopped.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// A started service: what every service library's `start` returns.
pub trait Started: Sized {
    /// The URL it serves at.
    fn url(&self) -> &str;
    /// Waits until it has stopped.
    fn wait(self) -> impl Future<Output = anyhow::Result<()>>;
}

impl Started for rollcall_registry::RunningRegistry {
    fn url(&self) -> &str {
        self.url()
    }

    async fn wait(self) -> anyhow::Result<()> {
        Ok(self.wait().await?)
    }
}

impl Started for rollcall_logs::LogService {
    fn url(&self) -> &str {
        self.url()
    }

    async fn wait(self) -> anyhow::Result<()> {
        self.wait().await;
        Ok(())
    }
}

impl Started for rollcall_client::RunningService {
    fn url(&self) -> &str {
        self.url()
    }

    async fn wait(self) -> anyhow::Result<()> {
        self.wait().await;
        Ok(())
    }
}

/// Starts the service `name` with `start`, announces it, and waits until a signal stopped it.
pub async fn serve<S, E, F>(name: &str, start: impl FnOnce(CancellationToken) -> F) -> anyhow::Result<()>
where
    S: Started,
    E: Into<anyhow::Error>,
    F: Future<Output = Result<S, E>>,
{
    // Sockets the service accepts, calls it makes and files it keeps all take file handles.
    let open_files = rollcall_http::raise_open_files_limit();
    tracing::debug!(open_files, "open-files limit");
    let started = match start(rollcall_client::shutdown_on_signals()).await {
        Ok(started) => started,
        Err(error) => return stopped_while_registering(error.into()),
    };
    announce(&format!("rollcall {name} listening on {}", started.url()));
    started.wait().await?;
    tracing::info!("{name} stopped");
    Ok(())
}

/// A service starts once registered, retrying while the registry is unreachable; SIGINT or
/// SIGTERM during that wait is a requested stop (exit status 0), not a failure to start.
fn stopped_while_registering(error: anyhow::Error) -> anyhow::Result<()> {
    let cancelled = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<rollcall_client::RegistryError>(),
            Some(rollcall_client::RegistryError::Cancelled)
        )
    });
    if cancelled {
        tracing::info!("stopped before the registry answered: the service never registered");
        return Ok(());
    }
    Err(error)
}

/// Writes one line to stdout: the binary's contract with scripts and tests that start it.
#[allow(clippy::print_stdout)]
pub fn announce(line: &str) {
    println!("{line}");
}
