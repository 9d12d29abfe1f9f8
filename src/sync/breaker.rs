//! A breaker per Ondorse endpoint (portal creation, application fetch).
//!
//! When an endpoint fails (5xx, 429, timeout, no connection), work on it
//! backs off as a whole instead of each item hammering it: the breaker
//! opens for a delay that doubles with each failed probe (up to a cap),
//! or for the server's `Retry-After` when longer (capped too). Once the
//! delay is over, one call probes the endpoint while the others keep
//! waiting; its success closes the breaker. Each endpoint has its own
//! breaker, so throttled portal creation never holds decisions back.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::now;

/// How a breaker's delays grow.
#[derive(Debug, Clone, Copy)]
pub(super) struct BreakerSettings {
    /// The delay after the first failure; doubles with each failed probe.
    pub base: Duration,
    /// The longest delay from our own backoff.
    pub cap: Duration,
    /// The longest server-given `Retry-After` honoured.
    pub retry_after_cap: Duration,
}

/// One endpoint's breaker.
#[derive(Debug)]
pub(super) struct Breaker {
    /// The endpoint, for logs.
    name: &'static str,
    settings: BreakerSettings,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Failed probes in a row; 0 while the endpoint works.
    failures: u32,
    open_until: Option<DateTime<Utc>>,
    /// A probe went out then: the others wait for its outcome.
    probing: Option<DateTime<Utc>>,
}

/// A probe with no outcome after this long was lost (its task stopped):
/// the next call probes instead. Longer than any Ondorse request may take.
const PROBE_LOST_AFTER: Duration = Duration::from_secs(2 * 60);

impl Breaker {
    pub(super) fn new(name: &'static str, settings: BreakerSettings) -> Breaker {
        Breaker {
            name,
            settings,
            state: Mutex::new(State::default()),
        }
    }

    /// May a call go out now? `Err(when)` says when to ask again.
    pub(super) fn admit(&self) -> Result<(), DateTime<Utc>> {
        let at = now();
        let mut state = self.state();
        if let Some(until) = state.open_until
            && until > at
        {
            return Err(until);
        }
        if state.failures > 0 {
            if state
                .probing
                .is_some_and(|since| at - since < to_chrono(PROBE_LOST_AFTER))
            {
                return Err(at + to_chrono(self.settings.base));
            }
            state.probing = Some(at);
        }
        Ok(())
    }

    /// The endpoint answered (whatever it said about the item).
    pub(super) fn succeeded(&self) {
        let mut state = self.state();
        if state.failures > 0 {
            tracing::info!(endpoint = self.name, "ondorse endpoint works again");
        }
        *state = State::default();
    }

    /// The endpoint failed as a whole (it may work later). Failures of
    /// calls already in flight when it opened do not grow the delay.
    pub(super) fn failed(&self, retry_after: Option<Duration>) {
        let at = now();
        let mut state = self.state();
        let asked = retry_after.map(|asked| asked.min(self.settings.retry_after_cap));
        if let Some(until) = state.open_until
            && until > at
        {
            if let Some(asked) = asked {
                state.open_until = Some(until.max(at + to_chrono(asked)));
            }
            return;
        }
        state.failures = state.failures.saturating_add(1);
        state.probing = None;
        let backoff = self
            .settings
            .base
            .saturating_mul(2u32.saturating_pow(state.failures - 1))
            .min(self.settings.cap);
        let delay = asked.map_or(backoff, |asked| asked.max(backoff));
        state.open_until = Some(at + to_chrono(delay));
        tracing::warn!(
            endpoint = self.name,
            failures = state.failures,
            delay_ms = delay.as_millis() as u64,
            "ondorse endpoint failing; backing off"
        );
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn to_chrono(delay: Duration) -> chrono::Duration {
    chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            "test",
            BreakerSettings {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(8),
                retry_after_cap: Duration::from_secs(60),
            },
        )
    }

    fn open_for(breaker: &Breaker) -> chrono::Duration {
        breaker.admit().expect_err("open") - now()
    }

    #[test]
    fn failed_probes_double_the_delay_up_to_the_cap() {
        let breaker = breaker();
        breaker.admit().expect("closed");
        breaker.failed(None);
        assert!(open_for(&breaker) <= chrono::Duration::seconds(1));
        // Calls that were in flight fail too: the delay does not grow.
        breaker.failed(None);
        assert!(open_for(&breaker) <= chrono::Duration::seconds(1));
        for expected in [2, 4, 8, 8] {
            breaker.state().open_until = Some(now());
            breaker.admit().expect("one probe");
            assert!(breaker.admit().is_err(), "the others wait for the probe");
            breaker.failed(None);
            let open = open_for(&breaker);
            assert!(
                open > chrono::Duration::seconds(expected) - chrono::Duration::milliseconds(500)
                    && open <= chrono::Duration::seconds(expected),
                "{open} for {expected}"
            );
        }
        breaker.state().open_until = Some(now());
        breaker.admit().expect("probe");
        breaker.succeeded();
        breaker.admit().expect("closed again");
        breaker.admit().expect("no probe limit once closed");
    }

    #[test]
    fn a_retry_after_is_honoured_up_to_its_cap() {
        let breaker = breaker();
        breaker.failed(Some(Duration::from_secs(86_400)));
        let open = open_for(&breaker);
        assert!(
            open > chrono::Duration::seconds(59) && open <= chrono::Duration::seconds(60),
            "{open}"
        );
    }
}
