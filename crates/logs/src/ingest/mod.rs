//! The ingest formats, each turned into stored entries with a reason for every record refused:
//! the seed's one text line, rollcall's native batch (JSON array or NDJSON) here; OTLP/HTTP
//! (`otlp`) and Loki's push API (`loki`), each in JSON and in protobuf. Parsing is pure: no I/O
//! here (bodies arrive decompressed and bounded).

pub(crate) mod loki;
pub(crate) mod otlp;

use std::collections::BTreeMap;
use std::time::SystemTime;

use rollcall_wire::{Level, LogRecord, Rejection};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::value::RawValue;

use crate::record::{Entry, unix_nanos};

/// Parsed records: those to store, and those refused with their place in the request.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub entries: Vec<Entry>,
    pub rejected: Vec<Rejection>,
}

impl Parsed {
    fn push(&mut self, index: usize, entry: Result<Entry, String>) {
        match entry {
            Ok(entry) => self.entries.push(entry),
            Err(reason) => self.rejected.push(Rejection { index, reason }),
        }
    }
}

/// The service named by lines without the Go client's `[Name] - ` prefix.
const UNKNOWN_SERVICE: &str = "unknown";

/// A seed `POST /log` body: one line, `[Service] - message` as the Go client writes it (or
/// `[Service] - LEVEL message` as rollcall-client's seed fallback does).
pub(crate) fn seed_line(body: &str, now: SystemTime) -> Result<Entry, String> {
    let line = body.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return Err("the body is empty: send one log line as text".to_owned());
    }
    let (service, rest) = line
        .strip_prefix('[')
        .and_then(|l| l.split_once("] - "))
        .unwrap_or((UNKNOWN_SERVICE, line));
    let (level, message) = match rest.split_once(' ') {
        Some((word, message)) if word.chars().all(|c| c.is_ascii_uppercase()) => match word.parse::<Level>() {
            Ok(level) => (level, message),
            Err(_) => (Level::Info, rest),
        },
        _ => (Level::Info, rest),
    };
    Entry::from_parts(unix_nanos(now)?, service, level, message, &BTreeMap::new())
}

/// A native batch: a JSON array of records, or NDJSON (one record per line).
pub(crate) fn native(body: &[u8], ndjson: bool, now: SystemTime) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let record = |raw: &[u8]| -> Result<Entry, String> {
        let record: LogRecord = serde_json::from_slice(raw).map_err(|e| format!("not a log record: {e}"))?;
        Entry::new(&record, now)
    };
    if ndjson {
        let lines = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
        for (index, line) in lines.enumerate() {
            parsed.push(index, record(line));
        }
    } else {
        let items: Vec<&RawValue> =
            serde_json::from_slice(body).map_err(|e| format!("the body is not a JSON array of records: {e}"))?;
        for (index, item) in items.iter().enumerate() {
            parsed.push(index, record(item.get().as_bytes()));
        }
    }
    Ok(parsed)
}

/// An integer written as a JSON number or a string (as OTLP JSON allows for 64-bit values).
struct Lenient(i128);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Number {
            Text(String),
            Signed(i64),
            Unsigned(u64),
        }
        Ok(match Number::deserialize(deserializer)? {
            Number::Text(text) => Lenient(text.parse::<i128>().map_err(de::Error::custom)?),
            Number::Signed(n) => Lenient(i128::from(n)),
            Number::Unsigned(n) => Lenient(i128::from(n)),
        })
    }
}

fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Option::<Lenient>::deserialize(deserializer)?
        .map(|Lenient(n)| u64::try_from(n).map_err(de::Error::custom))
        .transpose()
}

fn lenient_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Option::<Lenient>::deserialize(deserializer)?
        .map(|Lenient(n)| i64::try_from(n).map_err(de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(entry: &Entry) -> String {
        String::from_utf8(entry.line.clone()).expect("utf-8")
    }

    #[test]
    fn a_go_seed_line_names_its_service() {
        let entry = seed_line("[GradingService] - Student with ID 99 not found\n", SystemTime::now()).expect("valid");
        assert_eq!(&*entry.service, "GradingService");
        assert_eq!(entry.level, Level::Info);
        assert!(text(&entry).contains(r#""message":"Student with ID 99 not found""#));
        let ours = seed_line("[Portal] - WARN slow grading service", SystemTime::now()).expect("valid");
        assert_eq!(ours.level, Level::Warn);
        assert!(text(&ours).contains(r#""message":"slow grading service""#));
        let bare = seed_line("no prefix", SystemTime::now()).expect("valid");
        assert_eq!(&*bare.service, "unknown");
        assert!(seed_line("\n", SystemTime::now()).is_err());
    }

    #[test]
    fn a_native_batch_keeps_the_good_records_and_says_why_the_others_failed() {
        let body = br#"[{"service":"A","message":"one"},{"message":"no service"},{"service":"A","message":"two","level":"loud"}]"#;
        let parsed = native(body, false, SystemTime::now()).expect("an array");
        assert_eq!(parsed.entries.len(), 1);
        assert_eq!(parsed.rejected.iter().map(|r| r.index).collect::<Vec<_>>(), [1, 2]);
        assert!(
            parsed.rejected[0].reason.contains("service"),
            "{}",
            parsed.rejected[0].reason
        );
        let ndjson = b"{\"service\":\"A\",\"message\":\"one\"}\n\n{\"service\":\"B\",\"message\":\"two\"}\n";
        assert_eq!(native(ndjson, true, SystemTime::now()).expect("lines").entries.len(), 2);
        assert!(native(b"{not json", false, SystemTime::now()).is_err());
    }
}
