//! The JSON types every rollcall process shares.
//!
//! Six families live here:
//! - the seed protocol (`docs/api.md`, "The seed protocol"): [`Registration`] and [`Patch`], with Go's
//!   field names (`ServiceURL`, not `ServiceUrl`) and Go's decoding rules (keys matched
//!   case-insensitively, `null` lists read as empty);
//! - rollcall's own `/v1` views ([`ServiceView`], [`InstanceView`]), the health [`Check`] a
//!   `/v1` registration may choose, and the error body
//!   ([`ErrorBody`]) every rollcall endpoint answers with;
//! - the log service's records ([`LogRecord`]) and its answers ([`BatchResult`], [`RecordPage`]);
//! - the grading service's [`Student`] and [`Grade`], with Go's field names;
//! - access tokens: their [`Scope`]s and the registry's answers about them ([`TokenView`]);
//! - central configuration: a document's [`ConfigFormat`] and its releases ([`ReleaseView`]).
//!
//! This crate is serde (with `serde_json` for free-form fields and humantime for durations) only: no runtime, no HTTP stack,
//! so any client can depend on it. How the servers answer an [`ErrorBody`] is `rollcall-http`'s.
mod check;
mod config;
mod go_json;
mod grades;
mod logs;
mod registration;
mod tokens;
mod views;

pub use check::{Check, CheckKind, CheckView};
pub use config::{
    Ack, AckStatus, ConfigFormat, DocumentView, InstanceProgress, ReleaseEvent, ReleaseView, RolloutStatus, RolloutView,
};
pub use grades::{GRADE_TYPES, Grade, GradingRules, NewStudent, Student};
pub use logs::{BatchResult, Level, LogRecord, RecordPage, RecordTime, Rejection, UnknownLevel};
pub use registration::{InstanceRegistration, Patch, PatchEntry, Registration};
pub use tokens::{
    CreatedToken, MAX_PATTERN_LEN, MAX_SCOPES, MAX_TOKEN_NAME_LEN, NewToken, Scope, TOKEN_PREFIX, TokenText, TokenView,
    UnknownScope, matches_pattern,
};
pub use views::{CatalogEvent, ErrorBody, InstanceState, InstanceView, NodeView, NodesView, ServiceView, ServicesView};

#[cfg(test)]
mod fuzz {
    //! The decoders of what any client sends, fed arbitrary bytes (bolero: a quick random run
    //! under `cargo test`, a real fuzzer under `cargo bolero test`; the committed corpus and
    //! every crash found are replayed each time).

    use super::{InstanceRegistration, NewToken, Patch, Registration, Scope, TokenText};

    #[test]
    fn decoding_a_registration_never_panics() {
        bolero::check!().for_each(|bytes: &[u8]| {
            let _ = serde_json::from_slice::<Registration>(bytes);
            let _ = serde_json::from_slice::<InstanceRegistration>(bytes);
        });
    }

    #[test]
    fn reading_a_token_or_its_scopes_never_panics() {
        bolero::check!().for_each(|bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            let _ = TokenText::parse(&text);
            if let Ok(scope) = text.parse::<Scope>() {
                // What parses prints back as itself.
                assert_eq!(scope.to_string().parse::<Scope>().ok(), Some(scope));
            }
            let _ = serde_json::from_slice::<NewToken>(bytes);
            let middle = text
                .char_indices()
                .nth(text.chars().count() / 2)
                .map_or(text.len(), |(at, _)| at);
            let (pattern, name) = text.split_at(middle);
            let _ = super::matches_pattern(pattern, name);
        });
    }

    #[test]
    fn decoding_a_patch_never_panics() {
        bolero::check!().for_each(|bytes: &[u8]| {
            let _ = serde_json::from_slice::<Patch>(bytes);
        });
    }
}
