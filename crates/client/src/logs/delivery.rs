//! The shipper's task: gathers records into batches, finds the log service through the
//! providers for every batch, delivers (native NDJSON, or seed lines to a log service without
//! the batch API), retries with backoff, writes what it cannot deliver to the fallback writer,
//! and on shutdown drains the buffer within the deadline.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Level;

use super::layer::{FieldValue, Record};
use super::{Shared, lock};
use crate::backoff::retry_delays;
use crate::providers::Providers;

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
pub(super) struct Delivery {
    pub(super) shared: Arc<Shared>,
    pub(super) providers: Providers,
    pub(super) http: reqwest::Client,
    /// Log services found to take only seed lines.
    pub(super) seed_only: HashSet<String>,
    /// Set on shutdown: deliver what is left by then.
    pub(super) stop_by: watch::Receiver<Option<Instant>>,
}

impl Delivery {
    pub(super) async fn run(mut self, mut receiver: mpsc::Receiver<Record>) {
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
    /// deadline passed first, or shutdown came with no log service known; the batch then still
    /// holds what was not delivered and has not fallen back yet.
    async fn deliver(&mut self, batch: &mut Vec<Record>) -> bool {
        let mut delays = retry_delays();
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
                // Stopping, and no log service is known: there is nobody to wait for (what
                // already fell back is not written twice).
                Err(_) if self.stop_by.borrow().is_some() => {
                    if fell_back {
                        batch.clear();
                    }
                    return false;
                }
                Err(error) => error.to_string(),
            };
            if !fell_back {
                self.fall_back(batch, &failure);
                fell_back = true;
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                // A log service appeared or moved: try it at once.
                Ok(()) = log_service.changed() => {}
                () = deadline_passed(&mut self.stop_by) => {
                    // What already fell back is not written twice.
                    if fell_back {
                        batch.clear();
                    }
                    return false;
                }
            }
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
