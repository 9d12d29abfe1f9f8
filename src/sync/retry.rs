//! The one retry policy of both APIs, and a breaker per endpoint.
//!
//! Retries happen in one layer: the engine. The clients make one attempt
//! each (the Salesforce client keeps its single token replay on
//! `INVALID_SESSION_ID`), and the engine decides when to try again from a
//! [`RetryPolicy`] built from the `[retry]` configuration section:
//! exponential backoff with jitter, capped, and a server's `Retry-After`
//! honoured up to `retry.retry_after_cap_seconds` (a `Retry-After: 86400`
//! must not stop the bridge for a day).
//!
//! A [`Breaker`] guards one endpoint ([`Endpoint`]). A failure of the
//! endpoint itself (a 5xx, a timeout, a throttle, a refused login) opens
//! it: every piece of work for that endpoint waits as a whole, instead of
//! hammering it item by item, while the other endpoints go on. When the wait
//! ends one call goes through as a probe; its success closes the breaker,
//! its failure opens it again for a longer wait. Failures reported while the
//! breaker is already open (calls that were in flight when it opened) do not
//! lengthen the wait.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::clock::{Clock, Moment};

/// `retry.initial_delay_seconds`: the first wait after a failure.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_secs(1);
/// `retry.max_delay_seconds`: waits double up to this.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5 * 60);
/// `retry.retry_after_cap_seconds`: the longest server-given `Retry-After`
/// honoured. A minute keeps a throttled endpoint quiet without letting one
/// header stop the bridge for hours.
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// The retry policy's numbers (the `[retry]` configuration section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// The wait after the first failure in a row.
    pub initial_delay: Duration,
    /// The longest wait between attempts (jitter included).
    pub max_delay: Duration,
    /// The longest wait a server's `Retry-After` can ask for.
    pub retry_after_cap: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            initial_delay: DEFAULT_INITIAL_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
        }
    }
}

/// When to try again. Cheap to copy; one per engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryPolicy {
    settings: RetrySettings,
}

impl RetryPolicy {
    pub fn new(settings: RetrySettings) -> RetryPolicy {
        RetryPolicy { settings }
    }

    pub fn settings(&self) -> RetrySettings {
        self.settings
    }

    /// The wait after the `failures`-th failure in a row (1 for the first):
    /// doubling from `initial_delay`, plus up to half again at random so
    /// items that failed together do not come back together, never more
    /// than `max_delay`. Never shorter than the step: a wait is a promise
    /// to the endpoint.
    pub fn delay(&self, failures: u32) -> Duration {
        // Past this many doublings every wait is the cap; it also bounds the
        // walk down the iterator.
        const MAX_STEPS: u32 = 64;
        // The jitter: up to this share of the step on top of it.
        const JITTER: f64 = 0.5;
        let steps = failures.clamp(1, MAX_STEPS) as usize;
        let step = ExponentialBuilder::default()
            .with_min_delay(self.settings.initial_delay)
            .with_max_delay(self.settings.max_delay)
            .without_max_times()
            .build()
            .nth(steps - 1)
            .unwrap_or(self.settings.max_delay);
        step.mul_f64(1.0 + fastrand::f64() * JITTER)
            .min(self.settings.max_delay)
    }

    /// A server-given `Retry-After`, capped at `retry_after_cap`.
    pub fn capped_retry_after(&self, retry_after: Duration) -> Duration {
        retry_after.min(self.settings.retry_after_cap)
    }

    /// The wait after the `failures`-th failure in a row: our backoff
    /// ([`RetryPolicy::delay`]), or what the server asked for when longer
    /// (capped).
    pub fn wait(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.delay(failures);
        retry_after.map_or(backoff, |asked| backoff.max(self.capped_retry_after(asked)))
    }

    /// The instant at which a retry waiting [`RetryPolicy::wait`] is due.
    pub fn retry_at(&self, failures: u32, retry_after: Option<Duration>) -> DateTime<Utc> {
        Utc::now()
            + chrono::Duration::from_std(self.wait(failures, retry_after)).unwrap_or_default()
    }
}

/// The endpoints that back off as a whole, each with its own [`Breaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// Ondorse `POST /api/portals`.
    PortalCreation,
    /// Ondorse `GET /api/applications/{id}`.
    ApplicationFetch,
    /// Salesforce `PATCH /composite/sobjects`: the writer.
    SalesforceWrites,
    /// Salesforce reads: SOQL queries and describe.
    SalesforceQueries,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::PortalCreation,
        Endpoint::ApplicationFetch,
        Endpoint::SalesforceWrites,
        Endpoint::SalesforceQueries,
    ];

    /// The name used in logs, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::PortalCreation => "portal_creation",
            Endpoint::ApplicationFetch => "application_fetch",
            Endpoint::SalesforceWrites => "salesforce_writes",
            Endpoint::SalesforceQueries => "salesforce_queries",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Work turned away because its endpoint's breaker is open; retriable by
/// waiting until `until`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{endpoint} is backing off after {failures} failure(s) in a row (last: {last_error}); next attempt at {}",
    until.to_rfc3339()
)]
pub struct BreakerOpen {
    pub endpoint: Endpoint,
    pub failures: u32,
    pub last_error: String,
    pub until: DateTime<Utc>,
    /// How long from now until the next attempt may run.
    pub wait: Duration,
}

/// An endpoint's breaker as `status`, `/readyz` and metrics show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerState {
    pub endpoint: Endpoint,
    /// True while work on the endpoint waits.
    pub open: bool,
    /// Failures in a row; 0 once a call succeeded.
    pub failures: u32,
    /// When the first failure of the current run happened.
    pub since: Option<DateTime<Utc>>,
    /// When the next attempt may run.
    pub until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    failures: u32,
    since: Option<DateTime<Utc>>,
    /// Until when work waits.
    open_until: Option<Moment>,
    /// A call was let through after a wait: its failure lengthens the wait.
    probing: bool,
    last_error: Option<String>,
}

/// One endpoint's breaker. See the module documentation.
#[derive(Debug)]
pub struct Breaker {
    endpoint: Endpoint,
    policy: RetryPolicy,
    /// What "now" is for the waits.
    clock: Clock,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(endpoint: Endpoint, policy: RetryPolicy, clock: Clock) -> Breaker {
        Breaker {
            endpoint,
            policy,
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// `Ok` when a call to the endpoint may go now. Once a wait is over the
    /// first caller goes through as the probe and the others wait one more
    /// step, so a recovering endpoint gets one call, not a stampede.
    pub fn admit(&self) -> Result<(), BreakerOpen> {
        let mut inner = self.lock();
        let Some(until) = inner.open_until else {
            return Ok(());
        };
        let now = self.clock.now();
        if now.at < until.at {
            return Err(BreakerOpen {
                endpoint: self.endpoint,
                failures: inner.failures,
                last_error: inner.last_error.clone().unwrap_or_default(),
                until: until.wall,
                wait: until.at - now.at,
            });
        }
        // The probe: should it vanish without an answer, the others go at
        // the end of this step anyway.
        let wait = self.policy.delay(inner.failures);
        inner.open_until = Some(self.clock.after(wait));
        inner.probing = true;
        Ok(())
    }

    /// The endpoint answered: work on it resumes at full speed.
    pub fn record_success(&self) {
        let mut inner = self.lock();
        if inner.failures > 0 {
            tracing::info!(
                endpoint = self.endpoint.as_str(),
                failures = inner.failures,
                "endpoint answers again; work on it resumes"
            );
        }
        *inner = Inner::default();
    }

    /// The endpoint itself failed (not one item): work on it waits, for
    /// `retry_after` (capped) when the server said, else for the policy's
    /// next step. Returns when work may resume.
    pub fn record_failure(&self, error: &str, retry_after: Option<Duration>) -> DateTime<Utc> {
        let mut inner = self.lock();
        let now = self.clock.now();
        inner.last_error = Some(error.to_owned());
        if let Some(until) = inner.open_until
            && now.at < until.at
            && !inner.probing
        {
            // Already waiting because of another call's failure: a call that
            // was in flight then says nothing new about the endpoint, unless
            // the server asks for a longer wait.
            if let Some(asked) = retry_after {
                let asked = self.clock.after(self.policy.capped_retry_after(asked));
                if asked.at > until.at {
                    inner.open_until = Some(asked);
                    return asked.wall;
                }
            }
            return until.wall;
        }
        inner.failures = inner.failures.saturating_add(1);
        inner.probing = false;
        inner.since.get_or_insert(now.wall);
        let wait = self.policy.wait(inner.failures, retry_after);
        let until = self.clock.after(wait);
        inner.open_until = Some(until);
        tracing::warn!(
            endpoint = self.endpoint.as_str(),
            failures = inner.failures,
            retry_in_seconds = wait.as_secs_f64(),
            %error,
            "endpoint failing; work on it backs off"
        );
        until.wall
    }

    /// The breaker now.
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        let open = inner
            .open_until
            .is_some_and(|until| !self.clock.reached(until));
        BreakerState {
            endpoint: self.endpoint,
            open,
            failures: inner.failures,
            since: inner.since,
            until: inner.open_until.map(|until| until.wall),
            last_error: inner.last_error.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A breaker for every [`Endpoint`], sharing one policy. One per engine.
#[derive(Debug)]
pub struct Breakers {
    policy: RetryPolicy,
    breakers: [Breaker; 4],
}

impl Breakers {
    pub fn new(policy: RetryPolicy, clock: Clock) -> Breakers {
        Breakers {
            policy,
            breakers: Endpoint::ALL.map(|endpoint| Breaker::new(endpoint, policy, clock.clone())),
        }
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    pub fn get(&self, endpoint: Endpoint) -> &Breaker {
        let index = Endpoint::ALL
            .iter()
            .position(|candidate| *candidate == endpoint)
            .expect("every endpoint has a breaker");
        &self.breakers[index]
    }

    /// Every breaker's state, in [`Endpoint::ALL`] order.
    pub fn states(&self) -> Vec<BreakerState> {
        self.breakers.iter().map(Breaker::state).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial_ms: u64, max_ms: u64, cap_ms: u64) -> RetryPolicy {
        RetryPolicy::new(RetrySettings {
            initial_delay: Duration::from_millis(initial_ms),
            max_delay: Duration::from_millis(max_ms),
            retry_after_cap: Duration::from_millis(cap_ms),
        })
    }

    #[test]
    fn delays_double_with_jitter_and_stop_at_the_cap() {
        let policy = policy(1_000, 300_000, 60_000);
        for (failures, step) in [(1, 1_000), (2, 2_000), (3, 4_000), (8, 128_000)] {
            for _ in 0..20 {
                let delay = policy.delay(failures).as_millis() as u64;
                assert!(
                    (step..=step * 3 / 2).contains(&delay),
                    "failure {failures}: {delay} ms outside {step}..={}",
                    step * 3 / 2
                );
            }
        }
        for failures in [10, 40, u32::MAX] {
            assert_eq!(policy.delay(failures), Duration::from_secs(300));
        }
        let spread: std::collections::BTreeSet<_> = (0..20).map(|_| policy.delay(5)).collect();
        assert!(spread.len() > 1, "no jitter: {spread:?}");
    }

    #[test]
    fn a_server_retry_after_is_honoured_up_to_the_cap() {
        let policy = policy(1_000, 300_000, 60_000);
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(86_400))),
            Duration::from_secs(60)
        );
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        // Our own backoff when it is longer than what the server asked.
        assert!(policy.wait(7, Some(Duration::from_secs(3))) >= Duration::from_secs(64));
        assert!(policy.wait(1, None) <= Duration::from_millis(1_500));
    }

    #[test]
    fn a_failure_opens_the_breaker_and_a_success_closes_it() {
        let breaker = Breaker::new(
            Endpoint::SalesforceWrites,
            policy(60_000, 600_000, 60_000),
            Clock::manual(),
        );
        assert!(breaker.admit().is_ok());
        breaker.record_failure("503 Service Unavailable", None);
        let open = breaker.admit().expect_err("open after a failure");
        assert_eq!(open.endpoint, Endpoint::SalesforceWrites);
        assert_eq!(open.failures, 1);
        assert!(open.to_string().contains("salesforce_writes"), "{open}");
        assert!(
            open.to_string().contains("503 Service Unavailable"),
            "{open}"
        );
        let state = breaker.state();
        assert!(state.open);
        assert_eq!(state.failures, 1);
        breaker.record_success();
        assert!(breaker.admit().is_ok());
        let state = breaker.state();
        assert!(!state.open);
        assert_eq!(state.failures, 0);
        assert_eq!(state.last_error, None);
    }

    #[test]
    fn calls_in_flight_when_it_opened_do_not_lengthen_the_wait() {
        let breaker = Breaker::new(
            Endpoint::PortalCreation,
            policy(60_000, 600_000, 60_000),
            Clock::manual(),
        );
        let first = breaker.record_failure("timeout", None);
        for _ in 0..15 {
            assert_eq!(breaker.record_failure("timeout", None), first);
        }
        assert_eq!(breaker.state().failures, 1);
    }

    #[test]
    fn after_the_wait_one_probe_goes_and_its_failure_waits_longer() {
        let clock = Clock::manual();
        let breaker = Breaker::new(
            Endpoint::ApplicationFetch,
            policy(20_000, 600_000, 60_000),
            clock.clone(),
        );
        breaker.record_failure("502", None);
        // The first wait is 20 s plus up to half again of jitter.
        clock.advance(Duration::from_secs(19));
        let open = breaker.admit().expect_err("still waiting");
        assert!(open.wait > Duration::ZERO && open.wait <= Duration::from_secs(11));
        clock.advance(Duration::from_secs(11));
        assert!(breaker.admit().is_ok(), "the probe goes");
        assert!(breaker.admit().is_err(), "the others wait for the probe");
        breaker.record_failure("502", None);
        assert_eq!(breaker.state().failures, 2);
        // The second wait is 40 s at least: 30 s more is not enough.
        clock.advance(Duration::from_secs(30));
        assert!(breaker.admit().is_err());
        assert!(breaker.state().open);
        clock.advance(Duration::from_secs(30));
        assert!(breaker.admit().is_ok(), "the next probe goes");
        breaker.record_success();
        assert!(!breaker.state().open);
        assert!(breaker.admit().is_ok(), "closed: every call goes");
    }

    #[test]
    fn a_throttle_opens_the_breaker_for_the_capped_retry_after() {
        let clock = Clock::manual();
        let breaker = Breaker::new(
            Endpoint::PortalCreation,
            policy(10, 100, 60_000),
            clock.clone(),
        );
        let until = breaker.record_failure("429", Some(Duration::from_secs(86_400)));
        assert_eq!((until - clock.now().wall).num_seconds(), 60);
        // A call in flight then, throttled for longer, lengthens the wait
        // up to the cap only; a shorter one leaves it.
        clock.advance(Duration::from_secs(30));
        let longer = breaker.record_failure("429", Some(Duration::from_secs(86_400)));
        assert_eq!((longer - clock.now().wall).num_seconds(), 60);
        assert_eq!(
            breaker.record_failure("429", Some(Duration::from_secs(5))),
            longer
        );
        assert_eq!(breaker.state().failures, 1);
        clock.advance(Duration::from_secs(59));
        assert!(breaker.admit().is_err());
        clock.advance(Duration::from_secs(1));
        assert!(breaker.admit().is_ok());
    }

    #[test]
    fn each_endpoint_has_its_own_breaker() {
        let breakers = Breakers::new(policy(60_000, 600_000, 60_000), Clock::manual());
        breakers
            .get(Endpoint::PortalCreation)
            .record_failure("429", Some(Duration::from_secs(30)));
        assert!(breakers.get(Endpoint::PortalCreation).admit().is_err());
        for endpoint in [
            Endpoint::ApplicationFetch,
            Endpoint::SalesforceWrites,
            Endpoint::SalesforceQueries,
        ] {
            assert!(breakers.get(endpoint).admit().is_ok(), "{endpoint}");
        }
        let open: Vec<Endpoint> = breakers
            .states()
            .into_iter()
            .filter(|state| state.open)
            .map(|state| state.endpoint)
            .collect();
        assert_eq!(open, [Endpoint::PortalCreation]);
    }
}
