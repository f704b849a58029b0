//! The contract suite every [`CatalogStore`] backend passes (see the module docs of `store`).
//!
//! A backend's tests implement [`Backend`] (how to open the store over one durable location,
//! again as a restart would) and call each function here from a test of the same name. The
//! crash test runs a writer in a child process, this same test binary re-run with
//! [`crash_child`] selected, and kills it with SIGKILL while writes are in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rollcall_wire::Registration;

use super::{CatalogStore, StoreOp, StoredInstance};
use crate::state::Registrant;

/// One backend under test.
pub(crate) trait Backend: Sync {
    /// The name [`crash_child`] knows the backend by.
    const NAME: &'static str;

    /// Opens the store over this backend's durable location, as a (re)start would.
    async fn open(&self) -> (Box<dyn CatalogStore>, Vec<StoredInstance>);

    /// The durable location, for the crash test's child process.
    fn location(&self) -> String;
}

/// An instance at `url` whose metadata says `version`.
pub(crate) fn instance(url: &str, version: u64) -> StoredInstance {
    let registration = Registration {
        service_name: "A".to_owned(),
        service_url: url.to_owned(),
        required_services: vec!["B".to_owned()],
        service_update_url: format!("{url}/services"),
        heartbeat_url: format!("{url}/heartbeat"),
    };
    StoredInstance {
        metadata: BTreeMap::from([("version".to_owned(), version.to_string())]),
        registrant: Registrant {
            peer: Some(std::net::IpAddr::from([192, 0, 2, 7])),
            token: Some("0123456789abcdef".to_owned()),
        },
        // A chosen check: the stores keep it too.
        check: rollcall_wire::Check::ttl(Duration::from_secs(5)),
        draining: true,
        config_url: Some(format!("{url}/config")),
        ..StoredInstance::new(format!("id-{url}"), registration, SystemTime::UNIX_EPOCH)
    }
}

async fn write(store: &dyn CatalogStore, ops: Vec<StoreOp>) {
    store.write(ops).await.expect("answered").expect("durable");
}

/// What was read back, by ServiceURL, as it was written (without the revision a shared store
/// reads it at).
pub(crate) fn by_url(stored: Vec<StoredInstance>) -> BTreeMap<String, StoredInstance> {
    stored
        .into_iter()
        .map(|s| (s.registration.service_url.clone(), StoredInstance { revision: 0, ..s }))
        .collect()
}

/// Restore, replace, delete, close: what was acknowledged is what a reopened store reads.
pub(crate) async fn what_was_acknowledged_is_read_back_after_reopening(backend: &impl Backend) {
    {
        let (store, stored) = backend.open().await;
        assert!(stored.is_empty(), "a new store is empty");
        let writes: Vec<_> = (0..100)
            .map(|n| store.write(vec![StoreOp::Put(instance(&format!("http://{n}"), 1))]))
            .collect();
        for write in writes {
            write.await.expect("answered").expect("durable");
        }
        write(&*store, vec![StoreOp::Delete("http://7".to_owned())]).await;
        write(&*store, vec![StoreOp::Put(instance("http://1", 2))]).await;
        store.close().await;
        let late = store
            .write(vec![StoreOp::Delete("http://1".to_owned())])
            .await
            .expect("answered");
        assert!(late.is_err(), "a closed store refuses writes");
    }
    let (store, stored) = backend.open().await;
    let stored = by_url(stored);
    assert_eq!(stored.len(), 99);
    assert!(!stored.contains_key("http://7"), "a deleted instance stays deleted");
    assert_eq!(
        stored["http://1"],
        instance("http://1", 2),
        "the later put replaced the first"
    );
    assert_eq!(stored["http://2"], instance("http://2", 1));
    store.close().await;
}

/// Batches queued back to back, without waiting, take effect in their order and each whole.
pub(crate) async fn batches_take_effect_whole_and_in_the_order_they_were_queued(backend: &impl Backend) {
    {
        let (store, _) = backend.open().await;
        let queued = [
            store.write(vec![
                StoreOp::Put(instance("http://a", 1)),
                StoreOp::Put(instance("http://b", 1)),
            ]),
            store.write(vec![StoreOp::Put(instance("http://a", 2))]),
            store.write(vec![StoreOp::Delete("http://b".to_owned())]),
            store.write(vec![
                StoreOp::Put(instance("http://b", 3)),
                StoreOp::Delete("http://a".to_owned()),
            ]),
            store.write(vec![StoreOp::Put(instance("http://a", 4))]),
        ];
        for durable in queued {
            durable.await.expect("answered").expect("durable");
        }
        store.close().await;
    }
    let (store, stored) = backend.open().await;
    assert_eq!(
        by_url(stored),
        BTreeMap::from([
            ("http://a".to_owned(), instance("http://a", 4)),
            ("http://b".to_owned(), instance("http://b", 3)),
        ])
    );
    store.close().await;
}

/// Many writers at once (what group commit is for) are each acknowledged, and each kept.
pub(crate) async fn writers_queued_together_are_all_acknowledged(backend: &impl Backend) {
    const WRITERS: u64 = 1_000;
    {
        let (store, _) = backend.open().await;
        let store: std::sync::Arc<dyn CatalogStore> = std::sync::Arc::from(store);
        let mut writers = tokio::task::JoinSet::new();
        for n in 0..WRITERS {
            let store = std::sync::Arc::clone(&store);
            writers.spawn(async move { write(&*store, vec![StoreOp::Put(instance(&format!("http://{n}"), n))]).await });
        }
        while let Some(joined) = writers.join_next().await {
            joined.expect("a writer panicked");
        }
        store.close().await;
    }
    let (store, stored) = backend.open().await;
    let stored = by_url(stored);
    assert_eq!(stored.len() as u64, WRITERS);
    assert!((0..WRITERS).all(|n| stored[&format!("http://{n}")] == instance(&format!("http://{n}"), n)));
    store.close().await;
}

/// The env variable that makes [`crash_child`] run, naming the backend.
const CHILD_BACKEND: &str = "ROLLCALL_CONTRACT_CHILD_BACKEND";
/// The env variable giving [`crash_child`] the durable location.
const CHILD_LOCATION: &str = "ROLLCALL_CONTRACT_CHILD_LOCATION";
/// Batches the child keeps in flight.
const IN_FLIGHT: u64 = 8;
/// Acknowledged batches the parent waits for before it kills the child.
const ACKED_BEFORE_KILL: u64 = 200;

/// Batch `n`: puts `n/a` and `n/b`, and deletes `(n-1)/b`, so that a half-applied batch, or one
/// applied out of order, shows in what a reopened store reads.
fn batch(n: u64) -> Vec<StoreOp> {
    let mut ops = vec![
        StoreOp::Put(instance(&format!("http://{n}/a"), n)),
        StoreOp::Put(instance(&format!("http://{n}/b"), n)),
    ];
    if let Some(previous) = n.checked_sub(1) {
        ops.push(StoreOp::Delete(format!("http://{previous}/b")));
    }
    ops
}

/// A writer in a child process is killed with SIGKILL while batches are in flight: every
/// batch it saw acknowledged is kept, and the batches kept are a prefix of those queued, each
/// whole.
pub(crate) async fn a_kill_9_between_write_and_acknowledgement_loses_nothing_acknowledged_and_no_half_batch<
    B: Backend,
>(
    backend: &B,
) {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "store::contract::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_BACKEND, B::NAME)
        .env(CHILD_LOCATION, backend.location())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the writer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut acked = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.is_none_or(|n| n < ACKED_BEFORE_KILL) {
        assert!(Instant::now() < deadline, "the writer acknowledged too little in time");
        let line = lines.next().expect("the writer ended early").expect("read");
        if let Some(n) = line.strip_prefix("acked ") {
            acked = Some(n.parse::<u64>().expect("a batch number"));
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // Acknowledgements printed before the kill are acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("acked ") {
            acked = Some(n.parse::<u64>().expect("a batch number"));
        }
    }
    let acked = acked.expect("acknowledged");

    let (store, stored) = backend.open().await;
    let stored = by_url(stored);
    let kept = (0..=stored.len() as u64)
        .take_while(|n| stored.contains_key(&format!("http://{n}/a")))
        .count() as u64;
    assert!(
        kept > acked,
        "batch {acked} was acknowledged, only {kept} batches were kept"
    );
    let mut expected = BTreeMap::new();
    for n in 0..kept {
        for op in batch(n) {
            match op {
                StoreOp::Put(instance) => expected.insert(instance.registration.service_url.clone(), instance),
                StoreOp::Delete(url) => expected.remove(&url),
                StoreOp::Health(_) | StoreOp::Held(_) => None,
            };
        }
    }
    let extra: BTreeSet<&String> = stored.keys().filter(|url| !expected.contains_key(*url)).collect();
    assert!(
        extra.is_empty(),
        "kept beyond the first {kept} batches, or half of one: {extra:?}"
    );
    assert_eq!(stored, expected, "the first {kept} batches, each whole");
    store.close().await;
}

/// The crash test's writer: does nothing unless run by it. Writes [`batch`]es with
/// [`IN_FLIGHT`] of them queued at a time, printing `acked N` as each is acknowledged, until
/// killed (or, if nobody kills it, after a bound).
#[test]
#[allow(clippy::print_stdout)]
fn crash_child() {
    let (Ok(backend), Ok(location)) = (std::env::var(CHILD_BACKEND), std::env::var(CHILD_LOCATION)) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = match backend.as_str() {
            "redb" => super::redb::tests::open_at(&location),
            "etcd" => super::etcd::tests::open_at(&location).await,
            other => panic!("no backend {other}"),
        };
        let mut in_flight = std::collections::VecDeque::new();
        for n in 0..100_000 {
            in_flight.push_back((n, store.write(batch(n))));
            if in_flight.len() as u64 >= IN_FLIGHT {
                let (n, durable) = in_flight.pop_front().expect("in flight");
                durable.await.expect("answered").expect("durable");
                println!("acked {n}");
            }
        }
    });
}
