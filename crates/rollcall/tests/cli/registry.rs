//! `rollcall registry` as an operator runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rollcall_testkit::DEADLINE;

/// A `rollcall registry` child process on a free port.
struct RegistryProcess {
    child: Child,
    url: String,
    _data_dir: tempfile::TempDir,
}

impl RegistryProcess {
    fn start(configure: impl FnOnce(&mut Command)) -> Self {
        let data_dir = tempfile::tempdir().expect("data dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rollcall"));
        command
            .arg("registry")
            .arg("--data-dir")
            .arg(data_dir.path().join("registry"))
            .env_remove("ROLLCALL_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        configure(&mut command);
        let mut child = command.spawn().expect("spawn rollcall");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the announced address");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|url| url.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Self {
            child,
            url,
            _data_dir: data_dir,
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    fn wait_for_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the registry did not exit within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn services_answer(url: &str) -> u16 {
    reqwest::get(format!("{url}/v1/services"))
        .await
        .expect("GET /v1/services")
        .status()
        .as_u16()
}

#[tokio::test]
async fn prints_its_address_serves_and_stops_on_sigterm() {
    let mut registry = RegistryProcess::start(|c| {
        c.args(["--listen", "127.0.0.1:0"]);
    });
    assert_eq!(services_answer(&registry.url).await, 200);
    registry.signal("TERM");
    assert!(registry.wait_for_exit().success());
}

#[tokio::test]
async fn is_configured_by_environment_and_stops_on_sigint() {
    let mut registry = RegistryProcess::start(|c| {
        c.env("ROLLCALL_LISTEN", "127.0.0.1:0")
            .env("ROLLCALL_HEALTH_INTERVAL", "250ms");
    });
    assert_eq!(services_answer(&registry.url).await, 200);
    registry.signal("INT");
    assert!(registry.wait_for_exit().success());
}

#[test]
fn a_malformed_duration_is_refused_with_a_hint() {
    let output = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["registry", "--listen", "127.0.0.1:0", "--health-interval", "soon"])
        .output()
        .expect("run rollcall");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--health-interval"), "{stderr}");
    assert!(
        stderr.contains("250ms"),
        "the error shows how to write a duration: {stderr}"
    );
}
