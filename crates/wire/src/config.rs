//! Central configuration as every rollcall process sees it: a document's [`ConfigFormat`], and
//! what the registry answers and streams about its releases ([`ReleaseView`], [`DocumentView`],
//! [`ReleaseEvent`]).
//!
//! A document is addressed by `namespace / service / name` (the service is a ServiceName, or
//! `_shared` for what every service reads). Every publish makes an immutable release with the
//! next revision of that document.

use serde::{Deserialize, Serialize};

/// The formats a configuration document may have; each is checked for well-formedness on every
/// publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigFormat {
    /// JSON (`application/json`).
    Json,
    /// YAML 1.2 (`application/yaml`).
    Yaml,
    /// TOML (`application/toml`).
    Toml,
    /// Java properties (`text/x-java-properties`).
    Properties,
    /// Any UTF-8 text (`text/plain`).
    Text,
}

impl ConfigFormat {
    /// Every format, in the order documented.
    pub const ALL: [ConfigFormat; 5] = [
        ConfigFormat::Json,
        ConfigFormat::Yaml,
        ConfigFormat::Toml,
        ConfigFormat::Properties,
        ConfigFormat::Text,
    ];

    /// The lower-case word used on the wire (`?format=`) and in docs.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigFormat::Json => "json",
            ConfigFormat::Yaml => "yaml",
            ConfigFormat::Toml => "toml",
            ConfigFormat::Properties => "properties",
            ConfigFormat::Text => "text",
        }
    }

    /// The media type a document of this format is served as.
    pub fn media_type(self) -> &'static str {
        match self {
            ConfigFormat::Json => "application/json",
            ConfigFormat::Yaml => "application/yaml",
            ConfigFormat::Toml => "application/toml",
            ConfigFormat::Properties => "text/x-java-properties; charset=utf-8",
            ConfigFormat::Text => "text/plain; charset=utf-8",
        }
    }

    /// The format a `Content-Type` names (parameters ignored), if any.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let essence = media_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(ConfigFormat::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Some(ConfigFormat::Yaml),
            "application/toml" | "text/x-toml" => Some(ConfigFormat::Toml),
            "text/x-java-properties" => Some(ConfigFormat::Properties),
            "text/plain" => Some(ConfigFormat::Text),
            _ => None,
        }
    }
}

impl std::str::FromStr for ConfigFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ConfigFormat::ALL
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("unknown format {text:?}: expected json, yaml, toml, properties or text"))
    }
}

/// One release of a document, as `PUT`, `POST .../rollback` and `GET .../history` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseView {
    /// The document's namespace.
    pub namespace: String,
    /// The service it configures (`_shared` for every service).
    pub service: String,
    /// Its name.
    pub name: String,
    /// The release's revision: 1 for the first, one more for each publish of this document.
    pub revision: u64,
    /// The document's format.
    pub format: ConfigFormat,
    /// SHA-256 of the content, as 64 hex digits.
    pub sha256: String,
    /// The content's size in bytes.
    pub size: u64,
    /// Who published it: the token's name, or `anonymous`.
    pub author: String,
    /// Why, as the publisher said (may be empty).
    pub message: String,
    /// When it was published (RFC 3339, UTC).
    pub published_at: String,
    /// For a rollback: the revision whose content it published again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<u64>,
    /// Published for a gray rollout and not promoted (yet): not in force for everyone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged: bool,
}

/// One document and its latest release, as `GET /v1/config` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentView {
    /// The latest release.
    pub latest: ReleaseView,
    /// The revision in force for every instance outside a running rollout.
    pub in_force: u64,
    /// The oldest revision whose content is still kept (older ones were purged).
    pub oldest_kept: u64,
}

/// One release with its content, as a service's configuration stream
/// (`GET /v1/config/{namespace}/{service}`, server-sent events) carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseEvent {
    /// The release.
    pub release: ReleaseView,
    /// The document's text.
    pub content: String,
}

/// What an instance did with a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckStatus {
    /// It runs with the release.
    Applied,
    /// It refused the release (it did not parse into the service's type, or failed the
    /// service's own checks) and keeps running with the one before.
    Rejected,
}

/// An instance's report on a release: `POST /v1/config/{namespace}/{service}/{name}/acks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The instance's id (as `/v1` listings show it).
    pub instance: String,
    /// The release it reports on.
    pub revision: u64,
    /// What it did with it.
    pub status: AckStatus,
    /// Why it rejected it (empty when applied).
    #[serde(default)]
    pub reason: String,
    /// True when the instance learned of the release by its periodic revision check rather
    /// than by the push: the registry counts these (`rollcall_config_push_missed_total`).
    #[serde(default)]
    pub missed_push: bool,
}

/// Where one instance stands with a document, in [`RolloutStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceProgress {
    /// The instance's id.
    pub id: String,
    /// Its ServiceURL.
    pub url: String,
    /// Its health.
    pub state: crate::InstanceState,
    /// The last revision it reported on, if any.
    pub revision: Option<u64>,
    /// What it did with that revision.
    pub status: Option<AckStatus>,
    /// Why it rejected it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// How a document's latest release stands across the instances that read it:
/// `GET /v1/config/{namespace}/{service}/{name}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// The latest revision.
    pub revision: u64,
    /// Instances that read the document.
    pub total: usize,
    /// Of them, those that applied the latest revision.
    pub applied: usize,
    /// Those that rejected it.
    pub rejected: usize,
    /// Those that are suspect or critical and have not applied it: they may never hear of it.
    pub unreachable: usize,
    /// The rest: not reported on the latest revision yet.
    pub waiting: usize,
    /// Each instance, ordered by URL.
    pub instances: Vec<InstanceProgress>,
    /// The document's last gray rollout, running or ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutView>,
}

/// A gray rollout, as a document's status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    /// The release being rolled out.
    pub candidate: u64,
    /// The release in force before it.
    pub base: u64,
    /// The steps: `10` (percent), `instances:ID+ID`, `label:KEY=VALUE`.
    pub steps: Vec<String>,
    /// The step running or last run (from 0).
    pub step: usize,
    /// How long each step bakes.
    pub bake: String,
    /// `running`, `promoted` or `rolled_back`.
    pub state: String,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// While it runs, the id of the registry node that moves it on (as `/v1/nodes` lists it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_is_named_by_its_word_or_its_media_type() {
        for format in ConfigFormat::ALL {
            assert_eq!(format.as_str().parse::<ConfigFormat>(), Ok(format));
            assert_eq!(ConfigFormat::from_media_type(format.media_type()), Some(format));
        }
        assert_eq!(
            ConfigFormat::from_media_type("Application/JSON; charset=utf-8"),
            Some(ConfigFormat::Json)
        );
        assert_eq!(ConfigFormat::from_media_type("application/x-www-form-urlencoded"), None);
        assert!("ini".parse::<ConfigFormat>().is_err());
    }
}
