//! `kill -9` during a registration load: every acknowledged registration is there after the
//! restart, whether the catalog is in the data directory or in etcd.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rollcall_testkit::{DEADLINE, EtcdCluster, FakeFleet, ServerProcess, eventually};
use rollcall_wire::{InstanceView, ServicesView};
use tokio::task::JoinSet;

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

/// What the registry acknowledged: (ServiceURL, instance id when the v1 API gave one).
pub(crate) type Acknowledged = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Eight clients registering fleet instances `first..` as fast as they are answered, half
/// through the seed protocol and half through `/v1/instances`, until the registry goes away.
pub(crate) fn start_load(base: &str, fleet: &Arc<FakeFleet>, first: usize, acknowledged: &Acknowledged) -> JoinSet<()> {
    let http = reqwest::Client::new();
    let mut clients = JoinSet::new();
    for client in 0..8_usize {
        let (http, fleet, acknowledged) = (http.clone(), Arc::clone(fleet), Arc::clone(acknowledged));
        let base = base.to_owned();
        clients.spawn(async move {
            for n in (first + client..).step_by(8) {
                let registration = fleet.registration(n, "Load");
                let url = registration.service_url.clone();
                let seed = client % 2 == 0;
                let endpoint = if seed { "services" } else { "v1/instances" };
                let Ok(response) = http.post(format!("{base}/{endpoint}")).json(&registration).send().await else {
                    return; // the registry is gone
                };
                let id = match (seed, response.status().as_u16()) {
                    (true, 200) => None,
                    (false, 201) => match response.json::<InstanceView>().await {
                        Ok(view) => Some(view.id),
                        Err(_) => return,
                    },
                    _ => return,
                };
                acknowledged.lock().expect("lock").push((url, id));
            }
        });
    }
    clients
}

pub(crate) async fn wait_for_acknowledged(acknowledged: &Acknowledged, count: usize) {
    eventually(&format!("{count} acknowledged registrations"), DEADLINE, || async {
        (acknowledged.lock().expect("lock").len() >= count).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_registration_survives_kill_9() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    acknowledged_registrations_survive(registry, |registry| registry.kill_and_restart(|_| {})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_registration_in_etcd_survives_kill_9_and_the_loss_of_the_data_directory() {
    let etcd = EtcdCluster::start(1);
    let on_etcd = || {
        ServerProcess::start(rollcall(), "registry", |c| {
            c.args(["--etcd", &etcd.endpoint_list()]);
        })
    };
    // Each restart is on a new, empty data directory: the catalog lives in etcd.
    acknowledged_registrations_survive(on_etcd(), |mut registry| {
        registry.kill();
        on_etcd()
    })
    .await;
}

/// Twice: a registration load, then `restart` (a `kill -9` in the middle of it and a new
/// start); then every acknowledged registration is listed, with the id it was given.
async fn acknowledged_registrations_survive(
    mut registry: ServerProcess,
    restart: impl Fn(ServerProcess) -> ServerProcess,
) {
    let fleet = Arc::new(FakeFleet::spawn().await);
    let acknowledged: Acknowledged = Arc::default();
    for round in 0..2 {
        let clients = start_load(&registry.url, &fleet, round * 1_000_000, &acknowledged);
        wait_for_acknowledged(&acknowledged, 300 * (round + 1)).await;
        registry = restart(registry);
        clients.join_all().await;
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    let listed: ServicesView = reqwest::get(format!("{}/v1/services", registry.url))
        .await
        .expect("GET /v1/services")
        .json()
        .await
        .expect("JSON");
    let instances = listed.service("Load").map(|s| s.instances.clone()).unwrap_or_default();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|(url, _)| !instances.iter().any(|i| &i.url == url))
        .map(|(url, _)| url)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged registrations are missing after kill -9: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
    for (url, id) in &acknowledged {
        if let (Some(id), Some(found)) = (id, instances.iter().find(|i| &i.url == url)) {
            assert_eq!(&found.id, id, "{url} came back with another id");
        }
    }
}

#[tokio::test]
async fn a_truncated_catalog_stops_the_registry_until_repair_keeps_what_is_whole_in_it() {
    let fleet = FakeFleet::spawn().await;
    let mut registry = ServerProcess::start(rollcall(), "registry", |_| {});
    let http = reqwest::Client::new();
    for n in 0..300 {
        let answer = http
            .post(format!("{}/v1/instances", registry.url))
            .json(&fleet.registration(n, "Load"))
            .send()
            .await
            .expect("POST");
        assert_eq!(answer.status(), 201);
    }
    registry.signal("TERM");
    registry.wait_for_exit();
    let data = registry.data_path();
    let catalog = data.join("catalog.redb");
    let bytes = std::fs::read(&catalog).expect("read");
    std::fs::write(&catalog, &bytes[..bytes.len() * 6 / 10]).expect("truncate");

    let refused = std::process::Command::new(rollcall())
        .args(["registry", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run the registry");
    assert!(!refused.status.success(), "a truncated catalog stops the registry");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("cannot open the catalog"), "{said}");

    let repaired = std::process::Command::new(rollcall())
        .args(["repair", "catalog", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run rollcall repair");
    assert!(
        repaired.status.success(),
        "{}",
        String::from_utf8_lossy(&repaired.stderr)
    );
    let report = String::from_utf8_lossy(&repaired.stdout);
    assert!(
        report.contains("moved to") && report.contains("instances still whole"),
        "{report}"
    );

    let registry = registry.restart(|_| {});
    let listed: ServicesView = reqwest::get(format!("{}/v1/services", registry.url))
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    let kept = listed.service("Load").map_or(0, |s| s.instances.len());
    assert!(kept > 0 && kept <= 300, "{kept} of 300 instances kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_configuration_release_survives_kill_9() {
    let registry = ServerProcess::start(rollcall(), "registry", |_| {});
    // Four publishers, each republishing its own document as fast as it is answered.
    let acknowledged: Arc<Mutex<Vec<rollcall_wire::ReleaseView>>> = Arc::default();
    let mut publishers = JoinSet::new();
    for publisher in 0..4 {
        let (base, acknowledged) = (registry.url.clone(), Arc::clone(&acknowledged));
        publishers.spawn(async move {
            let http = reqwest::Client::new();
            for n in 0.. {
                let Ok(response) = http
                    .put(format!("{base}/v1/config/prod/Load/doc{publisher}"))
                    .header("content-type", "application/json")
                    .body(format!("{{\"publisher\": {publisher}, \"n\": {n}}}"))
                    .send()
                    .await
                else {
                    return; // the registry is gone
                };
                let Ok(release) = response.json::<rollcall_wire::ReleaseView>().await else {
                    return;
                };
                acknowledged.lock().expect("lock").push(release);
            }
        });
    }
    eventually("200 acknowledged publishes", DEADLINE, || async {
        (acknowledged.lock().expect("lock").len() >= 200).then_some(())
    })
    .await;
    let registry = registry.kill_and_restart(|_| {});
    publishers.join_all().await;

    let http = reqwest::Client::new();
    let acknowledged = acknowledged.lock().expect("lock").clone();
    for release in &acknowledged {
        let path = format!("/v1/config/{}/{}/{}", release.namespace, release.service, release.name);
        let read = http
            .get(format!("{}{path}?revision={}", registry.url, release.revision))
            .send()
            .await
            .expect("GET");
        assert_eq!(read.status(), 200, "{path} revision {} lost", release.revision);
        assert_eq!(
            read.headers()["x-rollcall-sha256"].to_str().ok(),
            Some(release.sha256.as_str())
        );
    }
}
