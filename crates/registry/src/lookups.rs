//! Encoded answers of `GET /v1/services/{name}`, kept while the service is unchanged.
//!
//! A lookup lists every instance of a service (about 400 bytes of JSON each); under a
//! lookup-heavy load, building and encoding that list was most of the registry's own work per
//! request. The catalog gives each service a version that moves whenever anything the lookup
//! shows changes, probe times included ([`Catalog::version_of`](crate::state::Catalog::version_of)),
//! and an answer encoded at one version is only served again while the service is still at it:
//! a cached answer is never stale. Only services with instances are kept, and the cache is
//! emptied when it reaches [`MAX_ENTRIES`], so lookups of made-up names cannot grow it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Most answers kept for each value of `passing`.
pub const MAX_ENTRIES: usize = 4096;

/// The encoded answers, for all instances (`[0]`) and for passing ones only (`[1]`).
#[derive(Debug, Default)]
pub(crate) struct LookupCache {
    answers: Mutex<[HashMap<String, (u64, Bytes)>; 2]>,
}

impl LookupCache {
    /// The answer for `service` encoded at `version`, if there is one.
    pub fn get(&self, service: &str, passing_only: bool, version: u64) -> Option<Bytes> {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let (cached_version, body) = answers[usize::from(passing_only)].get(service)?;
        (*cached_version == version).then(|| body.clone())
    }

    /// Keeps `body`, the answer for `service` encoded at `version`.
    pub fn insert(&self, service: &str, passing_only: bool, version: u64, body: Bytes) {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let answers = &mut answers[usize::from(passing_only)];
        if answers.len() >= MAX_ENTRIES && !answers.contains_key(service) {
            answers.clear();
        }
        answers.insert(service.to_owned(), (version, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_served_only_at_the_version_it_was_encoded_at() {
        let cache = LookupCache::default();
        cache.insert("A", false, 7, Bytes::from_static(b"seven"));
        assert_eq!(cache.get("A", false, 7).as_deref(), Some(&b"seven"[..]));
        assert_eq!(
            cache.get("A", false, 8),
            None,
            "a newer version is not served an older answer"
        );
        assert_eq!(cache.get("A", true, 7), None, "passing-only answers are kept apart");
        assert_eq!(cache.get("B", false, 7), None);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let cache = LookupCache::default();
        for n in 0..=MAX_ENTRIES {
            cache.insert(&format!("S{n}"), false, 1, Bytes::new());
        }
        let answers = cache.answers.lock().expect("lock");
        assert!(answers[0].len() <= MAX_ENTRIES);
        assert!(
            answers[0].contains_key(&format!("S{MAX_ENTRIES}")),
            "the newest is kept"
        );
    }
}
