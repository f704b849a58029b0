//! The whole system as processes: `rollcall up`, and the four services started one by one so
//! that the grading service can be killed and brought back under the portal's feet.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rollcall_testkit::{DEADLINE, ServerProcess, eventually};
use tokio::io::{AsyncBufReadExt, BufReader};

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

/// `rollcall up` with its data in `data`, every service on a port the OS picks.
fn up_command(data: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(rollcall());
    command
        .args(["up", "--data-dir"])
        .arg(data)
        .args(["--registry-listen", "127.0.0.1:0", "--logs-listen", "127.0.0.1:0"])
        .args(["--grades-listen", "127.0.0.1:0", "--portal-listen", "127.0.0.1:0"])
        .kill_on_drop(true);
    command
}

/// `rollcall up` running, its stdout piped.
pub(crate) fn spawn_up(data: &Path) -> tokio::process::Child {
    up_command(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rollcall up")
}

/// What `rollcall up` prints, line by line.
pub(crate) type Printed = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// The next line `rollcall up` prints, within the deadline.
pub(crate) async fn next_line(lines: &mut Printed) -> String {
    tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("a line")
}

/// The service URLs in the next `count` lines `rollcall up` prints (`name url` each), by name.
pub(crate) async fn urls_printed(lines: &mut Printed, count: usize) -> BTreeMap<String, String> {
    let mut urls = BTreeMap::new();
    for _ in 0..count {
        let line = next_line(lines).await;
        let mut words = line.split_whitespace();
        if let (Some(name), Some(url)) = (words.next(), words.next()) {
            urls.insert(name.to_owned(), url.to_owned());
        }
    }
    urls
}

/// The status and body of `GET url`, or `None` when nothing answers.
async fn get(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let response = http.get(url).send().await.ok()?;
    Some((response.status().as_u16(), response.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_starts_the_four_services_prints_their_urls_and_stops_them_on_ctrl_c() {
    let data = tempfile::tempdir().expect("data dir");
    let mut up = spawn_up(data.path());
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let urls = urls_printed(&mut lines, 4).await;
    assert_eq!(
        urls.keys().collect::<Vec<_>>(),
        ["grades", "logs", "portal", "registry"]
    );
    let ready = next_line(&mut lines).await;
    assert!(ready.contains(&urls["portal"]), "{ready}");

    let http = rollcall_testkit::http_client_without_redirects();
    let (status, page) = get(&http, &format!("{}/students", urls["portal"]))
        .await
        .expect("the portal answers");
    assert_eq!(status, 200);
    assert!(page.contains("Carter, Nick"));
    let services: rollcall_wire::ServicesView = http
        .get(format!("{}/v1/services", urls["registry"]))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    for name in ["LogService", "GradingService", "Portal"] {
        assert_eq!(
            services.service(name).map(|s| s.instances.len()),
            Some(1),
            "{name} registered once"
        );
    }
    // The grading rules are seeded, and both readers of them report applying them.
    let rules: rollcall_wire::GradingRules = http
        .get(format!("{}/v1/config/default/_shared/grading", urls["registry"]))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("the seeded rules");
    assert_eq!(rules, rollcall_wire::GradingRules::default());
    eventually(
        "the grading service and the portal to apply the rules",
        DEADLINE,
        || async {
            let status: rollcall_wire::RolloutStatus = rollcall_testkit::get_json(&format!(
                "{}/v1/config/default/_shared/grading/status",
                urls["registry"]
            ))
            .await?;
            let applied: Vec<&str> = status
                .instances
                .iter()
                .filter(|i| i.status == Some(rollcall_wire::AckStatus::Applied))
                .map(|i| i.url.as_str())
                .collect();
            (applied.contains(&urls["grades"].as_str()) && applied.contains(&urls["portal"].as_str())).then_some(())
        },
    )
    .await;

    let pid = up.id().expect("pid").to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = tokio::time::timeout(DEADLINE, up.wait())
        .await
        .expect("stops in time")
        .expect("wait");
    assert!(status.success(), "{status}");
    for url in urls.values() {
        assert!(get(&http, url).await.is_none(), "{url} still answers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_says_503_when_grading_dies_and_recovers_with_every_acknowledged_grade() {
    let registry = crate::quick_registry(rollcall());
    let with_registry = |c: &mut Command| {
        c.args(["--registry", &registry.url]);
    };
    let logs = ServerProcess::start(rollcall(), "logs", with_registry);
    let mut grades = ServerProcess::start(rollcall(), "grades", with_registry);
    let portal = crate::portal(rollcall(), &registry);
    let http = rollcall_testkit::http_client_without_redirects();
    let students = format!("{}/students", portal.url);
    let (status, _) = get(&http, &students).await.expect("the portal answers");
    assert_eq!(status, 200);

    let added = http
        .post(format!("{}/students/1/grades", portal.url))
        .form(&[("Title", "Quiz 3"), ("Type", "Quiz"), ("Score", "90")])
        .send()
        .await
        .expect("POST form");
    assert_eq!(added.status(), 303);

    // kill -9: no deregistration; the registry's probes find out, and the portal is told.
    grades.kill();
    let killed = Instant::now();
    let page = eventually("the portal's 503 page", DEADLINE, || async {
        get(&http, &students)
            .await
            .filter(|(status, _)| *status == 503)
            .map(|(_, page)| page)
    })
    .await;
    let detected = killed.elapsed();
    assert!(page.contains("The grading service is unavailable"));
    assert!(detected < Duration::from_secs(2), "503 after {detected:?}");

    let grades = grades.restart(with_registry);
    let page = eventually("the portal to recover", DEADLINE, || async {
        get(&http, &format!("{}/students/1", portal.url))
            .await
            .filter(|(status, _)| *status == 200)
            .map(|(_, page)| page)
    })
    .await;
    assert!(
        page.contains("Quiz 3"),
        "the grade acknowledged before kill -9 is there"
    );
    assert!(page.contains("87.8%"));

    // The grading service's lines reach the log service.
    let added = http
        .post(format!("{}/students/2/grades", portal.url))
        .form(&[("Title", "Quiz 4"), ("Type", "Quiz"), ("Score", "70")])
        .send()
        .await
        .expect("POST form");
    assert_eq!(added.status(), 303);
    let query = || {
        let output = Command::new(rollcall())
            .args([
                "logs",
                "query",
                "--registry",
                &registry.url,
                "--service",
                "GradingService",
            ])
            .output()
            .expect("rollcall logs query");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    eventually("the grading service's log lines", DEADLINE, || async {
        let text = query();
        text.lines()
            .any(|l| l.contains("grade added") && l.contains("Quiz 4"))
            .then_some(())
    })
    .await;
    drop((grades, logs));
}

/// The pid of `up`'s child running `rollcall <subcommand>`.
fn child_running(up: u32, subcommand: &str) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{up}/task/{up}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .find(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| line.split(|b| *b == 0).nth(1) == Some(subcommand.as_bytes()))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_restarts_a_killed_service_while_the_others_keep_running_and_the_portal_recovers() {
    let data = tempfile::tempdir().expect("data dir");
    let mut up = spawn_up(data.path());
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let urls = urls_printed(&mut lines, 5).await;
    let (portal, registry, killed) = (&urls["portal"], &urls["registry"], &urls["grades"]);
    let up_pid = up.id().expect("pid");
    let grades = child_running(up_pid, "grades").expect("the grading service runs under up");
    let logs = child_running(up_pid, "logs").expect("the log service runs under up");
    assert!(
        Command::new("kill")
            .args(["-KILL", &grades.to_string()])
            .status()
            .expect("kill")
            .success()
    );

    let said = next_line(&mut lines).await;
    assert!(
        said.contains("the grades stopped unexpectedly (killed by SIGKILL); restarting it in 1s"),
        "{said}"
    );
    let again = next_line(&mut lines).await;
    assert!(
        again.starts_with("grades"),
        "the grading service started again: {again}"
    );
    let restarted = child_running(up_pid, "grades").expect("a grading service again");
    assert_ne!(restarted, grades);
    assert_eq!(child_running(up_pid, "logs"), Some(logs), "the others kept running");

    let http = rollcall_testkit::http_client_without_redirects();
    let page = eventually("the portal to recover", DEADLINE, || async {
        let (status, page) = get(&http, &format!("{portal}/students")).await?;
        (status == 200).then_some(page)
    })
    .await;
    assert!(page.contains("Carter, Nick"), "the grade book kept its data");
    // The killed instance never deregistered: once its probes say it is dead, stopping the log
    // service does not wait for it to let go (it drains for live dependents only).
    eventually("the killed instance to be critical", DEADLINE, || async {
        let view: rollcall_wire::ServiceView = http
            .get(format!("{registry}/v1/services/GradingService"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let state = view.instances.iter().find(|i| i.url == *killed)?.state;
        (state == rollcall_wire::InstanceState::Critical).then_some(())
    })
    .await;

    let stop = Command::new("kill")
        .args(["-INT", &up_pid.to_string()])
        .status()
        .expect("kill");
    assert!(stop.success());
    let status = tokio::time::timeout(DEADLINE, up.wait())
        .await
        .expect("stops in time")
        .expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn up_names_the_service_that_failed_to_start_with_its_own_error() {
    let data = tempfile::tempdir().expect("data dir");
    // The registry's data directory cannot be made: a file is in its place.
    std::fs::write(data.path().join("registry"), b"not a directory").expect("write");
    let output = up_command(data.path()).output().await.expect("rollcall up");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("the registry failed to start (exit status 1): Error: cannot create the data directory"),
        "{said}"
    );
    assert!(
        said.contains("[registry] Error:"),
        "its log is passed on, named: {said}"
    );
    assert!(!said.contains("the logs failed"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grade_type_published_with_rollcall_config_is_accepted_by_the_running_system() {
    let data = tempfile::tempdir().expect("data dir");
    let mut up = spawn_up(data.path());
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let urls = urls_printed(&mut lines, 5).await;
    let http = rollcall_testkit::http_client_without_redirects();
    let project = [("Title", "Term project"), ("Type", "Project"), ("Score", "95")];
    let submit = || {
        http.post(format!("{}/students/2/grades", urls["portal"]))
            .form(&project)
            .send()
    };
    assert_eq!(submit().await.expect("POST").status(), 400, "not a grade type yet");

    let rules = data.path().join("grading.json");
    std::fs::write(
        &rules,
        r#"{"gradeTypes": ["Quiz", "Test", "Exam", "Homework", "Project"], "minScore": 0, "maxScore": 100}"#,
    )
    .expect("write");
    let put = Command::new(rollcall())
        .args(["config", "put", "default/_shared/grading"])
        .arg(&rules)
        .args(["--registry", &urls["registry"], "-m", "projects count"])
        .output()
        .expect("rollcall config put");
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));

    // Both processes follow within moments, without a restart.
    eventually(
        "the portal and the grading service to accept a Project",
        DEADLINE,
        || async { (submit().await.ok()?.status() == 303).then_some(()) },
    )
    .await;
    let student = get(&http, &format!("{}/students/2", urls["grades"]))
        .await
        .expect("GET");
    assert!(student.1.contains(r#""Type":"Project""#), "{}", student.1);

    let pid = up.id().expect("pid").to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let _ = tokio::time::timeout(DEADLINE, up.wait()).await;
}
