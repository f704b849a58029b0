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

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

use crate::providers::Providers;

/// Targets whose records are never shipped: the HTTP stack the shipper itself uses, and the
/// shipper.
const UNSHIPPED_TARGETS: &[&str] = &["hyper", "reqwest", "h2", "rustls", "tower", "rollcall_client::logs"];

/// The first wait after a failed delivery; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two delivery attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

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

/// The `tracing` layer of a [`LogShipping`]: add it to the process's subscriber.
pub struct LogLayer {
    shared: Arc<Shared>,
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let metadata = event.metadata();
        if *metadata.level() > self.shared.config.level
            || UNSHIPPED_TARGETS.iter().any(|t| metadata.target().starts_with(t))
        {
            return;
        }
        let mut record = Record {
            time: SystemTime::now(),
            level: *metadata.level(),
            target: metadata.target(),
            message: String::new(),
            fields: Vec::new(),
        };
        event.record(&mut record);
        if self.shared.sender.try_send(record).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            self.shared.unreported.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One log record as the application emitted it; formatted only by the shipper.
#[derive(Debug)]
struct Record {
    time: SystemTime,
    level: Level,
    target: &'static str,
    message: String,
    fields: Vec<(&'static str, FieldValue)>,
}

#[derive(Debug)]
enum FieldValue {
    Text(String),
    Signed(i64),
    Unsigned(u64),
    Float(f64),
    Bool(bool),
}

impl FieldValue {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Text(text) => text.clone().into(),
            Self::Signed(n) => (*n).into(),
            Self::Unsigned(n) => (*n).into(),
            Self::Float(n) => (*n).into(),
            Self::Bool(b) => (*b).into(),
        }
    }
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(text) if text.is_empty() || text.contains([' ', '"', '=']) => write!(f, "{text:?}"),
            Self::Text(text) => f.write_str(text),
            Self::Signed(n) => write!(f, "{n}"),
            Self::Unsigned(n) => write!(f, "{n}"),
            Self::Float(n) => write!(f, "{n}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl Visit for Record {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.message);
        } else {
            self.fields.push((field.name(), FieldValue::Text(value.to_owned())));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), FieldValue::Signed(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), FieldValue::Unsigned(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), FieldValue::Float(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), FieldValue::Bool(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name(), FieldValue::Text(format!("{value:?}"))));
        }
    }
}

impl Record {
    /// Roughly what the record weighs in a batch.
    fn size(&self) -> usize {
        64 + self.message.len() + self.fields.len() * 32
    }

    /// The record as the log service's batch API takes it.
    fn to_wire(&self, service: &str) -> rollcall_wire::LogRecord {
        let level = match self.level {
            Level::TRACE => rollcall_wire::Level::Trace,
            Level::DEBUG => rollcall_wire::Level::Debug,
            Level::INFO => rollcall_wire::Level::Info,
            Level::WARN => rollcall_wire::Level::Warn,
            Level::ERROR => rollcall_wire::Level::Error,
        };
        let mut fields: BTreeMap<String, serde_json::Value> = self
            .fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.to_json()))
            .collect();
        fields.insert("target".to_owned(), self.target.into());
        rollcall_wire::LogRecord {
            id: None,
            time: Some(rollcall_wire::RecordTime::Text(
                humantime::format_rfc3339_nanos(self.time).to_string(),
            )),
            service: service.to_owned(),
            level,
            message: self.message.clone(),
            fields,
        }
    }

    /// `message key=value ...`
    fn text(&self) -> String {
        let mut text = self.message.clone();
        for (name, value) in &self.fields {
            let _ = write!(text, " {name}={value}");
        }
        text
    }
}

/// Why a native batch was not delivered.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    /// The log service has no batch API (the Go original): use seed lines.
    #[error("the log service has no batch API")]
    NotSupported,
    #[error("{0}")]
    Failed(String),
}

/// The shipper's side: batches records and delivers them.
struct Delivery {
    shared: Arc<Shared>,
    providers: Providers,
    http: reqwest::Client,
    /// Log services found to take only seed lines.
    seed_only: HashSet<String>,
    /// Set on shutdown: deliver what is left by then.
    stop_by: watch::Receiver<Option<Instant>>,
}

impl Delivery {
    async fn run(mut self, mut receiver: mpsc::Receiver<Record>) {
        let mut batch = Vec::new();
        loop {
            let stopping = self.stop_by.borrow().is_some() || self.stop_by.has_changed().is_err();
            if !self.fill(&mut receiver, &mut batch, stopping).await {
                break;
            }
            if batch.is_empty() {
                if stopping {
                    break;
                }
                continue;
            }
            if !self.deliver(&mut batch).await {
                break;
            }
        }
        // Out of time, or the channel closed: what is left goes to the fallback.
        receiver.close();
        while let Ok(record) = receiver.try_recv() {
            batch.push(record);
        }
        if !batch.is_empty() {
            self.fall_back(&batch, "not delivered before shutdown");
        }
    }

    /// Gathers the next batch: waits for a first record, then for more until the batch is full
    /// or has lingered long enough (when stopping, takes only what is already buffered).
    /// Returns false when the buffer's senders are all gone.
    async fn fill(&mut self, receiver: &mut mpsc::Receiver<Record>, batch: &mut Vec<Record>, stopping: bool) -> bool {
        let config = &self.shared.config;
        let mut bytes: usize = batch.iter().map(Record::size).sum();
        if stopping {
            while batch.len() < config.batch_records && bytes < config.batch_bytes {
                let Ok(record) = receiver.try_recv() else { break };
                bytes += record.size();
                batch.push(record);
            }
            return true;
        }
        if batch.is_empty() {
            tokio::select! {
                record = receiver.recv() => match record {
                    Some(record) => {
                        bytes += record.size();
                        batch.push(record);
                    }
                    None => return false,
                },
                _ = stop_requested(&mut self.stop_by) => return true,
            }
        }
        let linger = tokio::time::sleep(config.linger);
        tokio::pin!(linger);
        while batch.len() < config.batch_records && bytes < config.batch_bytes {
            tokio::select! {
                record = receiver.recv() => match record {
                    Some(record) => {
                        bytes += record.size();
                        batch.push(record);
                    }
                    None => break,
                },
                () = &mut linger => break,
                _ = stop_requested(&mut self.stop_by) => break,
            }
        }
        true
    }

    /// Delivers `batch` (emptying it), retrying with backoff. Returns false when the shutdown
    /// deadline passed first; the batch then still holds what was not delivered.
    async fn deliver(&mut self, batch: &mut Vec<Record>) -> bool {
        let mut delay = FIRST_RETRY_DELAY;
        let mut fell_back = false;
        let mut log_service = self.providers.watch(&self.shared.config.log_service);
        loop {
            let failure = match self.providers.get(&self.shared.config.log_service) {
                Ok(provider) => match self.send(provider.url(), batch).await {
                    Ok(()) => {
                        self.report_drops();
                        return true;
                    }
                    Err(error) => format!("the log service at {provider} failed: {error}"),
                },
                Err(error) => error.to_string(),
            };
            if !fell_back {
                self.fall_back(batch, &failure);
                fell_back = true;
            }
            let jittered = delay.mul_f64(rand::rng().random_range(0.5..=1.0));
            tokio::select! {
                () = tokio::time::sleep(jittered) => {}
                // A log service appeared or moved: try it at once.
                Ok(()) = log_service.changed() => {}
                () = deadline_passed(&mut self.stop_by) => return false,
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    /// Sends the batch to the log service at `base`: as one native batch, or as seed `/log`
    /// lines to a log service without the batch API (the Go original). Delivered records are
    /// removed from `batch`.
    async fn send(&mut self, base: &str, batch: &mut Vec<Record>) -> Result<(), String> {
        if !self.seed_only.contains(base) {
            match self.send_batch(base, batch).await {
                Err(BatchError::NotSupported) => {
                    self.seed_only.insert(base.to_owned());
                }
                other => return other.map_err(|e| e.to_string()),
            }
        }
        self.send_lines(base, batch).await
    }

    /// `POST /v1/records` with the batch as NDJSON. Records the log service refused as invalid
    /// are not sent again: they go to the fallback writer with the reason.
    async fn send_batch(&self, base: &str, batch: &mut Vec<Record>) -> Result<(), BatchError> {
        let mut body = Vec::with_capacity(batch.iter().map(Record::size).sum());
        for record in batch.iter() {
            serde_json::to_writer(&mut body, &record.to_wire(&self.shared.service))
                .map_err(|e| BatchError::Failed(e.to_string()))?;
            body.push(b'\n');
        }
        let response = self
            .http
            .post(format!("{base}/v1/records"))
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(|e| BatchError::Failed(e.without_url().to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Err(BatchError::NotSupported);
        }
        if !status.is_success() {
            return Err(BatchError::Failed(format!("it answered {status}")));
        }
        let result: rollcall_wire::BatchResult = response
            .json()
            .await
            .map_err(|e| BatchError::Failed(format!("its answer is unreadable: {e}")))?;
        for rejection in &result.rejected {
            if let Some(record) = batch.get(rejection.index) {
                let reason = format!("the log service refused a record: {}", rejection.reason);
                self.fall_back(std::slice::from_ref(record), &reason);
            }
        }
        self.shared.shipped.fetch_add(result.accepted as u64, Ordering::Relaxed);
        batch.clear();
        Ok(())
    }

    /// Sends the batch as seed `/log` lines, removing each record once acknowledged.
    async fn send_lines(&self, base: &str, batch: &mut Vec<Record>) -> Result<(), String> {
        let url = format!("{base}/log");
        let mut sent = 0;
        let outcome = async {
            for record in batch.iter() {
                let line = format!("[{}] - {} {}", self.shared.service, record.level, record.text());
                let response = self
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "text/plain")
                    .body(line)
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                if !response.status().is_success() {
                    return Err(format!("it answered {}", response.status()));
                }
                sent += 1;
            }
            Ok(())
        }
        .await;
        batch.drain(..sent);
        self.shared.shipped.fetch_add(sent as u64, Ordering::Relaxed);
        outcome
    }

    /// Once shipping works again, tells the log service how many records were dropped.
    fn report_drops(&self) {
        let dropped = self.shared.unreported.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return;
        }
        let record = Record {
            time: SystemTime::now(),
            level: Level::WARN,
            target: "rollcall_client::logs",
            message: format!(
                "{dropped} log records were dropped: the buffer was full while the log service was unreachable"
            ),
            fields: vec![("dropped", FieldValue::Unsigned(dropped))],
        };
        // The report takes the next free place in the buffer; if there is none, it stays
        // unreported and is counted again with the next drop.
        if let Err(error) = self.shared.sender.try_send(record) {
            drop(error);
            self.shared.unreported.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Writes the records to the fallback writer with the reason they are there.
    fn fall_back(&self, records: &[Record], reason: &str) {
        let mut out = String::new();
        let _ = writeln!(out, "rollcall log shipping: {reason}; {} records follow", records.len());
        for record in records {
            let time = humantime::format_rfc3339_micros(record.time);
            let _ = writeln!(
                out,
                "{time} {:>5} {}: {} service={}",
                record.level,
                record.target,
                record.text(),
                self.shared.service
            );
        }
        let mut writer = lock(&self.shared.fallback);
        // Nowhere left to report a failing fallback writer.
        let _ = writer.write_all(out.as_bytes()).and_then(|()| writer.flush());
    }
}

/// Resolves with the shutdown deadline once shutdown is asked for (at once if it was); a
/// dropped [`Shipper`] counts as shutdown with no time left.
async fn stop_requested(stop_by: &mut watch::Receiver<Option<Instant>>) -> Instant {
    loop {
        if let Some(deadline) = *stop_by.borrow_and_update() {
            return deadline;
        }
        if stop_by.changed().await.is_err() {
            return Instant::now();
        }
    }
}

/// Resolves once shutdown was asked for and its deadline has passed.
async fn deadline_passed(stop_by: &mut watch::Receiver<Option<Instant>>) {
    let deadline = stop_requested(stop_by).await;
    tokio::time::sleep_until(deadline).await;
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
