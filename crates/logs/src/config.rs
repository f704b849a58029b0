//! `rollcall logs` configuration: one clap struct, every flag with a `ROLLCALL_LOGS_*` variable
//! (and the runtime's shared `--listen`, `--advertise`, `--registry`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use rollcall_client::ServiceArgs;

use crate::store::StoreConfig;

/// Where the log service listens unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);

/// Everything `rollcall logs` can be told.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsConfig {
    /// Listen, advertise and registry flags shared by every rollcall service.
    #[command(flatten)]
    pub service: ServiceArgs,

    /// Where segment files live.
    #[arg(long, env = "ROLLCALL_LOGS_DATA_DIR", default_value = "./rollcall-data/logs")]
    pub data_dir: PathBuf,

    /// Size at which a segment is closed and a new one begun.
    #[arg(long, env = "ROLLCALL_LOGS_SEGMENT_SIZE", default_value = "64MiB")]
    pub segment_size: ByteSize,

    /// Total size of all segments beyond which the oldest are deleted.
    #[arg(long, env = "ROLLCALL_LOGS_RETENTION_SIZE", default_value = "1GiB")]
    pub retention_size: ByteSize,

    /// Age beyond which a segment (by its newest record) is deleted.
    #[arg(long, env = "ROLLCALL_LOGS_RETENTION_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub retention_age: Duration,

    /// The longest a commit waits for more requests before its fsync: it waits until it holds
    /// as many as the previous commit did (and at least `--commit-batch`), so a lone client is
    /// never held. Error records never wait.
    #[arg(long, env = "ROLLCALL_LOGS_COMMIT_WINDOW", default_value = "2ms", value_parser = humantime::parse_duration)]
    pub commit_window: Duration,

    /// The fewest requests a commit waits for (within `--commit-window`) before its fsync.
    #[arg(long, env = "ROLLCALL_LOGS_COMMIT_BATCH", default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
    pub commit_batch: u32,

    /// Largest request body accepted (after decompression).
    #[arg(long, env = "ROLLCALL_LOGS_MAX_BODY", default_value = "16MiB")]
    pub max_body: ByteSize,

    /// Bytes of records waiting for the disk beyond which ingest answers 429.
    #[arg(long, env = "ROLLCALL_LOGS_MAX_QUEUED", default_value = "256MiB")]
    pub max_queued: ByteSize,

    /// Tails open at once; more are answered 429.
    #[arg(long, env = "ROLLCALL_LOGS_MAX_TAILS", default_value_t = 64)]
    pub max_tails: usize,

    /// Serve no request without a token, from loopback neither (a machine shared with other
    /// users). Without it, requests without a token are served when the service listens on
    /// loopback and they come from loopback, or from anywhere with --allow-anonymous.
    #[arg(long, env = "ROLLCALL_REQUIRE_TOKENS", conflicts_with = "allow_anonymous")]
    pub require_tokens: bool,
}

impl LogsConfig {
    /// The defaults, with the data in `data_dir`, listening on `listen`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            service: ServiceArgs::new(listen),
            data_dir,
            segment_size: ByteSize::mib(64),
            retention_size: ByteSize::gib(1),
            retention_age: Duration::from_secs(7 * 24 * 3600),
            commit_window: Duration::from_millis(2),
            commit_batch: 1,
            max_body: ByteSize::mib(16),
            max_queued: ByteSize::mib(256),
            max_tails: 64,
            require_tokens: false,
        }
    }

    /// When requests without a token are served.
    pub(crate) fn anonymous(&self) -> rollcall_http::Anonymous {
        if self.require_tokens {
            return rollcall_http::Anonymous::never();
        }
        rollcall_http::Anonymous::new(self.service.listen_or(DEFAULT_LISTEN), self.service.allow_anonymous)
    }

    pub(crate) fn store(&self) -> StoreConfig {
        StoreConfig {
            dir: self.data_dir.clone(),
            segment_bytes: self.segment_size.as_u64(),
            retention_bytes: self.retention_size.as_u64(),
            retention_age: self.retention_age,
            commit_window: self.commit_window,
            commit_batch: usize::try_from(self.commit_batch).unwrap_or(usize::MAX),
            max_queued_bytes: usize::try_from(self.max_queued.as_u64()).unwrap_or(usize::MAX),
        }
    }
}
