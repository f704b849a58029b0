//! The ingest formats, each turned into stored entries with a reason for every record refused:
//! the seed's one text line, rollcall's native batch (JSON array or NDJSON), OTLP/HTTP JSON and
//! Loki's push JSON. Parsing is pure: no I/O here.

use std::collections::BTreeMap;
use std::time::SystemTime;

use rollcall_wire::{Level, LogRecord, Rejection};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::Value;
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

/// An OTLP/HTTP JSON `ExportLogsServiceRequest`.
pub(crate) fn otlp(body: &[u8], now: SystemTime) -> Result<Parsed, String> {
    let request: otlp::Request =
        serde_json::from_slice(body).map_err(|e| format!("the body is not an OTLP JSON logs request: {e}"))?;
    let mut parsed = Parsed::default();
    let mut index = 0;
    for resource_logs in request.resource_logs {
        let resource: BTreeMap<String, Value> = resource_logs
            .resource
            .map(|r| otlp::attributes(r.attributes))
            .unwrap_or_default();
        let service = resource
            .get("service.name")
            .and_then(Value::as_str)
            .unwrap_or(UNKNOWN_SERVICE)
            .to_owned();
        for scope_logs in resource_logs.scope_logs {
            let scope = scope_logs.scope.and_then(|s| s.name).filter(|n| !n.is_empty());
            for record in scope_logs.log_records {
                parsed.push(index, otlp::entry(record, &service, scope.as_deref(), now));
                index += 1;
            }
        }
    }
    Ok(parsed)
}

/// A Loki push request (JSON).
pub(crate) fn loki(body: &[u8]) -> Result<Parsed, String> {
    let request: loki::Request =
        serde_json::from_slice(body).map_err(|e| format!("the body is not a Loki push request: {e}"))?;
    let mut parsed = Parsed::default();
    let mut index = 0;
    for stream in request.streams {
        let label = |names: &[&str]| names.iter().find_map(|n| stream.stream.get(*n)).cloned();
        let service = label(&["service_name", "service", "app", "job"]).unwrap_or_else(|| UNKNOWN_SERVICE.to_owned());
        let level = label(&["level", "detected_level", "severity", "lvl"]).and_then(|l| l.parse::<Level>().ok());
        let mut labels: BTreeMap<String, Value> = stream
            .stream
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        for name in ["service_name", "service", "level", "detected_level", "severity", "lvl"] {
            labels.remove(name);
        }
        for value in stream.values {
            let entry = value.time.map_err(|e| format!("timestamp: {e}")).and_then(|time| {
                let mut fields = labels.clone();
                fields.extend(value.metadata.into_iter().map(|(k, v)| (k, Value::String(v))));
                Entry::from_parts(time, &service, level.unwrap_or(Level::Info), &value.line, &fields)
            });
            parsed.push(index, entry);
            index += 1;
        }
    }
    Ok(parsed)
}

mod otlp {
    //! The OTLP JSON encoding of logs: lowerCamelCase names, 64-bit integers as strings or
    //! numbers, and `AnyValue` as a one-key object.

    use super::{BTreeMap, Deserialize, Entry, Level, SystemTime, Value, unix_nanos};

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Request {
        #[serde(default)]
        pub resource_logs: Vec<ResourceLogs>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct ResourceLogs {
        pub resource: Option<Resource>,
        #[serde(default)]
        pub scope_logs: Vec<ScopeLogs>,
    }

    #[derive(Deserialize)]
    pub(super) struct Resource {
        #[serde(default)]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct ScopeLogs {
        pub scope: Option<Scope>,
        #[serde(default)]
        pub log_records: Vec<LogRecord>,
    }

    #[derive(Deserialize)]
    pub(super) struct Scope {
        pub name: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct LogRecord {
        #[serde(default, deserialize_with = "super::lenient_u64")]
        time_unix_nano: Option<u64>,
        #[serde(default, deserialize_with = "super::lenient_u64")]
        observed_time_unix_nano: Option<u64>,
        severity_number: Option<i32>,
        severity_text: Option<String>,
        body: Option<AnyValue>,
        #[serde(default)]
        attributes: Vec<KeyValue>,
        #[serde(default)]
        trace_id: String,
        #[serde(default)]
        span_id: String,
    }

    #[derive(Deserialize)]
    pub(super) struct KeyValue {
        key: String,
        value: Option<AnyValue>,
    }

    /// OTLP's one-of value: the field names are the protocol's.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(clippy::struct_field_names)]
    pub(super) struct AnyValue {
        string_value: Option<String>,
        bool_value: Option<bool>,
        #[serde(default, deserialize_with = "super::lenient_i64")]
        int_value: Option<i64>,
        double_value: Option<f64>,
        array_value: Option<ArrayValue>,
        kvlist_value: Option<KeyValueList>,
        bytes_value: Option<String>,
    }

    #[derive(Deserialize)]
    pub(super) struct ArrayValue {
        #[serde(default)]
        values: Vec<AnyValue>,
    }

    #[derive(Deserialize)]
    pub(super) struct KeyValueList {
        #[serde(default)]
        values: Vec<KeyValue>,
    }

    impl AnyValue {
        fn into_json(self) -> Value {
            if let Some(s) = self.string_value {
                Value::String(s)
            } else if let Some(b) = self.bool_value {
                Value::Bool(b)
            } else if let Some(i) = self.int_value {
                Value::from(i)
            } else if let Some(d) = self.double_value {
                Value::from(d)
            } else if let Some(array) = self.array_value {
                Value::Array(array.values.into_iter().map(Self::into_json).collect())
            } else if let Some(list) = self.kvlist_value {
                Value::Object(attributes(list.values).into_iter().collect())
            } else if let Some(bytes) = self.bytes_value {
                Value::String(bytes)
            } else {
                Value::Null
            }
        }
    }

    pub(super) fn attributes(list: Vec<KeyValue>) -> BTreeMap<String, Value> {
        list.into_iter()
            .map(|kv| (kv.key, kv.value.map_or(Value::Null, AnyValue::into_json)))
            .collect()
    }

    /// OTLP's severity numbers: 1-4 trace, 5-8 debug, 9-12 info, 13-16 warn, 17-20 error,
    /// 21-24 fatal; the text decides when the number is missing.
    fn level(number: Option<i32>, text: Option<&str>) -> Level {
        match number {
            Some(1..=4) => Level::Trace,
            Some(5..=8) => Level::Debug,
            Some(13..=16) => Level::Warn,
            Some(17..=20) => Level::Error,
            Some(21..=24) => Level::Fatal,
            Some(9..=12) => Level::Info,
            _ => text.and_then(|t| t.parse().ok()).unwrap_or(Level::Info),
        }
    }

    pub(super) fn entry(
        record: LogRecord,
        service: &str,
        scope: Option<&str>,
        now: SystemTime,
    ) -> Result<Entry, String> {
        let time = match record
            .time_unix_nano
            .filter(|t| *t > 0)
            .or(record.observed_time_unix_nano)
        {
            Some(nanos) => i64::try_from(nanos).map_err(|_| "timeUnixNano is after 2262".to_owned())?,
            None => unix_nanos(now)?,
        };
        let level = level(record.severity_number, record.severity_text.as_deref());
        let message = match record.body.map(AnyValue::into_json) {
            Some(Value::String(text)) => text,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let mut fields = attributes(record.attributes);
        if let Some(scope) = scope {
            fields.insert("otel.scope".into(), Value::String(scope.to_owned()));
        }
        if !record.trace_id.is_empty() {
            fields.insert("trace_id".into(), Value::String(record.trace_id));
        }
        if !record.span_id.is_empty() {
            fields.insert("span_id".into(), Value::String(record.span_id));
        }
        Entry::from_parts(time, service, level, &message, &fields)
    }
}

mod loki {
    //! Loki's push API in JSON: streams of labels, each with `[timestamp, line]` or
    //! `[timestamp, line, structured metadata]` values; timestamps are nanosecond strings.

    use super::{BTreeMap, Deserialize, de};

    #[derive(Deserialize)]
    pub(super) struct Request {
        pub streams: Vec<Stream>,
    }

    #[derive(Deserialize)]
    pub(super) struct Stream {
        #[serde(default)]
        pub stream: BTreeMap<String, String>,
        #[serde(default)]
        pub values: Vec<Value>,
    }

    /// One entry; its timestamp is checked per entry, so one bad entry refuses only itself.
    pub(super) struct Value {
        pub time: Result<i64, String>,
        pub line: String,
        pub metadata: BTreeMap<String, String>,
    }

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let (time, line, metadata): (serde_json::Value, String, Option<BTreeMap<String, String>>) =
                match serde_json::Value::deserialize(deserializer)? {
                    serde_json::Value::Array(mut items) if (2..=3).contains(&items.len()) => {
                        let metadata = if items.len() == 3 {
                            Some(serde_json::from_value(items.pop().unwrap_or_default()).map_err(de::Error::custom)?)
                        } else {
                            None
                        };
                        let line =
                            serde_json::from_value(items.pop().unwrap_or_default()).map_err(de::Error::custom)?;
                        (items.pop().unwrap_or_default(), line, metadata)
                    }
                    _ => {
                        return Err(de::Error::custom(
                            "a value is [timestamp, line] or [timestamp, line, metadata]",
                        ));
                    }
                };
            let time = match &time {
                serde_json::Value::String(text) => text.parse::<i64>().map_err(|e| format!("{text:?}: {e}")),
                serde_json::Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not a nanosecond count")),
                other => Err(format!("{other} is not a nanosecond string")),
            };
            Ok(Self {
                time,
                line,
                metadata: metadata.unwrap_or_default(),
            })
        }
    }
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

    #[test]
    fn otlp_int_values_may_be_strings_or_numbers() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"grading"}}]},"scopeLogs":[{"logRecords":[{"timeUnixNano":"1795613490763000000","severityNumber":17,"body":{"stringValue":"bad"},"attributes":[{"key":"a","value":{"intValue":"7"}},{"key":"b","value":{"intValue":8}}]}]}]}]}"#;
        let parsed = otlp(body, SystemTime::now()).expect("valid");
        assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
        let entry = &parsed.entries[0];
        assert_eq!(
            (&*entry.service, entry.level, entry.time),
            ("grading", Level::Error, 1_795_613_490_763_000_000)
        );
        assert!(text(entry).contains(r#""fields":{"a":7,"b":8}"#), "{}", text(entry));
    }

    #[test]
    fn loki_streams_give_service_and_level_from_labels() {
        let body = br#"{"streams":[{"stream":{"service":"grading","severity":"error","env":"dev"},"values":[["1795613490937265920","disk full"],["later","bad time"]]}]}"#;
        let parsed = loki(body).expect("valid");
        assert_eq!(parsed.entries.len(), 1);
        assert_eq!(parsed.rejected[0].index, 1);
        let entry = &parsed.entries[0];
        assert_eq!((&*entry.service, entry.level), ("grading", Level::Error));
        assert!(text(entry).contains(r#""fields":{"env":"dev"}"#), "{}", text(entry));
    }
}
