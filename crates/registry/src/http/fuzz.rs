//! Fuzz targets: what an anonymous client sends the registry, fed arbitrary bytes. A
//! registration body is decoded and validated, a query string parsed, a duration flag read:
//! each must answer and never panic. Under `cargo test` bolero replays the committed corpus
//! (`src/http/__fuzz__/http__fuzz__*/corpus`) and any crash found, then runs a short random
//! search; `cargo bolero test -p rollcall-registry http::fuzz::...` runs a real fuzzer.

use axum::extract::Query;
use rollcall_wire::{InstanceRegistration, Registration};

use super::services::check_query;
use super::validate;

#[test]
fn registrations_are_decoded_and_validated_without_panicking() {
    bolero::check!().for_each(|bytes: &[u8]| {
        if let Ok(registration) = serde_json::from_slice::<Registration>(bytes) {
            let _ = validate::registration(registration);
        }
        if let Ok(request) = serde_json::from_slice::<InstanceRegistration>(bytes) {
            let _ = validate::metadata(&request.metadata);
            let _ = validate::registration(request.registration);
        }
    });
}

#[test]
fn listing_queries_and_durations_are_read_without_panicking() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let _ = crate::config::parse_duration(&text);
        if let Ok(uri) = format!("/v1/services?{text}").parse::<axum::http::Uri>() {
            let _ = check_query(Query::try_from_uri(&uri));
        }
    });
}
