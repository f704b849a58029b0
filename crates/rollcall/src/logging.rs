//! The process's logging: records to stderr (filtered by `RUST_LOG`, info by default), and for
//! the services that ship them, to the log service too.

use rollcall_client::LogShipping;

/// Shipping for the service `name`. Its records already go to stderr, so shipping's own stderr
/// fallback stays off.
pub fn shipping(name: &str) -> LogShipping {
    LogShipping::new(name).fallback_to(std::io::sink())
}

/// Logs to stderr, and to the log service when `shipping` is given.
pub fn init(shipping: Option<&LogShipping>) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(shipping.map(LogShipping::layer))
        .init();
}

/// The records `shipping` takes, handed over one by one to a receiver a service without the
/// client runtime reads (the registry), until the process ends.
pub fn own_records(shipping: &LogShipping) -> Option<tokio::sync::mpsc::Receiver<rollcall_wire::LogRecord>> {
    let mut own = shipping.take_records()?;
    let (sender, receiver) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let batch = own.next_batch(256).await;
            if batch.is_empty() {
                return;
            }
            for record in batch {
                if sender.send(record).await.is_err() {
                    return;
                }
            }
        }
    });
    Some(receiver)
}
