//! `GET /v1/sd/prometheus`: every instance (and every registry node) as a Prometheus HTTP
//! service-discovery target, so that one scrape job covers the whole system as it grows and
//! shrinks (`http_sd_configs` in `prometheus.yml`; see docs/operations.md).
//!
//! Each instance is a target group of its own: `targets` its ServiceURL's `host:port`, labels
//! `service`, `instance_id` and `state`, with `__scheme__` from the URL and `__metrics_path__`
//! `/metrics` (or the instance's `metrics_path` metadata label). The registry nodes are listed as
//! service `Registry`, their node id as `instance_id`. Only passing instances are listed unless
//! `?state=all`; `?service=A,B` keeps those services.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use rollcall_wire::InstanceState;
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::error::ApiError;

/// The service name the registry nodes are listed under.
pub const REGISTRY_SERVICE: &str = "Registry";
/// The metadata label an instance names its metrics path with.
pub const METRICS_PATH_LABEL: &str = "metrics_path";

pub(super) fn router() -> Router<Arc<Core>> {
    Router::new().route("/v1/sd/prometheus", get(prometheus))
}

#[derive(Debug, Deserialize)]
struct SdQuery {
    state: Option<String>,
    service: Option<String>,
}

/// One target group as Prometheus' HTTP service discovery reads it.
#[derive(Debug, Serialize)]
struct TargetGroup {
    targets: [String; 1],
    labels: BTreeMap<&'static str, String>,
}

async fn prometheus(
    State(core): State<Arc<Core>>,
    query: Result<Query<SdQuery>, QueryRejection>,
) -> Result<Json<Vec<TargetGroup>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let all = match query.state.as_deref() {
        None | Some("passing") => false,
        Some("all") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("state={other:?}: ask for passing (the default) or all"),
            ));
        }
    };
    let wanted: Option<Vec<&str>> = query
        .service
        .as_deref()
        .map(|names| names.split(',').map(str::trim).filter(|n| !n.is_empty()).collect());
    let wanted = |service: &str| wanted.as_ref().is_none_or(|names| names.contains(&service));
    let mut groups = Vec::new();
    if wanted(REGISTRY_SERVICE) {
        let membership = core.nodes.membership();
        groups.extend(
            membership
                .nodes
                .values()
                .filter_map(|node| group(&node.url, REGISTRY_SERVICE, &node.id, InstanceState::Passing, None)),
        );
    }
    let services = core.catalog().services(!all);
    for service in services.iter().filter(|s| wanted(&s.name)) {
        groups.extend(service.instances.iter().filter_map(|instance| {
            let path = instance.metadata.get(METRICS_PATH_LABEL).map(String::as_str);
            group(&instance.url, &service.name, &instance.id, instance.state, path)
        }));
    }
    Ok(Json(groups))
}

/// The target group of the instance at `url`; `None` for a URL with no host.
fn group(url: &str, service: &str, id: &str, state: InstanceState, path: Option<&str>) -> Option<TargetGroup> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let port = parsed.port_or_known_default()?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let state = serde_json::to_value(state).ok()?.as_str()?.to_owned();
    let labels = BTreeMap::from([
        ("service", service.to_owned()),
        ("instance_id", id.to_owned()),
        ("state", state),
        ("__scheme__", parsed.scheme().to_owned()),
        ("__metrics_path__", path.unwrap_or("/metrics").to_owned()),
    ]);
    Some(TargetGroup {
        targets: [format!("{host}:{port}")],
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_becomes_a_target_of_its_host_and_port_with_its_labels() {
        let group = group(
            "https://grades.internal/app",
            "GradingService",
            "a1",
            InstanceState::Passing,
            Some("/app/metrics"),
        )
        .expect("a target");
        assert_eq!(group.targets, ["grades.internal:443".to_owned()]);
        assert_eq!(group.labels["service"], "GradingService");
        assert_eq!(group.labels["instance_id"], "a1");
        assert_eq!(group.labels["state"], "passing");
        assert_eq!(group.labels["__scheme__"], "https");
        assert_eq!(group.labels["__metrics_path__"], "/app/metrics");
        let v6 = super::group("http://[::1]:8080", "A", "b", InstanceState::Suspect, None).expect("a target");
        assert_eq!(v6.targets, ["[::1]:8080".to_owned()]);
        assert_eq!(v6.labels["__metrics_path__"], "/metrics");
    }
}
