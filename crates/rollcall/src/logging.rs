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
