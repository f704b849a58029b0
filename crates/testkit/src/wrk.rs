//! HTTP load from wrk (Debian's `wrk` package, installed by `scripts/bench`): a C load generator
//! that costs a fraction of the CPU per request that an async Rust client does, which matters on
//! a two-core machine where the generator and the server share the cores.
//!
//! Requests are described by a wrk Lua script; [`Load::run`] runs wrk against a URL and parses
//! its report. Benchmarks treat any failed request as a fault, so [`Report::errors`] counts
//! every answer wrk saw as non-2xx/3xx and every socket error.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// Requests answered, per second of the run.
    pub requests_per_second: f64,
    /// Requests answered in all.
    pub requests: u64,
    /// Answers with a status of 400 or more, plus connect, read, write and timeout errors.
    pub errors: u64,
    /// The median latency.
    pub median: Duration,
    /// The 99th percentile latency.
    pub p99: Duration,
}

/// Lua run before a script given to [`Load::script`]: numbers wrk's threads, so that each
/// thread's `request` function can read its `thread_id` (1, 2, ...) and make values unique.
const NUMBERED_THREADS: &str = r#"local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
"#;

/// A load to run with wrk: a Lua script (empty for plain `GET`s of the URL), a number of open
/// connections, and a duration.
#[derive(Debug, Clone)]
pub struct Load {
    script: String,
    connections: usize,
    duration: Duration,
    threads: usize,
}

impl Load {
    /// `connections` kept-alive connections for `duration`, driven by two wrk threads.
    pub fn new(connections: usize, duration: Duration) -> Self {
        Self {
            script: String::new(),
            connections,
            duration,
            threads: 2,
        }
    }

    /// The Lua script that shapes each request (see wrk's `SCRIPTING` documentation). It may
    /// read `thread_id`, the number of the wrk thread running it.
    #[must_use]
    pub fn script(mut self, lua: &str) -> Self {
        self.script = format!("{NUMBERED_THREADS}{lua}");
        self
    }

    /// Runs the load against `url` and returns wrk's report. Panics if wrk is missing or fails.
    pub fn run(&self, url: &str) -> Report {
        let mut script = tempfile::NamedTempFile::new().expect("script file");
        script.write_all(self.script.as_bytes()).expect("write script");
        let output = Command::new("wrk")
            .arg(format!("--threads={}", self.threads.min(self.connections)))
            .arg(format!("--connections={}", self.connections))
            .arg(format!("--duration={}s", self.duration.as_secs().max(1)))
            .arg("--timeout=30s")
            .arg("--latency")
            .arg("--script")
            .arg(script.path())
            .arg(url)
            .output()
            .unwrap_or_else(|e| panic!("cannot run wrk ({e}): install it with scripts/bench"));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "wrk failed: {}{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse_report(&text).unwrap_or_else(|| panic!("cannot read wrk's report:\n{text}"))
    }

    /// Runs the load `runs` times against `url` and returns the report of the run with the
    /// median rate. Panics if any request of any run failed.
    pub fn run_median(&self, url: &str, runs: usize) -> Report {
        median(&self.runs(url, runs))
    }

    /// Runs the load `runs` times (at least once) against `url` and returns every report.
    /// Panics if any request of any run failed.
    pub fn runs(&self, url: &str, runs: usize) -> Vec<Report> {
        (0..runs.max(1))
            .map(|run| {
                let report = self.run(url);
                assert_eq!(
                    report.errors, 0,
                    "run {run} against {url}: {} requests failed",
                    report.errors
                );
                report
            })
            .collect()
    }

    /// Like [`Load::runs`], also reading the CPU time of the server process `server_pid` around
    /// the runs: CPU per request moves less with the host's load than the rate does.
    pub fn measure(&self, url: &str, runs: usize, server_pid: u32) -> Measured {
        interleave(&[(self, url, server_pid)], runs)[0]
    }
}

/// [`Load::measure`] of several loads against several servers (`(load, url, server pid)`),
/// interleaved: run after run, each in turn (in reverse every other round), so that the host's
/// load drifting over the minutes a figure takes favours none of them. One [`Measured`] per target, in their order.
pub fn interleave(targets: &[(&Load, &str, u32)], runs: usize) -> Vec<Measured> {
    let mut reports = vec![Vec::new(); targets.len()];
    let mut cpu = vec![0.0; targets.len()];
    for run in 0..runs.max(1) {
        // ABBA: every other round in reverse, so that no target always runs right after another
        // (the sockets and caches a run leaves behind would favour or hinder the one after it).
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (load, url, pid) = targets[i];
            let (cpu_before, _) = crate::cpu_and_rss(pid);
            let report = load.run(url);
            cpu[i] += crate::cpu_and_rss(pid).0 - cpu_before;
            assert_eq!(
                report.errors, 0,
                "run {run} against {url}: {} requests failed",
                report.errors
            );
            reports[i].push(report);
        }
    }
    reports
        .iter()
        .zip(cpu)
        .map(|(reports, cpu)| {
            let requests: u64 = reports.iter().map(|r| r.requests).sum();
            #[allow(clippy::cast_precision_loss)] // request counts stay far below 2^52
            let cpu_per_request = cpu / requests.max(1) as f64;
            Measured {
                median: median(reports),
                cpu_per_request,
            }
        })
        .collect()
}

/// What [`Load::measure`] found: the median run, and the server's CPU per request.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// The report of the run with the median rate.
    pub median: Report,
    /// CPU seconds (user + system) the server process spent per request, over all runs.
    pub cpu_per_request: f64,
}

/// The report of the run with the median rate. Panics if `reports` is empty.
pub fn median(reports: &[Report]) -> Report {
    let mut reports = reports.to_vec();
    reports.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    reports[reports.len() / 2]
}

/// True when wrk is on the `PATH`.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
}

/// Reads wrk's text report (run with `--latency`).
fn parse_report(text: &str) -> Option<Report> {
    let mut report = Report {
        requests_per_second: 0.0,
        requests: 0,
        errors: 0,
        median: Duration::ZERO,
        p99: Duration::ZERO,
    };
    let mut seen_rate = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => {
                report.requests_per_second = rate.parse().ok()?;
                seen_rate = true;
            }
            [count, "requests", "in", ..] => report.requests = count.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", count] => report.errors += count.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                report.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["50%", latency] => report.median = parse_latency(latency)?,
            ["99%", latency] => report.p99 = parse_latency(latency)?,
            _ => {}
        }
    }
    seen_rate.then_some(report)
}

/// wrk prints latencies as `812.00us`, `1.23ms`, `2.01s` or `1.50m`.
fn parse_latency(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://127.0.0.1:3999
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.91ms    1.33ms  27.05ms   83.67%
    Req/Sec     5.52k   512.00     6.10k    70.00%
  Latency Distribution
     50%    2.71ms
     75%    3.40ms
     90%    4.38ms
     99%  812.00us
  55021 requests in 5.00s, 25.52MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 886
Requests/sec:  11003.92
Transfer/sec:      5.10MB
";

    #[test]
    fn a_report_is_read_with_every_error_counted() {
        let report = parse_report(REPORT).expect("parsed");
        assert!((report.requests_per_second - 11_003.92).abs() < 1e-6);
        assert_eq!(report.requests, 55_021);
        assert_eq!(report.errors, 889);
        assert_eq!(report.median, Duration::from_micros(2710));
        assert_eq!(report.p99, Duration::from_micros(812));
    }

    #[test]
    fn a_report_without_a_rate_is_refused() {
        assert_eq!(
            parse_report("unable to connect to 127.0.0.1:1 Connection refused"),
            None
        );
    }
}
