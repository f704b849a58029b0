//! The registry nodes that share one catalog, and which of them does each instance's work.
//!
//! Every node has an id, new at each start. Alone (the embedded store), a node is the only one
//! and does all the work. Over etcd (`membership`), each node holds its place under a lease and
//! watches the others'; [`Nodes`] is its view: which nodes are live, and whether it is itself
//! (a node that could not renew its lease in time is not, and does no work until it holds a
//! place again).
//!
//! Each instance's probing belongs to exactly one live node, chosen by rendezvous hashing over
//! the live set ([`owner`]): every node computes the same owner from the same set, and a node
//! joining or leaving moves only the instances it takes or held.

mod membership;

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_lc_rs::digest;
use tokio::sync::watch;

pub(crate) use membership::join;

/// One node, as it announces itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NodeInfo {
    /// Its id.
    pub id: String,
    /// Where it serves.
    pub url: String,
    /// When it started (RFC 3339).
    pub started_at: String,
}

impl NodeInfo {
    /// A new node serving at `url`, with a new id.
    pub fn new(url: &str) -> Self {
        let id = crate::state::new_instance_id()[..16].to_owned();
        Self {
            id,
            url: url.to_owned(),
            started_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        }
    }
}

/// What a node sees of the live set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Membership {
    /// Whether this node holds its place (its lease is current, as far as it can tell).
    pub live: bool,
    /// The live nodes, by id.
    pub nodes: BTreeMap<String, NodeInfo>,
}

/// This node and its view of the live set.
#[derive(Debug, Clone)]
pub(crate) struct Nodes {
    me: NodeInfo,
    view: watch::Receiver<Membership>,
}

impl Nodes {
    /// `me`, alone: always live, owning everything.
    pub fn alone(me: NodeInfo) -> Self {
        let membership = Membership {
            live: true,
            nodes: BTreeMap::from([(me.id.clone(), me.clone())]),
        };
        let (_, view) = watch::channel(membership);
        Self { me, view }
    }

    /// This node.
    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    /// The live set as this node sees it now.
    pub fn membership(&self) -> Membership {
        self.view.borrow().clone()
    }

    /// Whether this node does the work of `key` (an instance's ServiceURL, a rollout's
    /// document's path) now.
    pub fn owns(&self, key: &str) -> bool {
        let view = self.view.borrow();
        view.live && owner(key, view.nodes.keys()) == Some(&self.me.id)
    }

    /// The live node that does the work of `key` now, by id (as [`Self::owns`] decides).
    pub fn owner_of(&self, key: &str) -> Option<String> {
        owner(key, self.view.borrow().nodes.keys()).cloned()
    }

    /// The changes of the live set (or of this node's place in it) from now on. Take it before
    /// looking at [`Self::owns`], so that no change between the look and the wait is missed.
    pub fn changes(&self) -> Changes {
        let mut view = self.view.clone();
        view.borrow_and_update();
        Changes(view)
    }
}

/// The changes of the live set, as [`Nodes::changes`] gives them.
#[derive(Debug)]
pub(crate) struct Changes(watch::Receiver<Membership>);

impl Changes {
    /// Waits until the live set changed since this was taken (or since the last wait), or
    /// forever once nobody can change it any more (a node alone).
    pub async fn next(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The node, of `nodes`, that does the work of `key`: the one whose hash with the key is
/// highest (rendezvous hashing). The hash is SHA-256, the same in every version and on every
/// machine, so that nodes of different builds agree during a rolling upgrade.
pub(crate) fn owner<'a>(key: &str, nodes: impl IntoIterator<Item = &'a String>) -> Option<&'a String> {
    let mut nodes = nodes.into_iter().peekable();
    let first = nodes.next()?;
    if nodes.peek().is_none() {
        // Alone (every probe of an embedded registry asks): no hash to compute.
        return Some(first);
    }
    std::iter::once(first).chain(nodes).max_by_key(|node| weight(node, key))
}

fn weight(node: &str, key: &str) -> u64 {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(node.as_bytes());
    context.update(&[0]);
    context.update(key.as_bytes());
    let hash = context.finish();
    let mut first = [0; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn keys() -> Vec<String> {
        (0..3_000)
            .map(|i| format!("http://10.0.0.{}:{}", i % 250, 8000 + i))
            .collect()
    }

    #[test]
    fn every_node_computes_the_same_owner_whatever_order_it_lists_the_nodes_in() {
        let nodes = ids(3);
        let reversed: Vec<String> = nodes.iter().rev().cloned().collect();
        for key in keys() {
            assert_eq!(owner(&key, &nodes), owner(&key, &reversed));
        }
    }

    #[test]
    fn the_work_is_spread_evenly() {
        let nodes = ids(3);
        let mut shares = BTreeMap::<&String, usize>::new();
        for key in keys() {
            *shares.entry(owner(&key, &nodes).expect("an owner")).or_default() += 1;
        }
        for (node, share) in shares {
            assert!((800..=1_200).contains(&share), "{node} owns {share} of 3,000");
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_share_and_a_node_joining_takes_only_from_others() {
        let three = ids(3);
        let two = &three[..2];
        for key in keys() {
            let before = owner(&key, &three).expect("owner");
            let after = owner(&key, two).expect("owner");
            if before != &three[2] {
                assert_eq!(before, after, "{key} moved though its owner stayed");
            }
        }
    }

    #[test]
    fn a_node_alone_owns_everything_and_a_node_not_live_owns_nothing() {
        let me = NodeInfo::new("http://127.0.0.1:1");
        let alone = Nodes::alone(me.clone());
        assert!(keys().iter().all(|key| alone.owns(key)));
        let (_, view) = watch::channel(Membership {
            live: false,
            nodes: BTreeMap::from([(me.id.clone(), me.clone())]),
        });
        let cut = Nodes { me, view };
        assert!(!keys().iter().any(|key| cut.owns(key)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_between_looking_and_waiting_is_not_missed_and_a_node_alone_never_changes() {
        let me = NodeInfo::new("http://127.0.0.1:1");
        let (sender, view) = watch::channel(Membership::default());
        let nodes = Nodes { me: me.clone(), view };
        let mut changes = nodes.changes();
        assert!(!nodes.owns("http://a"), "looked: not ours");
        sender.send_modify(|m| {
            m.live = true;
            m.nodes.insert(me.id.clone(), me.clone());
        });
        let seen = tokio::time::timeout(std::time::Duration::from_secs(1), changes.next()).await;
        assert!(seen.is_ok(), "the change made before the wait is seen");
        assert!(nodes.owns("http://a"));

        let alone = Nodes::alone(me);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(3600), alone.changes().next()).await;
        assert!(waited.is_err(), "a node alone waits for ever, without spinning");
    }
}
