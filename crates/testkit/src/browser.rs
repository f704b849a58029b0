//! A real browser for tests: Debian's headless Chromium driven over WebDriver by its
//! ChromeDriver (`chromium` and `chromium-driver`, which `.ci/run` installs), on a loopback port.
//!
//! Screenshots go to `target/screenshots/`, where a person can look at what the test saw.
//!
//! ChromeDriver runs in a process group of its own, which the Chromium processes it starts
//! join; however a test ends (a failed assertion unwinds through [`Browser`]'s `Drop`), the
//! whole group is killed, so no headless browser outlives its test.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::json;

use crate::{DEADLINE, eventually};

/// Where ChromeDriver and Chromium are installed by Debian's packages.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium session.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Browser")
    }
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a headless Chromium session with a
    /// window of `width` × `height`.
    pub async fn start(width: u32, height: u32) -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "browser tests need Debian's chromium and chromium-driver: run scripts/install-test-deps (.ci/run does)"
        );
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("address").port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        eventually("chromedriver to listen", DEADLINE, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions", format!("--window-size={width},{height}")],
            }),
        );
        let client = tokio::time::timeout(Duration::from_secs(30), async {
            ClientBuilder::rustls()
                .expect("TLS roots")
                .capabilities(capabilities)
                .connect(&url)
                .await
        })
        .await
        .expect("a browser session within 30 s")
        .expect("a browser session");
        Self { client, driver }
    }

    /// Saves a PNG of the viewport as `target/screenshots/{name}.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session, then ChromeDriver and every browser process.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    /// Kills ChromeDriver's process group: the driver and every Chromium process it started.
    fn kill_all(&mut self) {
        let group = i32::try_from(self.driver.id()).ok().and_then(Pid::from_raw);
        if let Some(group) = group {
            let _ = kill_process_group(group, Signal::KILL);
        }
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_all();
    }
}
