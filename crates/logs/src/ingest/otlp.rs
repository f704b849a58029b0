//! OTLP/HTTP logs (`POST /v1/logs`), in JSON and in protobuf, both read into one [`Record`]
//! shape and stored the same way: the resource's `service.name` names the service, severity
//! gives the level, the body the message, and the record's attributes (with the scope's name,
//! trace and span ids) are kept as fields.
//!
//! JSON follows OTLP's JSON encoding (lowerCamelCase names, 64-bit integers as strings or
//! numbers, `AnyValue` as a one-key object); protobuf is decoded by `prost` into the types the
//! `opentelemetry-proto` crate generates from the upstream definitions.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::SystemTime;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue as ProtoValue, KeyValue as ProtoKeyValue, any_value};
use prost::Message;
use rollcall_wire::Level;
use serde::Deserialize;
use serde_json::Value;

use super::{Parsed, UNKNOWN_SERVICE, lenient_i64, lenient_u64};
use crate::record::{Entry, unix_nanos};

/// One log record, however it came.
struct Record {
    time_unix_nano: u64,
    observed_time_unix_nano: u64,
    severity_number: Option<i32>,
    severity_text: Option<String>,
    body: Value,
    attributes: BTreeMap<String, Value>,
    trace_id: String,
    span_id: String,
}

/// An `ExportLogsServiceRequest` in OTLP's JSON encoding.
pub(crate) fn json(body: &[u8], now: SystemTime) -> Result<Parsed, String> {
    let request: json::Request =
        serde_json::from_slice(body).map_err(|e| format!("the body is not an OTLP JSON logs request: {e}"))?;
    let mut entries = Entries::new(now);
    for resource_logs in request.resource_logs {
        let resource = resource_logs.resource.map(|r| json::attributes(r.attributes));
        let service = service_of(resource.as_ref());
        for scope_logs in resource_logs.scope_logs {
            let scope = scope_logs.scope.and_then(|s| s.name);
            for record in scope_logs.log_records {
                entries.push(record.into_record(), &service, scope.as_deref());
            }
        }
    }
    Ok(entries.parsed)
}

/// An `ExportLogsServiceRequest` in protobuf.
pub(crate) fn protobuf(body: &[u8], now: SystemTime) -> Result<Parsed, String> {
    let request = ExportLogsServiceRequest::decode(body)
        .map_err(|e| format!("the body is not an OTLP protobuf logs request: {e}"))?;
    let mut entries = Entries::new(now);
    for resource_logs in request.resource_logs {
        let resource = resource_logs.resource.map(|r| proto_attributes(r.attributes));
        let service = service_of(resource.as_ref());
        for scope_logs in resource_logs.scope_logs {
            let scope = scope_logs.scope.map(|s| s.name);
            for record in scope_logs.log_records {
                let record = Record {
                    time_unix_nano: record.time_unix_nano,
                    observed_time_unix_nano: record.observed_time_unix_nano,
                    severity_number: Some(record.severity_number).filter(|n| *n != 0),
                    severity_text: Some(record.severity_text).filter(|t| !t.is_empty()),
                    body: record.body.map_or(Value::Null, proto_value),
                    attributes: proto_attributes(record.attributes),
                    trace_id: hex(&record.trace_id),
                    span_id: hex(&record.span_id),
                };
                entries.push(record, &service, scope.as_deref());
            }
        }
    }
    Ok(entries.parsed)
}

/// The protobuf answer: empty when every record was stored, else the partial success.
pub(crate) fn protobuf_answer(rejected: usize, message: Option<String>) -> Vec<u8> {
    let partial_success = message.map(|error_message| ExportLogsPartialSuccess {
        rejected_log_records: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message,
    });
    ExportLogsServiceResponse { partial_success }.encode_to_vec()
}

/// The service a resource names (`service.name`), or `unknown`.
fn service_of(resource: Option<&BTreeMap<String, Value>>) -> String {
    resource
        .and_then(|r| r.get("service.name"))
        .and_then(Value::as_str)
        .unwrap_or(UNKNOWN_SERVICE)
        .to_owned()
}

/// The records of a request as they are read, numbered in order.
struct Entries {
    parsed: Parsed,
    index: usize,
    now: SystemTime,
}

impl Entries {
    fn new(now: SystemTime) -> Self {
        Self {
            parsed: Parsed::default(),
            index: 0,
            now,
        }
    }

    fn push(&mut self, record: Record, service: &str, scope: Option<&str>) {
        self.parsed.push(self.index, entry(record, service, scope, self.now));
        self.index += 1;
    }
}

fn proto_attributes(list: Vec<ProtoKeyValue>) -> BTreeMap<String, Value> {
    list.into_iter()
        .map(|kv| (kv.key, kv.value.map_or(Value::Null, proto_value)))
        .collect()
}

fn proto_value(value: ProtoValue) -> Value {
    match value.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::from(i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(d),
        Some(any_value::Value::ArrayValue(array)) => Value::Array(array.values.into_iter().map(proto_value).collect()),
        Some(any_value::Value::KvlistValue(list)) => Value::Object(proto_attributes(list.values).into_iter().collect()),
        Some(any_value::Value::BytesValue(bytes)) => Value::String(hex(&bytes)),
        // Newer OTLP kinds (a reference into a dictionary) carry nothing to keep here.
        #[allow(unreachable_patterns)]
        Some(_) | None => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
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

fn entry(record: Record, service: &str, scope: Option<&str>, now: SystemTime) -> Result<Entry, String> {
    let time = match [record.time_unix_nano, record.observed_time_unix_nano]
        .into_iter()
        .find(|t| *t > 0)
    {
        Some(count) => {
            let count = i64::try_from(count).map_err(|_| "timeUnixNano is after 2262".to_owned())?;
            crate::timestamp::from_epoch(count)?
        }
        None => unix_nanos(now)?,
    };
    let level = level(record.severity_number, record.severity_text.as_deref());
    let message = match record.body {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut fields = record.attributes;
    if let Some(scope) = scope.filter(|s| !s.is_empty()) {
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

mod json {
    //! The OTLP JSON encoding of logs.

    use super::{BTreeMap, Deserialize, Record, Value, lenient_i64, lenient_u64};

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
        #[serde(default, deserialize_with = "lenient_u64")]
        time_unix_nano: Option<u64>,
        #[serde(default, deserialize_with = "lenient_u64")]
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

    impl LogRecord {
        pub(super) fn into_record(self) -> Record {
            Record {
                time_unix_nano: self.time_unix_nano.unwrap_or_default(),
                observed_time_unix_nano: self.observed_time_unix_nano.unwrap_or_default(),
                severity_number: self.severity_number,
                severity_text: self.severity_text,
                body: self.body.map_or(Value::Null, AnyValue::into_json),
                attributes: attributes(self.attributes),
                trace_id: self.trace_id,
                span_id: self.span_id,
            }
        }
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
        #[serde(default, deserialize_with = "lenient_i64")]
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
}
