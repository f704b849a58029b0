//! `rollcall up`: the whole system from one command, as four child processes of this same binary
//! (registry, log service, grading service, portal), each on its default port with its data under
//! one directory.
//!
//! Child processes keep each service what it is in production: its own process, its own log
//! shipping under its own name, its own memory to measure. They start in dependency order, each
//! once the one before announced its address; `up` prints every URL. Ctrl-C or SIGTERM stops them
//! in reverse order (the portal first, the registry last), each with SIGTERM and a deadline.
//!
//! Each child's log goes to `up`'s stderr, every line prefixed with the child's name.
//!
//! A child that exits on its own is started again (`--restart on-failure`, the default) after a
//! wait of 1 s doubling to 30 s, back to 1 s once it has run for a minute, while the others keep
//! running: the portal answers its 503 page while grading is down and recovers by itself. Each
//! restart is printed with how the child ended. `--restart never` stops everything instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rustix::process::{Pid, Signal, kill_process};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::serve::announce;

/// How long each child may take to stop after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// How long each child may take to announce its address.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Where the four services listen and keep their data.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The directory holding each service's data (`registry/`, `logs/`, `grades/`).
    #[arg(long, env = "ROLLCALL_DATA_DIR", default_value = "./rollcall-data")]
    data_dir: PathBuf,
    /// The registry's address.
    #[arg(long, default_value = "127.0.0.1:3000")]
    registry_listen: SocketAddr,
    /// The log service's address.
    #[arg(long, default_value = "127.0.0.1:4000")]
    logs_listen: SocketAddr,
    /// The grading service's address.
    #[arg(long, default_value = "127.0.0.1:6000")]
    grades_listen: SocketAddr,
    /// The portal's address.
    #[arg(long, default_value = "127.0.0.1:5050")]
    portal_listen: SocketAddr,
    /// What to do when a service exits on its own: start it again, or stop everything.
    #[arg(long, value_enum, default_value = "on-failure")]
    restart: Restart,
}

/// `--restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Restart {
    /// Start it again, with backoff, while the others keep running.
    OnFailure,
    /// Stop every service and exit with an error.
    Never,
}

/// The first wait before a restart; it doubles with each restart in a row.
const FIRST_RESTART_WAIT: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const MAX_RESTART_WAIT: Duration = Duration::from_secs(30);
/// A child that ran this long is healthy again: its next restart waits the first wait.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// One started child and the URL it announced.
struct Started {
    name: &'static str,
    child: Child,
    url: String,
    /// Its command line, to start it again.
    argv: Vec<String>,
    /// When it was started.
    since: tokio::time::Instant,
    /// Restarts in a row without a healthy minute between them.
    restarts: u32,
}

/// Starts the four services, prints their URLs, and stops them all on a signal.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let mut started: Vec<Started> = Vec::new();
    let outcome = start_all(&args, &mut started).await;
    let outcome = match outcome {
        Ok(()) => {
            announce(&format!(
                "rollcall is up: open {} (Ctrl-C stops everything)",
                started.last().map_or("", |s| s.url.as_str())
            ));
            supervise(&mut started, args.restart).await
        }
        Err(error) => Err(error),
    };
    stop_all(&mut started).await;
    outcome
}

async fn start_all(args: &UpArgs, started: &mut Vec<Started>) -> anyhow::Result<()> {
    let registry = start(
        "registry",
        &[
            "registry".into(),
            "--listen".into(),
            args.registry_listen.to_string(),
            "--data-dir".into(),
            args.data_dir.join("registry").display().to_string(),
        ],
    )
    .await?;
    let registry_url = registry.url.clone();
    started.push(registry);
    seed_grading_rules(&registry_url).await?;
    let service = |subcommand: &str, listen: SocketAddr, data: Option<&str>| {
        let mut command_line = vec![
            subcommand.to_owned(),
            "--listen".into(),
            listen.to_string(),
            "--registry".into(),
            registry_url.clone(),
        ];
        if let Some(data) = data {
            command_line.extend(["--data-dir".into(), args.data_dir.join(data).display().to_string()]);
        }
        command_line
    };
    started.push(start("logs", &service("logs", args.logs_listen, Some("logs"))).await?);
    started.push(start("grades", &service("grades", args.grades_listen, Some("grades"))).await?);
    started.push(start("portal", &service("portal", args.portal_listen, None)).await?);
    Ok(())
}

/// Publishes the grading service's default rules as the shared `grading` document of the
/// `default` namespace, unless a release of it exists (a restart keeps what the teacher
/// published).
async fn seed_grading_rules(registry: &str) -> anyhow::Result<()> {
    let document = format!(
        "{}/v1/config/default/_shared/{}",
        registry,
        rollcall_wire::GradingRules::DOCUMENT
    );
    let body = serde_json::to_string_pretty(&rollcall_wire::GradingRules::default())?;
    let answer = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .put(document)
        .header("content-type", "application/json")
        .header("if-none-match", "*")
        .header("x-rollcall-message", "the defaults, seeded by rollcall up")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .context("cannot seed the grading rules")?;
    match answer.status().as_u16() {
        200 | 201 | 409 => Ok(()),
        status => bail!("seeding the grading rules was answered {status}"),
    }
}

/// Starts `rollcall <argv>` and waits for its address line. The child's log (its stderr) is
/// passed on to `up`'s stderr, each line prefixed with its name.
async fn start(name: &'static str, argv: &[String]) -> anyhow::Result<Started> {
    let binary = std::env::current_exe().context("cannot find the rollcall binary")?;
    let mut child = Command::new(binary)
        .args(argv)
        .env_remove("ROLLCALL_LISTEN")
        .env_remove("ROLLCALL_ADVERTISE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches `up` alone, which then stops the
        // services in order (dependents first, so that they can still deregister).
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the {name}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let last_words = forward_log(name, stderr);
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(START_DEADLINE, lines.next_line())
        .await
        .with_context(|| format!("the {name} did not start within {START_DEADLINE:?}"))?
        .with_context(|| format!("cannot read the {name}'s output"))?;
    let Some(url) = line
        .as_deref()
        .and_then(|l| l.split_whitespace().last())
        .filter(|u| u.starts_with("http"))
    else {
        let status = child.wait().await.map_or_else(|e| e.to_string(), ended);
        // Its last words are what it said on the way out (its log is forwarded as it goes).
        let said = last_words.await.unwrap_or_default();
        bail!("the {name} failed to start ({status}): {said}");
    };
    let url = url.to_owned();
    announce(&format!("{name:<9}{url}"));
    // Keep reading the child's stdout so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Started {
        name,
        child,
        url,
        argv: argv.to_vec(),
        since: tokio::time::Instant::now(),
        restarts: 0,
    })
}

/// Passes the child's log lines on to stderr as `[name] line`, until it closes; the task's
/// answer is what a child that failed to start said: its `Error: ...` line (the binary's way of
/// ending on an error), or else its last line.
fn forward_log(name: &'static str, stderr: tokio::process::ChildStderr) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        use std::io::Write as _;
        let mut lines = BufReader::new(stderr).lines();
        let (mut error, mut last) = (None, String::new());
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = writeln!(std::io::stderr().lock(), "[{name}] {line}");
            if error.is_none() && line.starts_with("Error: ") {
                error = Some(line.clone());
            }
            if !line.trim().is_empty() {
                last = line;
            }
        }
        error.unwrap_or(last)
    })
}

/// Until SIGINT or SIGTERM: a child that exits is started again (`restart`), or everything
/// stops.
async fn supervise(started: &mut [Started], restart: Restart) -> anyhow::Result<()> {
    let shutdown = rollcall_client::shutdown_on_signals();
    loop {
        let exits = started
            .iter_mut()
            .enumerate()
            .map(|(at, service)| Box::pin(async move { (at, service.child.wait().await) }));
        let (at, status) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            ((at, status), _, _) = futures_util::future::select_all(exits) => (at, status),
        };
        let service = &mut started[at];
        let how = status.map_or_else(|e| e.to_string(), ended);
        if restart == Restart::Never {
            bail!("the {} stopped unexpectedly ({how}); stopping the others", service.name);
        }
        if service.since.elapsed() >= HEALTHY_AFTER {
            service.restarts = 0;
        }
        loop {
            let wait = FIRST_RESTART_WAIT
                .saturating_mul(1 << service.restarts.min(5))
                .min(MAX_RESTART_WAIT);
            service.restarts += 1;
            announce(&format!(
                "the {} stopped unexpectedly ({how}); restarting it in {}",
                service.name,
                humantime::format_duration(wait)
            ));
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
            match start(service.name, &service.argv).await {
                Ok(again) => {
                    let restarts = service.restarts;
                    *service = Started { restarts, ..again };
                    break;
                }
                Err(error) => announce(&format!("the {} did not start again: {error:#}", service.name)),
            }
        }
    }
}

/// How a child ended, in words.
fn ended(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => {
            // `Signal::KILL` as rustix debug-prints it, said as SIGKILL.
            let name = Signal::from_named_raw(signal).map_or_else(
                || format!("signal {signal}"),
                |s| format!("{s:?}").trim_matches('"').replace("Signal::", "SIG"),
            );
            format!("killed by {name}")
        }
        (None, None) => status.to_string(),
    }
}

/// Stops the children in reverse order of starting.
async fn stop_all(started: &mut Vec<Started>) {
    while let Some(mut service) = started.pop() {
        let pid = service
            .child
            .id()
            .and_then(|pid| Pid::from_raw(i32::try_from(pid).ok()?));
        if let Some(pid) = pid
            && let Err(error) = kill_process(pid, Signal::TERM)
        {
            tracing::warn!(%error, "cannot send SIGTERM to the {}", service.name);
        }
        match tokio::time::timeout(STOP_DEADLINE, service.child.wait()).await {
            Ok(Ok(status)) if status.success() => tracing::info!("{} stopped", service.name),
            Ok(Ok(status)) => tracing::warn!("{} stopped with {status}", service.name),
            Ok(Err(error)) => tracing::warn!(%error, "cannot wait for the {}", service.name),
            Err(_) => {
                tracing::warn!("{} did not stop within {STOP_DEADLINE:?}: killing it", service.name);
                let _ = service.child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    #[test]
    fn how_a_child_ended_is_said_in_words() {
        assert_eq!(ended(std::process::ExitStatus::from_raw(1 << 8)), "exit status 1");
        assert_eq!(ended(std::process::ExitStatus::from_raw(9)), "killed by SIGKILL");
        assert_eq!(ended(std::process::ExitStatus::from_raw(15)), "killed by SIGTERM");
    }
}
