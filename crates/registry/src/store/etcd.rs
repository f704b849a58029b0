//! The catalog in etcd: every registration under one key prefix of an etcd cluster, so that the
//! registry's data outlives its machine.
//!
//! Keys are `{prefix}catalog/{ServiceURL}`, values the same JSON of a [`StoredInstance`] the
//! embedded store keeps. One writer task takes every batch queued so far (up to etcd's 128
//! operations per transaction), folds them into the last word per key, and commits them as one
//! etcd transaction; each acknowledgement means "committed by etcd", that is on the disks of a
//! majority of its members.
//!
//! Each transaction compares every key it writes with the revision this store last saw it at
//! (or with absence), so that a write never silently undoes a change it did not know about. A
//! transaction whose answer was lost (etcd unreachable, a leader change) is retried: the
//! comparison makes the retry safe, and a retry that finds the keys already as it wanted them
//! counts as done. A write that finds a key changed by another writer is refused (and the store
//! learns the key's revision, so the next write of it goes through).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn, TxnOp,
};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};

use super::{CatalogStore, Durable, StoreError, StoreFuture, StoreOp, StoredInstance};

/// Most keys one transaction writes: etcd's default `--max-txn-ops`.
const MAX_KEYS_PER_TXN: usize = 128;
/// Keys read per request when the catalog is read back, so that no answer is large.
const READ_PAGE: i64 = 1_000;
/// How long one request to etcd may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a write is retried while etcd cannot be reached before it is refused.
const RETRY_FOR: Duration = Duration::from_secs(3);

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
    async fn connect(&self) -> Result<Client, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), REQUEST_TIMEOUT);
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

    fn catalog_prefix(&self) -> String {
        format!("{}catalog/", self.etcd_prefix)
    }
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
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A batch as the writer takes it: the last word on each ServiceURL it names, a value to put or
/// `None` to delete.
struct Batch {
    words: Folded,
    done: oneshot::Sender<Result<(), StoreError>>,
}

enum Message {
    Write(Batch),
    /// Commit what came before, then stop.
    Stop,
}

impl EtcdStore {
    /// Connects to etcd, reads every stored instance, and starts the writer, timing each commit
    /// in `commit_seconds`.
    pub async fn open(args: &EtcdArgs, commit_seconds: Histogram) -> Result<(Self, Vec<StoredInstance>), StoreError> {
        let client = args.connect().await?;
        let prefix = args.catalog_prefix();
        let (stored, revisions) = read_all(&client, &prefix).await?;
        let (queue, messages) = mpsc::unbounded_channel();
        let writer = Writer {
            client,
            prefix,
            revisions,
            commit_seconds,
        };
        let task = tokio::spawn(writer.run(messages));
        Ok((
            Self {
                queue,
                writer: Mutex::new(Some(task)),
            },
            stored,
        ))
    }
}

impl CatalogStore for EtcdStore {
    /// Queues `ops` to be committed with whatever else is queued.
    fn write(&self, ops: Vec<StoreOp>) -> Durable {
        let (done, durable) = oneshot::channel();
        let words = match fold(&ops) {
            Ok(words) => words,
            Err(error) => {
                let _ = done.send(Err(error));
                return durable;
            }
        };
        if let Err(mpsc::error::SendError(Message::Write(batch))) =
            self.queue.send(Message::Write(Batch { words, done }))
        {
            let _ = batch.done.send(Err(StoreError::closed()));
        }
        durable
    }

    /// Commits what is queued and stops the writer.
    fn close(&self) -> StoreFuture<'_> {
        Box::pin(async {
            let _ = self.queue.send(Message::Stop);
            let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(writer) = writer {
                let _ = writer.await;
            }
        })
    }
}

/// Reads every instance under `prefix`, a page at a time, and the revision each key was last
/// written at.
async fn read_all(client: &Client, prefix: &str) -> Result<(Vec<StoredInstance>, HashMap<String, i64>), StoreError> {
    let mut kv = client.kv_client();
    let end = prefix_end(prefix);
    let (mut stored, mut revisions) = (Vec::new(), HashMap::new());
    let mut from = prefix.as_bytes().to_vec();
    // Every page reads at the revision of the first, so that the pages make one snapshot.
    let mut at = 0;
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
            let url = String::from_utf8_lossy(&entry.key()[prefix.len()..]).into_owned();
            match serde_json::from_slice::<StoredInstance>(entry.value()) {
                Ok(instance) => stored.push(instance),
                // As in the embedded store: an unreadable record is skipped, the instance registers again.
                Err(error) => tracing::warn!(url, %error, "skipping an unreadable stored instance"),
            }
            revisions.insert(url, entry.mod_revision());
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok((stored, revisions)),
        }
    }
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

/// The writer task's state: the client, and the revision of every key as this store last saw it.
struct Writer {
    client: Client,
    prefix: String,
    revisions: HashMap<String, i64>,
    commit_seconds: Histogram,
}

/// The last word on each ServiceURL: a value to put, or `None` to delete.
type Folded = BTreeMap<String, Option<Vec<u8>>>;

impl Writer {
    /// Commits everything queued, answers, repeats until stopped.
    async fn run(mut self, mut messages: mpsc::UnboundedReceiver<Message>) {
        let mut next = None;
        let mut stopping = false;
        loop {
            let first = match next.take() {
                Some(batch) => batch,
                None if stopping => return,
                None => match messages.recv().await {
                    Some(Message::Write(batch)) => batch,
                    Some(Message::Stop) | None => return,
                },
            };
            let mut folded = first.words;
            let mut waiting = vec![first.done];
            while !stopping {
                match messages.try_recv() {
                    Ok(Message::Write(batch)) => {
                        let more = batch.words.keys().filter(|url| !folded.contains_key(*url)).count();
                        if folded.len() + more > MAX_KEYS_PER_TXN {
                            next = Some(batch);
                            break;
                        }
                        folded.extend(batch.words);
                        waiting.push(batch.done);
                    }
                    Ok(Message::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let result = self.commit(&folded).await;
            self.commit_seconds.observe(started.elapsed().as_secs_f64());
            if let Err(error) = &result {
                tracing::error!(%error, "a catalog write to etcd failed");
            }
            for done in waiting {
                let _ = done.send(result.clone());
            }
        }
    }

    /// Commits `folded` as one transaction, retrying while etcd cannot answer.
    async fn commit(&mut self, folded: &Folded) -> Result<(), StoreError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_millis(500))
            .with_jitter()
            .without_max_times()
            .build();
        let started = Instant::now();
        loop {
            match self.try_commit(folded).await {
                Ok(result) => return result,
                Err(error) if started.elapsed() < RETRY_FOR => {
                    tracing::debug!(%error, "etcd did not answer a write; retrying");
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_millis(500))).await;
                }
                Err(error) => return Err(StoreError::new("etcd did not commit the write", error)),
            }
        }
    }

    /// One attempt: `Err` when etcd did not answer, `Ok(result)` when it did.
    async fn try_commit(&mut self, folded: &Folded) -> Result<Result<(), StoreError>, etcd_client::Error> {
        let mut compares = Vec::with_capacity(folded.len());
        let mut ops = Vec::with_capacity(folded.len());
        for (url, value) in folded {
            let key = format!("{}{url}", self.prefix);
            compares.push(match self.revisions.get(url) {
                Some(&revision) => Compare::mod_revision(key.clone(), CompareOp::Equal, revision),
                None => Compare::version(key.clone(), CompareOp::Equal, 0),
            });
            match value {
                Some(value) => ops.push(TxnOp::put(key, value.clone(), None)),
                None if self.revisions.contains_key(url) => ops.push(TxnOp::delete(key, None)),
                // Absent, and to stay absent: the comparison is all there is to do.
                None => {}
            }
        }
        let answer = self
            .client
            .kv_client()
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        if answer.succeeded() {
            let revision = answer.header().map_or(0, etcd_client::ResponseHeader::revision);
            self.learn(
                folded
                    .iter()
                    .map(|(url, value)| (url, value.as_ref().map(|_| revision))),
            );
            return Ok(Ok(()));
        }
        // Someone else's write, or our own whose answer was lost: see which.
        let mut current = Vec::with_capacity(folded.len());
        let mut kv = self.client.kv_client();
        for url in folded.keys() {
            let found = kv.get(format!("{}{url}", self.prefix), None).await?;
            current.push(found.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision())));
        }
        let ours = folded
            .values()
            .zip(&current)
            .all(|(wanted, now)| wanted.as_deref() == now.as_ref().map(|(value, _)| value.as_slice()));
        self.learn(
            folded
                .keys()
                .zip(current.iter().map(|now| now.as_ref().map(|(_, r)| *r))),
        );
        Ok(if ours {
            Ok(())
        } else {
            Err(StoreError::new(
                "cannot write",
                "another writer changed the same instances in etcd",
            ))
        })
    }

    fn learn<'a>(&mut self, revisions: impl Iterator<Item = (&'a String, Option<i64>)>) {
        for (url, revision) in revisions {
            match revision {
                Some(revision) => self.revisions.insert(url.clone(), revision),
                None => self.revisions.remove(url),
            };
        }
    }
}

/// The last word of `ops` on each ServiceURL they name (a later op replaces an earlier one).
/// Refuses a batch that names more instances than one transaction may write.
fn fold(ops: &[StoreOp]) -> Result<Folded, StoreError> {
    let mut folded = Folded::new();
    for op in ops {
        let (url, value) = match op {
            StoreOp::Put(instance) => (
                instance.registration.service_url.clone(),
                Some(serde_json::to_vec(instance).map_err(|e| StoreError::new("cannot encode", e))?),
            ),
            StoreOp::Delete(url) => (url.clone(), None),
        };
        folded.insert(url, value);
    }
    if folded.len() > MAX_KEYS_PER_TXN {
        return Err(StoreError::new(
            "cannot write",
            format!("a batch of more than {MAX_KEYS_PER_TXN} instances does not fit one etcd transaction"),
        ));
    }
    Ok(folded)
}

#[cfg(test)]
pub(super) mod tests {
    use rollcall_testkit::EtcdCluster;

    use super::*;
    use crate::store::contract::{self, Backend, instance};

    /// A store under its own prefix of a one-member etcd started for the test.
    struct Etcd {
        cluster: EtcdCluster,
        args: EtcdArgs,
    }

    impl Etcd {
        fn new() -> Self {
            let cluster = EtcdCluster::start(1);
            let args = args(&cluster.endpoint_list(), "/test/");
            Self { cluster, args }
        }
    }

    fn args(endpoints: &str, prefix: &str) -> EtcdArgs {
        EtcdArgs {
            endpoints: endpoints.split(',').map(str::to_owned).collect(),
            etcd_prefix: prefix.to_owned(),
            ..EtcdArgs::default()
        }
    }

    impl Backend for Etcd {
        const NAME: &'static str = "etcd";

        async fn open(&self) -> (Box<dyn CatalogStore>, Vec<StoredInstance>) {
            let (store, stored) = EtcdStore::open(&self.args, histogram()).await.expect("open");
            (Box::new(store), stored)
        }

        fn location(&self) -> String {
            format!("{} {}", self.cluster.endpoint_list(), self.args.etcd_prefix)
        }
    }

    fn histogram() -> Histogram {
        Histogram::new([1.0])
    }

    /// Opens the store at `location` (endpoints and prefix) for the crash test's child process.
    pub(crate) async fn open_at(location: &str) -> Box<dyn CatalogStore> {
        let (endpoints, prefix) = location.split_once(' ').expect("endpoints and prefix");
        Box::new(
            EtcdStore::open(&args(endpoints, prefix), histogram())
                .await
                .expect("open")
                .0,
        )
    }

    #[tokio::test]
    async fn what_was_acknowledged_is_read_back_after_reopening() {
        contract::what_was_acknowledged_is_read_back_after_reopening(&Etcd::new()).await;
    }

    #[tokio::test]
    async fn batches_take_effect_whole_and_in_the_order_they_were_queued() {
        contract::batches_take_effect_whole_and_in_the_order_they_were_queued(&Etcd::new()).await;
    }

    #[tokio::test]
    async fn writers_queued_together_are_all_acknowledged() {
        contract::writers_queued_together_are_all_acknowledged(&Etcd::new()).await;
    }

    #[tokio::test]
    async fn a_kill_9_between_write_and_acknowledgement_loses_nothing_acknowledged_and_no_half_batch() {
        contract::a_kill_9_between_write_and_acknowledgement_loses_nothing_acknowledged_and_no_half_batch(&Etcd::new())
            .await;
    }

    #[tokio::test]
    async fn registries_under_different_prefixes_do_not_see_each_other() {
        let etcd = Etcd::new();
        let (store, _) = etcd.open().await;
        store
            .write(vec![StoreOp::Put(instance("http://a", 1))])
            .await
            .expect("answered")
            .expect("durable");
        let other = args(&etcd.cluster.endpoint_list(), "/other/");
        let (_, stored) = EtcdStore::open(&other, histogram()).await.expect("open");
        assert!(stored.is_empty(), "{stored:?}");
    }

    #[tokio::test]
    async fn a_write_over_a_change_it_did_not_know_about_is_refused_and_the_next_goes_through() {
        let etcd = Etcd::new();
        let (first, _) = etcd.open().await;
        let (second, _) = etcd.open().await;
        let write = |store: &dyn CatalogStore, version| store.write(vec![StoreOp::Put(instance("http://a", version))]);
        write(&*first, 1)
            .await
            .expect("answered")
            .expect("the first writer creates it");
        let stale = write(&*second, 2).await.expect("answered");
        assert!(
            stale.is_err(),
            "the second writer thought it absent: its write is refused"
        );
        write(&*second, 3)
            .await
            .expect("answered")
            .expect("now it knows the revision");
        let (_, stored) = etcd.open().await;
        assert_eq!(stored, vec![instance("http://a", 3)]);
    }

    #[tokio::test]
    async fn a_write_while_etcd_is_gone_is_refused_in_bounded_time_and_the_store_recovers() {
        let mut etcd = Etcd::new();
        let (store, _) = etcd.open().await;
        etcd.cluster.kill(0);
        let started = Instant::now();
        let refused = store
            .write(vec![StoreOp::Put(instance("http://a", 1))])
            .await
            .expect("answered");
        assert!(refused.is_err(), "nothing committed it");
        assert!(
            started.elapsed() < RETRY_FOR + 2 * REQUEST_TIMEOUT,
            "refused after {:?}",
            started.elapsed()
        );
        etcd.cluster.restart(0);
        let deadline = Instant::now() + rollcall_testkit::DEADLINE;
        loop {
            let written = store
                .write(vec![StoreOp::Put(instance("http://a", 2))])
                .await
                .expect("answered");
            if written.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd back, writes still refused: {written:?}"
            );
        }
        let (_, stored) = etcd.open().await;
        assert_eq!(stored, vec![instance("http://a", 2)]);
    }
}
