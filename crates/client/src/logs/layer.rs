//! The `tracing` side of log shipping: the layer turns an event into a [`Record`] (its fields,
//! nothing formatted) and hands it to the shipper's bounded buffer without ever waiting; a full
//! buffer drops the record and counts it. A record is formatted only by the shipper, as a native
//! record or a seed line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

use super::Shared;

/// Targets whose records are never shipped: the HTTP stack the shipper itself uses, and the
/// shipper.
const UNSHIPPED_TARGETS: &[&str] = &["hyper", "reqwest", "h2", "rustls", "tower", "rollcall_client::logs"];

/// The `tracing` layer of a [`LogShipping`]: add it to the process's subscriber.
pub struct LogLayer {
    pub(super) shared: Arc<Shared>,
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
pub(super) struct Record {
    pub(super) time: SystemTime,
    pub(super) level: Level,
    pub(super) target: &'static str,
    pub(super) message: String,
    pub(super) fields: Vec<(&'static str, FieldValue)>,
}

#[derive(Debug)]
pub(super) enum FieldValue {
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
    pub(super) fn size(&self) -> usize {
        64 + self.message.len() + self.fields.len() * 32
    }

    /// The record as the log service's batch API takes it.
    pub(super) fn to_wire(&self, service: &str) -> rollcall_wire::LogRecord {
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
            sender: None,
        }
    }

    /// `message key=value ...`
    pub(super) fn text(&self) -> String {
        let mut text = self.message.clone();
        for (name, value) in &self.fields {
            let _ = write!(text, " {name}={value}");
        }
        text
    }
}
