//! Several registry nodes over one etcd (issue 18): what spreading the registry over nodes costs
//! and gains, each figure beside a reference measured in the same run.
//!
//! Run with `scripts/bench -p rollcall --bench nodes [-- SECTION]`. The registries are the
//! release `rollcall registry` binary as child processes over a one-member etcd 3.4 (Debian's
//! `etcd-server`) started by the benchmark; load comes from wrk; fake services live in this
//! process. Sections:
//! - `writes`: durable registrations per second through one node and through three (three wrk
//!   processes at once, one per node, the connections split between them), beside etcd's own
//!   durable puts under the same generator and connections (target: at least 0.8 of etcd's);
//! - `lookups`: lookups of a ten-instance service per second on one node and on three, and the
//!   number of range reads etcd served meanwhile (reads must not touch etcd: target 0);
//! - `failover`: three nodes with a 2 s lease (`--node-ttl 2s`, about etcd's minimum) probing
//!   every 250 ms; one is killed with `kill -9`, and the time is taken until each of its
//!   instances is probed again (by another node) and until a change it owed its dependents
//!   reaches them (target p99 under 3 s), beside the lease itself;
//! - `fan-out`: one change until all 1,000 dependents hold it, with the dependents spread over
//!   three nodes, beside the same with one node over the same etcd (target: no slower).
//!
//! The machine is a noisy 2-core box shared by the nodes, etcd, wrk and the fakes: figures are
//! medians (and p99s) of interleaved runs. `ROLLCALL_BENCH_TRIALS` sets the failover and
//! fan-out trials (default 10 and 30).

// A benchmark is a report: it prints to stdout, and turns small counts into f64 for ratios.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_testkit::bench::{
    ETCD_PUT_SCRIPT, THROUGHPUT_REGISTRY_FLAGS, registration_script_tagged, seed_fan_out_once, verdict,
};
use rollcall_testkit::wrk::{self, Load, Report};
use rollcall_testkit::{EtcdCluster, FakeFleet, FakeService, ServerProcess, eventually, get_json, median_p99};
use tokio::task::JoinSet;

const LONG: Duration = Duration::from_secs(60);
/// Connections in all, for every write and read load.
const CONNECTIONS: usize = 96;
const WINDOW: Duration = Duration::from_secs(5);
const RUNS: usize = 3;
/// The lookup measured: a service of ten instances.
const LOOKUP_PATH: &str = "/v1/services/Lookup";

fn rollcall() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rollcall"))
}

fn trials(default: usize) -> usize {
    std::env::var("ROLLCALL_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// `count` registry nodes over `etcd`, with `flags`.
fn nodes(etcd: &EtcdCluster, count: usize, flags: &[&str]) -> Vec<ServerProcess> {
    (0..count)
        .map(|_| {
            ServerProcess::start(rollcall(), "registry", |c| {
                c.args(["--etcd", &etcd.endpoint_list()]).args(flags);
            })
        })
        .collect()
}

/// Waits until every node sees `count` live nodes.
async fn settled(nodes: &[ServerProcess], count: usize) {
    for node in nodes {
        eventually("every node live", LONG, || async {
            let view: rollcall_wire::NodesView = get_json(&format!("{}/v1/nodes", node.url)).await?;
            (view.live && view.nodes.len() == count).then_some(())
        })
        .await;
    }
}

/// `loads[n]` against `urls[n]`, all at once (one wrk each); the sum of their rates.
fn at_once(loads: &[Load], urls: &[String]) -> f64 {
    std::thread::scope(|scope| {
        let runs: Vec<_> = loads
            .iter()
            .zip(urls)
            .map(|(load, url)| scope.spawn(move || load.run(url)))
            .collect();
        runs.into_iter()
            .map(|run| {
                let report: Report = run.join().expect("wrk");
                assert_eq!(report.errors, 0, "{} requests failed", report.errors);
                report.requests_per_second
            })
            .sum()
    })
}

/// Where the machine's CPU time went: its busy and total clock ticks (`/proc/stat`), and the
/// CPU seconds used so far by etcd and by the registry nodes.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    busy: f64,
    total: f64,
    etcd: f64,
    nodes: f64,
}

impl Cpu {
    fn now(etcd: u32, nodes: &[u32]) -> Self {
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        let ticks: Vec<f64> = stat
            .lines()
            .next()
            .expect("the cpu line")
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
        let total: f64 = ticks.iter().take(8).sum();
        let idle = ticks[3] + ticks[4];
        Self {
            busy: total - idle,
            total,
            etcd: rollcall_testkit::cpu_and_rss(etcd).0,
            nodes: nodes.iter().map(|pid| rollcall_testkit::cpu_and_rss(*pid).0).sum(),
        }
    }

    /// What was used from `self` to `later`, summed into `into`.
    fn add_until(self, later: Self, into: &mut Self) {
        into.busy += later.busy - self.busy;
        into.total += later.total - self.total;
        into.etcd += later.etcd - self.etcd;
        into.nodes += later.nodes - self.nodes;
    }

    /// Busy cores of the machine, on average.
    fn busy_cores(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
        self.busy / self.total * cores
    }

    /// Busy cores, and the CPU etcd and the registry nodes used per 1,000 `requests` (or
    /// deliveries).
    fn describe(&self, requests: f64) -> String {
        let per_thousand = |seconds: f64| seconds * 1e3 / (requests / 1e3);
        format!(
            "{:.2} cores busy; CPU per 1,000: etcd {:.0} ms, registry nodes {:.0} ms",
            self.busy_cores(),
            per_thousand(self.etcd),
            per_thousand(self.nodes)
        )
    }
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

async fn writes() {
    let etcd = EtcdCluster::start_with_gateway(1);
    let three = nodes(&etcd, 3, &THROUGHPUT_REGISTRY_FLAGS);
    settled(&three, 3).await;
    let fleet = FakeFleet::spawn().await;
    // Each node registers instances of its own: two nodes registering one instance at once is
    // a conflict, refused by design.
    let load = |n: usize, connections: usize| {
        Load::new(connections, WINDOW).script(&registration_script_tagged(&fleet.url, &format!("n{n}x")))
    };
    let one_load = vec![load(0, CONNECTIONS)];
    let three_load: Vec<Load> = (0..3).map(|n| load(n, CONNECTIONS / 3)).collect();
    let puts = Load::new(CONNECTIONS, WINDOW).script(ETCD_PUT_SCRIPT);
    let urls: Vec<String> = three.iter().map(|n| n.url.clone()).collect();
    let etcd_url = etcd.endpoints()[0].clone();
    let pids = (
        etcd.pid(0).expect("etcd runs"),
        three.iter().map(ServerProcess::pid).collect::<Vec<_>>(),
    );
    // Each kind of run: its rates, and where the CPU went during it (with the requests made).
    let [reference, one, all] = tokio::task::spawn_blocking(move || {
        let measured = |run: &dyn Fn() -> f64, rates: &mut Vec<f64>, cpu: &mut (Cpu, f64)| {
            let before = Cpu::now(pids.0, &pids.1);
            let rate = run();
            before.add_until(Cpu::now(pids.0, &pids.1), &mut cpu.0);
            cpu.1 += rate * WINDOW.as_secs_f64();
            rates.push(rate);
        };
        let mut kinds: [(Vec<f64>, (Cpu, f64)); 3] = Default::default();
        for _ in 0..RUNS {
            let [reference, one, all] = &mut kinds;
            measured(
                &|| puts.run(&etcd_url).requests_per_second,
                &mut reference.0,
                &mut reference.1,
            );
            measured(&|| at_once(&one_load, &urls[..1]), &mut one.0, &mut one.1);
            measured(&|| at_once(&three_load, &urls), &mut all.0, &mut all.1);
        }
        kinds.map(|(rates, (cpu, requests))| (median(rates), cpu.describe(requests)))
    })
    .await
    .expect("load");
    let target = 0.8;
    println!(
        "durable registrations over etcd (wrk, {CONNECTIONS} connections, median of {RUNS} x {WINDOW:?}, interleaved): through 1 node {:.0}/s ({}), through 3 nodes {:.0}/s ({}) | etcd 3.4 durable puts {:.0}/s ({}) | 1 node / etcd {:.2}, 3 nodes / etcd {:.2} | target >= {target}: {}",
        one.0,
        one.1,
        all.0,
        all.1,
        reference.0,
        reference.1,
        one.0 / reference.0,
        all.0 / reference.0,
        verdict(one.0 / reference.0 >= target && all.0 / reference.0 >= target)
    );
}

/// Range reads etcd has served, from its `/metrics`.
async fn etcd_ranges(etcd: &EtcdCluster) -> f64 {
    let text = reqwest::get(format!("{}/metrics", etcd.endpoints()[0]))
        .await
        .expect("etcd metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with("etcd_debugging_mvcc_range_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn lookups() {
    let etcd = EtcdCluster::start_with_gateway(1);
    let three = nodes(&etcd, 3, &THROUGHPUT_REGISTRY_FLAGS);
    settled(&three, 3).await;
    let fleet = FakeFleet::spawn().await;
    let http = reqwest::Client::new();
    for n in 0..10 {
        let answer = http
            .post(format!("{}/v1/instances", three[n % 3].url))
            .json(&fleet.registration(n, "Lookup"))
            .send()
            .await
            .expect("register");
        assert_eq!(answer.status(), 201);
    }
    for node in &three {
        eventually("ten instances on every node", LONG, || async {
            let view: rollcall_wire::ServiceView = get_json(&format!("{}{LOOKUP_PATH}", node.url)).await?;
            (view.instances.len() == 10).then_some(())
        })
        .await;
    }
    let one_load = vec![Load::new(CONNECTIONS, WINDOW)];
    let three_load = vec![Load::new(CONNECTIONS / 3, WINDOW); 3];
    let urls: Vec<String> = three.iter().map(|n| format!("{}{LOOKUP_PATH}", n.url)).collect();
    let ranges_before = etcd_ranges(&etcd).await;
    let (one, all) = tokio::task::spawn_blocking(move || {
        let (mut one, mut all) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            one.push(at_once(&one_load, &urls[..1]));
            all.push(at_once(&three_load, &urls));
        }
        (median(one), median(all))
    })
    .await
    .expect("load");
    let ranges = etcd_ranges(&etcd).await - ranges_before;
    println!(
        "lookups of a ten-instance service (wrk, {CONNECTIONS} connections, median of {RUNS} x {WINDOW:?}): on 1 node {one:.0}/s, on 3 nodes {all:.0}/s (ratio {:.2}) | etcd range reads meanwhile: {ranges:.0} | target 0: {}",
        all / one,
        verdict(ranges == 0.0)
    );
}

/// One failover trial: returns the time from the kill until the last of the killed node's
/// instances was probed again, and until the last dependent held a provider registered at the
/// kill.
async fn failover_once() -> (Duration, Duration) {
    const FLAGS: [&str; 10] = [
        "--node-ttl",
        "2s",
        "--health-interval",
        "250ms",
        "--health-timeout",
        "100ms",
        "--health-tries",
        "3",
        "--health-retry-delay",
        "100ms",
    ];
    let etcd = EtcdCluster::start(1);
    let mut three = nodes(&etcd, 3, &FLAGS);
    settled(&three, 3).await;
    let http = reqwest::Client::new();
    let seed = |node: &ServerProcess, service: &FakeService| {
        let request = http
            .post(format!("{}/services", node.url))
            .json(&service.registration());
        async move { assert_eq!(request.send().await.expect("register").status(), 200) }
    };
    let mut providers = Vec::new();
    for n in 0..24 {
        let provider = FakeService::spawn("P", &[]).await;
        seed(&three[n % 3], &provider).await;
        providers.push(provider);
    }
    let mut dependents = Vec::new();
    for n in 0..24 {
        let dependent = FakeService::spawn("D", &["P"]).await;
        seed(&three[n % 3], &dependent).await;
        dependents.push(dependent);
    }
    let all: BTreeSet<_> = providers.iter().map(FakeService::entry).collect();
    for dependent in &dependents {
        dependent.wait_for_providers(&all).await;
    }

    let late = FakeService::spawn("P", &[]).await;
    three[0].kill();
    let killed = Instant::now();
    seed(&three[1], &late).await;
    // Each provider's first probe after the kill: the killed node's come after the takeover.
    let mut probed = Duration::ZERO;
    for provider in &providers {
        let first = eventually("a probe after the kill", LONG, || async {
            provider.probe_times().into_iter().find(|t| *t > killed)
        })
        .await;
        probed = probed.max(first - killed);
    }
    let mut delivered = Duration::ZERO;
    for dependent in &dependents {
        let arrived = eventually("the late provider delivered", LONG, || async {
            dependent.arrival_of(&late.entry(), false)
        })
        .await;
        delivered = delivered.max(arrived - killed);
    }
    (probed, delivered)
}

async fn failover() {
    let count = trials(10);
    let (mut probed, mut delivered) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for _ in 0..count {
        let (p, d) = failover_once().await;
        probed.push(p);
        delivered.push(d);
    }
    let (probe_median, probe_p99) = median_p99(&mut probed);
    let (delivery_median, delivery_p99) = median_p99(&mut delivered);
    let target = Duration::from_secs(3);
    println!(
        "failover after kill -9 of one of 3 nodes, 2 s lease ({count} trials): its instances probed again median {} p99 {} | a change it owed delivered median {} p99 {} | the lease: 2000 ms | target p99 < {}: {}",
        ms(probe_median),
        ms(probe_p99),
        ms(delivery_median),
        ms(delivery_p99),
        ms(target),
        verdict(probe_p99 < target && delivery_p99 < target)
    );
}

async fn fan_out() {
    const SUBSCRIBERS: usize = 1_000;
    const FLAGS: [&str; 2] = ["--max-probes-per-host", "4000000000"];
    let mut dependents = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        dependents.push(Arc::new(FakeService::spawn("Dependent", &["Fan"]).await));
    }
    // Two registries over two etcds, the same receivers registered to both: three nodes (each
    // dependent through one of them) and one node.
    let (etcd_three, etcd_one) = (EtcdCluster::start(1), EtcdCluster::start(1));
    let three = nodes(&etcd_three, 3, &FLAGS);
    let one = nodes(&etcd_one, 1, &FLAGS);
    settled(&three, 3).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(LONG)
        .build()
        .expect("client");
    let mut registrations = JoinSet::new();
    for (n, chunk) in dependents.chunks(SUBSCRIBERS / 20).enumerate() {
        let chunk: Vec<_> = chunk.iter().map(|d| d.registration()).collect();
        let targets = [three[n % 3].url.clone(), one[0].url.clone()];
        let http = http.clone();
        registrations.spawn(async move {
            for registration in chunk {
                for target in &targets {
                    let answer = http.post(format!("{target}/services")).json(&registration).send().await;
                    assert_eq!(answer.expect("register").status(), 200);
                }
            }
        });
    }
    registrations.join_all().await;
    // The first change opens the connections to every dependent, from each registry.
    seed_fan_out_once(&http, &three[0].url, &dependents, LONG).await;
    seed_fan_out_once(&http, &one[0].url, &dependents, LONG).await;
    let count = trials(30);
    let (mut spread, mut alone) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let (three_pids, one_pids): (Vec<u32>, Vec<u32>) =
        (three.iter().map(ServerProcess::pid).collect(), vec![one[0].pid()]);
    let (etcd_three_pid, etcd_one_pid) = (etcd_three.pid(0).expect("etcd"), etcd_one.pid(0).expect("etcd"));
    let (mut spread_cpu, mut alone_cpu) = (Cpu::default(), Cpu::default());
    for trial in 0..count {
        let before = Cpu::now(etcd_three_pid, &three_pids);
        spread.push(seed_fan_out_once(&http, &three[trial % 3].url, &dependents, LONG).await);
        before.add_until(Cpu::now(etcd_three_pid, &three_pids), &mut spread_cpu);
        let before = Cpu::now(etcd_one_pid, &one_pids);
        alone.push(seed_fan_out_once(&http, &one[0].url, &dependents, LONG).await);
        before.add_until(Cpu::now(etcd_one_pid, &one_pids), &mut alone_cpu);
    }
    // Deliveries made in all: each change reaches every dependent.
    let deliveries = (count * SUBSCRIBERS) as f64;
    let (spread_median, spread_p99) = median_p99(&mut spread);
    let (alone_median, alone_p99) = median_p99(&mut alone);
    println!(
        "fan-out of one change to {SUBSCRIBERS} dependents over etcd ({count} trials, interleaved): spread over 3 nodes median {} p99 {} ({}) | 1 node median {} p99 {} ({}) | median ratio {:.2} | target no slower (median ratio <= 1.00): {}",
        ms(spread_median),
        ms(spread_p99),
        spread_cpu.describe(deliveries),
        ms(alone_median),
        ms(alone_p99),
        alone_cpu.describe(deliveries),
        spread_median.as_secs_f64() / alone_median.as_secs_f64(),
        verdict(spread_median <= alone_median)
    );
}

fn main() {
    assert!(
        EtcdCluster::installed() && wrk::available(),
        "the nodes benchmark needs etcd and wrk: run it through scripts/bench"
    );
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        let wanted = rollcall_testkit::wanted_sections();
        if wanted("writes") {
            writes().await;
        }
        if wanted("lookups") {
            lookups().await;
        }
        if wanted("failover") {
            failover().await;
        }
        if wanted("fan-out") {
            fan_out().await;
        }
    });
}
