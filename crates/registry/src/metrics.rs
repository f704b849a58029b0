//! The registry's metrics, exposed at `GET /metrics` in the OpenMetrics text format (which
//! Prometheus scrapes).
//!
//! Counters are created once per label value, so counting on a hot path is one atomic add.
//! Gauges that describe the catalog (instances by state, delivery queues) are computed when
//! scraped, so they can never drift from what they describe.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rollcall_wire::InstanceState;

/// A label set of one `(name, value)` pair.
type Label = Vec<(&'static str, &'static str)>;

fn label(name: &'static str, value: &'static str) -> Label {
    vec![(name, value)]
}

/// Every metric the registry keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Request durations by route, and what every service shows (`rollcall_http::observe`).
    pub http: rollcall_http::observe::HttpMetrics,
    instances: Family<Label, Gauge>,
    queues: Gauge,
    queues_behind: Gauge,
    node_live: Gauge,
    nodes: Gauge,
    node_instances: Gauge,
    /// Prober tasks running (one per registered instance).
    pub probers: Gauge,
    /// Blocking queries being held.
    pub blocking_queries: Gauge,
    /// Registrations acknowledged through the seed protocol.
    pub seed_registrations: Counter,
    /// Registrations acknowledged through `/v1/instances`.
    pub v1_registrations: Counter,
    /// Registrations refused because their callback failed or their URLs' addresses were
    /// refused.
    pub refused_registrations: Counter,
    /// Deregistrations asked for.
    pub deregistrations: Counter,
    /// Instances removed for staying critical.
    pub reaped: Counter,
    /// Probes that passed.
    pub probes_passed: Counter,
    /// Probes that failed.
    pub probes_failed: Counter,
    /// Patches delivered.
    pub deliveries_ok: Counter,
    /// Delivery attempts that failed (and were retried).
    pub deliveries_failed: Counter,
    /// Queues that gave up after the last retry, until the next change.
    pub deliveries_given_up: Counter,
    /// Seconds from a change to the delivery that carried it to a subscriber.
    pub delivery_latency: Histogram,
    /// Seconds one group commit of the catalog took (write and fsync).
    pub commit_seconds: Histogram,
    /// Seconds one group commit of the configuration releases took (write and fsync).
    pub config_commit_seconds: Histogram,
    /// Audit records dropped because too many waited for the log service.
    pub audit_dropped: Counter,
    /// Releases instances reported applying.
    pub config_applied: Counter,
    /// Releases instances reported rejecting.
    pub config_rejected: Counter,
    /// Releases instances learned of by their periodic check instead of the push.
    pub config_push_missed: Counter,
}

impl Default for Metrics {
    #[expect(clippy::too_many_lines, reason = "one registration per metric, read top to bottom")]
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rollcall");
        let http = rollcall_http::observe::register(&mut registry, "registry", env!("CARGO_PKG_VERSION"));
        let instances = Family::<Label, Gauge>::default();
        registry.register("instances", "Registered instances by health state", instances.clone());
        let queues = Gauge::default();
        registry.register(
            "delivery_queues",
            "Delivery queues (subscribers that require services)",
            queues.clone(),
        );
        let queues_behind = Gauge::default();
        registry.register(
            "delivery_queues_behind",
            "Delivery queues with changes their subscriber does not hold yet",
            queues_behind.clone(),
        );
        let node_live = Gauge::default();
        registry.register(
            "node_live",
            "1 while this node holds its place among the registry nodes (always, alone)",
            node_live.clone(),
        );
        let nodes = Gauge::default();
        registry.register("nodes", "Live registry nodes this node sees", nodes.clone());
        let node_instances = Gauge::default();
        registry.register(
            "node_instances",
            "Instances this node probes: its share of the catalog",
            node_instances.clone(),
        );
        let probers = Gauge::default();
        registry.register(
            "probers",
            "Prober tasks running (one per registered instance)",
            probers.clone(),
        );
        let blocking_queries = Gauge::default();
        registry.register(
            "blocking_queries",
            "Blocking queries held until their index moves",
            blocking_queries.clone(),
        );

        let registrations = Family::<Label, Counter>::default();
        registry.register(
            "registrations",
            "Registrations acknowledged, by API",
            registrations.clone(),
        );
        let refused_registrations = Counter::default();
        registry.register(
            "registrations_refused",
            "Registrations refused because their callback failed or the address policy refused their URLs",
            refused_registrations.clone(),
        );
        let deregistrations = Family::<Label, Counter>::default();
        registry.register(
            "deregistrations",
            "Instances removed, by reason",
            deregistrations.clone(),
        );
        let probe_outcomes = Family::<Label, Counter>::default();
        registry.register("probes", "Health probes, by outcome", probe_outcomes.clone());
        let deliveries = Family::<Label, Counter>::default();
        registry.register("deliveries", "Patch delivery attempts, by outcome", deliveries.clone());

        // 1 ms to about 16 s.
        let delivery_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "delivery_latency_seconds",
            "Time from a change to the delivery that carried it to a subscriber",
            delivery_latency.clone(),
        );
        // 0.1 ms to about 1.6 s.
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register(
            "catalog_commit_seconds",
            "Time one group commit of the catalog took",
            commit_seconds.clone(),
        );
        let config_commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register(
            "config_commit_seconds",
            "Time one group commit of the configuration releases took",
            config_commit_seconds.clone(),
        );

        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped",
            "Audit records dropped because too many waited for the log service",
            audit_dropped.clone(),
        );

        let config_acks = Family::<Label, Counter>::default();
        registry.register(
            "config_acks",
            "Reports of instances on configuration releases, by status",
            config_acks.clone(),
        );
        let config_push_missed = Counter::default();
        registry.register(
            "config_push_missed",
            "Configuration releases an instance learned of by its periodic check instead of the push",
            config_push_missed.clone(),
        );

        // One statement each: `get_or_create` holds a read lock on its family until the end of
        // the statement, and a second call on the same family in one statement would deadlock.
        let counter = |family: &Family<Label, Counter>, name, value| family.get_or_create(&label(name, value)).clone();
        let seed_registrations = counter(&registrations, "api", "seed");
        let v1_registrations = counter(&registrations, "api", "v1");
        let reaped = counter(&deregistrations, "reason", "reaped");
        let deregistrations = counter(&deregistrations, "reason", "request");
        let probes_passed = counter(&probe_outcomes, "outcome", "passed");
        let probes_failed = counter(&probe_outcomes, "outcome", "failed");
        let deliveries_ok = counter(&deliveries, "outcome", "delivered");
        let deliveries_failed = counter(&deliveries, "outcome", "failed");
        let deliveries_given_up = counter(&deliveries, "outcome", "gave_up");
        let config_applied = counter(&config_acks, "status", "applied");
        let config_rejected = counter(&config_acks, "status", "rejected");
        Self {
            registry,
            http,
            instances,
            queues,
            queues_behind,
            node_live,
            nodes,
            node_instances,
            probers,
            blocking_queries,
            seed_registrations,
            v1_registrations,
            refused_registrations,
            deregistrations,
            reaped,
            probes_passed,
            probes_failed,
            deliveries_ok,
            deliveries_failed,
            deliveries_given_up,
            delivery_latency,
            commit_seconds,
            config_commit_seconds,
            audit_dropped,
            config_applied,
            config_rejected,
            config_push_missed,
        }
    }
}

/// What the catalog looks like at scrape time.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Instances in each state: passing, suspect, critical, pending, draining.
    pub instances: [usize; 5],
    /// Delivery queues.
    pub queues: usize,
    /// Delivery queues with undelivered changes.
    pub queues_behind: usize,
    /// Whether this node holds its place among the registry nodes.
    pub node_live: bool,
    /// The live registry nodes this node sees.
    pub nodes: usize,
    /// The instances this node probes.
    pub node_instances: usize,
}

impl Snapshot {
    /// Counts one instance in `state`.
    pub fn count(&mut self, state: InstanceState) {
        self.instances[state_slot(state)] += 1;
    }
}

fn state_slot(state: InstanceState) -> usize {
    match state {
        InstanceState::Passing => 0,
        InstanceState::Suspect => 1,
        InstanceState::Critical => 2,
        InstanceState::Pending => 3,
        InstanceState::Draining => 4,
    }
}

impl Metrics {
    /// The exposition, with the gauges set from `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        for state in [
            InstanceState::Pending,
            InstanceState::Passing,
            InstanceState::Suspect,
            InstanceState::Critical,
            InstanceState::Draining,
        ] {
            let count = snapshot.instances[state_slot(state)];
            self.instances
                .get_or_create(&label("state", state.as_str()))
                .set(gauge_value(count));
        }
        self.queues.set(gauge_value(snapshot.queues));
        self.queues_behind.set(gauge_value(snapshot.queues_behind));
        self.node_live.set(i64::from(snapshot.node_live));
        self.nodes.set(gauge_value(snapshot.nodes));
        self.node_instances.set(gauge_value(snapshot.node_instances));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
