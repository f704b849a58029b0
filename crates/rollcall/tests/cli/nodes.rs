//! Several registry nodes over one etcd cluster: what is registered, drained or deregistered
//! through any node is what every node lists, and survives the loss of a node.

use std::path::Path;
use std::sync::Arc;

use rollcall_testkit::{DEADLINE, EtcdCluster, FakeFleet, ServerProcess, eventually, http_client};
use rollcall_wire::{InstanceState, InstanceView, ServicesView};

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
async fn a_drain_and_a_deregistration_through_one_node_are_seen_by_the_others() {
    let etcd = EtcdCluster::start(1);
    let (a, b) = (node(&etcd), node(&etcd));
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

    let removed = http
        .delete(format!("{}/v1/instances/{}", b.url, registered.id))
        .send()
        .await
        .expect("deregister");
    assert_eq!(removed.status(), 204);
    eventually("a no longer lists it", DEADLINE, || async {
        listed(&a, "Load").await.is_empty().then_some(())
    })
    .await;
}
