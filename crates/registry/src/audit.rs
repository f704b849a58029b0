//! The audit trail: every write the registry is asked for (registrations, deregistrations,
//! token operations), who asked (the token's name, or `anonymous`), from where, and what came
//! of it, shipped as records to the log service the catalog holds.
//!
//! A write's answer does not wait for its audit record: [`Audit::record`] queues it without
//! blocking (and logs it at debug level, tracing target `rollcall::audit`); one
//! task ships the queue in batches to a `LogService` of the catalog (`POST /v1/records`,
//! through the outbound policy like every call), presenting a `logs:write` token the registry
//! made for itself at start (kept in memory only). While no log service takes them, records
//! wait, at most [`MAX_WAITING`]; past that the oldest are dropped and counted
//! (`rollcall_audit_dropped_total`). Tokens' texts are never part of a record.
//!
//! The registry's own log records (its `tracing` events, when the binary hands them over:
//! [`Audit::take_own`]) travel the same way, under the same bound.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::HeaderValue;
use bytes::Bytes;
use rollcall_wire::{Level, LogRecord, RecordTime};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::outbound::Client;

/// The most audit records waiting to be shipped.
pub const MAX_WAITING: usize = 10_000;
/// The service name audit records carry.
pub const AUDIT_SERVICE: &str = "registry";
/// The most records in one shipment.
const BATCH: usize = 500;
/// How long one shipment may take.
const SHIP_TIMEOUT: Duration = Duration::from_secs(5);

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When it was answered.
    pub at: SystemTime,
    /// What was asked: `register`, `deregister`, `token.create`, `token.revoke`.
    pub action: &'static str,
    /// Who asked: a token's name or `anonymous`.
    pub by: String,
    /// From where.
    pub peer: IpAddr,
    /// What it was about: a ServiceURL, a token id.
    pub subject: String,
    /// The HTTP status it was answered with.
    pub status: u16,
}

impl AuditRecord {
    fn into_wire(self) -> LogRecord {
        let fields = [
            ("action", self.action.to_owned()),
            ("by", self.by.clone()),
            ("peer", self.peer.to_string()),
            ("subject", self.subject.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v)))
        .chain([("status".to_owned(), self.status.into())])
        .collect();
        let level = if self.status < 400 { Level::Info } else { Level::Warn };
        LogRecord {
            id: None,
            time: Some(RecordTime::Text(humantime::format_rfc3339_nanos(self.at).to_string())),
            service: AUDIT_SERVICE.to_owned(),
            level,
            message: format!("{} {} by {}: {}", self.action, self.subject, self.by, self.status),
            fields,
            sender: None,
        }
    }
}

/// Where the trail goes: the registry's side of the shipping (the core implements it, so that
/// this room does not import the core).
pub(crate) trait Destination: Send + Sync + 'static {
    /// The `/v1/records` URL of a log service the catalog holds, and the client to call it with
    /// (under the outbound policy of its registrant), if the catalog holds one.
    fn log_service(&self) -> Option<(url::Url, Client)>;

    /// Fires when the registry stops.
    fn stopping(&self) -> &tokio_util::sync::CancellationToken;

    /// Counts dropped records.
    fn metrics(&self) -> &Metrics;
}

/// The audit trail's entrance.
#[derive(Debug)]
pub(crate) struct Audit {
    queue: mpsc::Sender<LogRecord>,
    /// Taken once, by the shipping task.
    receiver: std::sync::Mutex<Option<mpsc::Receiver<LogRecord>>>,
}

impl Default for Audit {
    fn default() -> Self {
        let (queue, receiver) = mpsc::channel(MAX_WAITING);
        Self {
            queue,
            receiver: std::sync::Mutex::new(Some(receiver)),
        }
    }
}

impl Audit {
    /// Queues `record` for the log service, never waiting; logs it at debug level
    /// (`RUST_LOG=rollcall::audit=debug` puts the trail on stderr too). Past [`MAX_WAITING`]
    /// records waiting it is dropped and counted, with a warning at every power of two.
    pub fn record(&self, metrics: &Metrics, record: AuditRecord) {
        tracing::debug!(
            target: "rollcall::audit",
            action = record.action,
            by = %record.by,
            peer = %record.peer,
            subject = %record.subject,
            status = record.status,
        );
        if self.queue.try_send(record.into_wire()).is_err() {
            let dropped = metrics.audit_dropped.inc() + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "audit records are being dropped: no log service takes them");
            }
        }
    }

    /// Ships the registry's own log records from `own` with the trail, as a task of `tasks`:
    /// never waiting (a record that finds the queue full is dropped and counted, silently, since
    /// saying so would be one more record).
    pub fn take_own(
        &self,
        mut own: mpsc::Receiver<LogRecord>,
        dropped: prometheus_client::metrics::counter::Counter,
        tasks: &tokio_util::task::TaskTracker,
    ) {
        let queue = self.queue.clone();
        tasks.spawn(async move {
            while let Some(record) = own.recv().await {
                if queue.try_send(record).is_err() {
                    dropped.inc();
                }
            }
        });
    }

    /// Ships queued records to `destination` until it stops, presenting `token`, as a task of
    /// `tasks`.
    pub fn start_shipping(
        &self,
        destination: Arc<dyn Destination>,
        tasks: &tokio_util::task::TaskTracker,
        token: &str,
    ) {
        let Some(receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let Ok(mut authorization) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            return;
        };
        authorization.set_sensitive(true);
        tasks.spawn(ship(destination, receiver, authorization));
    }
}

async fn ship(to: Arc<dyn Destination>, mut receiver: mpsc::Receiver<LogRecord>, authorization: HeaderValue) {
    let mut waiting: VecDeque<LogRecord> = VecDeque::new();
    let mut delays = retry_delays();
    loop {
        if waiting.is_empty() {
            tokio::select! {
                () = to.stopping().cancelled() => return,
                record = receiver.recv() => match record {
                    Some(record) => waiting.push_back(record),
                    None => return,
                },
            }
        }
        while let Ok(record) = receiver.try_recv() {
            if waiting.len() >= MAX_WAITING {
                waiting.pop_front();
                to.metrics().audit_dropped.inc();
            }
            waiting.push_back(record);
        }
        let batch: Vec<LogRecord> = waiting.iter().take(BATCH).cloned().collect();
        if send(&*to, &batch, &authorization).await {
            waiting.drain(..batch.len());
            delays = retry_delays();
            continue;
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(30));
        tokio::select! {
            () = to.stopping().cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Waits between shipments that failed: 200-400 ms doubling to 5-10 s, for as long as it takes.
fn retry_delays() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sends `batch` to a log service of the catalog; true once one took it.
async fn send(to: &dyn Destination, batch: &[LogRecord], authorization: &HeaderValue) -> bool {
    let Some((url, client)) = to.log_service() else {
        return false;
    };
    let mut body = Vec::new();
    for record in batch {
        if serde_json::to_writer(&mut body, record).is_ok() {
            body.push(b'\n');
        }
    }
    match client
        .post_records(&url, Bytes::from(body), authorization, SHIP_TIMEOUT)
        .await
    {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%url, %error, "audit records not shipped yet");
            false
        }
    }
}
