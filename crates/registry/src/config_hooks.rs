//! Configuration webhooks: for an instance registered with a `ConfigUpdateURL` (a service that
//! holds no configuration stream, in the Go originals' style), one task POSTs each release it is
//! to run of every document its service reads, and records the answer as its report: 2xx
//! applied, 422 rejected. Delivery is level-triggered like the patch queues': the task compares
//! what it delivered with what the instance is to run now (a new release, a rollout's step, a
//! rollback), sends the difference, retries failures with backoff, and sleeps until a document
//! changes. The namespace is the instance's `config-namespace` label (`default` without one).
//!
//! A task ends when its registration leaves the catalog or is replaced, or on shutdown;
//! [`Hooks`] keeps their abort handles, like the probers'.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rollcall_wire::{AckStatus, ReleaseEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;

use crate::core::Core;
use crate::outbound::CallError;
use crate::releases::DocKey;
use crate::state::InstanceId;

/// The label that names the namespace an instance reads.
pub const NAMESPACE_LABEL: &str = "config-namespace";

/// The running webhook tasks, by registration.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    handles: Arc<Mutex<HashMap<InstanceId, AbortHandle>>>,
}

impl Hooks {
    /// Starts delivering to registration `id` of the instance at `url`.
    pub fn start(&self, core: &Arc<Core>, url: String, id: InstanceId) {
        let task = core.tasks.spawn(deliver(Arc::clone(core), url, id));
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(older) = handles.insert(id, task.abort_handle()) {
            older.abort();
        }
    }

    /// Stops delivering to registration `id`.
    pub fn stop(&self, id: InstanceId) {
        if let Some(task) = self.handles.lock().unwrap_or_else(PoisonError::into_inner).remove(&id) {
            task.abort();
        }
    }
}

/// POSTs each of `wanted` that `delivered` does not hold yet to `target`, recording the answers
/// as the instance's reports; whether any failed (`None` on shutdown).
async fn send_missing(
    core: &Core,
    client: &crate::outbound::Client,
    target: &url::Url,
    instance: &str,
    wanted: Vec<(DocKey, Arc<crate::releases::StoredRelease>)>,
    delivered: &mut HashMap<DocKey, u64>,
) -> Option<bool> {
    let mut failed = false;
    for (key, release) in wanted {
        if delivered.get(&key) == Some(&release.meta.revision) {
            continue;
        }
        let event = ReleaseEvent {
            release: release.meta.view(&release.key),
            content: release.content.clone(),
        };
        let body = serde_json::to_vec(&event)
            .expect("a release event always encodes")
            .into();
        let outcome = tokio::select! {
            () = core.shutdown.cancelled() => return None,
            outcome = client.post_json(target, body, core.config.notify_timeout) => outcome,
        };
        let (status, reason) = match outcome {
            Ok(()) => (AckStatus::Applied, String::new()),
            Err(CallError::Status(422)) => (AckStatus::Rejected, "the webhook answered 422".to_owned()),
            Err(error) => {
                tracing::debug!(%target, document = %key.path(), %error, "configuration webhook failed");
                failed = true;
                continue;
            }
        };
        core.published
            .record(&key, instance, release.meta.revision, status, reason);
        delivered.insert(key, release.meta.revision);
    }
    Some(failed)
}

/// Backoff between two failed deliveries: 100 ms doubling to 30 s.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(30);

async fn deliver(core: Arc<Core>, url: String, id: InstanceId) {
    let mut live = core.published.subscribe();
    let mut delivered: HashMap<DocKey, u64> = HashMap::new();
    let mut retry = FIRST_RETRY;
    loop {
        let Some((instance, service, target, registrant, metadata)) = core.catalog().current(&url, id).map(|i| {
            (
                i.instance_id.clone(),
                i.registration.service_name.clone(),
                i.config_url.clone(),
                i.registrant.peer,
                i.metadata.clone(),
            )
        }) else {
            return;
        };
        let Some(target) = target.and_then(|t| url::Url::parse(&t).ok()) else {
            return;
        };
        let namespace = metadata
            .get(NAMESPACE_LABEL)
            .map_or("default", String::as_str)
            .to_owned();
        let wanted: Vec<_> = {
            let documents = core.published.documents();
            documents
                .read_by(&namespace, &service)
                .into_iter()
                .filter_map(|key| {
                    Some((
                        key.clone(),
                        documents.release_for(&key, Some(&instance), &metadata).ok()?,
                    ))
                })
                .collect()
        };
        let client = core.outbound.client(registrant);
        let Some(failed) = send_missing(&core, &client, &target, &instance, wanted, &mut delivered).await else {
            return;
        };
        let wait = if failed {
            let wait = retry;
            retry = (retry * 2).min(LAST_RETRY);
            Some(wait)
        } else {
            retry = FIRST_RETRY;
            None
        };
        let changed = async {
            loop {
                match live.recv().await {
                    Ok(key) if key.namespace == namespace => return,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            () = core.shutdown.cancelled() => return,
            () = changed => {}
            () = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}
