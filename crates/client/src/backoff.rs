//! The retry schedule of every call the client repeats (registering, shipping logs, watching its
//! own listing while the registry is away): backon's
//! exponential backoff with jitter, so that services failing together do not retry in lockstep.
//!
//! The delays run 50-100 ms, 100-200 ms, ... doubling up to 2.5-5 s, and stay there: each is the
//! step plus up to as much again at random.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The first step; the first delay is between it and twice it.
const FIRST_STEP: Duration = Duration::from_millis(50);
/// The largest step; no delay is longer than twice it.
const MAX_STEP: Duration = Duration::from_millis(2_500);

/// An endless schedule of delays between attempts.
pub(crate) fn retry_delays() -> ExponentialBackoff {
    delays_between(FIRST_STEP, MAX_STEP)
}

/// An endless schedule from `first` to `max` steps, each delay its step plus up to as much again.
pub(crate) fn delays_between(first: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_and_stay_bounded() {
        let delays: Vec<Duration> = retry_delays().take(12).collect();
        let mut step = FIRST_STEP;
        for delay in delays {
            assert!(
                delay >= step && delay < step * 2,
                "{delay:?} not in [{step:?}, {:?})",
                step * 2
            );
            step = (step * 2).min(MAX_STEP);
        }
    }
}
