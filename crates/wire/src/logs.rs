//! The log service's records: what the native batch API takes and the query API returns.
//!
//! A record is `{"time", "service", "level", "message", "fields"}`; the log service adds its
//! `id` (a sequence number, increasing in the order records were stored). `time` is RFC 3339 in
//! UTC (`2026-11-25T12:00:00.123456789Z`); on input it may also be integer Unix nanoseconds, or
//! left out for "now".

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How severe a record is, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Finest detail.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Something unexpected that the service handled.
    Warn,
    /// Something failed.
    Error,
    /// The service cannot go on.
    Fatal,
}

impl Level {
    /// Every level, least severe first.
    pub const ALL: [Self; 6] = [
        Self::Trace,
        Self::Debug,
        Self::Info,
        Self::Warn,
        Self::Error,
        Self::Fatal,
    ];

    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Fatal => "fatal",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level name nobody uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLevel(pub String);

impl fmt::Display for UnknownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown level {:?}: expected trace, debug, info, warn, error or fatal",
            self.0
        )
    }
}

impl std::error::Error for UnknownLevel {}

impl FromStr for Level {
    type Err = UnknownLevel;

    /// Case-insensitive, with the spellings shippers use (`WARNING`, `err`, `critical`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "trace" | "trc" => Self::Trace,
            "debug" | "dbg" => Self::Debug,
            "info" | "information" | "informational" | "notice" | "inf" => Self::Info,
            "warn" | "warning" | "wrn" => Self::Warn,
            "error" | "err" | "eror" => Self::Error,
            "fatal" | "critical" | "crit" | "alert" | "emerg" | "emergency" | "panic" => Self::Fatal,
            _ => return Err(UnknownLevel(s.to_owned())),
        })
    }
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Set by the log service: the record's place in its store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// When it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<RecordTime>,
    /// The service that wrote it.
    pub service: String,
    /// Its severity (`info` when left out).
    #[serde(default)]
    pub level: Level,
    /// What happened, in words.
    pub message: String,
    /// Structured details.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, serde_json::Value>,
    /// Set by the log service: the name of the token the record was sent with (a client's
    /// value is ignored); absent for records sent without a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

/// A record's time as written: RFC 3339 text (with any UTC offset), or a count since the Unix
/// epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordTime {
    /// `2026-11-25T12:00:00.123Z`, `2026-11-25T13:00:00.123+01:00`
    Text(String),
    /// An integer count since the Unix epoch, in seconds, milliseconds, microseconds or
    /// nanoseconds: the log service tells the unit by its magnitude (below 10^11 seconds, below
    /// 10^14 milliseconds, below 10^17 microseconds, nanoseconds above).
    Epoch(i64),
    /// Seconds since the Unix epoch with a fraction (`1764795600.25`).
    Seconds(f64),
}

/// The answer to a batch: how many records were stored, and why each other one was not.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BatchResult {
    /// Records durably stored.
    pub accepted: usize,
    /// Records refused, each with its place in the batch and the reason.
    pub rejected: Vec<Rejection>,
}

/// One refused record of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Its place in the batch, from 0.
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// A page of query results, newest first unless asked otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordPage {
    /// The matching records.
    pub records: Vec<LogRecord>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_the_spellings_shippers_use() {
        assert_eq!("WARNING".parse::<Level>(), Ok(Level::Warn));
        assert_eq!("critical".parse::<Level>(), Ok(Level::Fatal));
        assert_eq!("Info".parse::<Level>(), Ok(Level::Info));
        assert!("loud".parse::<Level>().is_err());
        assert!(Level::Error > Level::Warn);
    }

    #[test]
    fn a_minimal_record_decodes_with_defaults() {
        let record: LogRecord =
            serde_json::from_str(r#"{"service":"A","message":"m","time":1700000000000000000}"#).expect("decodes");
        assert_eq!(record.level, Level::Info);
        assert_eq!(record.time, Some(RecordTime::Epoch(1_700_000_000_000_000_000)));
        assert!(record.fields.is_empty());
    }
}
