//! The log service's metrics, exposed at `GET /metrics` in the OpenMetrics text format.
//!
//! Records are counted by ingest format; every counter is created once, so counting on the
//! ingest path is one atomic add.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label set of one `(name, value)` pair.
type Label = Vec<(&'static str, &'static str)>;

/// The ingest formats, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Seed,
    Native,
    Otlp,
    Loki,
}

impl Format {
    const ALL: [Self; 4] = [Self::Seed, Self::Native, Self::Otlp, Self::Loki];

    fn label(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::Native => "native",
            Self::Otlp => "otlp",
            Self::Loki => "loki",
        }
    }
}

/// Every metric the log service keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Request durations by route, and what every service shows (`rollcall_http::observe`).
    pub http: rollcall_http::observe::HttpMetrics,
    /// Records accepted, indexed by `Format as usize`.
    accepted: [Counter; 4],
    /// Records rejected, indexed by `Format as usize`.
    rejected: [Counter; 4],
    /// Records durably stored.
    pub records_stored: Counter,
    /// Bytes of stored record lines.
    pub bytes_stored: Counter,
    /// Seconds one block write and fsync took.
    pub fsync_seconds: Histogram,
    /// Segment files.
    pub segments: Gauge,
    /// Bytes of all segment files.
    pub disk_bytes: Gauge,
    /// Segments deleted by retention.
    pub segments_deleted: Counter,
    /// Torn blocks cut off at start-up.
    pub torn_blocks: Counter,
    /// Damaged ranges skipped at start-up, and blocks that failed their checksum when read.
    pub damaged_blocks: Counter,
    /// Open tails.
    pub tails: Gauge,
    /// Records a tail skipped because its client was too slow.
    pub tail_dropped: Counter,
    /// Ingest requests answered 429 because the store was behind.
    pub busy: Counter,
    /// Bytes of records accepted but not yet committed.
    pub queued_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::with_prefix("rollcall");
        let http = rollcall_http::observe::register(&mut root, "logs", env!("CARGO_PKG_VERSION"));
        let registry = root.sub_registry_with_prefix("logs");
        let accepted = Family::<Label, Counter>::default();
        registry.register(
            "records_accepted",
            "Records accepted, by ingest format",
            accepted.clone(),
        );
        let rejected = Family::<Label, Counter>::default();
        registry.register(
            "records_rejected",
            "Records rejected, by ingest format",
            rejected.clone(),
        );
        let records_stored = Counter::default();
        registry.register("records_stored", "Records durably stored", records_stored.clone());
        let bytes_stored = Counter::default();
        registry.register("stored_bytes", "Bytes of records durably stored", bytes_stored.clone());
        // 0.1 ms to about 1.6 s.
        let fsync_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register(
            "fsync_seconds",
            "Time one block write and fsync took",
            fsync_seconds.clone(),
        );
        let segments = Gauge::default();
        registry.register("segments", "Segment files", segments.clone());
        let disk_bytes = Gauge::default();
        registry.register("disk_bytes", "Bytes of all segment files", disk_bytes.clone());
        let segments_deleted = Counter::default();
        registry.register(
            "segments_deleted",
            "Segments deleted by retention",
            segments_deleted.clone(),
        );
        let torn_blocks = Counter::default();
        registry.register("torn_blocks", "Torn blocks cut off at start-up", torn_blocks.clone());
        let damaged_blocks = Counter::default();
        registry.register(
            "damaged_blocks",
            "Damaged ranges skipped at start-up and blocks that failed their checksum when read (their records are never served)",
            damaged_blocks.clone(),
        );
        let tails = Gauge::default();
        registry.register("tails", "Open tails", tails.clone());
        let tail_dropped = Counter::default();
        registry.register(
            "tail_dropped_records",
            "Records tails skipped because their client was too slow",
            tail_dropped.clone(),
        );
        let busy = Counter::default();
        registry.register("ingest_busy", "Ingest requests answered 429", busy.clone());
        // Every format's series exists from the start, and counting takes no lookup.
        let by_format = |family: &Family<Label, Counter>| {
            Format::ALL.map(|f| family.get_or_create(&vec![("format", f.label())]).clone())
        };
        let (accepted, rejected) = (by_format(&accepted), by_format(&rejected));
        let queued_bytes = Gauge::default();
        registry.register(
            "queued_bytes",
            "Bytes of records waiting to be committed",
            queued_bytes.clone(),
        );
        Self {
            registry: root,
            http,
            accepted,
            rejected,
            records_stored,
            bytes_stored,
            fsync_seconds,
            segments,
            disk_bytes,
            segments_deleted,
            torn_blocks,
            damaged_blocks,
            tails,
            tail_dropped,
            busy,
            queued_bytes,
        }
    }
}

impl Metrics {
    /// Counts the outcome of one ingest request.
    pub(crate) fn ingested(&self, format: Format, accepted: usize, rejected: usize) {
        self.accepted[format as usize].inc_by(accepted as u64);
        self.rejected[format as usize].inc_by(rejected as u64);
    }

    /// The exposition text.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
