//! Several registry nodes over one etcd cluster: what is registered, drained or deregistered
//! through any node is what every node lists, and survives the loss of a node; the probing is
//! shared out, and a killed node's share is taken over.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rollcall_testkit::{
    DEADLINE, EtcdCluster, FakeFleet, FakeService, HeartbeatMode, ServerProcess, TcpProxy, eventually, get_json,
    http_client,
};
use rollcall_wire::{InstanceState, InstanceView, NodesView, ServicesView};

use crate::durability::{Acknowledged, start_load, wait_for_acknowledged};

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

/// A registry node over `etcd`, with its own data directory.
fn node(etcd: &EtcdCluster) -> ServerProcess {
    ServerProcess::start(rollcall(), "registry", |c| {
        c.args(["--etcd", &etcd.endpoint_list()]);
    })
}

/// The instances of `service` node `at` lists.
async fn listed(at: &ServerProcess, service: &str) -> Vec<InstanceView> {
    let Ok(answer) = http_client().get(format!("{}/v1/services", at.url)).send().await else {
        return Vec::new();
    };
    let listed: ServicesView = answer.json().await.expect("JSON");
    listed.service(service).map(|s| s.instances.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_through_every_node_are_listed_by_the_others_after_one_is_killed() {
    let etcd = EtcdCluster::start(3);
    let mut nodes: Vec<ServerProcess> = (0..3).map(|_| node(&etcd)).collect();
    let fleet = Arc::new(FakeFleet::spawn().await);
    let acknowledged: Acknowledged = Arc::default();
    let loads: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| start_load(&node.url, &fleet, n * 1_000_000, &acknowledged))
        .collect();
    wait_for_acknowledged(&acknowledged, 600).await;
    nodes[0].kill();
    // The load through the killed node ends; the others' is stopped here.
    let acknowledged_by_now = acknowledged.lock().expect("lock").len();
    wait_for_acknowledged(&acknowledged, acknowledged_by_now + 30).await;
    for mut load in loads {
        load.abort_all();
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    for survivor in &nodes[1..] {
        eventually("every acknowledged registration listed", DEADLINE, || async {
            let instances = listed(survivor, "Load").await;
            acknowledged
                .iter()
                .all(|(url, id)| {
                    instances
                        .iter()
                        .any(|i| &i.url == url && id.as_ref().is_none_or(|id| &i.id == id))
                })
                .then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_drain_through_one_node_holds_on_the_others_and_across_its_death_and_a_deregistration_too() {
    let etcd = EtcdCluster::start(1);
    let (mut a, b) = (node(&etcd), node(&etcd));
    let fleet = FakeFleet::spawn().await;
    let http = http_client();
    let registered: InstanceView = http
        .post(format!("{}/v1/instances", a.url))
        .json(&fleet.registration(1, "Load"))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("JSON");
    let state_on_b = || async {
        listed(&b, "Load")
            .await
            .iter()
            .find(|i| i.id == registered.id)
            .map(|i| i.state)
    };
    eventually("b lists it, probed alive", DEADLINE, || async {
        (state_on_b().await == Some(InstanceState::Passing)).then_some(())
    })
    .await;

    let drained = http
        .post(format!("{}/v1/instances/{}/drain", a.url, registered.id))
        .send()
        .await
        .expect("drain");
    assert!(drained.status().is_success(), "{}", drained.status());
    eventually("b has it drained", DEADLINE, || async {
        (state_on_b().await == Some(InstanceState::Draining)).then_some(())
    })
    .await;

    // The node the drain went through dies; a new node starts: the drain holds everywhere.
    a.kill();
    let c = node(&etcd);
    for live in [&b, &c] {
        eventually("two live nodes, a's share taken over", DEADLINE, || async {
            nodes_seen_by(live).await.filter(|v| v.live && v.nodes.len() == 2)
        })
        .await;
    }
    let drained_on = |at: &ServerProcess| {
        let at = at.url.clone();
        let id = registered.id.clone();
        async move {
            let listed: ServicesView = get_json(&format!("{at}/v1/services")).await?;
            listed
                .service("Load")?
                .instances
                .iter()
                .find(|i| i.id == id)
                .map(|i| i.state)
        }
    };
    assert_eq!(drained_on(&b).await, Some(InstanceState::Draining));
    assert_eq!(
        drained_on(&c).await,
        Some(InstanceState::Draining),
        "read from etcd at start"
    );

    let removed = http
        .delete(format!("{}/v1/instances/{}", b.url, registered.id))
        .send()
        .await
        .expect("deregister");
    assert_eq!(removed.status(), 204);
    eventually("c no longer lists it", DEADLINE, || async {
        listed(&c, "Load").await.is_empty().then_some(())
    })
    .await;
}

/// A registry node over `etcd` that probes every 250 ms (3 tries 100 ms apart) and holds its
/// place with a 1 s lease, so that a test sees a failover within seconds.
fn quick_node(etcd: &EtcdCluster) -> ServerProcess {
    ServerProcess::start(rollcall(), "registry", |c| {
        c.args(["--etcd", &etcd.endpoint_list(), "--node-ttl", "1s"])
            .args(["--health-interval", "250ms", "--health-timeout", "100ms"])
            .args(["--health-tries", "3", "--health-retry-delay", "100ms"]);
    })
}

async fn nodes_seen_by(node: &ServerProcess) -> Option<NodesView> {
    get_json(&format!("{}/v1/nodes", node.url)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probing_is_shared_out_and_a_killed_nodes_share_is_taken_over_within_3_seconds() {
    const PROVIDERS: usize = 24;
    let etcd = EtcdCluster::start(3);
    let mut nodes: Vec<ServerProcess> = (0..3).map(|_| quick_node(&etcd)).collect();
    let mut providers = Vec::new();
    for _ in 0..PROVIDERS {
        let provider = FakeService::spawn("P", &[]).await;
        crate::register(&nodes[1], &provider).await;
        providers.push(provider);
    }
    let dependent = FakeService::spawn("D", &["P"]).await;
    crate::register(&nodes[2], &dependent).await;
    let all: BTreeSet<_> = providers.iter().map(FakeService::entry).collect();
    dependent.wait_for_providers(&all).await;

    // Every node sees all three, and the shares add up to the catalog, each node with some.
    let mut shares = Vec::new();
    for node in &nodes {
        let seen = eventually("three live nodes", DEADLINE, || async {
            nodes_seen_by(node).await.filter(|v| v.live && v.nodes.len() == 3)
        })
        .await;
        shares.push(
            seen.nodes
                .iter()
                .map(|n| (n.id.clone(), n.instances))
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        shares.windows(2).all(|w| w[0] == w[1]),
        "every node computes the same shares: {shares:?}"
    );
    assert_eq!(shares[0].iter().map(|(_, n)| n).sum::<usize>(), PROVIDERS + 1);
    let killed_id = nodes_seen_by(&nodes[0]).await.expect("nodes").this;
    let killed_share = shares[0].iter().find(|(id, _)| *id == killed_id).map_or(0, |(_, n)| *n);
    assert!(killed_share > 0, "the node to kill probes some instances: {shares:?}");

    nodes[0].kill();
    let killed = Instant::now();
    for provider in &providers {
        provider.set_heartbeat(HeartbeatMode::Failing(StatusCode::SERVICE_UNAVAILABLE));
    }
    eventually("every failed provider removed from the dependent", DEADLINE, || async {
        dependent.providers().is_empty().then_some(())
    })
    .await;
    let last_removal = providers
        .iter()
        .filter_map(|p| dependent.arrival_of(&p.entry(), true))
        .max()
        .expect("removals arrived");
    let failover = last_removal.duration_since(killed);
    assert!(
        failover < Duration::from_secs(3),
        "the last failure reached the dependent {failover:?} after the kill"
    );
    for survivor in &nodes[1..] {
        let seen = nodes_seen_by(survivor).await.expect("nodes");
        assert_eq!(seen.nodes.len(), 2, "{seen:?}");
    }
}

/// The instances of `service` node `at` lists as passing.
async fn passing(at: &ServerProcess, service: &str) -> BTreeSet<String> {
    listed(at, service)
        .await
        .into_iter()
        .filter(|i| i.state == InstanceState::Passing)
        .map(|i| i.url)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_etcd_stops_probing_within_its_lease_and_the_others_take_its_share() {
    let etcd = EtcdCluster::start(1);
    let target = etcd.endpoints()[0]
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let proxy = TcpProxy::start(target).await;
    let cut = ServerProcess::start(rollcall(), "registry", |c| {
        c.args(["--etcd", &proxy.url(), "--node-ttl", "1s"])
            .args(["--health-interval", "250ms", "--health-timeout", "100ms"])
            .args(["--health-tries", "3", "--health-retry-delay", "100ms"]);
    });
    let others = [quick_node(&etcd), quick_node(&etcd)];
    let mut providers = Vec::new();
    for _ in 0..12 {
        let provider = FakeService::spawn("P", &[]).await;
        crate::register(&others[0], &provider).await;
        providers.push(provider);
    }
    let dependent = FakeService::spawn("D", &["P"]).await;
    crate::register(&others[1], &dependent).await;
    for node in [&cut, &others[0], &others[1]] {
        eventually("three live nodes", DEADLINE, || async {
            nodes_seen_by(node).await.filter(|v| v.live && v.nodes.len() == 3)
        })
        .await;
    }

    proxy.sever();
    let severed = Instant::now();
    eventually("the cut node knows it is not live", DEADLINE, || async {
        nodes_seen_by(&cut).await.filter(|v| !v.live)
    })
    .await;
    assert!(
        severed.elapsed() < Duration::from_secs(1),
        "it stopped {:?} after the cut, past its 1 s lease",
        severed.elapsed()
    );
    let probes_when_stopped: u64 = providers.iter().map(FakeService::probes).sum();
    for node in &others {
        eventually("the others see two nodes", DEADLINE, || async {
            nodes_seen_by(node).await.filter(|v| v.nodes.len() == 2)
        })
        .await;
    }
    // Half the providers fail: the remaining nodes find it and tell the dependent.
    for provider in &providers[..6] {
        provider.set_heartbeat(HeartbeatMode::Failing(StatusCode::SERVICE_UNAVAILABLE));
    }
    let alive: BTreeSet<_> = providers[6..].iter().map(FakeService::entry).collect();
    dependent.wait_for_providers(&alive).await;
    let catalog = passing(&others[0], "P").await;
    let held: BTreeSet<String> = dependent.providers().into_iter().map(|e| e.url).collect();
    assert_eq!(held, catalog, "the dependent holds what the catalog offers");
    assert!(
        providers.iter().map(FakeService::probes).sum::<u64>() > probes_when_stopped,
        "the others probe"
    );

    proxy.heal();
    eventually("the cut node holds its place again", DEADLINE, || async {
        nodes_seen_by(&cut).await.filter(|v| v.live && v.nodes.len() == 3)
    })
    .await;
}

/// How many patches `dependent` received that add `entry`.
fn times_added(dependent: &FakeService, entry: &rollcall_wire::PatchEntry) -> usize {
    dependent.patches().iter().filter(|p| p.added.contains(entry)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_reaches_a_dependent_from_one_node_and_a_killed_nodes_dependents_are_served_by_the_others() {
    let etcd = EtcdCluster::start(1);
    let mut nodes: Vec<ServerProcess> = (0..3).map(|_| quick_node(&etcd)).collect();
    for node in &nodes {
        eventually("three live nodes", DEADLINE, || async {
            nodes_seen_by(node).await.filter(|v| v.live && v.nodes.len() == 3)
        })
        .await;
    }
    // Twelve dependents: the node killed below delivers to some of them but for a chance of
    // (2/3)^12, under 1 %.
    let mut dependents = Vec::new();
    for n in 0..12 {
        let dependent = FakeService::spawn("D", &["P"]).await;
        crate::register(&nodes[n % 3], &dependent).await;
        dependents.push(dependent);
    }
    let mut providers = Vec::new();
    for n in 0..6 {
        let provider = FakeService::spawn("P", &[]).await;
        crate::register(&nodes[n % 3], &provider).await;
        providers.push(provider);
    }
    let all: BTreeSet<_> = providers.iter().map(FakeService::entry).collect();
    for dependent in &dependents {
        dependent.wait_for_providers(&all).await;
    }
    // Every node saw every change; each dependent was told of each provider by one node, once.
    for dependent in &dependents {
        for provider in &providers {
            assert_eq!(
                times_added(dependent, &provider.entry()),
                1,
                "{:?}",
                dependent.patches()
            );
        }
    }
    // What each dependent acknowledged is shared (a patch delivered just before a node dies
    // may be sent again by the next: at least once; here the kill waits until it is shared).
    eventually("every acknowledgement shared in etcd", DEADLINE, || async {
        let held = etcd.read_prefix("/rollcall/held/").await;
        let shared = dependents.iter().all(|d| {
            held.get(&format!("/rollcall/held/{}", d.registration().service_url))
                .is_some_and(|value| providers.iter().all(|p| value.contains(&p.registration().service_url)))
        });
        shared.then_some(())
    })
    .await;

    nodes[0].kill();
    let late = FakeService::spawn("P", &[]).await;
    crate::register(&nodes[1], &late).await;
    for dependent in &dependents {
        eventually("the new provider reaches every dependent", DEADLINE, || async {
            dependent.providers().contains(&late.entry()).then_some(())
        })
        .await;
        for provider in &providers {
            assert_eq!(
                times_added(dependent, &provider.entry()),
                1,
                "a dependent taken over resumes from what it acknowledged: {:?}",
                dependent.patches()
            );
        }
    }
}

/// Registers fleet instance `n` through `node`; the answer's status and JSON body.
async fn register_v1(node: &ServerProcess, fleet: &FakeFleet, n: usize) -> (u16, serde_json::Value) {
    let answer = http_client()
        .post(format!("{}/v1/instances", node.url))
        .json(&fleet.registration(n, "Load"))
        .send()
        .await
        .expect("POST /v1/instances");
    (answer.status().as_u16(), answer.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_etcds_quorum_refuses_writes_serves_marked_reads_and_loses_nothing_acknowledged() {
    let mut etcd = EtcdCluster::start(3);
    let nodes = [quick_node(&etcd), quick_node(&etcd)];
    let fleet = FakeFleet::spawn().await;
    let mut acknowledged = BTreeSet::new();
    for n in 0..20 {
        let (status, body) = register_v1(&nodes[n % 2], &fleet, n).await;
        assert_eq!(status, 201, "{body}");
        acknowledged.insert(fleet.registration(n, "Load").service_url);
    }

    etcd.kill(1);
    etcd.kill(2);
    let (status, body) = register_v1(&nodes[0], &fleet, 100).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "storage_unavailable", "{body}");
    for node in &nodes {
        let answer = eventually("a read marked stale", DEADLINE, || async {
            let answer = http_client()
                .get(format!("{}/v1/services", node.url))
                .send()
                .await
                .ok()?;
            answer.headers().contains_key("x-rollcall-stale").then_some(answer)
        })
        .await;
        assert_eq!(answer.status(), 200);
        let listed: ServicesView = answer.json().await.expect("JSON");
        let urls: BTreeSet<String> = listed
            .service("Load")
            .map(|s| s.instances.iter().map(|i| i.url.clone()).collect())
            .unwrap_or_default();
        assert!(
            acknowledged.is_subset(&urls),
            "reads are served from what the node holds"
        );
    }

    etcd.restart(1);
    etcd.restart(2);
    for (n, node) in nodes.iter().enumerate() {
        eventually("writes go through again", DEADLINE, || async {
            // A retry of a registration refused before may find it applied (200) or not (201).
            matches!(register_v1(node, &fleet, 200 + n).await.0, 200 | 201).then_some(())
        })
        .await;
        acknowledged.insert(fleet.registration(200 + n, "Load").service_url);
    }
    // The refused registration was not acknowledged: etcd may have dropped it, or (its
    // proposal waiting in a member) committed it once the quorum was back. Either way both
    // nodes come to list it exactly when etcd holds it.
    let refused = fleet.registration(100, "Load").service_url;
    let key = format!("/rollcall/catalog/{refused}");
    eventually("the refused registration listed as etcd holds it", DEADLINE, || async {
        let in_etcd = !etcd.read_prefix(&key).await.is_empty();
        for node in &nodes {
            if listed(node, "Load").await.iter().any(|i| i.url == refused) != in_etcd {
                return None;
            }
        }
        Some(())
    })
    .await;
    let kept = etcd.read_prefix("/rollcall/catalog/").await;
    for url in &acknowledged {
        assert!(kept.contains_key(&format!("/rollcall/catalog/{url}")), "{url} was lost");
    }
    for node in &nodes {
        eventually("every acknowledged registration listed, unmarked", DEADLINE, || async {
            let answer = http_client()
                .get(format!("{}/v1/services", node.url))
                .send()
                .await
                .ok()?;
            if answer.headers().contains_key("x-rollcall-stale") {
                return None;
            }
            let listed: ServicesView = answer.json().await.ok()?;
            let urls: BTreeSet<String> = listed
                .service("Load")
                .map(|s| s.instances.iter().map(|i| i.url.clone()).collect())
                .unwrap_or_default();
            acknowledged.is_subset(&urls).then_some(())
        })
        .await;
    }
}

/// Publishes `body` as the next release of `document` (`namespace/service/name`, with a query
/// if any) through `node`; the status.
async fn publish(node: &ServerProcess, document: &str, body: &str) -> u16 {
    http_client()
        .put(format!("{}/v1/config/{document}", node.url))
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .map_or(0, |answer| answer.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_published_through_one_node_reaches_the_streams_of_the_others_and_a_node_started_later_and_reports_reach_every_node()
 {
    let etcd = EtcdCluster::start(1);
    let (a, b) = (node(&etcd), node(&etcd));
    let mut stream =
        rollcall_testkit::SseClient::connect(&format!("{}/v1/config/prod/GradingService", b.url), None).await;
    let first = stream.next().await.expect("an event");
    assert_eq!(first.event, "ready", "nothing published yet");

    assert_eq!(publish(&a, "prod/GradingService/limits", "limit = 1").await, 201);
    let message = stream.next().await.expect("a release through b's stream");
    assert_eq!(message.event, "release");
    let release: rollcall_wire::ReleaseEvent = message.json();
    assert_eq!((release.content.as_str(), release.release.revision), ("limit = 1", 1));

    // b publishes the next release over what a published; a serves it too.
    assert_eq!(publish(&b, "prod/GradingService/limits", "limit = 2").await, 200);
    eventually("a serves b's release", DEADLINE, || async {
        let answer = http_client()
            .get(format!("{}/v1/config/prod/GradingService/limits", a.url))
            .send()
            .await
            .ok()?;
        (answer.text().await.ok()? == "limit = 2").then_some(())
    })
    .await;
    // An instance attached to b reports to b; a counts the report.
    let grades = FakeService::spawn("GradingService", &[]).await;
    let instance: InstanceView = http_client()
        .post(format!("{}/v1/instances", b.url))
        .json(&grades.registration())
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("instance");
    let ack = serde_json::json!({"instance": instance.id, "revision": 2, "status": "applied"});
    let reported = http_client()
        .post(format!("{}/v1/config/prod/GradingService/limits/acks", b.url))
        .json(&ack)
        .send()
        .await
        .expect("POST acks");
    assert_eq!(reported.status(), 204);
    eventually("a counts the report made to b", DEADLINE, || async {
        let status: rollcall_wire::RolloutStatus =
            get_json(&format!("{}/v1/config/prod/GradingService/limits/status", a.url)).await?;
        (status.total == 1 && status.applied == 1).then_some(())
    })
    .await;

    // A node started now reads every retained release from etcd, history included.
    let c = node(&etcd);
    eventually("c has the history", DEADLINE, || async {
        let history: serde_json::Value =
            get_json(&format!("{}/v1/config/prod/GradingService/limits/history", c.url)).await?;
        (history.to_string().matches("\"revision\"").count() == 2).then_some(())
    })
    .await;
}

/// `GET /v1/services/Load` on `node` with `query`: the index it reflects and its instances' URLs.
async fn load_listing(node: &ServerProcess, query: &str) -> (u64, BTreeSet<String>) {
    let answer = http_client()
        .get(format!("{}/v1/services/Load{query}", node.url))
        .send()
        .await
        .expect("GET");
    let index = answer.headers()["x-rollcall-index"]
        .to_str()
        .expect("text")
        .parse()
        .expect("a number");
    let view: rollcall_wire::ServiceView = answer.json().await.expect("JSON");
    (index, view.instances.into_iter().map(|i| i.url).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_query_and_an_event_stream_moved_to_another_node_resume_without_a_gap() {
    let etcd = EtcdCluster::start(1);
    let (a, b) = (node(&etcd), node(&etcd));
    let fleet = FakeFleet::spawn().await;
    for n in 0..3 {
        assert_eq!(register_v1(&a, &fleet, n).await.0, 201);
    }
    // The index means the same on both nodes, once both took every change in (the three first
    // probes included: a pending instance's first passing probe is a change that would answer
    // the blocking query below before the registration it waits for).
    let (index, urls) = eventually("both nodes at the same index, all passing", DEADLINE, || async {
        let passing = |instances: Vec<InstanceView>| {
            instances.len() == 3 && instances.iter().all(|i| i.state == InstanceState::Passing)
        };
        if !(passing(listed(&a, "Load").await) && passing(listed(&b, "Load").await)) {
            return None;
        }
        let (on_a, urls) = load_listing(&a, "").await;
        let (on_b, _) = load_listing(&b, "").await;
        (on_a == on_b).then_some((on_a, urls))
    })
    .await;
    assert_eq!(urls.len(), 3);

    // A client that read a's index waits on b: b holds it until the next change.
    let waiting = {
        let b_url = b.url.clone();
        tokio::spawn(async move {
            let answer = http_client()
                .get(format!("{b_url}/v1/services/Load?index={index}&wait=9s"))
                .send()
                .await
                .expect("GET");
            let moved: u64 = answer.headers()["x-rollcall-index"]
                .to_str()
                .expect("text")
                .parse()
                .expect("number");
            let view: rollcall_wire::ServiceView = answer.json().await.expect("JSON");
            (moved, view.instances.len())
        })
    };
    // An event stream read on a up to now moves to b with its last id.
    let mut on_a = rollcall_testkit::SseClient::connect(&format!("{}/v1/events", a.url), None).await;
    let reset = on_a.next().await.expect("the reset");
    assert_eq!(reset.event, "reset");
    let last_seen = reset.id.clone().expect("an id");

    assert_eq!(register_v1(&a, &fleet, 3).await.0, 201);
    let (moved, count) = waiting.await.expect("the blocking query");
    assert!(
        moved > index,
        "it answered on the change, with a later index: {moved} after {index}"
    );
    assert_eq!(count, 4, "it answered with the change");
    eventually("both nodes at the same index again", DEADLINE, || async {
        let (on_a, _) = load_listing(&a, "").await;
        let (on_b, _) = load_listing(&b, "").await;
        (on_a == on_b && on_a >= moved).then_some(())
    })
    .await;

    let mut on_b = rollcall_testkit::SseClient::connect(&format!("{}/v1/events", b.url), Some(&last_seen)).await;
    // Every event after the client's last one, from b: no reset, and the change made since.
    let added = fleet.registration(3, "Load").service_url;
    loop {
        let message = tokio::time::timeout(DEADLINE, on_b.next())
            .await
            .expect("an event in time")
            .expect("an event");
        assert_ne!(message.event, "reset", "b resumes a's stream: no reset");
        if message.event == "registered" && message.data.contains(&added) {
            break;
        }
    }
}

/// The status of `GET /v1/services` on `node` presenting `token`.
async fn read_with(node: &ServerProcess, token: &str) -> u16 {
    http_client()
        .get(format!("{}/v1/services", node.url))
        .bearer_auth(token)
        .send()
        .await
        .map_or(0, |answer| answer.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_issued_or_revoked_through_one_node_is_verified_or_refused_by_the_others() {
    let etcd = EtcdCluster::start(1);
    let start = || {
        ServerProcess::start(rollcall(), "registry", |c| {
            c.args(["--etcd", &etcd.endpoint_list(), "--require-tokens"]);
        })
    };
    let (a, b) = (start(), start());
    let admin = std::fs::read_to_string(a.data_path().join("admin.token")).expect("a's admin token");
    let admin = admin.trim();
    eventually("a's admin token verified by b", DEADLINE, || async {
        (read_with(&b, admin).await == 200).then_some(())
    })
    .await;

    let created: rollcall_wire::CreatedToken = http_client()
        .post(format!("{}/v1/tokens", a.url))
        .bearer_auth(admin)
        .json(&rollcall_wire::NewToken {
            name: "dashboard".to_owned(),
            scopes: vec![rollcall_wire::Scope::Read],
        })
        .send()
        .await
        .expect("POST /v1/tokens")
        .json()
        .await
        .expect("the token");
    eventually("the new token verified by b", DEADLINE, || async {
        (read_with(&b, &created.token).await == 200).then_some(())
    })
    .await;

    let revoked = http_client()
        .delete(format!("{}/v1/tokens/{}", b.url, created.view.id))
        .bearer_auth(admin)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        read_with(&b, &created.token).await,
        401,
        "refused where revoked, at once"
    );
    eventually("the revoked token refused by a", DEADLINE, || async {
        (read_with(&a, &created.token).await == 401).then_some(())
    })
    .await;
    // A node started now knows the tokens of the others, and not the revoked one.
    let c = start();
    eventually("a's admin token verified by c", DEADLINE, || async {
        (read_with(&c, admin).await == 200).then_some(())
    })
    .await;
    assert_eq!(read_with(&c, &created.token).await, 401);
}

/// What `node` answers instance `id` reads of `prod/Load/limits`.
async fn limits_for(node: &ServerProcess, id: &str) -> String {
    let Ok(answer) = http_client()
        .get(format!("{}/v1/config/prod/Load/limits?instance={id}", node.url))
        .send()
        .await
    else {
        return String::new();
    };
    answer.text().await.unwrap_or_default()
}

/// The revision of the next release `stream` sends.
async fn next_revision(stream: &mut rollcall_testkit::SseClient) -> u64 {
    loop {
        let message = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("an event in time")
            .expect("an event");
        if message.event == "release" {
            return message.json::<rollcall_wire::ReleaseEvent>().release.revision;
        }
    }
}

async fn limits_rollout(node: &ServerProcess) -> Option<rollcall_wire::RolloutView> {
    let status: rollcall_wire::RolloutStatus =
        get_json(&format!("{}/v1/config/prod/Load/limits/status", node.url)).await?;
    status.rollout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gray_rollout_reaches_the_instances_of_every_node_and_outlives_the_node_moving_it_on() {
    let etcd = EtcdCluster::start(1);
    let nodes = [quick_node(&etcd), quick_node(&etcd)];
    let fleet = FakeFleet::spawn().await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let (status, view) = register_v1(&nodes[0], &fleet, n).await;
        assert_eq!(status, 201);
        ids.push(view["id"].as_str().expect("an id").to_owned());
    }
    for node in &nodes {
        eventually("two live nodes, both instances passing", DEADLINE, || async {
            let live = nodes_seen_by(node).await.is_some_and(|v| v.live && v.nodes.len() == 2);
            (live && passing(node, "Load").await.len() == 2).then_some(())
        })
        .await;
    }
    assert_eq!(publish(&nodes[0], "prod/Load/limits", "one").await, 201);
    // The gray instance's stream is held by the node that did not publish the candidate.
    let (gray, other) = (&ids[0], &ids[1]);
    let mut stream =
        rollcall_testkit::SseClient::connect(&format!("{}/v1/config/prod/Load?instance={gray}", nodes[0].url), None)
            .await;
    assert_eq!(next_revision(&mut stream).await, 1);

    let rollout = format!("prod/Load/limits?rollout=instances:{gray},100&bake=2s");
    assert_eq!(publish(&nodes[1], &rollout, "two").await, 200);
    assert_eq!(
        next_revision(&mut stream).await,
        2,
        "the other node sends its gray instance the candidate"
    );
    for node in &nodes {
        eventually(
            "every node answers each instance what it is to run",
            DEADLINE,
            || async {
                (limits_for(node, gray).await == "two" && limits_for(node, other).await == "one").then_some(())
            },
        )
        .await;
    }
    // Both nodes name the same node as the one moving it on; kill that one.
    let mover = eventually("the rollout running on both nodes", DEADLINE, || async {
        let (first, second) = (limits_rollout(&nodes[0]).await?, limits_rollout(&nodes[1]).await?);
        (first.state == "running" && first.node.is_some() && first.node == second.node).then_some(first.node)
    })
    .await
    .expect("a node");
    let mut killed = None;
    let mut survivor = None;
    for node in nodes {
        if nodes_seen_by(&node).await.expect("nodes").this == mover {
            killed = Some(node);
        } else {
            survivor = Some(node);
        }
    }
    let (mut killed, survivor) = (killed.expect("the mover"), survivor.expect("the other"));
    killed.kill();

    // The survivor takes the rollout over: its next step after the bake, then the promotion.
    eventually("the rollout promoted by the surviving node", DEADLINE, || async {
        let view = limits_rollout(&survivor).await?;
        (view.state == "promoted").then_some(())
    })
    .await;
    assert_eq!(
        limits_for(&survivor, other).await,
        "two",
        "revision 2 in force for everyone"
    );
    let in_etcd = etcd.read_prefix("/rollcall/rollouts/").await;
    assert_eq!(in_etcd.len(), 1, "one rollout kept in etcd: {in_etcd:?}");
}
