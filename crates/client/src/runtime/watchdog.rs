//! The watchdog's clock: when the registry last probed this service, and how far apart its
//! probes come. When they stop for one and a half times the longest recent gap between them, the
//! registry has forgotten the service (restarted without its data, or reaped it), and the
//! supervisor registers again.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How many recent gaps between probes the watchdog remembers.
const REMEMBERED_GAPS: usize = 8;
/// The longest the watchdog waits for a first probe before registering again.
const MAX_SILENCE: Duration = Duration::from_secs(60);

/// When the registry last probed this service, and how far apart its probes come.
#[derive(Debug)]
pub(super) struct ProbeClock {
    expected_interval: Duration,
    state: Mutex<ProbeState>,
}

#[derive(Debug)]
struct ProbeState {
    /// The last probe, or the last registration if no probe came since.
    last: Instant,
    /// Whether `last` is a probe (a gap to the next probe is then a real probe interval).
    last_is_probe: bool,
    gaps: VecDeque<Duration>,
    /// How many times in a row the silence limit passed without any probe seen: each doubles
    /// the wait, so a registry that probes rarely is not flooded with registrations.
    silent_rounds: u32,
}

impl ProbeClock {
    pub(super) fn new(expected_interval: Duration) -> Self {
        Self {
            expected_interval,
            state: Mutex::new(ProbeState {
                last: Instant::now(),
                last_is_probe: false,
                gaps: VecDeque::with_capacity(REMEMBERED_GAPS),
                silent_rounds: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn probed(&self) {
        let now = Instant::now();
        let mut state = self.state();
        if state.last_is_probe {
            let gap = now - state.last;
            if state.gaps.len() == REMEMBERED_GAPS {
                state.gaps.pop_front();
            }
            state.gaps.push_back(gap);
        }
        state.last = now;
        state.last_is_probe = true;
        state.silent_rounds = 0;
    }

    /// A registration just succeeded: the silence is measured from now, and the gap to the
    /// next probe is not a probe interval (the first probe comes at a random point).
    pub(super) fn registered(&self) {
        let mut state = self.state();
        state.last = Instant::now();
        state.last_is_probe = false;
    }

    pub(super) fn silence_confirmed(&self) {
        let mut state = self.state();
        if state.gaps.is_empty() {
            state.silent_rounds = (state.silent_rounds + 1).min(8);
        }
    }

    /// How much longer the registry may stay silent before this service registers again.
    pub(super) fn time_until_silent(&self) -> Duration {
        let state = self.state();
        let interval = state.gaps.iter().max().copied().unwrap_or(self.expected_interval);
        let limit = (interval.mul_f64(1.5) * 2u32.pow(state.silent_rounds)).min(MAX_SILENCE.max(interval * 2));
        limit.saturating_sub(state.last.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: Duration = Duration::from_secs(3);

    async fn advance(by: Duration) {
        tokio::time::advance(by).await;
    }

    #[tokio::test(start_paused = true)]
    async fn before_two_probes_the_expected_interval_sets_the_limit() {
        let clock = ProbeClock::new(EXPECTED);
        clock.registered();
        assert_eq!(clock.time_until_silent(), EXPECTED.mul_f64(1.5));
        advance(Duration::from_secs(4)).await;
        assert_eq!(clock.time_until_silent(), Duration::from_millis(500));
        advance(Duration::from_millis(500)).await;
        assert!(clock.time_until_silent().is_zero(), "silent once the limit passed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_recent_gap_between_probes_sets_the_limit() {
        let clock = ProbeClock::new(EXPECTED);
        clock.registered();
        advance(Duration::from_secs(7)).await;
        clock.probed(); // the first probe: the time since registering is no probe interval
        assert_eq!(clock.time_until_silent(), EXPECTED.mul_f64(1.5));
        for gap in [2, 1, 2] {
            advance(Duration::from_secs(gap)).await;
            clock.probed();
        }
        assert_eq!(
            clock.time_until_silent(),
            Duration::from_secs(3),
            "1.5 times the 2 s gap"
        );
        advance(Duration::from_millis(2_999)).await;
        assert_eq!(clock.time_until_silent(), Duration::from_millis(1));
        advance(Duration::from_millis(1)).await;
        assert!(clock.time_until_silent().is_zero());
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_last_eight_gaps_count() {
        let clock = ProbeClock::new(EXPECTED);
        clock.probed();
        advance(Duration::from_secs(10)).await;
        clock.probed(); // one long gap...
        for _ in 0..REMEMBERED_GAPS {
            advance(Duration::from_secs(1)).await;
            clock.probed(); // ...pushed out by eight short ones
        }
        assert_eq!(clock.time_until_silent(), Duration::from_millis(1_500));
    }

    #[tokio::test(start_paused = true)]
    async fn each_silent_round_without_any_probe_doubles_the_wait_up_to_a_bound() {
        let clock = ProbeClock::new(EXPECTED);
        clock.registered();
        let mut limits = Vec::new();
        for _ in 0..6 {
            clock.silence_confirmed();
            clock.registered();
            limits.push(clock.time_until_silent().as_secs_f64());
        }
        assert_eq!(limits, [9.0, 18.0, 36.0, 60.0, 60.0, 60.0]);
        clock.probed();
        assert_eq!(
            clock.time_until_silent(),
            EXPECTED.mul_f64(1.5),
            "a probe ends the silent rounds"
        );
    }
}
