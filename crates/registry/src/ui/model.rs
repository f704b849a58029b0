//! What the dashboard shows, computed from the catalog's service views without any I/O: each
//! service's instance counts and health, who requires whom, and the dependency graph laid out
//! for SVG.
//!
//! The graph puts services that require nothing in the left column and every other service one
//! column right of the furthest service it requires, so edges (dependent → provider) point left;
//! a cycle is cut where it closes. A service that is required but has no passing instance is
//! `missing` (no instance at all) or `down`, and stands out in the table and the graph.

use std::collections::{BTreeMap, BTreeSet};

use rollcall_wire::{InstanceState, ServiceView};

/// How a service is doing, by its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Every instance passes.
    Passing,
    /// Some instances pass, some do not.
    Degraded,
    /// Instances are registered but none passes.
    Down,
    /// Required by another service, but no instance is registered.
    Missing,
}

impl Health {
    /// The CSS class (colour is never the only signal: see [`Health::words`]).
    pub(crate) fn class(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Degraded => "degraded",
            Self::Down => "down",
            Self::Missing => "missing",
        }
    }

    /// The state in words.
    pub(crate) fn words(self) -> &'static str {
        match self {
            Self::Passing => "all passing",
            Self::Degraded => "degraded",
            Self::Down => "no passing instance",
            Self::Missing => "not registered",
        }
    }
}

/// One row of the overview.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSummary {
    pub name: String,
    pub passing: usize,
    pub suspect: usize,
    pub critical: usize,
    pub health: Health,
    pub requires: Vec<String>,
    pub required_by: Vec<String>,
}

impl ServiceSummary {
    /// Required by someone, yet nobody can call it.
    pub(crate) fn stands_out(&self) -> bool {
        !self.required_by.is_empty() && self.passing == 0
    }

    /// "2 passing, 1 critical" or "no instances".
    pub(crate) fn counts(&self) -> String {
        let parts: Vec<String> = [
            (self.passing, "passing"),
            (self.suspect, "suspect"),
            (self.critical, "critical"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, word)| format!("{n} {word}"))
        .collect();
        if parts.is_empty() {
            "no instances".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Every service, registered or only required, by name.
pub(crate) fn summarize(views: &[ServiceView]) -> Vec<ServiceSummary> {
    let mut requires: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for view in views {
        let entry = requires.entry(view.name.as_str()).or_default();
        for instance in &view.instances {
            entry.extend(instance.required_services.iter().map(String::as_str));
        }
    }
    let mut required_by: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (dependent, providers) in &requires {
        for provider in providers {
            required_by.entry(provider).or_default().insert(dependent);
        }
    }
    let names: BTreeSet<&str> = requires.keys().chain(required_by.keys()).copied().collect();
    names
        .into_iter()
        .map(|name| {
            let view = views.iter().find(|v| v.name == name);
            let count = |state| view.map_or(0, |v| v.instances.iter().filter(|i| i.state == state).count());
            let (passing, suspect, critical) = (
                count(InstanceState::Passing),
                count(InstanceState::Suspect),
                count(InstanceState::Critical),
            );
            // Pending and draining instances are not held by dependents: they count against it.
            let out_of_rotation = count(InstanceState::Pending) + count(InstanceState::Draining);
            let health = match (passing, suspect + critical + out_of_rotation) {
                (0, 0) => Health::Missing,
                (0, _) => Health::Down,
                (_, 0) => Health::Passing,
                _ => Health::Degraded,
            };
            let list = |map: &BTreeMap<&str, BTreeSet<&str>>| {
                map.get(name)
                    .map(|s| s.iter().map(|n| (*n).to_owned()).collect())
                    .unwrap_or_default()
            };
            ServiceSummary {
                name: name.to_owned(),
                passing,
                suspect,
                critical,
                health,
                requires: list(&requires),
                required_by: list(&required_by),
            }
        })
        .collect()
}

/// Node size and spacing, in SVG user units.
const NODE_WIDTH: u32 = 170;
const NODE_HEIGHT: u32 = 46;
const COLUMN_GAP: u32 = 70;
const ROW_GAP: u32 = 18;
const MARGIN: u32 = 12;

/// A service placed in the graph.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub name: String,
    pub x: u32,
    pub y: u32,
    pub health: Health,
    pub stands_out: bool,
    pub detail: String,
}

/// A "requires" edge from a dependent's left side to its provider's right side.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    pub from: String,
    pub to: String,
    pub x1: u32,
    pub y1: u32,
    pub x2: u32,
    pub y2: u32,
    /// The provider has no passing instance.
    pub broken: bool,
}

/// The laid-out dependency graph.
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub width: u32,
    pub height: u32,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// Lays the services out in columns by dependency depth.
pub(crate) fn graph(services: &[ServiceSummary]) -> Graph {
    let by_name: BTreeMap<&str, &ServiceSummary> = services.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut depth: BTreeMap<&str, u32> = BTreeMap::new();
    for service in services {
        column_of(service.name.as_str(), &by_name, &mut depth, &mut BTreeSet::new());
    }
    let mut rows_in_column: BTreeMap<u32, u32> = BTreeMap::new();
    let mut place: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for service in services {
        let column = depth[service.name.as_str()];
        let row = rows_in_column.entry(column).or_insert(0);
        let x = MARGIN + column * (NODE_WIDTH + COLUMN_GAP);
        let y = MARGIN + *row * (NODE_HEIGHT + ROW_GAP);
        *row += 1;
        place.insert(service.name.as_str(), (x, y));
    }
    let nodes = services
        .iter()
        .map(|s| {
            let (x, y) = place[s.name.as_str()];
            Node {
                name: s.name.clone(),
                x,
                y,
                health: s.health,
                stands_out: s.stands_out(),
                detail: s.counts(),
            }
        })
        .collect();
    let edges = services
        .iter()
        .flat_map(|dependent| dependent.requires.iter().map(move |provider| (dependent, provider)))
        .filter_map(|(dependent, provider)| {
            let (dx, dy) = place[dependent.name.as_str()];
            let (px, py) = *place.get(provider.as_str())?;
            Some(Edge {
                from: dependent.name.clone(),
                to: provider.clone(),
                x1: dx,
                y1: dy + NODE_HEIGHT / 2,
                x2: px + NODE_WIDTH,
                y2: py + NODE_HEIGHT / 2,
                broken: by_name.get(provider.as_str()).is_some_and(|p| p.passing == 0),
            })
        })
        .collect();
    let columns = rows_in_column.keys().max().map_or(0, |c| c + 1);
    let rows = rows_in_column.values().max().copied().unwrap_or(0);
    Graph {
        width: MARGIN * 2 + columns * NODE_WIDTH + columns.saturating_sub(1) * COLUMN_GAP,
        height: MARGIN * 2 + rows * NODE_HEIGHT + rows.saturating_sub(1) * ROW_GAP,
        nodes,
        edges,
    }
}

/// One more than the deepest column among what `name` requires (0 when it requires nothing);
/// a service already on the current path (a cycle) counts as column 0.
fn column_of<'a>(
    name: &'a str,
    by_name: &BTreeMap<&'a str, &'a ServiceSummary>,
    depth: &mut BTreeMap<&'a str, u32>,
    path: &mut BTreeSet<&'a str>,
) -> u32 {
    if let Some(known) = depth.get(name) {
        return *known;
    }
    if !path.insert(name) {
        return 0;
    }
    let column = by_name.get(name).map_or(0, |service| {
        service
            .requires
            .iter()
            .map(|provider| column_of(provider.as_str(), by_name, depth, path) + 1)
            .max()
            .unwrap_or(0)
    });
    path.remove(name);
    depth.insert(name, column);
    column
}

#[cfg(test)]
mod tests {
    use rollcall_wire::InstanceView;

    use super::*;

    fn instance(service: &str, url: &str, state: InstanceState, requires: &[&str]) -> InstanceView {
        InstanceView {
            id: url.into(),
            service: service.into(),
            url: url.into(),
            state,
            heartbeat_url: format!("{url}/heartbeat"),
            update_url: format!("{url}/services"),
            required_services: requires.iter().map(|s| (*s).to_owned()).collect(),
            registered_at: "2026-11-25T12:00:00Z".into(),
            last_check_at: None,
            last_error: None,
            last_error_detail: None,
            consecutive_failures: 0,
            metadata: BTreeMap::new(),
            check: rollcall_wire::CheckView::default(),
            config_update_url: None,
        }
    }

    fn view(name: &str, instances: Vec<InstanceView>) -> ServiceView {
        ServiceView {
            name: name.into(),
            instances,
        }
    }

    #[test]
    fn health_and_requirements_come_from_the_instances() {
        let views = [
            view(
                "Portal",
                vec![instance(
                    "Portal",
                    "p",
                    InstanceState::Passing,
                    &["GradingService", "LogService"],
                )],
            ),
            view(
                "GradingService",
                vec![
                    instance("GradingService", "g1", InstanceState::Passing, &["LogService"]),
                    instance("GradingService", "g2", InstanceState::Critical, &["LogService"]),
                ],
            ),
        ];
        let services = summarize(&views);
        let get = |name: &str| services.iter().find(|s| s.name == name).expect(name);
        assert_eq!(get("GradingService").health, Health::Degraded);
        assert_eq!(get("GradingService").counts(), "1 passing, 1 critical");
        assert_eq!(get("GradingService").required_by, ["Portal"]);
        let logs = get("LogService");
        assert_eq!(logs.health, Health::Missing, "required but never registered");
        assert!(logs.stands_out());
        assert_eq!(logs.required_by, ["GradingService", "Portal"]);
    }

    #[test]
    fn dependents_sit_right_of_their_providers_and_cycles_do_not_loop() {
        let views = [
            view(
                "Portal",
                vec![instance("Portal", "p", InstanceState::Passing, &["GradingService"])],
            ),
            view(
                "GradingService",
                vec![instance("GradingService", "g", InstanceState::Passing, &["LogService"])],
            ),
            view(
                "LogService",
                vec![instance("LogService", "l", InstanceState::Passing, &[])],
            ),
            view("A", vec![instance("A", "a", InstanceState::Passing, &["B"])]),
            view("B", vec![instance("B", "b", InstanceState::Passing, &["A"])]),
        ];
        let graph = graph(&summarize(&views));
        let x = |name: &str| graph.nodes.iter().find(|n| n.name == name).expect(name).x;
        assert!(x("LogService") < x("GradingService") && x("GradingService") < x("Portal"));
        assert_eq!(graph.edges.len(), 4);
        assert!(
            graph
                .edges
                .iter()
                .all(|e| e.x1 > e.x2 || e.from == "A" || e.from == "B")
        );
    }
}
