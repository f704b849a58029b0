//! rollcall-portal: the teacher portal as a library.
//!
//! Server-rendered pages (askama templates compiled into the binary, one stylesheet) over the
//! grading service, which it finds through rollcall-client's providers and calls round robin:
//! `GET /` redirects to `/students` (the grade book: every student's average, or a dash when
//! there are no grades); `/students/{id}` shows the grades and the "Add a Grade" form, which
//! posts and redirects back (303); a refused grade shows the grading service's reason on the page
//! with what the user typed kept. With no grading service reachable every page answers 503 saying
//! so, and refreshes itself until one is back. The form offers the grade types of the shared
//! configuration document `grading`, followed without a restart. It runs as a rollcall service named `Portal`
//! requiring `LogService` and `GradingService`.

mod pages;

use std::net::SocketAddr;
use std::time::Duration;

use rollcall_client::{LogShipping, RunningService, Service, ServiceArgs, StartError};
use rollcall_wire::GradingRules;
use tokio_util::sync::CancellationToken;

/// The name the portal registers under.
pub const SERVICE_NAME: &str = "Portal";

/// Where the portal listens unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5050);

/// Everything `rollcall portal` can be told.
#[derive(Debug, Clone, clap::Args)]
pub struct PortalConfig {
    /// Listen, advertise and registry flags shared by every rollcall service.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// How long a call to the grading service may take.
    #[arg(long, env = "ROLLCALL_PORTAL_GRADES_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub grades_timeout: Duration,
}

impl PortalConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            service: ServiceArgs::new(listen),
            grades_timeout: Duration::from_secs(5),
        }
    }
}

/// Starts serving and registers as `Portal`; its records ship to the log service through `logs`
/// when given.
pub async fn start(
    config: PortalConfig,
    shutdown: CancellationToken,
    logs: Option<LogShipping>,
) -> Result<RunningService, StartError> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(config.grades_timeout)
        .build()
        .map_err(StartError::HttpClient)?;
    let mut service = Service::builder(SERVICE_NAME)
        .requires(["LogService", "GradingService"])
        .args(&config.service, DEFAULT_LISTEN)
        .handle_signals(false);
    // The form offers the grade types of the shared `grading` document (the seed's until one is
    // in force).
    let configuration = service.configuration(None)?;
    let rules = configuration.value::<GradingRules, _>(GradingRules::DOCUMENT, GradingRules::check);
    let router = pages::router(service.providers(), http, rules);
    service = service.router(router);
    if let Some(logs) = logs {
        service = service.ship_logs(logs);
    }
    service.start(shutdown).await
}
