//! What the benchmarks share besides load generation (`wrk`): the verdict a figure earns against
//! its target, computed from the run's own measurement, the registration load's script, and the
//! Go original's programs, rebuilt
//! from the protocol and built with Debian's Go, measured in the same run as rollcall.

use std::path::{Path, PathBuf};
use std::process::Command;

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
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local count = 0
function request()
  count = count + 1
  local url = string.format("{fleet_url}/i/%d-%d", thread_id, count)
  local body = string.format('{{"ServiceName":"Load%d","ServiceURL":"%s","RequiredServices":[],"ServiceUpdateURL":"%s/services","HeartbeatURL":"%s/heartbeat","Metadata":{{"zone":"a"}}}}', count % 100, url, url, url)
  return wrk.format(nil, "/v1/instances", nil, body)
end
"#
    )
}

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
