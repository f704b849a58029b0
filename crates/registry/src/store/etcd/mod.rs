//! The catalog in etcd: every registration under one key prefix of an etcd cluster, so that the
//! registry's data outlives its machine, and several registry nodes share one catalog.
//!
//! Keys are `{prefix}catalog/{ServiceURL}`, values the same JSON of a [`StoredInstance`] the
//! embedded store keeps; `{prefix}health/{ServiceURL}`, the instance's health as the node
//! probing it found it ([`SharedHealth`]): apart, so that the probing node's writes never race
//! the registrations and drains callers make through any node; `{prefix}held/{ServiceURL}`, what
//! a subscriber acknowledged holding; `{prefix}releases/...` and `{prefix}rollouts/...`, the
//! configuration releases and their rollouts' states ([`ShareReleases`]). Two tasks per node:
//! - the writer (`writer`) commits every batch queued so far (up to etcd's 128 operations per
//!   transaction), folded into the last word per key, as one etcd transaction; each
//!   acknowledgement means "committed by etcd", on the disks of a majority of its members. Each
//!   transaction compares every instance it writes with the revision this node knows it at
//!   (health is written by one node and compared with nothing), so a
//!   write never silently undoes a change it did not know about; one whose answer was lost is
//!   retried (the comparison makes that safe, and a retry that finds its own write counts as
//!   done); one that finds a key changed by another node is refused, and the catalog corrected;
//! - the feed (`feed`) watches the prefix from the revision the node read the catalog at and
//!   hands every change, with its revision, to this node ([`Fed`]): another node's as what it
//!   changed, this node's own as an echo.
//!
//! The two share what the node knows of each key (`writer::Known`): the revision of its last
//! write, and whether a write of this node's is in flight.

mod feed;
mod writer;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

#[cfg(test)]
use self::writer::RETRY_FOR;
use self::writer::{Folded, Known, Message, Queued, Seen, Words, Writer, fold_releases};
use super::{
    CatalogStore, Change, Durable, Feed, ShareReleases, ShareTokens, StoreError, StoreFuture, StoreOp, StoredInstance,
};
use crate::releases::acks::SharedAck;
use crate::releases::rollout::{DocRollout, Phase};
use crate::releases::{DocKey, ReleaseOp, StoredRelease};
use crate::state::{SharedHealth, SharedHeld};

/// Keys read per request when the catalog is read back, so that no answer is large.
const READ_PAGE: i64 = 1_000;
/// How long one request to etcd may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Changes from other nodes queued for this node's catalog before the feed waits.
const FEED_QUEUE: usize = 1_024;
/// Where instances' reports on releases are: `acks/{namespace}/{service}/{name}/{instance id}`.
const ACKS: &str = "acks/";
/// Where the instances are, under the prefix: `catalog/{ServiceURL}`.
const CATALOG: &str = "catalog/";
/// Where their shared health is: `health/{ServiceURL}`.
const HEALTH: &str = "health/";
/// Where what each subscriber acknowledged holding is: `held/{ServiceURL}`.
const HELD: &str = "held/";
/// Where the configuration releases are: `releases/{namespace}/{service}/{name}/{revision}`.
const RELEASES: &str = "releases/";
/// Where the rollouts' states are: `rollouts/{namespace}/{service}/{name}/{candidate}`.
const ROLLOUTS: &str = "rollouts/";
/// Where the tokens are: `tokens/{id}`, each its listing and the digest of its text.
/// (`acks/` < `catalog/` < `health/` < `held/` < `nodes/` < `releases/` < `rollouts/` <
/// `tokens/`: one watch from the first to the end of the last sees them all, and skips the
/// nodes' keys.)
const TOKENS: &str = "tokens/";

/// How the registry reaches etcd: `rollcall registry --etcd URL[,URL...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct EtcdArgs {
    /// Keep the catalog in this etcd cluster instead of the data directory: its client URLs,
    /// comma-separated (`http://10.0.0.1:2379,http://10.0.0.2:2379`).
    #[arg(long = "etcd", env = "ROLLCALL_ETCD", value_name = "URLS", value_delimiter = ',', value_parser = parse_endpoint)]
    pub endpoints: Vec<String>,

    /// The key prefix everything of this registry lives under, so that one etcd can hold
    /// several registries (and other data).
    #[arg(
        long,
        env = "ROLLCALL_ETCD_PREFIX",
        default_value = "/rollcall/",
        value_name = "PREFIX"
    )]
    pub etcd_prefix: String,

    /// With `--etcd`: how long a registry node that stopped renewing its place among the nodes
    /// (it died, or lost etcd) keeps it; its share of the probing is taken over after this.
    /// Whole seconds, at least one; etcd may make it longer.
    #[arg(long, env = "ROLLCALL_NODE_TTL", default_value = "2s", value_parser = parse_ttl)]
    pub node_ttl: Duration,

    /// The etcd user to authenticate as (with `--etcd-password`).
    #[arg(long, env = "ROLLCALL_ETCD_USER", requires = "etcd_password")]
    pub etcd_user: Option<String>,

    /// The etcd user's password; better given through the environment than on the command line.
    #[arg(long, env = "ROLLCALL_ETCD_PASSWORD", requires = "etcd_user", hide_env_values = true)]
    pub etcd_password: Option<String>,

    /// Trust this certificate authority (PEM) for etcd's `https` endpoints.
    #[arg(long, env = "ROLLCALL_ETCD_CA_FILE", value_name = "PEM")]
    pub etcd_ca_file: Option<PathBuf>,

    /// A client certificate (PEM) to present to etcd, with `--etcd-key-file`.
    #[arg(
        long,
        env = "ROLLCALL_ETCD_CERT_FILE",
        value_name = "PEM",
        requires = "etcd_key_file"
    )]
    pub etcd_cert_file: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "ROLLCALL_ETCD_KEY_FILE",
        value_name = "PEM",
        requires = "etcd_cert_file"
    )]
    pub etcd_key_file: Option<PathBuf>,
}

impl EtcdArgs {
    /// Whether etcd was asked for at all.
    pub fn is_set(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// A description of where the catalog is, for the log: the endpoints and the prefix.
    pub fn describe(&self) -> String {
        format!("etcd {} under {}", self.endpoints.join(","), self.etcd_prefix)
    }

    /// Connects to the cluster (lazily: an unreachable etcd shows at the first request).
    pub(crate) async fn connect(&self) -> Result<Client, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT)
            // A member cut from its leader fails the watch instead of serving nothing.
            .with_require_leader(true);
        if let (Some(user), Some(password)) = (&self.etcd_user, &self.etcd_password) {
            options = options.with_user(user, password);
        }
        if let Some(tls) = self.tls()? {
            options = options.with_tls(tls);
        }
        Client::connect(&self.endpoints, Some(options))
            .await
            .map_err(|e| StoreError::new("cannot connect to etcd", e))
    }

    fn tls(&self) -> Result<Option<TlsOptions>, StoreError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| StoreError::new(&format!("cannot read {}", path.display()), e))
        };
        let mut tls = TlsOptions::new();
        let mut wanted = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if let Some(ca) = &self.etcd_ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            wanted = true;
        }
        if let (Some(cert), Some(key)) = (&self.etcd_cert_file, &self.etcd_key_file) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            wanted = true;
        }
        Ok(wanted.then_some(tls))
    }
}

/// Parses a lease's time to live: whole seconds (`2s`, `1m`), at least one.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{e} (write it like 2s or 10s)"))?;
    if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(1) {
        return Err("an etcd lease lives whole seconds, at least 1s".to_owned());
    }
    Ok(ttl)
}

/// Accepts `http://host:port` and `https://host:port`.
fn parse_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "{text:?}: an etcd endpoint is http://host:port or https://host:port"
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// The catalog in etcd.
#[derive(Debug)]
pub struct EtcdStore {
    queue: mpsc::UnboundedSender<Message>,
    known: Arc<Mutex<Known>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Stops the feed.
    stop: CancellationToken,
    /// The revision the catalog was read at when the store opened.
    read_at: u64,
}

impl EtcdStore {
    /// Connects to etcd, reads every stored instance, and starts the writer (timing each commit
    /// in `commit_seconds`) and the feed of other nodes' changes, which the caller takes in.
    pub async fn open(
        args: &EtcdArgs,
        commit_seconds: Histogram,
    ) -> Result<(Self, Vec<StoredInstance>, Feed), StoreError> {
        let client = args.connect().await?;
        let prefix = args.etcd_prefix.clone();
        let mut snapshot = read_all(&client, &prefix).await?;
        let (stored, revisions, at) = (
            std::mem::take(&mut snapshot.stored),
            std::mem::take(&mut snapshot.revisions),
            snapshot.at,
        );
        let known = Arc::new(Mutex::new(Known {
            revisions,
            pending: HashMap::new(),
        }));
        let (changes, feed) = mpsc::channel(FEED_QUEUE);
        let stop = CancellationToken::new();
        tokio::spawn(feed::follow(
            client.clone(),
            prefix.clone(),
            snapshot.handed(),
            at + 1,
            Arc::clone(&known),
            changes.clone(),
            stop.clone(),
        ));
        let (queue, messages) = mpsc::unbounded_channel();
        let writer = Writer {
            client,
            prefix,
            known: Arc::clone(&known),
            corrections: changes,
            commit_seconds,
            doubtful: std::collections::BTreeSet::new(),
        };
        let task = tokio::spawn(writer.run(messages));
        let store = Self {
            queue,
            known,
            writer: Mutex::new(Some(task)),
            stop,
            read_at: u64::try_from(at).unwrap_or(0),
        };
        Ok((store, stored, feed))
    }
}

impl EtcdStore {
    /// The revision the catalog was read at when the store opened: the feed follows from the
    /// next one.
    pub fn read_at(&self) -> u64 {
        self.read_at
    }

    /// Queues folded `words` for the writer (see [`Self::queue`]).
    fn queue_folded(&self, words: Result<Folded, StoreError>) -> Durable {
        match words {
            Ok(words) => {
                let keys = words.keys().cloned().collect();
                self.queue(Words::Folded(words), keys)
            }
            Err(error) => {
                let (done, durable) = oneshot::channel();
                let _ = done.send(Err(error));
                durable
            }
        }
    }

    /// Queues `words` for the writer, counting `keys`, the keys they write, as pending until
    /// it answers.
    fn queue(&self, words: Words, keys: Vec<String>) -> Durable {
        let (done, durable) = oneshot::channel();
        {
            let mut known = writer::lock(&self.known);
            for key in &keys {
                *known.pending.entry(key.clone()).or_default() += 1;
            }
        }
        let queued = Queued { words, keys, done };
        if let Err(mpsc::error::SendError(Message::Write(queued))) = self.queue.send(Message::Write(queued)) {
            writer::release(&self.known, queued.keys.iter());
            let _ = queued.done.send(Err(StoreError::closed()));
        }
        durable
    }
}

impl ShareReleases for EtcdStore {
    /// Queues the releases `ops` keep or purge, each release under its own key (a release
    /// already in etcd is not written again: the write is refused).
    fn share(&self, ops: &[ReleaseOp]) -> Durable {
        self.queue_folded(fold_releases(ops))
    }

    /// Queues the report under its instance's key for the document (nothing to compare: the
    /// newest report wins, as it does in memory).
    fn share_ack(&self, shared: &SharedAck) -> Durable {
        let key = format!("{ACKS}{}/{}", shared.key.path(), shared.ack.instance);
        let value = serde_json::to_vec(shared).map_err(|e| StoreError::new("cannot encode", e));
        self.queue_folded(value.map(|value| Folded::from([(key, Some(value))])))
    }
}

impl ShareTokens for EtcdStore {
    /// Queues the token under its own key (ids are random: nothing to compare).
    fn share_token(&self, id: &str, value: Option<Vec<u8>>) -> Durable {
        self.queue_folded(Ok(Folded::from([(format!("{TOKENS}{id}"), value)])))
    }
}

impl CatalogStore for EtcdStore {
    /// Queues `ops` to be committed with whatever else is queued.
    /// Queues `ops`; the writer encodes them (the caller holds the catalog's lock).
    fn write(&self, ops: Vec<StoreOp>) -> Durable {
        let keys = writer::keys_of(&ops);
        self.queue(Words::Ops(ops), keys)
    }

    /// Stops the feed, commits what is queued and stops the writer.
    fn close(&self) -> StoreFuture<'_> {
        Box::pin(async {
            self.stop.cancel();
            let _ = self.queue.send(Message::Stop);
            let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(writer) = writer {
                let _ = writer.await;
            }
        })
    }
}

/// Everything a node reads of the shared catalog at one revision.
struct Snapshot {
    /// Every instance, with its shared health.
    stored: Vec<StoredInstance>,
    /// What each subscriber acknowledged holding.
    held: Vec<SharedHeld>,
    /// Every configuration release kept (a promoted rollout's candidate no longer staged).
    releases: Vec<StoredRelease>,
    /// The state of every rollout kept, oldest candidate first.
    rollouts: Vec<DocRollout>,
    /// Every token shared: its id and JSON.
    tokens: Vec<(String, Vec<u8>)>,
    /// Every instance's last report on each document.
    acks: Vec<SharedAck>,
    /// The revision of every key read.
    revisions: HashMap<String, Seen>,
    /// The revision read at.
    at: i64,
}

/// Reads every instance under `root` (`{root}catalog/...`) with its shared health
/// (`{root}health/...`), and the subscribers' holdings (`{root}held/...`), a page at a time but
/// all at one revision.
async fn read_all(client: &Client, root: &str) -> Result<Snapshot, StoreError> {
    let mut revisions = HashMap::new();
    let (catalog, at) = read_range(client, root, CATALOG, 0, &mut revisions).await?;
    let (health, _) = read_range(client, root, HEALTH, at, &mut revisions).await?;
    let (held, _) = read_range(client, root, HELD, at, &mut revisions).await?;
    let (releases, _) = read_range(client, root, RELEASES, at, &mut revisions).await?;
    let (rollouts, _) = read_range(client, root, ROLLOUTS, at, &mut revisions).await?;
    let (tokens, _) = read_range(client, root, TOKENS, at, &mut revisions).await?;
    let (acks, _) = read_range(client, root, ACKS, at, &mut revisions).await?;
    let acks = acks
        .into_iter()
        .filter_map(|(_, value)| serde_json::from_slice::<SharedAck>(&value).ok())
        .collect();
    let rollouts: Vec<DocRollout> = rollouts
        .into_iter()
        .filter_map(|(_, value)| serde_json::from_slice::<DocRollout>(&value).ok())
        .collect();
    let promoted: HashSet<(&DocKey, u64)> = rollouts
        .iter()
        .filter(|kept| kept.rollout.phase == Phase::Promoted)
        .map(|kept| (&kept.key, kept.rollout.candidate))
        .collect();
    let releases = releases
        .into_iter()
        .filter_map(|(_, value)| serde_json::from_slice::<StoredRelease>(&value).ok())
        .map(|mut release| {
            release.meta.staged &= !promoted.contains(&(&release.key, release.meta.revision));
            release
        })
        .collect();
    let held = held
        .into_iter()
        .filter_map(|(_, value)| serde_json::from_slice::<SharedHeld>(&value).ok())
        .collect();
    let mut health: HashMap<String, SharedHealth> = health
        .into_iter()
        .filter_map(|(url, value)| serde_json::from_slice::<SharedHealth>(&value).ok().map(|h| (url, h)))
        .collect();
    let stored = catalog
        .into_iter()
        .filter_map(|(url, value)| {
            let mut instance = decode(&url, &value)?;
            if let Some(shared) = health.remove(&url) {
                instance.health = Some(shared.state);
                instance.checked_at = shared.checked_at;
            }
            let revision = |part: &str| {
                revisions
                    .get(&format!("{part}{url}"))
                    .map_or(0, |seen: &Seen| seen.revision)
            };
            instance.revision = u64::try_from(revision(CATALOG).max(revision(HEALTH))).unwrap_or(0);
            Some(instance)
        })
        .collect();
    Ok(Snapshot {
        stored,
        held,
        releases,
        rollouts,
        tokens,
        acks,
        revisions,
        at,
    })
}

/// What a write of `value` (`None`: a deletion) at `suffix` changed, for this node (another
/// node's, from the feed; etcd's value when this node's own write was refused, from the
/// writer); `None` for what it does not take in (a deleted report, release, rollout, health or
/// holding goes with its instance or purged release; anything else is not the registry's).
pub(super) fn change_of(suffix: &str, value: Option<&[u8]>) -> Option<Change> {
    if suffix.starts_with(ACKS) {
        let ack = serde_json::from_slice::<SharedAck>(value?).ok()?;
        return Some(Change::Ack(Box::new(ack)));
    }
    if let Some(id) = suffix.strip_prefix(TOKENS) {
        return Some(Change::Token(id.to_owned(), value.map(<[u8]>::to_vec)));
    }
    if suffix.starts_with(ROLLOUTS) {
        let kept = serde_json::from_slice::<DocRollout>(value?).ok()?;
        return Some(Change::Rollout(Box::new(kept)));
    }
    if suffix.starts_with(RELEASES) {
        let release = serde_json::from_slice::<StoredRelease>(value?).ok()?;
        return Some(Change::Release(Box::new(release)));
    }
    if let Some(url) = suffix.strip_prefix(CATALOG) {
        let op = match value {
            None => StoreOp::Delete(url.to_owned()),
            Some(value) => StoreOp::Put(decode(url, value)?),
        };
        return Some(Change::One(op));
    }
    if suffix.starts_with(HEALTH) {
        let health = serde_json::from_slice::<SharedHealth>(value?).ok()?;
        return Some(Change::One(StoreOp::Health(health)));
    }
    if suffix.starts_with(HELD) {
        let held = serde_json::from_slice::<SharedHeld>(value?).ok()?;
        return Some(Change::One(StoreOp::Held(held)));
    }
    None
}

impl Snapshot {
    /// What the feed hands over besides the instances, as changes: holdings, releases (before
    /// the rollouts of them), tokens and reports.
    fn handed(self) -> Vec<Change> {
        let held = self.held.into_iter().map(|h| Change::One(StoreOp::Held(h)));
        let releases = self.releases.into_iter().map(|r| Change::Release(Box::new(r)));
        let rollouts = self.rollouts.into_iter().map(|r| Change::Rollout(Box::new(r)));
        let tokens = self
            .tokens
            .into_iter()
            .map(|(id, value)| Change::Token(id, Some(value)));
        let acks = self.acks.into_iter().map(|ack| Change::Ack(Box::new(ack)));
        held.chain(releases).chain(rollouts).chain(tokens).chain(acks).collect()
    }
}

/// Reads the keys under `{root}{part}` at revision `at` (0: the latest), a page at a time,
/// recording each key's revision; returns each key (without the prefix) and value, and the
/// revision read at.
async fn read_range(
    client: &Client,
    root: &str,
    part: &str,
    mut at: i64,
    revisions: &mut HashMap<String, Seen>,
) -> Result<(Vec<(String, Vec<u8>)>, i64), StoreError> {
    let prefix = format!("{root}{part}");
    let mut kv = client.kv_client();
    let end = prefix_end(&prefix);
    let mut found = Vec::new();
    let mut from = prefix.as_bytes().to_vec();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(READ_PAGE)
            .with_revision(at);
        let page = kv
            .get(from.clone(), Some(options))
            .await
            .map_err(|e| StoreError::new("cannot read the catalog from etcd", e))?;
        if at == 0 {
            at = page.header().map_or(0, etcd_client::ResponseHeader::revision);
        }
        for entry in page.kvs() {
            let suffix = String::from_utf8_lossy(&entry.key()[root.len()..]).into_owned();
            let seen = Seen {
                revision: entry.mod_revision(),
                exists: true,
            };
            found.push((suffix[part.len()..].to_owned(), entry.value().to_vec()));
            revisions.insert(suffix, seen);
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok((found, at)),
        }
    }
}

/// The key (under the prefix) of what `op` writes that the watch brings back to the node that
/// wrote it: an instance's, or its health's; `None` for a subscriber's holdings.
pub(crate) fn shared_key(op: &StoreOp) -> Option<String> {
    match op {
        StoreOp::Put(instance) => Some(format!("{CATALOG}{}", instance.registration.service_url)),
        StoreOp::Delete(url) => Some(format!("{CATALOG}{url}")),
        StoreOp::Health(health) => Some(format!("{HEALTH}{}", health.url)),
        StoreOp::Held(_) => None,
    }
}

/// Delays between attempts to reach etcd again: 50 ms doubling to 1 s, with jitter, without end
/// (the caller bounds the attempts).
pub(crate) fn retry_delays() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The instance stored at `url`, or `None` (and a warning) when this version cannot read it:
/// as in the embedded store, an unreadable record is skipped, and the instance registers again.
fn decode(url: &str, value: &[u8]) -> Option<StoredInstance> {
    serde_json::from_slice(value)
        .map_err(|error| tracing::warn!(url, %error, "skipping an unreadable stored instance"))
        .ok()
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
pub(super) mod tests;
