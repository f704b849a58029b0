//! The registry as a hostile client meets it: sockets that trickle or idle cannot starve the
//! probes and deliveries of file handles.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rollcall_testkit::{DEADLINE, FakeService, HeartbeatMode, ServerProcess, eventually};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::register;

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

/// Opens up to `count` connections to `address`, 50 at a time (until the server's backlog is
/// full), each then sending a request header one byte a second, until `stop`; returns how many
/// connected.
async fn trickle(address: &str, count: usize, stop: &CancellationToken) -> usize {
    let mut connected = 0;
    for _ in 0..count / 50 {
        let wave = trickle_wave(address, 50, stop).await;
        connected += wave;
        if wave < 25 {
            break; // the backlog is full: the rest would not connect either
        }
    }
    connected
}

async fn trickle_wave(address: &str, count: usize, stop: &CancellationToken) -> usize {
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (address, stop) = (address.to_owned(), stop.clone());
        connecting.spawn(async move {
            // Past the server's backlog a connection is not even made.
            let connect = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(address));
            let Ok(Ok(mut stream)) = connect.await else {
                return false;
            };
            tokio::spawn(async move {
                for byte in b"GET /v1/services HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    if stream.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                }
            });
            true
        });
    }
    connecting
        .join_all()
        .await
        .into_iter()
        .filter(|connected| *connected)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_trickling_sockets_do_not_starve_probes_or_deliveries() {
    // This test's own 2,000 sockets need handles too.
    rollcall_http::raise_open_files_limit();
    // A registry with 1,024 file handles, as on many hosts: before it capped its connections,
    // about 1,100 sockets took them all and its probes failed.
    let data = tempfile::tempdir().expect("data dir");
    let mut command = Command::new("prlimit");
    command
        .arg("--nofile=1024:1024")
        .arg(rollcall())
        .args(["registry", "--listen", "127.0.0.1:0"])
        .args(["--health-interval", "200ms", "--health-timeout", "500ms"])
        .args(["--health-tries", "2", "--health-retry-delay", "100ms"])
        .arg("--data-dir")
        .arg(data.path());
    let registry = ServerProcess::start_command(&mut command);

    let dependent = FakeService::spawn("Portal", &["GradingService"]).await;
    register(&registry, &dependent).await;
    let steady = FakeService::spawn("GradingService", &[]).await;
    // Every probe of it needs a new connection, so a new file handle.
    steady.set_heartbeat(HeartbeatMode::HealthyClosing);
    let failing = FakeService::spawn("GradingService", &[]).await;
    register(&registry, &steady).await;
    register(&registry, &failing).await;
    dependent
        .wait_for_providers(&BTreeSet::from([steady.entry(), failing.entry()]))
        .await;

    let stop = CancellationToken::new();
    let address = registry.url.trim_start_matches("http://").to_owned();
    let connected = trickle(&address, 2_000, &stop).await;
    // More than the registry's 1,024 handles: without a cap on connections they take them all.
    assert!(
        connected > 1_100,
        "only {connected} sockets connected: the test proves nothing"
    );

    // Probing and pushing go on: a provider that fails is removed from its dependent, and the
    // steady one stays.
    let probes = steady.probes();
    failing.set_heartbeat(HeartbeatMode::Failing(axum::http::StatusCode::SERVICE_UNAVAILABLE));
    dependent.wait_for_providers(&BTreeSet::from([steady.entry()])).await;
    eventually("the steady provider to be probed on", DEADLINE, || async {
        (steady.probes() >= probes + 5).then_some(())
    })
    .await;
    assert!(
        dependent.patches().iter().all(|p| !p.removed.contains(&steady.entry())),
        "the steady provider was removed while the sockets trickled: {:?}",
        dependent.patches()
    );
    stop.cancel();
}
