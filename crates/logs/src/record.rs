//! A record on its way into the store: validated, its time in Unix nanoseconds, and its stored
//! form (one line of JSON without the id, which the store assigns) already encoded, so that the
//! writer thread only concatenates bytes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollcall_wire::{Level, LogRecord, RecordTime};
use serde::Serialize;

/// The longest service name accepted.
const MAX_SERVICE_LEN: usize = 200;
/// The longest message accepted, in bytes.
pub(crate) const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// A validated record, encoded for storage.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Unix nanoseconds.
    pub time: i64,
    pub level: Level,
    pub service: Arc<str>,
    /// `{"time":...,"service":...,"level":...,"message":...,"fields":{...}}`, no newline.
    pub line: Vec<u8>,
}

/// The stored line's shape: the API's record without its id.
#[derive(Serialize)]
struct StoredLine<'a> {
    time: Rfc3339,
    service: &'a str,
    level: Level,
    message: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    fields: &'a BTreeMap<String, serde_json::Value>,
}

impl Entry {
    /// Validates and encodes `record`; a record without a time happened `now`.
    pub(crate) fn new(record: &LogRecord, now: SystemTime) -> Result<Self, String> {
        let time = match &record.time {
            None => unix_nanos(now)?,
            Some(RecordTime::Epoch(count)) => crate::timestamp::from_epoch(*count)?,
            Some(RecordTime::Seconds(seconds)) => crate::timestamp::from_seconds(*seconds)?,
            Some(RecordTime::Text(text)) => crate::timestamp::parse(text)?,
        };
        Self::from_parts(time, &record.service, record.level, &record.message, &record.fields)
    }

    /// Validates and encodes a record given field by field (the ingest formats' common path).
    pub(crate) fn from_parts(
        time: i64,
        service: &str,
        level: Level,
        message: &str,
        fields: &BTreeMap<String, serde_json::Value>,
    ) -> Result<Self, String> {
        let service = service.trim();
        if service.is_empty() {
            return Err("service is empty".to_owned());
        }
        if service.len() > MAX_SERVICE_LEN {
            return Err(format!("service is longer than {MAX_SERVICE_LEN} bytes"));
        }
        if message.len() > MAX_MESSAGE_LEN {
            return Err(format!("message is longer than {MAX_MESSAGE_LEN} bytes"));
        }
        if time < 0 {
            return Err("time is before 1970".to_owned());
        }
        // Room for the line without fields, so that encoding it allocates once.
        let mut line = Vec::with_capacity(service.len() + message.len() + 96);
        serde_json::to_writer(
            &mut line,
            &StoredLine {
                time: Rfc3339(time),
                service,
                level,
                message,
                fields,
            },
        )
        .map_err(|e| format!("cannot encode the record: {e}"))?;
        Ok(Self {
            time,
            level,
            service: Arc::from(service),
            line,
        })
    }
}

impl Entry {
    /// What [`Entry::stamp`] appends for a record sent with the token named `name`: the
    /// `"sender"` member, encoded once per request.
    pub(crate) fn sender_stamp(name: &str) -> Vec<u8> {
        let mut stamp = b",\"sender\":".to_vec();
        serde_json::to_writer(&mut stamp, name).unwrap_or_default();
        stamp.push(b'}');
        stamp
    }

    /// Records who sent it: the stored line (a JSON object) gains `stamp` as its last member,
    /// after everything the client wrote, so that a client cannot claim a sender of its own.
    pub(crate) fn stamp(&mut self, stamp: &[u8]) {
        if self.line.last() == Some(&b'}') {
            self.line.pop();
            self.line.extend_from_slice(stamp);
        }
    }
}

/// `time` as Unix nanoseconds, if it fits.
pub(crate) fn unix_nanos(time: SystemTime) -> Result<i64, String> {
    let since = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "time is before 1970".to_owned())?;
    i64::try_from(since.as_nanos()).map_err(|_| "time is after 2262".to_owned())
}

/// Nanoseconds since the epoch, serialized as RFC 3339 text in UTC with nanoseconds, without an
/// intermediate `String`.
struct Rfc3339(i64);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let since = Duration::from_nanos(u64::try_from(self.0).unwrap_or(0));
        serializer.collect_str(&humantime::format_rfc3339_nanos(UNIX_EPOCH + since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> LogRecord {
        serde_json::from_str(json).expect("record")
    }

    #[test]
    fn a_record_is_stored_as_the_api_shows_it_without_id() {
        let entry = Entry::new(
            &record(r#"{"service":"A","level":"warn","message":"m","time":"2026-11-25T12:00:00Z","fields":{"n":1}}"#),
            SystemTime::now(),
        )
        .expect("valid");
        assert_eq!(
            String::from_utf8(entry.line).expect("utf-8"),
            r#"{"time":"2026-11-25T12:00:00.000000000Z","service":"A","level":"warn","message":"m","fields":{"n":1}}"#
        );
        assert_eq!(entry.time, 1_795_608_000_000_000_000);
    }

    #[test]
    fn a_stamped_record_names_its_sender_and_a_client_cannot_name_one() {
        let mut entry = Entry::new(
            &record(r#"{"service":"A","message":"m","time":1,"sender":"forged","fields":{"sender":"x"}}"#),
            SystemTime::now(),
        )
        .expect("valid");
        entry.stamp(&Entry::sender_stamp("grades \"prod\""));
        let stored: serde_json::Value = serde_json::from_slice(&entry.line).expect("still JSON");
        assert_eq!(stored["sender"], "grades \"prod\"");
        assert_eq!(
            stored["fields"]["sender"], "x",
            "a field of that name is the client's own"
        );
    }

    #[test]
    fn invalid_records_say_why() {
        let now = SystemTime::now();
        let reason = |json: &str| Entry::new(&record(json), now).expect_err("invalid");
        assert_eq!(reason(r#"{"service":" ","message":"m"}"#), "service is empty");
        assert!(reason(r#"{"service":"A","message":"m","time":"yesterday"}"#).contains("RFC 3339"));
        assert!(reason(r#"{"service":"A","message":"m","time":-5}"#).contains("1970"));
    }
}
