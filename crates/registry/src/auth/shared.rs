//! The token list shared between the registry nodes of one catalog (over etcd): a token issued
//! or revoked through any node is verified, or refused, by every node.
//!
//! What is shared is what `tokens.json` keeps (each token's listing and the SHA-256 of its
//! text), never a token's text. A node issues or revokes through etcd first and then its own
//! file, both before the answer; it takes in what the other nodes did from its watch
//! ([`Tokens::take_in`]), and writes it to its file too, so that a node restarted while etcd is
//! away still knows every token it last knew. When a node joins, it shares the tokens it has
//! (its own admin token among them), and takes in the others'.

use std::sync::Arc;

use super::{Entry, StoredToken, TokenError, Tokens};
use crate::store::{ShareTokens, StoreError};

impl Tokens {
    /// Shares this list through `shared` from now on, starting with every token kept here.
    pub fn share_through(&self, shared: Arc<dyn ShareTokens>) {
        let kept: Vec<StoredToken> = self
            .entries()
            .into_iter()
            .filter(|entry| !entry.ephemeral)
            .map(|entry| entry.stored)
            .collect();
        for token in &kept {
            // Not waited for: a token this node issued before it joined.
            drop(shared.share_token(&token.view.id, serde_json::to_vec(token).ok()));
        }
        let _ = self.shared.set(shared);
    }

    /// Shares the token `id` as `token` (or its revocation) and waits until it is durable.
    pub(super) async fn share(&self, id: &str, token: Option<&StoredToken>) -> Result<(), TokenError> {
        let Some(shared) = self.shared.get() else {
            return Ok(());
        };
        let value =
            token.map(|t| serde_json::to_vec(t).map_err(|e| TokenError::Shared(StoreError::new("cannot encode", e))));
        let durable = shared.share_token(id, value.transpose()?);
        match durable.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(TokenError::Shared(error)),
            Err(_) => Err(TokenError::Shared(StoreError::closed())),
        }
    }

    /// Takes in the token `id` as another node issued it (`value`, its JSON) or revoked it
    /// (`None`); an unreadable one is skipped.
    pub async fn take_in(&self, id: &str, value: Option<Vec<u8>>) {
        let token = match value.map(|v| serde_json::from_slice::<StoredToken>(&v)) {
            Some(Ok(token)) if token.view.id == id => Some(token),
            Some(_) => {
                tracing::warn!(id, "skipping an unreadable shared token");
                return;
            }
            None => None,
        };
        let _writing = self.writing.lock().await;
        let held = self
            .entries()
            .into_iter()
            .find(|e| e.stored.view.id == id)
            .map(|e| e.stored);
        if held == token {
            return;
        }
        let changed = self
            .change(|all| match token {
                Some(token) => {
                    all.insert(id.to_owned(), Entry::from(token));
                }
                None => {
                    all.remove(id);
                }
            })
            .await;
        if let Err(error) = changed {
            tracing::error!(%error, "a token issued or revoked through another node is not in this node's file");
        }
    }
}
