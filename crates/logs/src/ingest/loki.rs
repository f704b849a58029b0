//! Loki's push API (`POST /loki/api/v1/push`), in JSON and in protobuf (snappy-compressed by
//! the HTTP layer's caller, as Loki's clients send it), both read into one [`Stream`] shape: its
//! labels name the service (`service_name`, `service`, `app` or `job`) and the level (`level`,
//! `detected_level`, `severity` or `lvl`); the other labels and each entry's structured
//! metadata are kept as fields.
//!
//! The protobuf messages are declared here with `prost`'s derive, field for field as Loki's
//! `pkg/push/push.proto` defines the wire format of `PushRequest` (the entries' `parsed` field,
//! which clients never send, is left out: prost skips it). The stream's labels come as text in
//! Prometheus' notation (`{app="Portal", level="error"}`), read by [`labels`].

use std::collections::BTreeMap;

use rollcall_wire::Level;
use serde::Deserialize;
use serde::de;
use serde_json::Value;

use super::{Parsed, UNKNOWN_SERVICE};
use crate::record::Entry;

/// The labels that name the service, in the order they are looked for.
const SERVICE_LABELS: [&str; 4] = ["service_name", "service", "app", "job"];
/// The labels that name the level, in the order they are looked for.
const LEVEL_LABELS: [&str; 4] = ["level", "detected_level", "severity", "lvl"];

/// One stream, however it came: its labels and its entries.
struct Stream<E> {
    labels: BTreeMap<String, String>,
    entries: Vec<E>,
}

/// One entry: its time (checked per entry, so one bad entry refuses only itself), its text and
/// its structured metadata.
struct Line {
    time: Result<i64, String>,
    text: String,
    metadata: BTreeMap<String, String>,
}

/// A push request in JSON.
pub(crate) fn json(body: &[u8]) -> Result<Parsed, String> {
    let request: json::Request =
        serde_json::from_slice(body).map_err(|e| format!("the body is not a Loki push request: {e}"))?;
    Ok(entries(request.streams.into_iter().map(|stream| Stream {
        labels: stream.stream,
        entries: stream.values.into_iter().map(|value| value.0).collect(),
    })))
}

/// A push request in protobuf (already decompressed).
pub(crate) fn protobuf(body: &[u8]) -> Result<Parsed, String> {
    use prost::Message;
    let request =
        proto::PushRequest::decode(body).map_err(|e| format!("the body is not a Loki protobuf push request: {e}"))?;
    let mut streams = Vec::with_capacity(request.streams.len());
    for stream in request.streams {
        let labels = labels(&stream.labels).map_err(|e| format!("stream labels {:?}: {e}", stream.labels))?;
        let entries = stream.entries.into_iter().map(|entry| Line {
            time: match entry.timestamp {
                Some(at) => nanos(at.seconds, at.nanos),
                None => Err("an entry has no timestamp".to_owned()),
            },
            text: entry.line,
            metadata: entry
                .structured_metadata
                .into_iter()
                .map(|p| (p.name, p.value))
                .collect(),
        });
        streams.push(Stream {
            labels,
            entries: entries.collect(),
        });
    }
    Ok(entries(streams.into_iter()))
}

fn nanos(seconds: i64, nanos: i32) -> Result<i64, String> {
    seconds
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(i64::from(nanos)))
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("timestamp {seconds}s {nanos}ns is outside 1970 to 2262"))
}

/// Every entry of every stream, numbered in that order.
fn entries(streams: impl Iterator<Item = Stream<Line>>) -> Parsed {
    let mut parsed = Parsed::default();
    let mut index = 0;
    for stream in streams {
        let label = |names: &[&str]| names.iter().find_map(|n| stream.labels.get(*n)).cloned();
        let service = label(&SERVICE_LABELS).unwrap_or_else(|| UNKNOWN_SERVICE.to_owned());
        let level = label(&LEVEL_LABELS).and_then(|l| l.parse::<Level>().ok());
        let fields: BTreeMap<String, Value> = stream
            .labels
            .iter()
            .filter(|(name, _)| {
                !["service_name", "service"].contains(&name.as_str()) && !LEVEL_LABELS.contains(&name.as_str())
            })
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        for entry in stream.entries {
            let stored = entry.time.and_then(|time| {
                let mut fields = fields.clone();
                fields.extend(entry.metadata.into_iter().map(|(k, v)| (k, Value::String(v))));
                Entry::from_parts(time, &service, level.unwrap_or(Level::Info), &entry.text, &fields)
            });
            parsed.push(index, stored);
            index += 1;
        }
    }
    parsed
}

/// A label set in Prometheus' notation: `{name="value", ...}`, values in double quotes with
/// `\"`, `\\` and `\n` escapes.
pub(crate) fn labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or("a label set is written {name=\"value\", ...}")?;
    let mut labels = BTreeMap::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or("a label has no =")?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{name:?} is not a label name"));
        }
        let mut chars = after
            .trim_start()
            .strip_prefix('"')
            .ok_or("a label's value is in double quotes")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                Some((at, '"')) => break at,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => return Err("a label's value ends in a backslash".to_owned()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("a label's value has no closing quote".to_owned()),
            }
        };
        labels.insert(name.to_owned(), value);
        let after_value = &after.trim_start()[1 + end + 1..];
        rest = after_value.trim_start();
        rest = match rest.strip_prefix(',') {
            Some(more) => more.trim_start(),
            None if rest.is_empty() => rest,
            None => return Err("labels are separated by commas".to_owned()),
        };
    }
    Ok(labels)
}

pub mod proto {
    //! `PushRequest` as Loki's `pkg/push/push.proto` puts it on the wire (public for clients
    //! and benchmarks that send Loki's protobuf: encode, then snappy-compress the block).

    /// The request: its streams.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        /// Its streams.
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
    }

    /// One stream: its labels as text and its entries.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        /// Its labels, `{name="value", ...}`.
        #[prost(string, tag = "1")]
        pub labels: String,
        /// Its entries.
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
    }

    /// One entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        /// When it happened.
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        /// The log line.
        #[prost(string, tag = "2")]
        pub line: String,
        /// Its structured metadata.
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPairAdapter>,
    }

    /// One label of structured metadata.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPairAdapter {
        /// The label's name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Its value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Timestamp {
        /// Whole seconds since the Unix epoch.
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        /// Nanoseconds within the second.
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

mod json {
    //! Loki's push API in JSON: streams of labels, each with `[timestamp, line]` or
    //! `[timestamp, line, structured metadata]` values; timestamps are nanosecond strings (an
    //! integer in another unit is read by its magnitude, see `crate::time`).

    use super::{BTreeMap, Deserialize, Line, de};

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

    /// One entry.
    pub(super) struct Value(pub Line);

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
                serde_json::Value::String(text) => crate::timestamp::parse(text),
                serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                    (Some(count), _) => crate::timestamp::from_epoch(count),
                    (None, Some(seconds)) => crate::timestamp::from_seconds(seconds),
                    _ => Err(format!("{n} is not a timestamp: send {}", crate::timestamp::ACCEPTED)),
                },
                other => Err(format!(
                    "{other} is not a timestamp: send {}",
                    crate::timestamp::ACCEPTED
                )),
            };
            Ok(Self(Line {
                time,
                text: line,
                metadata: metadata.unwrap_or_default(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_set_is_read_with_its_escapes() {
        let read = labels(r#"{level="error",app="Portal", note="say \"hi\"\\n", x=""}"#).expect("labels");
        assert_eq!(read["level"], "error");
        assert_eq!(read["app"], "Portal");
        assert_eq!(read["note"], "say \"hi\"\\n");
        assert_eq!(read["x"], "");
        assert_eq!(labels("{}").expect("none").len(), 0);
        for bad in [
            "level=\"x\"",
            "{level=x}",
            "{level=\"x}",
            "{=\"x\"}",
            "{a=\"1\" b=\"2\"}",
        ] {
            assert!(labels(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loki_streams_give_service_and_level_from_labels() {
        let body = br#"{"streams":[{"stream":{"service":"grading","severity":"error","env":"dev"},"values":[["1795613490937265920","disk full"],["later","bad time"]]}]}"#;
        let parsed = json(body).expect("valid");
        assert_eq!(parsed.entries.len(), 1);
        assert_eq!(parsed.rejected[0].index, 1);
        let entry = &parsed.entries[0];
        assert_eq!((&*entry.service, entry.level), ("grading", Level::Error));
        let line = String::from_utf8(entry.line.clone()).expect("utf-8");
        assert!(line.contains(r#""fields":{"env":"dev"}"#), "{line}");
    }

    #[test]
    fn a_loki_timestamp_in_seconds_is_not_read_as_1970() {
        let body = br#"{"streams":[{"stream":{"app":"A"},"values":[["1796328000","seconds"],[1796328000000,"ms"]]}]}"#;
        let parsed = json(body).expect("valid");
        assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
        assert!(parsed.entries.iter().all(|e| e.time == 1_796_328_000_000_000_000));
    }
}
