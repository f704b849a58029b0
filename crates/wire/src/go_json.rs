//! Go's `encoding/json` decoding rules, which the seed protocol's messages (and the `/v1`
//! objects that extend them) follow because Go services produce them: a key matches a field
//! case-insensitively, and `null` leaves a field at its zero value.

use serde::Deserialize;
use serde::de::MapAccess;

/// Go's rule for matching a JSON key to a field: an exact match, else a case-insensitive one.
pub(crate) fn key_matches(key: &str, field: &str) -> bool {
    // Field names are ASCII; only a non-ASCII key needs Unicode case folding.
    key.eq_ignore_ascii_case(field) || (!key.is_ascii() && key.to_lowercase() == field.to_lowercase())
}

/// Reads a value where Go accepts `null` as "leave the zero value": `null` becomes `T::default()`.
pub(crate) fn nullable<'de, T, A>(map: &mut A) -> Result<T, A::Error>
where
    T: Deserialize<'de> + Default,
    A: MapAccess<'de>,
{
    Ok(map.next_value::<Option<T>>()?.unwrap_or_default())
}
