//! Log shipping: a `tracing` layer that hands every record to a background shipper, which sends
//! them in batches to the log service it finds through the providers.
//!
//! Invariants:
//! - the application thread never waits: the layer formats nothing but the record's fields and
//!   `try_send`s it into a bounded buffer; when the buffer is full the record is dropped and
//!   counted, and the count is shipped as a warning once shipping recovers;
//! - the log service is looked up for every batch, so a log service that starts late or moves
//!   is followed;
//! - a batch that cannot be delivered is written to the fallback writer (stderr by default) once
//!   and kept for retry with exponential backoff; it is sent again from the first undelivered
//!   record, so the log service never gets a record twice from one attempt sequence;
//! - on shutdown the shipper drains the buffer and delivers within a deadline; whatever it could
//!   not deliver by then has already gone, or now goes, to the fallback writer;
//! - records from the HTTP stack and from the shipper itself are never shipped (they would
//!   feed back into the shipper).
//!
//! Records travel as one NDJSON batch to the log service's `POST /v1/records`; a log service
//! without it (404 or 405, as the Go original answers) gets seed `POST /log` lines instead:
//! `[ServiceName] - LEVEL message key=value ...`.

mod delivery;
mod layer;

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Level;

use self::delivery::Delivery;
pub use self::layer::LogLayer;
use self::layer::Record;
use crate::providers::Providers;

/// How records are buffered and batched.
#[derive(Debug, Clone)]
pub struct ShippingConfig {
    /// The name the log service registers under.
    pub log_service: String,
    /// The most verbose level shipped.
    pub level: Level,
    /// Records held while waiting for the shipper; beyond this they are dropped and counted.
    pub buffer: usize,
    /// A batch is sent once it holds this many records...
    pub batch_records: usize,
    /// ...or this many bytes of messages and fields...
    pub batch_bytes: usize,
    /// ...or once its first record has waited this long.
    pub linger: Duration,
}

impl Default for ShippingConfig {
    fn default() -> Self {
        Self {
            log_service: "LogService".to_owned(),
            level: Level::INFO,
            buffer: 8192,
            batch_records: 1000,
            batch_bytes: 1 << 20,
            linger: Duration::from_millis(200),
        }
    }
}

/// Log shipping for one service: make the [`layer`](Self::layer) part of the process's tracing
/// subscriber, and give this to the service runtime
/// ([`ServiceBuilder::ship_logs`](crate::ServiceBuilder::ship_logs)), which runs the shipper.
///
/// Clones share the buffer and the counters.
#[derive(Clone)]
pub struct LogShipping {
    shared: Arc<Shared>,
}

struct Shared {
    service: String,
    config: ShippingConfig,
    sender: mpsc::Sender<Record>,
    /// Taken by the shipper when it starts; records wait in the channel until then.
    receiver: Mutex<Option<mpsc::Receiver<Record>>>,
    /// Every record dropped since the start.
    dropped: AtomicU64,
    /// Dropped records not yet reported to the log service.
    unreported: AtomicU64,
    shipped: AtomicU64,
    fallback: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for LogShipping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogShipping")
            .field("service", &self.shared.service)
            .field("config", &self.shared.config)
            .field("shipped", &self.shipped())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl LogShipping {
    /// Shipping for `service` with the default [`ShippingConfig`], falling back to stderr.
    pub fn new(service: impl Into<String>) -> Self {
        Self::with_config(service, ShippingConfig::default())
    }

    /// Shipping for `service` with `config`, falling back to stderr.
    pub fn with_config(service: impl Into<String>, config: ShippingConfig) -> Self {
        let (sender, receiver) = mpsc::channel(config.buffer.max(1));
        Self {
            shared: Arc::new(Shared {
                service: service.into(),
                config,
                sender,
                receiver: Mutex::new(Some(receiver)),
                dropped: AtomicU64::new(0),
                unreported: AtomicU64::new(0),
                shipped: AtomicU64::new(0),
                fallback: Mutex::new(Box::new(std::io::stderr())),
            }),
        }
    }

    /// Writes records that cannot be delivered to `writer` instead of stderr (for example
    /// `std::io::sink()` when the application already logs to stderr itself).
    #[must_use]
    pub fn fallback_to(self, writer: impl Write + Send + 'static) -> Self {
        *lock(&self.shared.fallback) = Box::new(writer);
        self
    }

    /// The `tracing` layer that feeds this shipping.
    pub fn layer(&self) -> LogLayer {
        LogLayer {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Records dropped because the buffer was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records the log service acknowledged, since the start.
    pub fn shipped(&self) -> u64 {
        self.shared.shipped.load(Ordering::Relaxed)
    }

    /// Takes the records out of this shipping, for a service that keeps them itself (the log
    /// service writes its own into its store; the registry ships its own beside its audit
    /// trail) instead of a shipper sending them. `None` when a shipper or an earlier call took
    /// them already.
    pub fn take_records(&self) -> Option<OwnRecords> {
        let receiver = lock(&self.shared.receiver).take()?;
        Some(OwnRecords {
            receiver,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Starts the shipper. Only the first call starts one; later calls return `None`.
    pub(crate) fn start(&self, providers: Providers, http: reqwest::Client) -> Option<Shipper> {
        let receiver = lock(&self.shared.receiver).take()?;
        let (stop, stop_by) = watch::channel(None);
        let shipper = Delivery {
            shared: Arc::clone(&self.shared),
            providers,
            http,
            seed_only: HashSet::new(),
            stop_by,
        };
        Some(Shipper {
            task: tokio::spawn(shipper.run(receiver)),
            stop,
        })
    }
}

/// The records of a [`LogShipping`] a service keeps itself ([`LogShipping::take_records`]).
pub struct OwnRecords {
    receiver: mpsc::Receiver<Record>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OwnRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnRecords")
            .field("service", &self.shared.service)
            .finish_non_exhaustive()
    }
}

impl OwnRecords {
    /// Waits for the next record, then takes up to `max` (those already waiting), as the
    /// log service's batch API takes them; empty once nothing can send any more.
    pub async fn next_batch(&mut self, max: usize) -> Vec<rollcall_wire::LogRecord> {
        let Some(first) = self.receiver.recv().await else {
            return Vec::new();
        };
        let mut batch = vec![first.to_wire(&self.shared.service)];
        while batch.len() < max {
            match self.receiver.try_recv() {
                Ok(record) => batch.push(record.to_wire(&self.shared.service)),
                Err(_) => break,
            }
        }
        self.shared.shipped.fetch_add(batch.len() as u64, Ordering::Relaxed);
        batch
    }
}

/// A running shipper.
pub(crate) struct Shipper {
    task: JoinHandle<()>,
    stop: watch::Sender<Option<Instant>>,
}

impl Shipper {
    /// Delivers what is buffered, giving up at `deadline`; returns once the shipper has ended.
    pub(crate) async fn finish(self, deadline: Instant) {
        self.stop.send_replace(Some(deadline));
        // The shipper watches the deadline itself; the extra second only covers a send that
        // does not return in time.
        if tokio::time::timeout_at(deadline + Duration::from_secs(1), self.task)
            .await
            .is_err()
        {
            tracing::warn!("log shipper did not stop in time");
        }
    }
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
