//! Every service observed: a real Prometheus (Debian's, installed by `scripts/install test`)
//! finds the four services through the registry's HTTP service discovery, with the
//! `prometheus.yml` of docs/examples, scrapes each one's `/metrics`, and follows an instance
//! that leaves; and the registry and the log service keep their own records in the log store.

use std::path::Path;
use std::process::Stdio;

use rollcall_testkit::{DEADLINE, eventually, get_json, http_client};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::system::{next_line, spawn_up, urls_printed};

/// Prometheus with the documented configuration pointed at `registry`, every interval 1 s, on
/// a port it picks; its API's base URL, read back from its log.
async fn start_prometheus(dir: &Path, registry: &str) -> (tokio::process::Child, String) {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/prometheus.yml"
    ))
    .expect("docs/examples/prometheus.yml");
    let config = example
        .replace("http://127.0.0.1:3000", registry)
        .replace("15s", "1s")
        .replace("30s", "1s");
    assert_ne!(
        config, example,
        "the example names the registry and intervals the test replaces"
    );
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).expect("write the configuration");
    let mut child = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", file.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus runs: scripts/install test installs it");
    // Prometheus logs the port it took: `msg="Listening on" address=127.0.0.1:PORT`.
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let address = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.contains("msg=\"Listening on\"")
                && let Some(address) = line.split("address=").nth(1)
            {
                return address.trim().to_owned();
            }
        }
        panic!("prometheus stopped before it listened")
    })
    .await
    .expect("prometheus listens in time");
    // Keep reading what it logs, so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{address}"))
}

/// Prometheus' active targets: each one's `service` and `instance_id` labels and its health.
async fn targets(prometheus: &str) -> Option<Vec<(String, String, String)>> {
    let answer: Value = get_json(&format!("{prometheus}/api/v1/targets?state=active")).await?;
    let targets = answer["data"]["activeTargets"].as_array()?;
    Some(
        targets
            .iter()
            .map(|t| {
                let label = |name: &str| t["labels"][name].as_str().unwrap_or_default().to_owned();
                (
                    label("service"),
                    label("instance_id"),
                    t["health"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_discovers_and_scrapes_every_service_through_the_registry_and_follows_one_leaving() {
    let data = tempfile::tempdir().expect("data dir");
    let mut up = spawn_up(data.path());
    let mut lines = tokio::io::BufReader::new(up.stdout.take().expect("stdout")).lines();
    let urls = urls_printed(&mut lines, 4).await;
    next_line(&mut lines).await;
    let (_prometheus, api) = start_prometheus(data.path(), &urls["registry"]).await;

    let services = ["GradingService", "LogService", "Portal", "Registry"];
    let up_targets = eventually("every service scraped by Prometheus", DEADLINE * 3, || async {
        let targets = targets(&api).await?;
        let all_up = services.iter().all(|s| {
            targets
                .iter()
                .any(|(service, _, health)| service == s && health == "up")
        });
        all_up.then_some(targets)
    })
    .await;

    // What each scrape found: every service's build, process and request figures.
    for url in [&urls["registry"], &urls["logs"], &urls["grades"], &urls["portal"]] {
        let text = http_client()
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text");
        for metric in [
            "rollcall_build_info{",
            "rollcall_process_cpu_seconds_total ",
            "rollcall_process_resident_memory_bytes ",
            "rollcall_process_open_fds ",
            "rollcall_process_start_time_seconds ",
            "rollcall_http_request_duration_seconds_count{route=\"/metrics\",status=\"2xx\"}",
        ] {
            assert!(text.contains(metric), "{url}/metrics has no {metric}:\n{text}");
        }
    }

    // The portal's instance leaves the catalog: Prometheus stops scraping it (the portal, still
    // running, registers again as a new instance, which Prometheus may find meanwhile).
    let (_, portal_id, _) = up_targets
        .iter()
        .find(|(service, _, _)| service == "Portal")
        .expect("the portal's target")
        .clone();
    let gone = http_client()
        .delete(format!("{}/v1/instances/{portal_id}", urls["registry"]))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(gone.status(), 204);
    eventually(
        "the portal's instance dropped from Prometheus' targets",
        DEADLINE,
        || async {
            let targets = targets(&api).await?;
            (!targets.iter().any(|(_, id, _)| *id == portal_id)).then_some(())
        },
    )
    .await;

    // The registry and the log service keep their own records in the log store too (the log
    // service without a loop through HTTP), the registry naming the instance by its API id.
    let records = |query: &str| {
        let url = format!("{}/v1/records?{query}", urls["logs"]);
        async move {
            let page: rollcall_wire::RecordPage = get_json(&url).await?;
            Some(page.records)
        }
    };
    eventually("the registry's own records in the log store", DEADLINE, || async {
        let own = records("service=registry&contains=instance%20deregistered").await?;
        own.iter()
            .any(|r| r.fields.get("instance").and_then(Value::as_str) == Some(portal_id.as_str()))
            .then_some(())
    })
    .await;
    eventually("the log service's own records in its store", DEADLINE, || async {
        let own = records("service=LogService").await?;
        (!own.is_empty()).then_some(())
    })
    .await;
    drop(up);
}
