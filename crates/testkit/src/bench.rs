//! What the benchmarks share besides load generation (`wrk`): the verdict a figure earns against
//! its target, computed from the run's own measurement, the registration load's script, etcd's
//! put script, one fan-out through the seed protocol, and the
//! Go original's programs, rebuilt
//! from the protocol and built with Debian's Go, measured in the same run as rollcall.

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{FakeService, eventually};

/// What a benchmark prints after a target: `met` or `NOT met`, from the figure it just measured,
/// so that no verdict is written by hand.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// The flags of a registry measured for throughput: probing every 10 minutes (it is measured on
/// its own), and no instance cap (every request of the registration load adds an instance:
/// hundreds of thousands over a figure).
pub const THROUGHPUT_REGISTRY_FLAGS: [&str; 6] = [
    "--health-interval",
    "10m",
    "--max-instances",
    "100000000",
    "--max-instances-per-service",
    "100000000",
];

/// wrk Lua: every request registers a new instance of the fleet at `fleet_url` (`/i/T-N`, with
/// T the wrk thread and N its request count) through `POST /v1/instances`, with one metadata
/// label, across 100 services: the same body as `Registration` encodes, about 330 bytes.
pub fn registration_script(fleet_url: &str) -> String {
    registration_script_tagged(fleet_url, "")
}

/// [`registration_script`] with instance paths `/i/{tag}T-N`: loads with different tags
/// register different instances (several wrk processes at once, each through its own registry
/// node, would otherwise register the same ones).
pub fn registration_script_tagged(fleet_url: &str, tag: &str) -> String {
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local count = 0
function request()
  count = count + 1
  local url = string.format("{fleet_url}/i/{tag}%d-%d", thread_id, count)
  local body = string.format('{{"ServiceName":"Load%d","ServiceURL":"%s","RequiredServices":[],"ServiceUpdateURL":"%s/services","HeartbeatURL":"%s/heartbeat","Metadata":{{"zone":"a"}}}}', count % 100, url, url, url)
  return wrk.format(nil, "/v1/instances", nil, body)
end
"#
    )
}

/// wrk Lua: every request puts a new 300-byte value under a new key through etcd's HTTP gateway
/// (`POST /v3/kv/put`, base64 in JSON): etcd's own durable write, under the same generator as
/// rollcall's registrations.
pub const ETCD_PUT_SCRIPT: &str = r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- Any run of base64 digits whose length is a multiple of 4 is a valid key or value.
local value = string.rep("eHh4", 100)
local count = 0
function request()
  count = count + 1
  local body = string.format('{"key":"L3NlcnZpY2VzL0xvYWQv%04d%012d","value":"%s"}', thread_id, count, value)
  return wrk.format(nil, "/v3/kv/put", nil, body)
end
"#;

/// Builds the Go program at `source` into `build_dir/name` with Debian's Go (which
/// `scripts/bench` installs); `None` (after saying why) when Go is missing or the build fails.
pub fn build_go(source: &Path, build_dir: &Path, name: &str) -> Option<PathBuf> {
    let binary = build_dir.join(name);
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(source)
        .env("GOCACHE", build_dir.join("go-cache"))
        .env("GOPATH", build_dir.join("go-path"))
        .status();
    if matches!(built, Ok(status) if status.success()) {
        Some(binary)
    } else {
        #[allow(clippy::print_stdout)] // a benchmark's report
        {
            println!(
                "the Go original ({name}): Go is not installed or the build failed (scripts/bench installs Debian's golang-go)"
            );
        }
        None
    }
}

/// One fan-out through the seed protocol of the registry at `base`: registers a new provider of
/// `Fan` and waits until every dependent holds it; then deregisters it and waits until every
/// dependent let go, each wait bounded by `deadline`. Returns the first wait's time.
pub async fn seed_fan_out_once<D: Borrow<FakeService>>(
    http: &reqwest::Client,
    base: &str,
    dependents: &[D],
    deadline: Duration,
) -> Duration {
    let mut provider = FakeService::spawn("Fan", &[]).await;
    // A port the OS hands out again would make an earlier trial's arrival look like this one's.
    while dependents[0].borrow().arrival_of(&provider.entry(), false).is_some() {
        provider = FakeService::spawn("Fan", &[]).await;
    }
    let started = Instant::now();
    let answer = http
        .post(format!("{base}/services"))
        .json(&provider.registration())
        .send()
        .await
        .expect("register");
    assert_eq!(answer.status(), 200);
    let mut last = started;
    for dependent in dependents {
        let at = eventually("every dependent to hold the provider", deadline, || async {
            dependent.borrow().arrival_of(&provider.entry(), false)
        })
        .await;
        last = last.max(at);
    }
    let answer = http
        .delete(format!("{base}/services"))
        .body(provider.url.clone())
        .send()
        .await
        .expect("deregister");
    assert_eq!(answer.status(), 200);
    for dependent in dependents {
        eventually("every dependent to let go", deadline, || async {
            dependent.borrow().arrival_of(&provider.entry(), true)
        })
        .await;
    }
    last - started
}
