//! A node's place among the nodes sharing a catalog in etcd: the key `{prefix}nodes/{id}`,
//! holding its [`NodeInfo`] under a lease it keeps alive, and a watch of every node's key.
//!
//! The node counts itself live only while its lease is surely current: it renews it every
//! third of the TTL and stops counting itself live two thirds of a TTL after the last renewal
//! it sent that etcd answered, which is before etcd can expire the lease (etcd counts from when
//! it received the renewal). So a node cut from etcd stops its work before any other node can
//! see its key expire and take the work over: no two nodes do one instance's work at once.
//! A node that lost its place takes a new lease and puts its key again as soon as etcd answers.
//! A stopping node revokes its lease, so that the others take its share over at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Membership, NodeInfo, Nodes};
use crate::store::{EtcdArgs, StoreError, retry_delays};

/// Takes `me`'s place among the nodes under `args`' prefix with a lease of `ttl` (whole
/// seconds, at least one), and keeps it, and the view of the others, until `stop`.
pub(crate) async fn join(
    args: &EtcdArgs,
    me: NodeInfo,
    ttl: Duration,
    stop: CancellationToken,
) -> Result<Nodes, StoreError> {
    let client = args.connect().await?;
    let place = Place {
        prefix: format!("{}nodes/", args.etcd_prefix),
        me: me.clone(),
        ttl: Duration::from_secs(ttl.as_secs().max(1)),
    };
    let lease = place
        .take(&client)
        .await
        .map_err(|e| StoreError::new("cannot take a place among the registry nodes in etcd", e))?;
    let (view, receiver) = watch::channel(Membership {
        live: true,
        nodes: BTreeMap::new(),
    });
    tokio::spawn(watch_nodes(
        client.clone(),
        place.prefix.clone(),
        view.clone(),
        stop.clone(),
    ));
    tokio::spawn(place.keep(client, lease, view, stop));
    Ok(Nodes { me, view: receiver })
}

/// A node's key and lease.
struct Place {
    prefix: String,
    me: NodeInfo,
    ttl: Duration,
}

impl Place {
    /// Grants a lease and puts the node's key under it; returns the lease.
    async fn take(&self, client: &Client) -> Result<i64, etcd_client::Error> {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let lease = client.lease_client().grant(ttl, None).await?.id();
        let value = serde_json::to_vec(&self.me).unwrap_or_default();
        client
            .kv_client()
            .put(self.key(), value, Some(PutOptions::new().with_lease(lease)))
            .await?;
        Ok(lease)
    }

    fn key(&self) -> String {
        format!("{}{}", self.prefix, self.me.id)
    }

    /// Keeps `lease` alive; when it is lost, takes a new place; on `stop`, revokes it.
    async fn keep(self, client: Client, mut lease: i64, view: watch::Sender<Membership>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = self.renew(&client, lease, &view) => {}
                () = stop.cancelled() => {
                    let mut leases = client.lease_client();
                    let _ = tokio::time::timeout(Duration::from_secs(1), leases.revoke(lease)).await;
                    return;
                }
            }
            set_live(&view, false);
            tracing::warn!(node = %self.me.id, "lost this node's place among the registry nodes: probing nothing until it is back");
            let mut delays = retry_delays();
            loop {
                let taken = tokio::select! {
                    taken = self.take(&client) => taken,
                    () = stop.cancelled() => return,
                };
                match taken {
                    Ok(new) => {
                        lease = new;
                        set_live(&view, true);
                        tracing::info!(node = %self.me.id, "this node holds its place among the registry nodes again");
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "cannot take a place yet");
                        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
                    }
                }
            }
        }
    }

    /// Renews `lease` every third of the TTL; returns once this node can no longer be sure it
    /// holds it (two thirds of a TTL without an answered renewal, or etcd saying it expired).
    async fn renew(&self, client: &Client, lease: i64, view: &watch::Sender<Membership>) {
        let every = self.ttl / 3;
        let sure_for = self.ttl.saturating_sub(every);
        let mut answered = Instant::now();
        let mut keeping = None;
        while answered.elapsed() < sure_for {
            let sent = Instant::now();
            let held = keeping.take();
            let attempt = async {
                let (mut keeper, mut stream) = match held {
                    Some(kept) => kept,
                    None => client.lease_client().keep_alive(lease).await?,
                };
                keeper.keep_alive().await?;
                let answer = stream.message().await?;
                Ok::<_, etcd_client::Error>((answer, (keeper, stream)))
            };
            match tokio::time::timeout(every, attempt).await {
                Ok(Ok((Some(answer), kept))) if answer.ttl() > 0 => {
                    keeping = Some(kept);
                    answered = sent;
                    set_live(view, true);
                }
                // etcd says the lease is gone.
                Ok(Ok((Some(_), _))) => return,
                // No answer: a new keep-alive stream next time.
                _ => {}
            }
            tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
        }
    }
}

fn set_live(view: &watch::Sender<Membership>, live: bool) {
    view.send_if_modified(|m| std::mem::replace(&mut m.live, live) != live);
}

/// Keeps `view.nodes` equal to the nodes' keys under `prefix`: reads them, then follows their
/// changes; reads again whenever the watch breaks.
async fn watch_nodes(client: Client, prefix: String, view: watch::Sender<Membership>, stop: CancellationToken) {
    let mut delays = retry_delays();
    while !stop.is_cancelled() {
        tokio::select! {
            error = follow_nodes(&client, &prefix, &view) => {
                tracing::debug!(%error, "the watch of the registry nodes broke");
            }
            () = stop.cancelled() => return,
        }
        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
    }
}

/// Reads the nodes and follows their changes until the watch fails, returning why.
async fn follow_nodes(client: &Client, prefix: &str, view: &watch::Sender<Membership>) -> etcd_client::Error {
    let read = match client
        .kv_client()
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
    {
        Ok(read) => read,
        Err(error) => return error,
    };
    let nodes: BTreeMap<String, NodeInfo> = read
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice::<NodeInfo>(kv.value()).ok())
        .map(|node| (node.id.clone(), node))
        .collect();
    view.send_if_modified(|m| std::mem::replace(&mut m.nodes, nodes.clone()) != nodes);
    let from = read.header().map_or(0, etcd_client::ResponseHeader::revision) + 1;
    let options = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = match client.watch_client().watch(prefix, Some(options)).await {
        Ok(stream) => stream,
        Err(error) => return error,
    };
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) if !response.canceled() => response,
            Ok(_) => return etcd_client::Error::WatchError("etcd ended the watch".to_owned()),
            Err(error) => return error,
        };
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let id = String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned();
            view.send_modify(|m| match event.event_type() {
                EventType::Put => {
                    if let Ok(node) = serde_json::from_slice::<NodeInfo>(kv.value()) {
                        m.nodes.insert(id, node);
                    }
                }
                EventType::Delete => {
                    m.nodes.remove(&id);
                }
            });
        }
    }
}
