//! Access: the registry is the token authority of a rollcall system. [`Tokens`] issues, lists,
//! revokes and verifies tokens; a request is then a [`Caller`] (a verified token, or nobody)
//! that may or may not do what it asks ([`Caller::may`]).
//!
//! A token's text is `rc_<id>_<secret>` (see `rollcall_wire::TokenText`): 64 random bits of
//! public id, 256 of secret, from the operating system's generator. Only a SHA-256 digest of the text is kept (`tokens.json` in the
//! data directory, mode 0600, rewritten whole and atomically on every change); a presented
//! token is found by its id and its digest compared in constant time. On the first start (no
//! `tokens.json`) an admin token is made and its text written to `admin.token` beside it, 0600;
//! the text is never logged, listed or answered again.

mod file;
mod shared;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use aws_lc_rs::{constant_time, digest};
use rand::TryRngCore as _;
use rollcall_http::Anonymous;
use rollcall_wire::{NewToken, Scope, TOKEN_PREFIX, TokenText, TokenView};
use serde::{Deserialize, Serialize};

use crate::state::{Actor, Registrant};

pub(crate) use file::TokenFileError;

/// The admin token's file in the data directory, written on the first start.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The most tokens the registry keeps (each is a line in a file rewritten on every change).
pub const MAX_TOKENS: usize = 10_000;

/// A token as `tokens.json` keeps it: its listing and a digest of its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredToken {
    #[serde(flatten)]
    view: TokenView,
    /// SHA-256 of the token's text, in hex.
    digest: String,
}

/// A kept token and the grant a request presenting it gets.
#[derive(Debug, Clone)]
struct Entry {
    stored: StoredToken,
    /// `stored.digest` decoded, what a presented token's digest is compared with.
    digest: [u8; 32],
    grant: Arc<Grant>,
    /// Made by the registry for itself, for this run: never written to the file.
    ephemeral: bool,
}

impl From<StoredToken> for Entry {
    fn from(stored: StoredToken) -> Self {
        let grant = Arc::new(Grant {
            id: stored.view.id.clone(),
            name: stored.view.name.clone(),
            scopes: stored.view.scopes.clone(),
        });
        // A digest that is not 64 hex digits (a hand-edited file) matches nothing.
        let digest = decode_hex(&stored.digest).unwrap_or([0xff; 32]);
        Self {
            stored,
            digest,
            grant,
            ephemeral: false,
        }
    }
}

/// A verified token: who holds it and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's public id.
    pub id: String,
    /// Its holder's name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl Grant {
    fn allows(&self, wanted: &Scope) -> bool {
        self.scopes.iter().any(|scope| scope.allows(wanted))
    }

    /// True when it carries the admin scope.
    pub fn is_admin(&self) -> bool {
        self.allows(&Scope::Admin)
    }
}

/// Who a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A verified token.
    Token(Arc<Grant>),
    /// Nobody; `permitted` when anonymous requests are served from where it came.
    Anonymous {
        /// See [`Anonymous::permits`].
        permitted: bool,
    },
}

/// Why a caller may not do what it asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token, where one is needed.
    #[error("this request needs a token with the {0} scope (Authorization: Bearer <token>)")]
    TokenRequired(Scope),
    /// A token without the scope.
    #[error("the token {name:?} does not carry the {wanted} scope")]
    MissingScope {
        /// The token's name.
        name: String,
        /// The scope it lacks.
        wanted: Scope,
    },
}

impl Caller {
    /// The caller of a request from `peer` presenting `token` (already verified), under the
    /// anonymous rule `anonymous`.
    pub fn new(token: Option<Arc<Grant>>, anonymous: Anonymous, peer: IpAddr) -> Self {
        match token {
            Some(grant) => Caller::Token(grant),
            None => Caller::Anonymous {
                permitted: anonymous.permits(peer),
            },
        }
    }

    /// Ok when the caller may do what `wanted` allows. A permitted anonymous caller may do all
    /// but administer tokens.
    pub fn may(&self, wanted: &Scope) -> Result<(), Denied> {
        match self {
            Caller::Token(grant) if grant.allows(wanted) => Ok(()),
            Caller::Token(grant) => Err(Denied::MissingScope {
                name: grant.name.clone(),
                wanted: wanted.clone(),
            }),
            Caller::Anonymous { permitted: true } if *wanted != Scope::Admin => Ok(()),
            Caller::Anonymous { .. } => Err(Denied::TokenRequired(wanted.clone())),
        }
    }

    /// The token's id, for ownership of what it registers.
    pub fn token_id(&self) -> Option<&str> {
        match self {
            Caller::Token(grant) => Some(&grant.id),
            Caller::Anonymous { .. } => None,
        }
    }

    /// What the catalog is told about this caller when it registers or deregisters from `peer`.
    pub fn actor(&self, peer: IpAddr) -> Actor {
        Actor {
            registrant: Registrant {
                peer: Some(peer),
                token: self.token_id().map(str::to_owned),
            },
            admin: self.is_admin(),
        }
    }

    /// True for an admin token: it may change what others registered.
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Token(grant) if grant.is_admin())
    }

    /// How records name the caller: its token's name, or `anonymous`.
    pub fn name(&self) -> &str {
        match self {
            Caller::Token(grant) => &grant.name,
            Caller::Anonymous { .. } => "anonymous",
        }
    }
}

/// Why a token could not be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The request is wrong: an empty or long name, no scopes or too many.
    #[error("{0}")]
    Invalid(String),
    /// As many tokens as the registry keeps.
    #[error("the registry keeps at most {MAX_TOKENS} tokens; revoke some first")]
    TooMany,
    /// The token file could not be written: nothing changed.
    #[error(transparent)]
    File(#[from] TokenFileError),
    /// The token could not be shared with the other registry nodes (etcd): nothing changed.
    #[error("cannot share the token: {0}")]
    Shared(crate::store::StoreError),
}

/// Every token the registry has issued and not revoked.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    by_id: RwLock<HashMap<String, Entry>>,
    /// Serialises changes, so that the file is written in the order they are made.
    writing: tokio::sync::Mutex<()>,
    /// Where the list is shared with the other nodes of a catalog in etcd, once it is.
    shared: std::sync::OnceLock<Arc<dyn crate::store::ShareTokens>>,
}

impl Tokens {
    /// Opens the tokens kept in `data_dir`; on the first start, makes the admin token and
    /// writes its text to [`ADMIN_TOKEN_FILE`] (returned, so that the caller can say where).
    pub fn open(data_dir: &Path) -> Result<(Self, Option<PathBuf>), TokenFileError> {
        let path = data_dir.join("tokens.json");
        let (stored, admin_file) = if let Some(stored) = file::read(&path)? {
            (stored, None)
        } else {
            let (admin, text) = new_token(&NewToken {
                name: "admin".to_owned(),
                scopes: vec![Scope::Admin],
            })?;
            // The text first: a crash before the list is written makes a new admin next time,
            // overwriting this file, so the file always names a valid token.
            let admin_file = data_dir.join(ADMIN_TOKEN_FILE);
            file::write_secret(&admin_file, &text)?;
            file::write(&path, std::slice::from_ref(&admin))?;
            (vec![admin], Some(admin_file))
        };
        let by_id = stored
            .into_iter()
            .map(|token| (token.view.id.clone(), token.into()))
            .collect();
        let tokens = Self {
            path,
            by_id: RwLock::new(by_id),
            writing: tokio::sync::Mutex::new(()),
            shared: std::sync::OnceLock::new(),
        };
        Ok((tokens, admin_file))
    }

    /// The grant of `text` if it is a token this registry issued and has not revoked.
    pub fn verify(&self, text: &str) -> Option<Arc<Grant>> {
        let parsed = TokenText::parse(text)?;
        let digest = sha256(parsed.text);
        let by_id = self.by_id.read().unwrap_or_else(PoisonError::into_inner);
        let entry = by_id.get(parsed.id)?;
        constant_time::verify_slices_are_equal(digest.as_ref(), &entry.digest).ok()?;
        Some(entry.grant.clone())
    }

    /// The token `id` as listed.
    pub fn view(&self, id: &str) -> Option<TokenView> {
        let by_id = self.by_id.read().unwrap_or_else(PoisonError::into_inner);
        by_id.get(id).map(|entry| entry.stored.view.clone())
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<TokenView> {
        let mut views: Vec<TokenView> = self
            .by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|entry| entry.stored.view.clone())
            .collect();
        views.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        views
    }

    /// Issues a token as `request` asks; returns it as listed and its text. It is durable when
    /// this returns.
    pub async fn create(&self, request: &NewToken) -> Result<(TokenView, String), TokenError> {
        validate(request)?;
        let _writing = self.writing.lock().await;
        if self.by_id.read().unwrap_or_else(PoisonError::into_inner).len() >= MAX_TOKENS {
            return Err(TokenError::TooMany);
        }
        let (token, text) = new_token(request)?;
        let view = token.view.clone();
        self.share(&view.id, Some(&token)).await?;
        self.change(|all| {
            all.insert(view.id.clone(), token.into());
        })
        .await?;
        Ok((view, text))
    }

    /// Issues a token the registry presents itself (to ship its audit trail), valid until it
    /// stops: listed like the others, never written to the file.
    pub fn ephemeral(&self, request: &NewToken) -> Result<String, TokenError> {
        let (token, text) = new_token(request)?;
        let mut entry = Entry::from(token);
        entry.ephemeral = true;
        let id = entry.stored.view.id.clone();
        self.by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, entry);
        Ok(text)
    }

    /// Revokes the token `id`; false when there is none. Requests presenting it are refused
    /// from the moment this returns.
    pub async fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        let _writing = self.writing.lock().await;
        if !self
            .by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
        {
            return Ok(false);
        }
        self.share(id, None).await?;
        self.change(|all| {
            all.remove(id);
        })
        .await?;
        Ok(true)
    }

    /// Every token kept, as kept.
    fn entries(&self) -> Vec<Entry> {
        self.by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Writes the list as `change` leaves it, then makes it current: the file first, so that
    /// nothing is answered that a crash could take back. Callers hold `writing`.
    async fn change(&self, change: impl FnOnce(&mut HashMap<String, Entry>)) -> Result<(), TokenFileError> {
        let mut next = self.by_id.read().unwrap_or_else(PoisonError::into_inner).clone();
        change(&mut next);
        let stored: Vec<StoredToken> = next
            .values()
            .filter(|entry| !entry.ephemeral)
            .map(|entry| entry.stored.clone())
            .collect();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || file::write(&path, &stored))
            .await
            .map_err(|_| TokenFileError::Interrupted)??;
        *self.by_id.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }
}

fn validate(request: &NewToken) -> Result<(), TokenError> {
    let name = request.name.trim();
    if name.is_empty() || name.len() > rollcall_wire::MAX_TOKEN_NAME_LEN || name.chars().any(char::is_control) {
        return Err(TokenError::Invalid(format!(
            "name must be 1 to {} characters without control characters",
            rollcall_wire::MAX_TOKEN_NAME_LEN
        )));
    }
    if request.scopes.is_empty() || request.scopes.len() > rollcall_wire::MAX_SCOPES {
        return Err(TokenError::Invalid(format!(
            "a token carries 1 to {} scopes",
            rollcall_wire::MAX_SCOPES
        )));
    }
    Ok(())
}

/// A fresh token for `request` and its text.
fn new_token(request: &NewToken) -> Result<(StoredToken, String), TokenFileError> {
    let mut id = [0_u8; 8];
    let mut secret = [0_u8; 32];
    // The operating system's generator, read directly (aws-lc's own seeds itself with
    // jitterentropy, a third of a second of CPU at the first token).
    let mut os = rand::rngs::OsRng;
    os.try_fill_bytes(&mut id).map_err(|_| TokenFileError::NoRandomness)?;
    os.try_fill_bytes(&mut secret)
        .map_err(|_| TokenFileError::NoRandomness)?;
    let id = hex(&id);
    let text = format!("{TOKEN_PREFIX}{id}_{}", hex(&secret));
    let token = StoredToken {
        view: TokenView {
            id,
            name: request.name.trim().to_owned(),
            scopes: request.scopes.clone(),
            created_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        },
        digest: hex(sha256(&text).as_ref()),
    };
    Ok((token, text))
}

fn sha256(text: &str) -> digest::Digest {
    digest::digest(&digest::SHA256, text.as_bytes())
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0_u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, scopes: &[&str]) -> NewToken {
        NewToken {
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| s.parse().expect("scope")).collect(),
        }
    }

    #[tokio::test]
    async fn the_first_start_writes_an_admin_token_that_verifies_and_later_starts_keep_it() {
        let dir = tempfile::tempdir().expect("dir");
        let (tokens, admin_file) = Tokens::open(dir.path()).expect("open");
        let admin_file = admin_file.expect("first start writes the admin token");
        let text = std::fs::read_to_string(&admin_file).expect("read");
        assert!(tokens.verify(text.trim()).expect("verifies").is_admin());
        let stored = std::fs::read_to_string(dir.path().join("tokens.json")).expect("read");
        assert!(!stored.contains(text.trim()), "only a digest is kept");
        drop(tokens);

        let (again, written) = Tokens::open(dir.path()).expect("reopen");
        assert_eq!(written, None, "an existing list is kept");
        assert!(again.verify(text.trim()).is_some());
    }

    #[tokio::test]
    async fn a_created_token_verifies_until_revoked_even_across_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let (tokens, _) = Tokens::open(dir.path()).expect("open");
        let (view, text) = tokens
            .create(&request("grades", &["register:grades*"]))
            .await
            .expect("create");
        let grant = tokens.verify(&text).expect("verifies");
        assert_eq!((grant.name.as_str(), grant.is_admin()), ("grades", false));
        assert_eq!(tokens.list().len(), 2);

        let (reopened, _) = Tokens::open(dir.path()).expect("reopen");
        assert!(reopened.verify(&text).is_some(), "durable once created");
        assert!(reopened.revoke(&view.id).await.expect("revoke"));
        assert!(!reopened.revoke(&view.id).await.expect("revoke"), "revoked once");
        assert_eq!(reopened.verify(&text), None);
        let (after, _) = Tokens::open(dir.path()).expect("reopen");
        assert_eq!(after.verify(&text), None, "a revocation is durable too");
    }

    #[tokio::test]
    async fn a_token_with_the_right_id_and_a_wrong_secret_does_not_verify() {
        let dir = tempfile::tempdir().expect("dir");
        let (tokens, _) = Tokens::open(dir.path()).expect("open");
        let (_, text) = tokens.create(&request("ci", &["read"])).await.expect("create");
        let mut forged = text.clone();
        let last = forged.pop().expect("char");
        forged.push(if last == '0' { '1' } else { '0' });
        assert_eq!(tokens.verify(&forged), None);
        assert!(tokens.verify(&text).is_some());
        assert_eq!(tokens.verify("rc_nonsense"), None);
    }

    #[tokio::test]
    async fn tokens_need_a_name_and_some_scopes() {
        let dir = tempfile::tempdir().expect("dir");
        let (tokens, _) = Tokens::open(dir.path()).expect("open");
        assert!(matches!(
            tokens.create(&request(" ", &["read"])).await,
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            tokens.create(&request("x", &[])).await,
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn callers_may_do_what_their_scopes_allow_and_anonymous_callers_all_but_administer() {
        let grant = |scopes: &[&str]| {
            Caller::Token(Arc::new(Grant {
                id: "1".to_owned(),
                name: "t".to_owned(),
                scopes: scopes.iter().map(|s| s.parse().expect("scope")).collect(),
            }))
        };
        let register = |name: &str| Scope::Register(name.to_owned());
        assert!(grant(&["register:grades"]).may(&register("grades")).is_ok());
        assert!(grant(&["register:grades"]).may(&register("portal")).is_err());
        assert!(grant(&["register:grades"]).may(&Scope::Read).is_err());
        assert!(grant(&["admin"]).may(&register("portal")).is_ok());
        assert!(Caller::Anonymous { permitted: true }.may(&register("portal")).is_ok());
        assert_eq!(
            Caller::Anonymous { permitted: true }.may(&Scope::Admin),
            Err(Denied::TokenRequired(Scope::Admin))
        );
        assert!(Caller::Anonymous { permitted: false }.may(&Scope::Read).is_err());
    }
}
