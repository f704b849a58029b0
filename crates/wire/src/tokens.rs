//! Access tokens as every rollcall process sees them: what a token may do ([`Scope`]), what the
//! registry answers about one ([`TokenView`], [`NewToken`], [`CreatedToken`]), and the token
//! text's shape ([`TokenText`]).
//!
//! The registry issues and verifies tokens; the log service asks it what a token presented to
//! it may do (`GET /v1/tokens/self`), so both read scopes with this one parser.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every token's text starts with it, so that secret scanners recognise a leaked one.
pub const TOKEN_PREFIX: &str = "rc_";
/// The longest service-name pattern a `register:` scope may carry.
pub const MAX_PATTERN_LEN: usize = 200;
/// The most scopes one token may carry.
pub const MAX_SCOPES: usize = 32;
/// The longest token name.
pub const MAX_TOKEN_NAME_LEN: usize = 100;

/// One thing a token allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Everything, token management included.
    Admin,
    /// Reading the registry: listings, instances, events, metrics, the dashboard.
    Read,
    /// Registering, replacing and deregistering instances of services whose names match the
    /// pattern (`*` matches any run of characters: `grades-*`).
    Register(String),
    /// Sending records to the log service (the server stamps the token's name on each).
    LogsWrite,
    /// Querying and tailing the log service.
    LogsRead,
    /// Publishing and rolling back configuration documents whose `namespace/service/name`
    /// matches the pattern (`prod/GradingService/*`); reading them needs `read`.
    Config(String),
}

impl Scope {
    /// True when this scope allows `wanted`: equal, or [`Scope::Admin`], or a `register:`
    /// pattern that covers the name `wanted` registers.
    pub fn allows(&self, wanted: &Scope) -> bool {
        match (self, wanted) {
            (Scope::Admin, _) => true,
            (Scope::Register(pattern), Scope::Register(name)) | (Scope::Config(pattern), Scope::Config(name)) => {
                matches_pattern(pattern, name)
            }
            (have, wanted) => have == wanted,
        }
    }
}

/// True when `name` matches `pattern`, where `*` stands for any run of characters (none
/// included) and every other character for itself.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*`: the whole name must be the pattern.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Why a scope's text was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScope(pub String);

impl fmt::Display for UnknownScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scope {:?}: expected admin, read, register:PATTERN, config:PATTERN, logs:write or logs:read",
            self.0
        )
    }
}

impl std::error::Error for UnknownScope {}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownScope(text.chars().take(MAX_PATTERN_LEN).collect());
        match text {
            "admin" => Ok(Scope::Admin),
            "read" => Ok(Scope::Read),
            "logs:write" => Ok(Scope::LogsWrite),
            "logs:read" => Ok(Scope::LogsRead),
            _ => {
                let (make, pattern): (fn(String) -> Scope, &str) = if let Some(pattern) = text.strip_prefix("register:")
                {
                    (Scope::Register, pattern)
                } else {
                    (Scope::Config, text.strip_prefix("config:").ok_or_else(unknown)?)
                };
                let fits = !pattern.is_empty()
                    && pattern.len() <= MAX_PATTERN_LEN
                    && !pattern.chars().any(|c| c.is_control() || c.is_whitespace());
                fits.then(|| make(pattern.to_owned())).ok_or_else(unknown)
            }
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Read => f.write_str("read"),
            Scope::Register(pattern) => write!(f, "register:{pattern}"),
            Scope::Config(pattern) => write!(f, "config:{pattern}"),
            Scope::LogsWrite => f.write_str("logs:write"),
            Scope::LogsRead => f.write_str("logs:read"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A token's text split at its parts: `rc_<id>_<secret>`, the id 16 hex digits (public: it
/// names the token in listings) and the secret 64 (256 random bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenText<'a> {
    /// The token's public id.
    pub id: &'a str,
    /// The whole text, which only its holder and nobody else knows.
    pub text: &'a str,
}

impl<'a> TokenText<'a> {
    /// `text` if it has a token's shape.
    pub fn parse(text: &'a str) -> Option<Self> {
        let rest = text.strip_prefix(TOKEN_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let hex = |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit());
        (hex(id, 16) && hex(secret, 64)).then_some(Self { id, text })
    }
}

/// What `POST /v1/tokens` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Who or what holds it (`grades`, `ci`, `alice`): shown in listings and stamped on the
    /// log records it sends.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Its public id (the part of the text after `rc_` and before the secret).
    pub id: String,
    /// Who or what holds it.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// When it was created, RFC 3339 in UTC.
    pub created_at: String,
}

/// `POST /v1/tokens`'s answer: the token as listed, and its text, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The token as it will be listed.
    #[serde(flatten)]
    pub view: TokenView,
    /// The text to present as `Authorization: Bearer <token>`; the registry keeps only a digest.
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_and_print_the_same_way() {
        for text in [
            "admin",
            "read",
            "register:grades",
            "register:*",
            "config:prod/GradingService/*",
            "logs:write",
            "logs:read",
        ] {
            let scope: Scope = text.parse().expect(text);
            assert_eq!(scope.to_string(), text);
        }
        for bad in ["", "write", "register:", "register:a b", "config:", "Admin", "logs"] {
            assert!(bad.parse::<Scope>().is_err(), "{bad:?} is not a scope");
        }
    }

    #[test]
    fn a_register_pattern_matches_names_with_wildcards() {
        assert!(matches_pattern("grades", "grades"));
        assert!(!matches_pattern("grades", "grades-eu"));
        assert!(!matches_pattern("grades", "grade"));
        assert!(matches_pattern("grades-*", "grades-eu"));
        assert!(matches_pattern("grades-*", "grades-"));
        assert!(!matches_pattern("grades-*", "portal"));
        assert!(matches_pattern("*", "anything"));
        assert!(matches_pattern("*Service", "LogService"));
        assert!(matches_pattern("a*b*c", "aXbYc"));
        assert!(matches_pattern("a*b*c", "abc"));
        assert!(!matches_pattern("a*b*c", "acb"));
        assert!(!matches_pattern("ab*ba", "aba"), "the two ends may not overlap");
    }

    #[test]
    fn admin_allows_everything_and_other_scopes_only_themselves() {
        let register = |name: &str| Scope::Register(name.to_owned());
        assert!(Scope::Admin.allows(&register("x")));
        assert!(Scope::Admin.allows(&Scope::LogsRead));
        assert!(register("grades-*").allows(&register("grades-eu")));
        assert!(!register("grades-*").allows(&register("portal")));
        assert!(!Scope::Read.allows(&Scope::LogsRead));
        assert!(!Scope::LogsWrite.allows(&Scope::Admin));
        assert!(Scope::Read.allows(&Scope::Read));
        let config = |path: &str| Scope::Config(path.to_owned());
        assert!(config("prod/*").allows(&config("prod/GradingService/limits")));
        assert!(!config("prod/*").allows(&config("staging/GradingService/limits")));
        assert!(
            !register("*").allows(&config("prod/a/b")),
            "registering is not configuring"
        );
    }

    #[test]
    fn token_text_has_a_prefix_an_id_and_a_secret() {
        let secret = "ab".repeat(32);
        let good = format!("rc_0123456789abcdef_{secret}");
        assert_eq!(TokenText::parse(&good).map(|t| t.id), Some("0123456789abcdef"));
        for bad in [
            format!("0123456789abcdef_{secret}"),
            format!("rc_0123456789abcde_{secret}"),
            format!("rc_0123456789abcdef_{secret}0"),
            format!("rc_0123456789abcdeg_{secret}"),
            "rc_".to_owned(),
        ] {
            assert_eq!(TokenText::parse(&bad), None, "{bad}");
        }
    }
}
