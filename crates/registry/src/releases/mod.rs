//! Central configuration: documents addressed by `namespace / service / name`, each an
//! append-only run of immutable releases, as a pure state machine ([`Documents`]) in the same
//! style as the catalog: it does no I/O and reads no clock (times come in the drafts), and says
//! which store operations ([`ReleaseOp`]) each publish makes.
//!
//! Invariants:
//! - a document's revisions are 1, 2, 3, ... with no gap; a publish makes exactly the next one,
//!   and only if the publisher's `If-Match` (when given) names the current one;
//! - a release never changes once made: a rollback is a new release with an old one's content;
//! - the newest [`RETAINED`] releases of a document are kept (content on disk, facts in memory);
//!   older ones are purged in the same batch as the publish that pushed them out;
//! - in memory a document holds the content of its latest release only: a document costs its
//!   size once, however long its history;
//! - what instances report doing with releases (`acks`) is kept in memory, beside;
//! - every content kept is well-formed in its format (`format`) and at most
//!   [`MAX_DOCUMENT_BYTES`], and meets its schema (`schema`: the document `NAME.schema` beside
//!   it, when there is one) as the schema stood when it was published.

pub mod acks;
pub mod format;
pub mod rollout;
pub mod schema;
mod shared;

use std::time::Duration;

use rollout::{Rollout, Selector};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use rollcall_wire::{ConfigFormat, DocumentView, ReleaseView};
use serde::{Deserialize, Serialize};

pub use format::Malformed;

/// The largest document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Releases kept per document; older ones are purged.
pub const RETAINED: usize = 100;
/// The longest namespace, service or name, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 200;
/// The longest publish message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// The service segment of documents every service reads.
pub const SHARED: &str = "_shared";

/// Where a document lives: `namespace/service/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DocKey {
    /// The namespace (an environment, a team: `prod`, `staging`).
    pub namespace: String,
    /// The ServiceName it configures, or [`SHARED`].
    pub service: String,
    /// The document's name within them.
    pub name: String,
}

impl DocKey {
    /// A key of three segments, each 1 to [`MAX_SEGMENT_BYTES`] bytes of letters, digits, `.`,
    /// `_` and `-` (so that a path segment needs no encoding and no segment is `.` or `..`).
    pub fn new(namespace: &str, service: &str, name: &str) -> Result<Self, ReleaseError> {
        for (what, segment) in [("namespace", namespace), ("service", service), ("name", name)] {
            let fits = !segment.is_empty()
                && segment.len() <= MAX_SEGMENT_BYTES
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !fits {
                return Err(ReleaseError::BadKey(format!(
                    "the {what} {segment:?} must be 1 to {MAX_SEGMENT_BYTES} letters, digits, '.', '_' or '-'"
                )));
            }
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            name: name.to_owned(),
        })
    }

    /// True when `service` reads this document in `namespace`: its own, or a shared one.
    pub fn read_by(&self, namespace: &str, service: &str) -> bool {
        self.namespace == namespace && (self.service == service || self.service == SHARED)
    }

    /// `namespace/service/name`: what `config:` scopes match.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.service, self.name)
    }
}

/// One release, content included: what the store keeps of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRelease {
    /// The document.
    pub key: DocKey,
    /// Its facts.
    #[serde(flatten)]
    pub meta: ReleaseMeta,
    /// The document's text.
    pub content: String,
}

/// A release's facts, without its content: what memory keeps of every retained release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseMeta {
    /// 1 for the first release of the document, one more for each after it.
    pub revision: u64,
    /// Its format.
    pub format: ConfigFormat,
    /// SHA-256 of the content, in hex.
    pub sha256: String,
    /// The content's size in bytes.
    pub size: u64,
    /// The token's name that published it, or `anonymous`.
    pub author: String,
    /// The publisher's message.
    pub message: String,
    /// When it was published.
    pub published_at: SystemTime,
    /// The revision whose content a rollback published again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<u64>,
    /// Published for a gray rollout and not promoted (yet): not in force for everyone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged: bool,
}

impl ReleaseMeta {
    /// The release as the API shows it.
    pub fn view(&self, key: &DocKey) -> ReleaseView {
        ReleaseView {
            namespace: key.namespace.clone(),
            service: key.service.clone(),
            name: key.name.clone(),
            revision: self.revision,
            format: self.format,
            sha256: self.sha256.clone(),
            size: self.size,
            author: self.author.clone(),
            message: self.message.clone(),
            published_at: humantime::format_rfc3339_millis(self.published_at).to_string(),
            rolled_back_from: self.rolled_back_from,
            staged: self.staged,
        }
    }
}

/// One change to the stored releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOp {
    /// Keep this release.
    Put(Arc<StoredRelease>),
    /// Keep this release in place of its staged self: a rollout's candidate, promoted. (In etcd
    /// a release is written once; its rollout's record there says it was promoted.)
    Promote(Arc<StoredRelease>),
    /// Keep this state of a document's rollout (a file keeps the last one per document, etcd
    /// one per candidate).
    Rollout(rollout::DocRollout),
    /// Forget release `revision` of `key` (pushed out of the retained history).
    Purge {
        /// The document.
        key: DocKey,
        /// The release.
        revision: u64,
    },
}

/// What a publish asks for.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The content's format.
    pub format: ConfigFormat,
    /// The document's text.
    pub content: String,
    /// Who publishes.
    pub author: String,
    /// Why.
    pub message: String,
    /// The revision the publisher saw (`If-Match`); `Some(0)` for "only if it does not exist
    /// yet"; `None` publishes whatever the current revision.
    pub expected: Option<u64>,
    /// For a rollback, the revision whose content this is.
    pub rolled_back_from: Option<u64>,
    /// A gray rollout's steps and bake time: the release goes to the steps' instances first.
    pub rollout: Option<(Vec<Selector>, Duration)>,
    /// When it is published.
    pub at: SystemTime,
}

/// Why a release could not be made or found. Texts are for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// A namespace, service or name that cannot name a document.
    #[error("{0}")]
    BadKey(String),
    /// The content is not well-formed in its format.
    #[error("the document is not well-formed {format}: {malformed}")]
    Malformed {
        /// The format it was checked as.
        format: &'static str,
        /// Where and why.
        malformed: Malformed,
    },
    /// The content is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("the document is {0} bytes; at most {MAX_DOCUMENT_BYTES} are allowed")]
    TooLarge(usize),
    /// The message is longer than [`MAX_MESSAGE_BYTES`].
    #[error("the message is longer than {MAX_MESSAGE_BYTES} bytes")]
    MessageTooLong,
    /// `If-Match` named another revision than the current one.
    #[error("{path} is at revision {current}, not {expected}: read it again and publish over revision {current}")]
    Conflict {
        /// The document.
        path: String,
        /// The revision the publisher expected.
        expected: u64,
        /// The current revision (0: none).
        current: u64,
    },
    /// No release of this document exists.
    #[error("no configuration document {0}")]
    UnknownDocument(String),
    /// A schema document that is not a JSON Schema that compiles.
    #[error("the document is not a usable JSON Schema: {0}")]
    InvalidSchema(String),
    /// The document does not meet its schema.
    #[error("the document does not meet its schema {schema} (revision {revision}): {violation}")]
    SchemaViolation {
        /// The schema document.
        schema: String,
        /// The schema's release in force.
        revision: u64,
        /// Where and what.
        violation: String,
    },
    /// A gray rollout needs a release in force to fall back to.
    #[error("{0} has no release yet: its first one goes to everyone, without a rollout")]
    FirstRelease(String),
    /// No rollout of the document is running.
    #[error("no rollout of {0} is running")]
    NoRollout(String),
    /// The document has no such release kept.
    #[error("{path} has no revision {revision}: revisions {oldest} to {latest} are kept")]
    UnknownRevision {
        /// The document.
        path: String,
        /// The revision asked for.
        revision: u64,
        /// The oldest revision kept.
        oldest: u64,
        /// The latest revision.
        latest: u64,
    },
}

/// One document: its latest release and the one in force whole, the facts of every retained
/// one, and its rollout.
#[derive(Debug)]
struct Document {
    /// The newest release (a rollout's candidate, while one runs).
    latest: Arc<StoredRelease>,
    /// What every instance outside a running rollout's gray set runs.
    in_force: Arc<StoredRelease>,
    /// The last rollout, running or ended.
    rollout: Option<Rollout>,
    /// Oldest first; the last is the latest's.
    history: VecDeque<ReleaseMeta>,
}

/// Every document and its retained releases.
#[derive(Debug, Default)]
pub struct Documents {
    documents: BTreeMap<DocKey, Document>,
}

impl Documents {
    /// No documents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `draft` as the next release of `key`: checks it, makes the release, and
    /// returns it with the store operations that keep it (and purge what it pushed out of the
    /// retained history).
    pub fn publish(
        &mut self,
        key: &DocKey,
        draft: Draft,
    ) -> Result<(Arc<StoredRelease>, Vec<ReleaseOp>), ReleaseError> {
        if draft.content.len() > MAX_DOCUMENT_BYTES {
            return Err(ReleaseError::TooLarge(draft.content.len()));
        }
        if draft.message.len() > MAX_MESSAGE_BYTES {
            return Err(ReleaseError::MessageTooLong);
        }
        format::check(draft.format, &draft.content).map_err(|malformed| ReleaseError::Malformed {
            format: draft.format.as_str(),
            malformed,
        })?;
        self.check_schema(key, &draft)?;
        let current = self.documents.get(key).map_or(0, |d| d.latest.meta.revision);
        if draft.rollout.is_some() && current == 0 {
            return Err(ReleaseError::FirstRelease(key.path()));
        }
        if let Some(expected) = draft.expected
            && expected != current
        {
            return Err(ReleaseError::Conflict {
                path: key.path(),
                expected,
                current,
            });
        }
        let release = Arc::new(StoredRelease {
            key: key.clone(),
            meta: ReleaseMeta {
                revision: current + 1,
                format: draft.format,
                sha256: sha256_hex(&draft.content),
                size: draft.content.len() as u64,
                author: draft.author,
                message: draft.message,
                published_at: draft.at,
                rolled_back_from: draft.rolled_back_from,
                staged: draft.rollout.is_some(),
            },
            content: draft.content,
        });
        let mut ops = vec![ReleaseOp::Put(Arc::clone(&release))];
        ops.extend(self.keep(&release).into_iter().map(|revision| ReleaseOp::Purge {
            key: key.clone(),
            revision,
        }));
        if let Some(document) = self.documents.get_mut(key) {
            ops.extend(document.start_rollout(draft.rollout, &release, draft.at));
        }
        Ok((release, ops))
    }

    /// Checks a schema document (`NAME.schema`: JSON that compiles), or a document against its
    /// schema's release in force, if it has one.
    fn check_schema(&self, key: &DocKey, draft: &Draft) -> Result<(), ReleaseError> {
        if key.name.ends_with(schema::SUFFIX) {
            if draft.format != ConfigFormat::Json {
                return Err(ReleaseError::InvalidSchema("a schema is a JSON document".to_owned()));
            }
            return schema::check(&draft.content).map_err(ReleaseError::InvalidSchema);
        }
        let schema_key = DocKey {
            name: format!("{}{}", key.name, schema::SUFFIX),
            ..key.clone()
        };
        let Some(schema) = self.documents.get(&schema_key) else {
            return Ok(());
        };
        schema::validate(&schema.in_force.content, draft.format, &draft.content).map_err(|violation| {
            ReleaseError::SchemaViolation {
                schema: schema_key.path(),
                revision: schema.in_force.meta.revision,
                violation,
            }
        })
    }

    /// Takes in a release read back from the store (in any order); returns the revisions that
    /// fall out of the retained history.
    pub fn restore(&mut self, release: StoredRelease) -> Vec<u64> {
        self.keep(&Arc::new(release))
    }

    /// Adds `release` to its document; returns the revisions pushed out of the history.
    fn keep(&mut self, release: &Arc<StoredRelease>) -> Vec<u64> {
        let document = self.documents.entry(release.key.clone()).or_insert_with(|| Document {
            latest: Arc::clone(release),
            in_force: Arc::clone(release),
            rollout: None,
            history: VecDeque::new(),
        });
        if release.meta.revision >= document.latest.meta.revision {
            document.latest = Arc::clone(release);
        }
        if !release.meta.staged && release.meta.revision >= document.in_force.meta.revision {
            document.in_force = Arc::clone(release);
        }
        let at = document
            .history
            .partition_point(|meta| meta.revision < release.meta.revision);
        document.history.insert(at, release.meta.clone());
        let mut purged = Vec::new();
        while document.history.len() > RETAINED {
            if let Some(oldest) = document.history.pop_front() {
                purged.push(oldest.revision);
            }
        }
        purged
    }

    /// The latest release of `key`.
    pub fn latest(&self, key: &DocKey) -> Result<&Arc<StoredRelease>, ReleaseError> {
        self.documents
            .get(key)
            .map(|d| &d.latest)
            .ok_or_else(|| ReleaseError::UnknownDocument(key.path()))
    }

    /// The facts of release `revision` of `key`, while it is retained.
    pub fn meta(&self, key: &DocKey, revision: u64) -> Result<&ReleaseMeta, ReleaseError> {
        let document = self
            .documents
            .get(key)
            .ok_or_else(|| ReleaseError::UnknownDocument(key.path()))?;
        let history = &document.history;
        let found = history
            .binary_search_by_key(&revision, |meta| meta.revision)
            .ok()
            .and_then(|at| history.get(at));
        found.ok_or_else(|| ReleaseError::UnknownRevision {
            path: key.path(),
            revision,
            oldest: history.front().map_or(0, |m| m.revision),
            latest: document.latest.meta.revision,
        })
    }

    /// The retained releases of `key`, newest first.
    pub fn history(&self, key: &DocKey) -> Result<impl Iterator<Item = &ReleaseMeta>, ReleaseError> {
        let document = self
            .documents
            .get(key)
            .ok_or_else(|| ReleaseError::UnknownDocument(key.path()))?;
        Ok(document.history.iter().rev())
    }

    /// Every document with its latest release, ordered by key; only those of `namespace` when
    /// given.
    pub fn list(&self, namespace: Option<&str>) -> Vec<DocumentView> {
        self.documents
            .iter()
            .filter(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
            .map(|(key, document)| DocumentView {
                latest: document.latest.meta.view(key),
                in_force: document.in_force.meta.revision,
                oldest_kept: document.history.front().map_or(0, |m| m.revision),
            })
            .collect()
    }

    /// Every document `service` reads in `namespace`: its own and the namespace's [`SHARED`]
    /// ones, ordered.
    pub fn read_by(&self, namespace: &str, service: &str) -> Vec<DocKey> {
        // Keys order by namespace, then service: each of the two is one range, not a scan.
        let of = |service: &str| {
            let first = DocKey {
                namespace: namespace.to_owned(),
                service: service.to_owned(),
                name: String::new(),
            };
            self.documents
                .range(first..)
                .map(|(key, _)| key)
                .take_while(move |key| key.namespace == namespace && key.service == service)
                .cloned()
                .collect::<Vec<_>>()
        };
        let mut keys = of(SHARED);
        if service != SHARED {
            keys.extend(of(service));
            keys.sort();
        }
        keys
    }

    /// The release in force of `key`: what every instance outside a running rollout runs.
    pub fn in_force(&self, key: &DocKey) -> Result<&Arc<StoredRelease>, ReleaseError> {
        self.documents
            .get(key)
            .map(|d| &d.in_force)
            .ok_or_else(|| ReleaseError::UnknownDocument(key.path()))
    }

    /// How many documents there are.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }
}

/// SHA-256 of `text`, as 64 lower-case hex digits.
fn sha256_hex(text: &str) -> String {
    use std::fmt::Write;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

#[cfg(test)]
mod tests;
