//! How the registry tells that an instance is alive: the optional `Check` object of a
//! `/v1/instances` registration, and how listings show it.
//!
//! A registration's `Check` says which kind of check applies and may override the registry's
//! defaults (its `--health-*` flags) for this instance alone:
//!
//! ```json
//! {"Kind": "http", "Interval": "10s", "Timeout": "2s", "Tries": 5}
//! {"Kind": "tcp", "Interval": "5s"}
//! {"Kind": "ttl", "TTL": "15s", "Tries": 2}
//! ```
//!
//! Keys are matched like the rest of the registration (Go's rule: case-insensitively);
//! durations are strings like `500ms`, `10s` or `1m`. Without `Kind`, a check with a `TTL` is a
//! TTL check and any other an HTTP one. Which values are sane (bounds, which fields go with which
//! kind) is the registry's to say.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::go_json::key_matches;

/// How an instance shows it is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// The registry GETs the HeartbeatURL; any 2xx answer passes.
    #[default]
    Http,
    /// The registry opens a TCP connection to the HeartbeatURL's host and port; a connection
    /// made passes (nothing is sent).
    Tcp,
    /// The instance renews itself (`PUT /v1/instances/{id}/ttl`) within every TTL; a TTL that
    /// runs out counts as a failed check.
    Ttl,
}

impl CheckKind {
    /// The lower-case word used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Ttl => "ttl",
        }
    }
}

/// The `Check` object of a `/v1/instances` registration: the kind, and what differs from the
/// registry's defaults. Absent fields follow the registry's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Check {
    /// Which check applies.
    pub kind: CheckKind,
    /// Time between two checks of a passing instance (HTTP and TCP checks).
    pub interval: Option<Duration>,
    /// How long one check may take (HTTP and TCP checks).
    pub timeout: Option<Duration>,
    /// Failed checks in a row that make the instance critical.
    pub tries: Option<u32>,
    /// How long a renewal keeps a TTL-checked instance alive.
    pub ttl: Option<Duration>,
}

impl Check {
    /// A TTL check renewed within `ttl`, other values the registry's defaults.
    pub fn ttl(ttl: Duration) -> Self {
        Self {
            kind: CheckKind::Ttl,
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    /// How listings show the check (durations as text like `10s`).
    pub fn view(&self) -> CheckView {
        let text = |d: Option<Duration>| d.map(|d| humantime::format_duration(d).to_string());
        CheckView {
            kind: self.kind,
            interval: text(self.interval),
            timeout: text(self.timeout),
            tries: self.tries,
            ttl: text(self.ttl),
        }
    }
}

/// A check as `/v1` listings show it; absent values follow the registry's flags.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckView {
    /// Which check applies.
    pub kind: CheckKind,
    /// The interval given at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// The timeout given at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The tries given at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tries: Option<u32>,
    /// The TTL of a TTL check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

impl Serialize for Check {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let view = self.view();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("Kind", &view.kind)?;
        for (key, value) in [
            ("Interval", &view.interval),
            ("Timeout", &view.timeout),
            ("TTL", &view.ttl),
        ] {
            if let Some(value) = value {
                map.serialize_entry(key, value)?;
            }
        }
        if let Some(tries) = view.tries {
            map.serialize_entry("Tries", &tries)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(CheckVisitor)
    }
}

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Check;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Check object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Check, A::Error> {
        let mut check = Check::default();
        let mut kind = None;
        while let Some(key) = map.next_key::<String>()? {
            if key_matches(&key, "Kind") {
                let text: String = map.next_value()?;
                kind = Some(match text.to_ascii_lowercase().as_str() {
                    "http" => CheckKind::Http,
                    "tcp" => CheckKind::Tcp,
                    "ttl" => CheckKind::Ttl,
                    _ => return Err(de::Error::custom(format!("Kind {text:?} is not one of http, tcp, ttl"))),
                });
            } else if key_matches(&key, "Interval") {
                check.interval = Some(duration(&mut map, "Interval")?);
            } else if key_matches(&key, "Timeout") {
                check.timeout = Some(duration(&mut map, "Timeout")?);
            } else if key_matches(&key, "TTL") {
                check.ttl = Some(duration(&mut map, "TTL")?);
            } else if key_matches(&key, "Tries") {
                check.tries = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        check.kind = kind.unwrap_or(if check.ttl.is_some() {
            CheckKind::Ttl
        } else {
            CheckKind::Http
        });
        Ok(check)
    }
}

fn duration<'de, A: MapAccess<'de>>(map: &mut A, field: &str) -> Result<Duration, A::Error> {
    let text: String = map.next_value()?;
    humantime::parse_duration(&text).map_err(|e| {
        de::Error::custom(format!(
            "{field} {text:?} is not a duration like \"10s\" or \"500ms\": {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_reads_its_kind_durations_and_tries_with_go_key_matching() {
        let check: Check =
            serde_json::from_str(r#"{"kind":"TCP","interval":"10s","TIMEOUT":"250ms","tries":5}"#).expect("decodes");
        assert_eq!(check.kind, CheckKind::Tcp);
        assert_eq!(check.interval, Some(Duration::from_secs(10)));
        assert_eq!(check.timeout, Some(Duration::from_millis(250)));
        assert_eq!(check.tries, Some(5));
        assert_eq!(check.ttl, None);
    }

    #[test]
    fn without_a_kind_a_ttl_makes_a_ttl_check_and_nothing_an_http_one() {
        let ttl: Check = serde_json::from_str(r#"{"TTL":"15s"}"#).expect("decodes");
        assert_eq!(ttl, Check::ttl(Duration::from_secs(15)));
        let http: Check = serde_json::from_str("{}").expect("decodes");
        assert_eq!(http.kind, CheckKind::Http);
    }

    #[test]
    fn a_check_survives_its_own_encoding() {
        let check = Check {
            kind: CheckKind::Http,
            interval: Some(Duration::from_millis(1500)),
            timeout: Some(Duration::from_secs(2)),
            tries: Some(4),
            ttl: None,
        };
        let json = serde_json::to_string(&check).expect("encodes");
        assert_eq!(
            json,
            r#"{"Kind":"http","Interval":"1s 500ms","Timeout":"2s","Tries":4}"#
        );
        assert_eq!(serde_json::from_str::<Check>(&json).expect("decodes"), check);
    }

    #[test]
    fn an_unknown_kind_or_a_bad_duration_is_an_error_that_names_it() {
        let kind = serde_json::from_str::<Check>(r#"{"Kind":"icmp"}"#).expect_err("refused");
        assert!(kind.to_string().contains("icmp"), "{kind}");
        let ttl = serde_json::from_str::<Check>(r#"{"TTL":"soon"}"#).expect_err("refused");
        assert!(ttl.to_string().contains("TTL \"soon\""), "{ttl}");
        assert!(serde_json::from_str::<Check>(r#"{"Tries":-1}"#).is_err());
    }
}
