//! Real etcd for tests: [`EtcdCluster`] starts one or more `etcd` members (Debian's etcd-server,
//! installed by `scripts/install test`) as child processes in a temporary directory, and can
//! kill and restart single members, to take the cluster's quorum away and give it back.
//!
//! Clients reach each member on a loopback port the operating system picked (etcd is started on
//! port 0 and the port is read from its log); members reach each other over unix sockets in the
//! cluster's directory, so no peer port has to be guessed free in advance. A restarted member
//! listens on the port it had, so the endpoints a registry was given stay right.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::DEADLINE;

/// How etcd says where it serves clients: `... serving insecure client requests on 127.0.0.1:PORT, ...`.
const SERVING: &str = "serving insecure client requests on ";

/// A running etcd cluster; every member is killed when it is dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    child: Option<Child>,
    port: u16,
}

impl EtcdCluster {
    /// Starts a cluster of `size` members and waits until every one serves clients (which etcd
    /// does only once the cluster has a leader).
    pub fn start(size: usize) -> Self {
        Self::start_with(size, false)
    }

    /// Like [`Self::start`], with etcd's HTTP gateway (`/v3/kv/put` in JSON) serving on the
    /// client ports too, for benchmarks that drive etcd with the same HTTP load generator as
    /// rollcall. The gateway dials the client port it was given, so the ports are picked free
    /// beforehand (a port taken in between fails the start: a benchmark, not a test, uses it).
    pub fn start_with_gateway(size: usize) -> Self {
        Self::start_with(size, true)
    }

    fn start_with(size: usize, gateway: bool) -> Self {
        assert!(size > 0, "a cluster has members");
        let dir = tempfile::tempdir().expect("etcd dir");
        let port = || if gateway { free_port() } else { 0 };
        let starting: Vec<_> = (0..size).map(|n| spawn(dir.path(), size, n, port())).collect();
        let members = starting
            .into_iter()
            .map(|(child, port)| Member {
                child: Some(child),
                port: port.recv_timeout(DEADLINE).expect("etcd serves clients in time"),
            })
            .collect();
        Self { dir, members }
    }

    /// Every member's client URL, `http://127.0.0.1:PORT`, killed members included.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.port))
            .collect()
    }

    /// [`Self::endpoints`] as `--etcd` takes them, comma-separated.
    pub fn endpoint_list(&self) -> String {
        self.endpoints().join(",")
    }

    /// Whether etcd is installed (`scripts/install test` installs it).
    pub fn installed() -> bool {
        Command::new("etcd")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The process id of member `n`, while it runs.
    pub fn pid(&self, n: usize) -> Option<u32> {
        self.members[n].child.as_ref().map(Child::id)
    }

    /// Kills member `n` with SIGKILL and waits until it is gone.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut child) = self.members[n].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `n` again on its data and its port, after [`Self::kill`]. Returns at once:
    /// a member alone without quorum does not serve clients until its peers are back.
    pub fn restart(&mut self, n: usize) {
        assert!(self.members[n].child.is_none(), "member {n} is running");
        let (child, _) = spawn(self.dir.path(), self.members.len(), n, self.members[n].port);
        self.members[n].child = Some(child);
    }
}

impl EtcdCluster {
    /// Every key under `prefix` and its value (as text), read from the first live member.
    pub async fn read_prefix(&self, prefix: &str) -> BTreeMap<String, String> {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.port))
            .collect();
        let client = etcd_client::Client::connect(endpoints, None)
            .await
            .expect("connect to etcd");
        let read = client
            .kv_client()
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("read from etcd");
        read.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for n in 0..self.members.len() {
            self.kill(n);
        }
    }
}

/// Starts member `n` of `size` in `dir` on client port `port` (0: any), and hands back a
/// receiver of the port it serves on. A thread reads its log to the end, so that etcd never
/// blocks on a full pipe.
fn spawn(dir: &Path, size: usize, n: usize, port: u16) -> (Child, mpsc::Receiver<u16>) {
    let peer = |m: usize| format!("unix://localhost:{}", m + 1);
    let cluster: Vec<String> = (0..size).map(|m| format!("m{m}={}", peer(m))).collect();
    let client = format!("http://127.0.0.1:{port}");
    let mut child = Command::new("etcd")
        .current_dir(dir)
        .args(["--name", &format!("m{n}")])
        .args(["--data-dir", &format!("m{n}.data")])
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args([
            "--listen-peer-urls",
            &peer(n),
            "--initial-advertise-peer-urls",
            &peer(n),
        ])
        .args(["--initial-cluster", &cluster.join(",")])
        .args([
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "rollcall-test",
        ])
        // Elections in half a second instead of one, so that losing a member costs tests less.
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .arg(format!("--enable-grpc-gateway={}", port != 0))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start etcd ({e}): scripts/install test installs it"));
    let log = BufReader::new(child.stderr.take().expect("stderr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in log.lines().map_while(Result::ok) {
            if let Some(port) = serving_port(&line) {
                let _ = tx.send(port);
            }
        }
    });
    (child, rx)
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn serving_port(line: &str) -> Option<u16> {
    let address = line.split_once(SERVING)?.1;
    let port = address.split_once(':')?.1;
    let digits = port.find(|c: char| !c.is_ascii_digit()).unwrap_or(port.len());
    port[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::serving_port;

    #[test]
    fn the_client_port_is_read_from_etcds_log() {
        let line = "2026-12-03 17:57:42.459629 N | embed: serving insecure client requests on 127.0.0.1:40511, this is strongly discouraged!";
        assert_eq!(serving_port(line), Some(40511));
        assert_eq!(serving_port("embed: ready to serve client requests"), None);
    }
}
