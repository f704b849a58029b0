//! A delivery queue's configuration feed: the releases a subscriber that asked for its
//! configuration by webhook is to run, sent one at a time after its patches, each answer
//! recorded as the instance's report; and the listener that wakes these queues when a document
//! of their namespace changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::{Subscriber, Subscribers, lock};
use crate::core::Core;
use crate::outbound::CallError;
use crate::releases::DocKey;

/// The label that names the configuration namespace a webhook subscriber reads (`default`
/// without it).
pub const NAMESPACE_LABEL: &str = "config-namespace";

/// A subscriber's configuration by webhook.
#[derive(Debug)]
pub(crate) struct ConfigFeed {
    /// Where releases are sent (`POST`).
    pub url: url::Url,
    /// The instance's public id (what its reports are recorded as).
    pub instance: String,
    /// Its service.
    pub service: String,
    /// The namespace it reads.
    pub namespace: String,
    /// The revision of each document it was sent and answered.
    pub delivered: Mutex<HashMap<DocKey, u64>>,
}

/// What one step of a configuration feed did.
pub(super) enum Delivered {
    /// The subscriber holds what it is to run of every document (or has no feed).
    Current,
    /// One release was delivered and answered.
    One,
    /// The queue was stopped.
    Cancelled,
    /// The webhook failed; it is retried.
    Failed(CallError),
}

/// Sends the subscriber the first release it is to run and was not sent yet, and records its
/// answer as its report.
pub(super) async fn deliver_config(core: &Core, subscriber: &Subscriber) -> Delivered {
    let Some(feed) = &subscriber.config else {
        return Delivered::Current;
    };
    let metadata = core
        .catalog()
        .current(&subscriber.url, subscriber.id)
        .map(|i| i.metadata.clone())
        .unwrap_or_default();
    let next = {
        let documents = core.published.documents();
        let delivered = feed.delivered.lock().unwrap_or_else(PoisonError::into_inner);
        documents
            .read_by(&feed.namespace, &feed.service)
            .into_iter()
            .find_map(|key| {
                let release = documents.release_for(&key, Some(&feed.instance), &metadata).ok()?;
                (delivered.get(&key) != Some(&release.meta.revision)).then_some((key, release))
            })
    };
    let Some((key, release)) = next else {
        return Delivered::Current;
    };
    let event = rollcall_wire::ReleaseEvent {
        release: release.meta.view(&release.key),
        content: release.content.clone(),
    };
    let body = serde_json::to_vec(&event)
        .expect("a release event always encodes")
        .into();
    let client = core.outbound.client(subscriber.registrant);
    let sent = tokio::select! {
        () = subscriber.cancel.cancelled() => return Delivered::Cancelled,
        sent = client.post_json(&feed.url, body, core.config.notify_timeout) => sent,
    };
    let (status, reason) = match sent {
        Ok(()) => (rollcall_wire::AckStatus::Applied, String::new()),
        Err(CallError::Status(422)) => (
            rollcall_wire::AckStatus::Rejected,
            "the webhook answered 422".to_owned(),
        ),
        Err(error) => {
            tracing::debug!(url = %subscriber.url, document = %key.path(), %error, "configuration webhook failed");
            return Delivered::Failed(error);
        }
    };
    core.published
        .record(&key, &feed.instance, release.meta.revision, status, reason);
    feed.delivered
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, release.meta.revision);
    Delivered::One
}

/// Wakes the queues with a configuration feed of a namespace whenever one of its documents
/// changes, until shutdown.
pub(super) async fn wake_on_releases(core: Arc<Core>, subscribers: Arc<Subscribers>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = core.published.subscribe();
    loop {
        let key = tokio::select! {
            () = core.shutdown.cancelled() => return,
            change = changes.recv() => match change {
                Ok(key) => Some(key),
                Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            },
        };
        for subscriber in lock(&subscribers).values() {
            let Some(feed) = &subscriber.config else { continue };
            if key
                .as_ref()
                .is_none_or(|key| key.read_by(&feed.namespace, &feed.service))
            {
                subscriber.behind().get_or_insert_with(Instant::now);
                subscriber.wake.notify_one();
            }
        }
    }
}
