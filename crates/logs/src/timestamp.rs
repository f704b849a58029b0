//! Timestamps as people send them, to Unix nanoseconds: RFC 3339 with any UTC offset
//! (`2026-12-03T21:00:00+01:00`, `...Z`), and integer counts since the Unix epoch in seconds,
//! milliseconds, microseconds or nanoseconds, told apart by their magnitude (a shipper that sends
//! seconds where nanoseconds were meant must not land its records in 1970). Decimal seconds
//! (`1764795600.25`, as Python's `time.time()` gives) are seconds.
//!
//! The magnitudes, for a count `n`: below 10^11, seconds (up to the year 5138); below 10^14,
//! milliseconds; below 10^17, microseconds; otherwise nanoseconds (up to 2262). So a count in a
//! finer unit that falls before 1973-03-03 is read in a coarser one; no timestamp a running
//! system writes is that old.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What every error about a timestamp says it accepts.
pub(crate) const ACCEPTED: &str = "RFC 3339 with an offset (2026-12-03T20:00:00Z, 2026-12-03T21:00:00+01:00) or an integer count since the Unix epoch in seconds, milliseconds, microseconds or nanoseconds";

/// Nanoseconds since the Unix epoch of `text`: RFC 3339, or an epoch count (integer or decimal
/// seconds) as [`from_epoch`] reads it.
pub(crate) fn parse(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(count) = text.parse::<i64>() {
        return from_epoch(count);
    }
    if let Some((whole, fraction)) = text.split_once('.')
        && let Ok(seconds) = whole.parse::<i64>()
        && (1..=9).contains(&fraction.len())
        && fraction.bytes().all(|b| b.is_ascii_digit())
    {
        // Decimal seconds, exactly: the fraction's digits are nanoseconds once padded to nine.
        let nanos: i64 = format!("{fraction:0<9}")
            .parse()
            .map_err(|_| format!("{text:?} is not a timestamp"))?;
        return nanos_of(i128::from(seconds) * 1_000_000_000 + i128::from(nanos));
    }
    let time = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("{text:?} is not a timestamp ({e}): send {ACCEPTED}"))?;
    nanos_of(time.unix_timestamp_nanos())
}

/// Nanoseconds since the Unix epoch of the count `n`, in the unit its magnitude says.
pub(crate) fn from_epoch(n: i64) -> Result<i64, String> {
    let scale = match n.unsigned_abs() {
        0..100_000_000_000 => 1_000_000_000,
        100_000_000_000..100_000_000_000_000 => 1_000_000,
        100_000_000_000_000..100_000_000_000_000_000 => 1_000,
        _ => 1,
    };
    nanos_of(i128::from(n) * scale)
}

/// Nanoseconds since the Unix epoch of `seconds` with a fraction.
pub(crate) fn from_seconds(seconds: f64) -> Result<i64, String> {
    if !seconds.is_finite() {
        return Err(format!("{seconds} is not a timestamp: send {ACCEPTED}"));
    }
    // Whole seconds and the fraction apart, so that the fraction keeps an f64's precision
    // (a product with 1e9 would not); the casts saturate, and nanos_of checks the range.
    #[allow(clippy::cast_possible_truncation)]
    let (whole, nanos) = (seconds.trunc() as i128, (seconds.fract() * 1e9).round() as i128);
    nanos_of(whole * 1_000_000_000 + nanos)
}

fn nanos_of(nanos: i128) -> Result<i64, String> {
    match i64::try_from(nanos) {
        Ok(nanos) if nanos >= 0 => Ok(nanos),
        Ok(_) => Err("the time is before 1970".to_owned()),
        Err(_) => Err("the time is after 2262".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-03T20:00:00Z.
    const AT: i64 = 1_796_328_000_000_000_000;

    #[test]
    fn rfc3339_is_read_with_any_offset() {
        assert_eq!(parse("2026-12-03T20:00:00Z"), Ok(AT));
        assert_eq!(parse("2026-12-03T21:00:00+01:00"), Ok(AT));
        assert_eq!(parse("2026-12-03T15:30:00-04:30"), Ok(AT));
        assert_eq!(parse("2026-12-03T20:00:00.250Z"), Ok(AT + 250_000_000));
    }

    #[test]
    fn an_epoch_count_is_read_in_the_unit_its_magnitude_says() {
        for count in [AT / 1_000_000_000, AT / 1_000_000, AT / 1_000, AT] {
            assert_eq!(from_epoch(count), Ok(AT), "{count}");
            assert_eq!(parse(&count.to_string()), Ok(AT), "{count} as text");
        }
        assert_eq!(parse("1796328000.25"), Ok(AT + 250_000_000), "decimal seconds");
        assert_eq!(from_seconds(1_796_328_000.25), Ok(AT + 250_000_000));
    }

    #[test]
    fn a_time_that_is_not_one_says_what_is_accepted() {
        for bad in ["yesterday", "2026-12-03 20:00", "2026-12-03T20:00:00"] {
            let error = parse(bad).expect_err(bad);
            assert!(error.contains("RFC 3339") && error.contains("milliseconds"), "{error}");
        }
        assert!(from_epoch(-1).is_err(), "before 1970");
        assert!(from_seconds(f64::NAN).is_err());
    }
}
