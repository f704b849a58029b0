//! The etcd store against a real etcd started for each test: the catalog-store contract, and
//! what sharing one etcd between nodes adds (prefixes apart, the feed, conflicts, health kept
//! apart, etcd away).

use std::time::Instant;

use rollcall_testkit::EtcdCluster;

use super::*;
use crate::store::Change;
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
        let (store, stored, _) = EtcdStore::open(&self.args, histogram()).await.expect("open");
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
    let (_, stored, _) = EtcdStore::open(&other, histogram()).await.expect("open");
    assert!(stored.is_empty(), "{stored:?}");
}

async fn write(store: &EtcdStore, ops: Vec<StoreOp>) -> Result<(), StoreError> {
    store.write(ops).await.expect("answered")
}

/// The next change fed that is not the echo of a write of the node's own.
async fn next(feed: &mut Feed) -> Change {
    loop {
        let item = tokio::time::timeout(rollcall_testkit::DEADLINE, feed.recv())
            .await
            .expect("a change in time")
            .expect("the feed is open");
        if !matches!(item.change, Change::Echo(_)) {
            return item.change;
        }
    }
}

fn put(url: &str, version: u64) -> Vec<StoreOp> {
    vec![StoreOp::Put(instance(url, version))]
}

#[tokio::test]
async fn each_node_is_fed_the_changes_the_others_make_and_not_its_own() {
    let etcd = Etcd::new();
    let (a, _, mut a_feed) = EtcdStore::open(&etcd.args, histogram()).await.expect("open");
    let (b, _, mut b_feed) = EtcdStore::open(&etcd.args, histogram()).await.expect("open");
    write(&a, put("http://a", 1)).await.expect("durable");
    assert_eq!(next(&mut b_feed).await, Change::One(put("http://a", 1).remove(0)));
    write(&b, vec![StoreOp::Delete("http://a".to_owned())])
        .await
        .expect("b knows the revision it was fed");
    assert_eq!(
        next(&mut a_feed).await,
        Change::One(StoreOp::Delete("http://a".to_owned()))
    );
    write(&a, put("http://z", 1)).await.expect("durable");
    assert_eq!(
        next(&mut b_feed).await,
        Change::One(put("http://z", 1).remove(0)),
        "nothing of b's own came between"
    );
    let mut echoed = Vec::new();
    while let Ok(item) = a_feed.try_recv() {
        echoed.push(item.change);
    }
    assert!(
        echoed.iter().all(|c| matches!(c, Change::Echo(_))),
        "a's own writes come back only as echoes: {echoed:?}"
    );
}

#[tokio::test]
async fn a_write_over_a_change_a_node_was_not_told_of_is_refused_and_its_catalog_corrected() {
    let etcd = Etcd::new();
    let (first, _, _) = EtcdStore::open(&etcd.args, histogram()).await.expect("open");
    // The second node is cut from its feed's news: it learns nothing of the first's write
    // until its own write finds it (as when two nodes register one address at once).
    let (second, _, mut corrections) = EtcdStore::open(&etcd.args, histogram()).await.expect("open");
    second.stop.cancel();
    write(&first, put("http://a", 1)).await.expect("created");
    let stale = write(&second, put("http://a", 2)).await;
    assert!(stale.is_err(), "the second node thought it absent: refused");
    assert_eq!(
        next(&mut corrections).await,
        Change::One(put("http://a", 1).remove(0)),
        "its catalog is told what etcd holds"
    );
    write(&second, put("http://a", 3))
        .await
        .expect("now it knows the revision");
    let (_, stored) = etcd.open().await;
    assert_eq!(
        contract::by_url(stored).into_values().collect::<Vec<_>>(),
        vec![instance("http://a", 3)]
    );
}
/// A document with release 1 in force and candidate 2 rolling out, and the operations that
/// made them.
fn rolling_out() -> (crate::releases::Documents, DocKey, Vec<ReleaseOp>) {
    use crate::releases::{Documents, Draft, rollout::Selector};
    let key = DocKey::new("prod", "A", "limits").expect("key");
    let draft = |content: &str, rollout| Draft {
        format: rollcall_wire::ConfigFormat::Text,
        content: content.to_owned(),
        author: "ops".to_owned(),
        message: String::new(),
        expected: None,
        rolled_back_from: None,
        rollout,
        at: std::time::SystemTime::UNIX_EPOCH,
    };
    let mut documents = Documents::new();
    let (_, mut ops) = documents.publish(&key, draft("v1", None)).expect("first");
    let plan = Some((vec![Selector::Percent(50)], Duration::from_secs(60)));
    ops.extend(documents.publish(&key, draft("v2", plan)).expect("candidate").1);
    (documents, key, ops)
}

async fn share(store: &EtcdStore, ops: &[ReleaseOp]) -> Result<(), StoreError> {
    store.share(ops).await.expect("answered")
}

#[tokio::test]
async fn a_rollouts_state_moved_on_by_two_nodes_at_once_is_kept_once_and_the_loser_told() {
    let etcd = Etcd::new();
    let (a, _, _) = EtcdStore::open(&etcd.args, histogram()).await.expect("open");
    let (mut on_a, key, ops) = rolling_out();
    let (mut on_b, _, _) = rolling_out();
    share(&a, &ops).await.expect("published");
    // b read the candidate and its rollout, then is cut from its feed (as when two nodes move
    // one rollout on at the same moment).
    let (b, _, mut b_feed) = EtcdStore::open(&etcd.args, histogram()).await.expect("open");
    let mut handed = Vec::new();
    while handed.len() < 3 {
        handed.push(next(&mut b_feed).await);
    }
    assert!(
        matches!(handed.last(), Some(Change::Rollout(kept)) if kept.rollout.candidate == 2),
        "a node starting is handed the releases, then their rollouts: {handed:?}"
    );
    b.stop.cancel();

    let (_, aborted) = on_a.settle(&key, false, "aborted by ops".to_owned()).expect("aborted");
    share(&a, &aborted).await.expect("a's abort is kept");
    let (_, promoted) = on_b.settle(&key, true, String::new()).expect("promoted");
    assert!(share(&b, &promoted).await.is_err(), "b's promotion over it is refused");
    let told = next(&mut b_feed).await;
    assert!(
        matches!(&told, Change::Rollout(kept) if kept.rollout.view().state == "rolled_back"),
        "b is told the state etcd keeps: {told:?}"
    );
}
#[tokio::test]
async fn health_is_kept_apart_read_back_with_its_instance_and_deleted_with_it() {
    let etcd = Etcd::new();
    let (store, _, _) = EtcdStore::open(&etcd.args, histogram()).await.expect("open");
    let health = |url: &str| {
        StoreOp::Health(SharedHealth {
            url: url.to_owned(),
            state: rollcall_wire::InstanceState::Critical,
            checked_at: None,
        })
    };
    let mut ops = put("http://a", 1);
    ops.push(health("http://a"));
    ops.extend(put("http://b", 1));
    ops.push(health("http://b"));
    write(&store, ops).await.expect("durable");
    write(&store, vec![StoreOp::Delete("http://b".to_owned())])
        .await
        .expect("durable");
    let (_, stored, _) = EtcdStore::open(&etcd.args, histogram()).await.expect("open");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].health, Some(rollcall_wire::InstanceState::Critical));
    let client = etcd.args.connect().await.expect("connect");
    let left = client
        .kv_client()
        .get("/test/health/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .expect("get");
    assert_eq!(left.kvs().len(), 1, "the deleted instance's health went with it");
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
    assert_eq!(
        contract::by_url(stored).into_values().collect::<Vec<_>>(),
        vec![instance("http://a", 2)]
    );
}

#[test]
fn a_node_lease_lives_whole_seconds_and_an_endpoint_is_an_http_url() {
    assert_eq!(parse_ttl("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_ttl("1m"), Ok(Duration::from_secs(60)));
    assert!(parse_ttl("500ms").is_err());
    assert!(parse_ttl("1500ms").is_err());
    assert!(parse_ttl("0s").is_err());
    assert_eq!(
        parse_endpoint(" http://10.0.0.1:2379/ "),
        Ok("http://10.0.0.1:2379".to_owned())
    );
    assert!(parse_endpoint("https://etcd.internal:2379").is_ok());
    assert!(parse_endpoint("10.0.0.1:2379").is_err());
    assert!(parse_endpoint("unix:///run/etcd.sock").is_err());
}

#[tokio::test]
async fn a_node_starting_after_a_promotion_is_handed_the_candidate_in_force() {
    let etcd = Etcd::new();
    let (a, _, _) = EtcdStore::open(&etcd.args, histogram()).await.expect("open");
    let (mut documents, key, ops) = rolling_out();
    share(&a, &ops).await.expect("published");
    let (_, promoted) = documents.settle(&key, true, String::new()).expect("promoted");
    share(&a, &promoted).await.expect("promoted");

    let (_, _, mut feed) = EtcdStore::open(&etcd.args, histogram()).await.expect("open");
    let candidate = loop {
        if let Change::Release(release) = next(&mut feed).await
            && release.meta.revision == 2
        {
            break release;
        }
    };
    assert!(!candidate.meta.staged, "written staged once, handed over promoted");
}
