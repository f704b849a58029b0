//! The real `rollcall` binary as a child process: started on a free port with a temporary data
//! directory, its announced address read from stdout, stopped by signal or `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::DEADLINE;

/// A running `rollcall <subcommand>` child.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The base URL it announced, `http://127.0.0.1:PORT`.
    pub url: String,
    binary: std::path::PathBuf,
    subcommand: String,
    data_dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Runs `binary subcommand --listen 127.0.0.1:0 --data-dir <temp>`, with `configure` adding
    /// flags or variables, and waits for the address line on stdout.
    pub fn start(binary: &Path, subcommand: &str, configure: impl FnOnce(&mut Command)) -> Self {
        Self::start_in(binary, subcommand, tempfile::tempdir().expect("data dir"), configure)
    }

    /// Kills the child with SIGKILL (no chance to flush or clean up), then starts the same
    /// subcommand on the same data directory, with `configure` adding flags again.
    #[must_use = "the restarted process is stopped when dropped"]
    pub fn kill_and_restart(mut self, configure: impl FnOnce(&mut Command)) -> Self {
        self.kill();
        self.restart(configure)
    }

    /// Kills the child with SIGKILL and waits until it is gone.
    pub fn kill(&mut self) {
        self.signal("KILL");
        self.wait_for_exit();
    }

    /// Starts the same subcommand again on the same data directory, once the child has exited.
    #[must_use = "the restarted process is stopped when dropped"]
    pub fn restart(mut self, configure: impl FnOnce(&mut Command)) -> Self {
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().expect("data dir"));
        Self::start_in(&self.binary, &self.subcommand, data_dir, configure)
    }

    /// Runs `command` (any server that prints `... http://127.0.0.1:PORT` as its first line)
    /// and waits for that line.
    pub fn start_command(command: &mut Command) -> Self {
        let binary = std::path::PathBuf::from(command.get_program());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("spawn server");
        let url = read_announced_url(&mut child);
        let data_dir = tempfile::tempdir().expect("data dir");
        Self {
            child,
            url,
            binary,
            subcommand: String::new(),
            data_dir,
        }
    }

    fn start_in(
        binary: &Path,
        subcommand: &str,
        data_dir: tempfile::TempDir,
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let mut command = Command::new(binary);
        command
            .arg(subcommand)
            .arg("--data-dir")
            .arg(data_dir.path().join(subcommand))
            .env_remove("ROLLCALL_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        configure(&mut command);
        if !command.get_args().any(|a| a == "--listen")
            && command.get_envs().all(|(k, v)| k != "ROLLCALL_LISTEN" || v.is_none())
        {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = command.spawn().expect("spawn rollcall");
        let url = read_announced_url(&mut child);
        Self {
            child,
            url,
            binary: binary.to_owned(),
            subcommand: subcommand.to_owned(),
            data_dir,
        }
    }

    /// Its data directory (`--data-dir`), where the registry writes `admin.token`.
    pub fn data_path(&self) -> std::path::PathBuf {
        self.data_dir.path().join(&self.subcommand)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends signal `name` (`TERM`, `INT`, `KILL`, ...) to the child.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the child to exit, failing the test after [`DEADLINE`].
    pub fn wait_for_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the process did not exit within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads the child's first stdout line and takes the URL it ends with.
fn read_announced_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the announced address");
    line.trim()
        .rsplit(' ')
        .next()
        .filter(|url| url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"))
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned()
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) process `pid` has used so far, and its resident set in bytes,
/// read from `/proc`.
pub fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ).
    #[allow(clippy::cast_precision_loss)] // ticks stay far below 2^52
    let seconds = ticks as f64 / 100.0;
    (seconds, rss_kib * 1024)
}
