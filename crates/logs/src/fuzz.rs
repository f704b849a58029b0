//! Fuzz targets: every parser of what a client sends, and the block decoder over arbitrary file
//! contents, fed arbitrary bytes. Each must answer (a record, a refusal, a verdict) and never
//! panic or hang. Under `cargo test` bolero replays the committed corpus
//! (`src/__fuzz__/fuzz__*/corpus`) and any crash found, then runs a short random search;
//! `cargo bolero test -p rollcall-logs fuzz::...` runs a real fuzzer on the same targets.

use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use axum::extract::Query;

use crate::http::records_params;
use crate::ingest;
use crate::store::fuzz_decode;

#[test]
fn the_ingest_formats_never_panic() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let now = SystemTime::UNIX_EPOCH;
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = ingest::seed_line(text, now);
            let _ = ingest::loki::labels(text);
            let _ = crate::timestamp::parse(text);
            let _ = crate::logql::parse(text);
        }
        let _ = ingest::native(bytes, false, now);
        let _ = ingest::native(bytes, true, now);
        let _ = ingest::otlp::json(bytes, now);
        let _ = ingest::otlp::protobuf(bytes, now);
        let _ = ingest::loki::json(bytes);
        let _ = ingest::loki::protobuf(bytes);
    });
}

#[test]
fn query_parameters_never_panic() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let Ok(uri) = format!("/v1/records?{}", String::from_utf8_lossy(bytes)).parse::<axum::http::Uri>() else {
            return;
        };
        let _ = records_params(Query::try_from_uri(&uri));
    });
}

#[test]
fn decoding_any_segment_contents_never_panics() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let file = tempfile::tempfile().expect("a temporary file");
        file.write_all_at(bytes, 0).expect("write");
        fuzz_decode(&file, bytes.len() as u64);
    });
}
