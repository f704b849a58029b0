//! The rollouts' timer: while any gray rollout runs, every [`TICK`] it looks at each one's gray
//! instances (their health in the catalog, their reports on the candidate) and moves it on:
//! back when one turned critical or rejected the candidate, to its next step (or promoted)
//! once the step baked. It runs only while a rollout does, so an idle registry has no timer.
//! When registry nodes share a catalog, every node runs it while a rollout runs, but only the
//! rollout's owner among the live nodes moves it on (`Nodes::owns`, by the document's path);
//! its steps reach the other nodes through etcd. A rollout's bake is measured with the clock of
//! the node that moves it on, from the time its step began (written with it): nodes' clocks
//! should agree to well within a bake.
//! Which instances read a document ([`readers`]) is decided here too, for the timer, the
//! status and the publish of a rollout alike.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::core::Core;
use crate::releases::acks::Reader;
use crate::releases::rollout::{GrayInstance, Phase, Transition};
use crate::releases::{DocKey, SHARED};

/// How often running rollouts are looked at.
pub const TICK: Duration = Duration::from_millis(100);

/// The instances that read `key`: every registered instance of its service (of every service,
/// for a shared document).
pub(crate) fn readers(core: &Core, key: &DocKey) -> Vec<Reader> {
    let catalog = core.catalog();
    let views = if key.service == SHARED {
        catalog.services(false).into_iter().flat_map(|s| s.instances).collect()
    } else {
        catalog.service(&key.service, false).instances
    };
    views
        .into_iter()
        .map(|i| Reader {
            id: i.id,
            url: i.url,
            state: i.state,
            metadata: i.metadata,
        })
        .collect()
}

/// The metadata of instance `id`, for label steps (none for an unknown id).
pub(crate) fn metadata_of(core: &Core, id: Option<&str>) -> BTreeMap<String, String> {
    id.and_then(|id| core.catalog().instance_by_id(id).map(|i| i.metadata.clone()))
        .unwrap_or_default()
}

/// Starts the timer now if a rollout runs (one a restarted registry goes on with), and from
/// now on whenever a document with a running rollout changes (a rollout published here, or
/// taken in from another node).
pub(crate) fn follow(core: &Arc<Core>) {
    let mut documents = core.published.subscribe();
    if !core.published.documents().running_rollouts().is_empty() {
        watch(core);
    }
    let follower = Arc::clone(core);
    core.tasks.spawn(async move {
        loop {
            let changed = tokio::select! {
                () = follower.shutdown.cancelled() => return,
                changed = documents.recv() => changed,
            };
            let running = match changed {
                Ok(key) => follower
                    .published
                    .documents()
                    .rollout(&key)
                    .is_ok_and(|r| r.is_some_and(|r| r.phase == Phase::Running)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    !follower.published.documents().running_rollouts().is_empty()
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if running {
                watch(&follower);
            }
        }
    });
}

/// Starts the timer unless it runs.
fn watch(core: &Arc<Core>) {
    if core.published.rollout_timer.swap(true, Ordering::AcqRel) {
        return;
    }
    core.tasks.spawn(run(Arc::clone(core)));
}

async fn run(core: Arc<Core>) {
    loop {
        tokio::select! {
            () = core.shutdown.cancelled() => break,
            () = tokio::time::sleep(TICK) => {}
        }
        let running = core.published.documents().running_rollouts();
        if running.is_empty() {
            core.published.rollout_timer.store(false, Ordering::Release);
            // A rollout started between the look and the flag would have found it set.
            if core.published.documents().running_rollouts().is_empty()
                || core.published.rollout_timer.swap(true, Ordering::AcqRel)
            {
                break;
            }
            continue;
        }
        for (key, rollout) in running {
            // Over etcd, each rollout is moved on by one live node: its owner, chosen as for
            // an instance's probing; the others take its steps in (and one of them takes it
            // over if that node leaves).
            if !core.nodes.owns(&key.path()) {
                continue;
            }
            let gray: Vec<GrayInstance> = readers(&core, &key)
                .into_iter()
                .filter(|reader| rollout.runs_candidate(&reader.id, &reader.metadata))
                .map(|reader| GrayInstance {
                    report: core.published.report(&key, &reader.id),
                    id: reader.id,
                    state: reader.state,
                })
                .collect();
            match core.published.advance(&key, SystemTime::now(), &gray).await {
                Ok(None) => {}
                Ok(Some(Transition::RolledBack(why))) => {
                    tracing::warn!(document = %key.path(), %why, "rollout rolled back by itself");
                }
                Ok(Some(transition)) => tracing::info!(document = %key.path(), ?transition, "rollout moved on"),
                Err(error) => tracing::error!(document = %key.path(), %error, "cannot move a rollout on"),
            }
        }
    }
}
