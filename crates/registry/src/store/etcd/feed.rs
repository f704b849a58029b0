//! The etcd store's feed: one watch of the instances, their health, their subscribers' holdings,
//! the configuration releases and their rollouts from the revision this node last read, turning every change
//! into a [`Fed`] change, with its revision, for this node.
//!
//! A change another node made becomes what it changed ([`Change::One`], [`Change::Release`]).
//! This node's own write comes back as [`Change::Echo`] (its revision is known, or its key is
//! still being written: the writer's comparison settles a race with another node, and corrects
//! the catalog if its write loses): the catalog has it already, only its place in the shared
//! order is news. When the watch breaks (etcd
//! unreachable, a member without a leader) it is made again from the next revision, after a
//! backoff; when etcd compacted that revision away, the whole catalog is read again and handed
//! over as [`Change::All`].

use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::writer::{Known, Seen, SharedKnown, lock};
use super::{ACKS, TOKENS, change_of, prefix_end, read_all, retry_delays};
use crate::store::{Change, Fed};

/// Hands over `handed` (what subscribers held and the releases, read at revision `from - 1`),
/// then follows the catalog under `prefix` from revision `from` until `stop`, sending changes
/// to `changes`.
pub(super) async fn follow(
    client: Client,
    prefix: String,
    handed: Vec<Change>,
    mut from: i64,
    known: SharedKnown,
    changes: mpsc::Sender<Fed>,
    stop: CancellationToken,
) {
    if !hand_over(handed, u64::try_from(from - 1).unwrap_or(0), &changes).await {
        return;
    }
    let mut delays = retry_delays();
    while !stop.is_cancelled() {
        let outcome = tokio::select! {
            outcome = watch(&client, &prefix, &mut from, &known, &changes) => outcome,
            () = stop.cancelled() => return,
        };
        match outcome {
            Outcome::Compacted => {
                tracing::warn!(
                    revision = from,
                    "the catalog watch fell behind etcd's compaction; reading it whole"
                );
                match read_all(&client, &prefix).await {
                    Ok(mut snapshot) => {
                        {
                            let mut known = lock(&known);
                            let pending = std::mem::take(&mut known.pending);
                            *known = Known {
                                revisions: std::mem::take(&mut snapshot.revisions),
                                pending,
                            };
                        }
                        from = snapshot.at + 1;
                        let all = std::mem::take(&mut snapshot.stored);
                        let revision = u64::try_from(snapshot.at).unwrap_or(0);
                        if changes
                            .send(Fed {
                                revision,
                                change: Change::All(all),
                            })
                            .await
                            .is_err()
                            || !hand_over(snapshot.handed(), revision, &changes).await
                        {
                            return;
                        }
                        delays = retry_delays();
                        continue;
                    }
                    Err(error) => tracing::warn!(%error, "cannot read the catalog again"),
                }
            }
            Outcome::Broken(error) => tracing::warn!(%error, "the catalog watch broke; watching again"),
            Outcome::Closed => return,
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Sends `handed` (what each subscriber held, the releases) as changes; false once nobody
/// takes changes any more.
async fn hand_over(handed: Vec<Change>, revision: u64, changes: &mpsc::Sender<Fed>) -> bool {
    for change in handed {
        if changes.send(Fed { revision, change }).await.is_err() {
            return false;
        }
    }
    true
}

enum Outcome {
    /// The revision to watch from is compacted away.
    Compacted,
    /// The watch failed; it can be made again.
    Broken(String),
    /// Nobody takes changes any more.
    Closed,
}

/// Watches from `from` until the watch ends, advancing `from` past every revision delivered.
async fn watch(
    client: &Client,
    prefix: &str,
    from: &mut i64,
    known: &SharedKnown,
    changes: &mpsc::Sender<Fed>,
) -> Outcome {
    // One watch over the instances, their health, their subscribers' holdings and the
    // configuration releases (see `RELEASES` for the order; the nodes' keys between are skipped).
    let first = format!("{prefix}{ACKS}");
    let options = WatchOptions::new()
        .with_range(prefix_end(&format!("{prefix}{TOKENS}")))
        .with_start_revision(*from);
    let mut stream = match client.watch_client().watch(first, Some(options)).await {
        Ok(stream) => stream,
        Err(error) => return Outcome::Broken(error.to_string()),
    };
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Outcome::Broken("etcd ended the watch".to_owned()),
            Err(error) => return Outcome::Broken(error.to_string()),
        };
        if response.canceled() {
            return if response.compact_revision() > 0 {
                Outcome::Compacted
            } else {
                Outcome::Broken(format!("etcd cancelled the watch: {}", response.cancel_reason()))
            };
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            *from = (*from).max(revision + 1);
            let suffix = String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned();
            let echo = {
                let mut known = lock(known);
                if let Some(seen) = known.revisions.get(&suffix).copied()
                    && seen.revision >= revision
                {
                    // Known already: this node's own write. The watch has passed a tombstone
                    // once it delivers the deletion itself: nothing older can follow.
                    if !seen.exists && seen.revision == revision {
                        known.revisions.remove(&suffix);
                    }
                    true
                } else {
                    match event.event_type() {
                        EventType::Put => known.revisions.insert(suffix.clone(), Seen { revision, exists: true }),
                        EventType::Delete => known.revisions.remove(&suffix),
                    };
                    // A key this node is writing: its own write, come back before its answer
                    // (or another node's, which the writer's comparison will settle).
                    known.pending.contains_key(&suffix)
                }
            };
            let revision = u64::try_from(revision).unwrap_or(0);
            if echo {
                if changes
                    .send(Fed {
                        revision,
                        change: Change::Echo(suffix),
                    })
                    .await
                    .is_err()
                {
                    return Outcome::Closed;
                }
                continue;
            }
            let put = event.event_type() == EventType::Put;
            let Some(change) = change_of(&suffix, put.then(|| kv.value())) else {
                continue;
            };
            if changes.send(Fed { revision, change }).await.is_err() {
                return Outcome::Closed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rollcall_testkit::{DEADLINE, EtcdCluster};

    use super::*;
    use crate::store::EtcdArgs;
    use crate::store::contract::instance;
    use crate::store::etcd::CATALOG;

    #[tokio::test]
    async fn a_feed_behind_etcds_compaction_hands_over_the_whole_catalog() {
        let etcd = EtcdCluster::start(1);
        let args = EtcdArgs {
            endpoints: etcd.endpoints(),
            etcd_prefix: "/test/".to_owned(),
            ..EtcdArgs::default()
        };
        let client = args.connect().await.expect("connect");
        let prefix = args.etcd_prefix.clone();
        let mut kv = client.kv_client();
        for version in 1..=3 {
            let value = serde_json::to_vec(&instance("http://a", version)).expect("json");
            kv.put(format!("{prefix}{CATALOG}http://a"), value, None)
                .await
                .expect("put");
        }
        let latest = kv.put("/elsewhere", "x", None).await.expect("put");
        let revision = latest.header().expect("header").revision();
        kv.compact(revision, None).await.expect("compact");

        let (changes, mut feed) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let known = Arc::default();
        // From revision 1, long compacted away: the feed reads the catalog again.
        tokio::spawn(follow(
            client,
            prefix,
            Vec::new(),
            1,
            Arc::clone(&known),
            changes,
            stop.clone(),
        ));
        let change = tokio::time::timeout(DEADLINE, feed.recv()).await.expect("in time");
        let Some(Fed {
            change: Change::All(all),
            ..
        }) = change
        else {
            panic!("the whole catalog: {change:?}")
        };
        assert_eq!(
            crate::store::contract::by_url(all).into_values().collect::<Vec<_>>(),
            vec![instance("http://a", 3)]
        );
        assert!(
            lock(&known).revisions.contains_key("catalog/http://a"),
            "and learns its revisions"
        );
        stop.cancel();
    }
}
