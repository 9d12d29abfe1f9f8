//! The health of the cron schedules: a slot that passed without firing
//! means a stalled scheduler (readiness, the watchdog, `status` and the
//! `schedule_alive` gauge read it), and which mappings' polls keep failing.
//!
//! Every method takes the moment it is about, so the engine's loop passes
//! the clock's "now" and the tests a fake clock's.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::SyncError;
use crate::config::parse_schedule;

/// How late a slot may fire before its schedule counts as stalled: the
/// scheduler polls the clock about every half second.
const SLOT_GRACE: Duration = Duration::from_secs(5);
/// One cron schedule and what it has done.
#[derive(Debug)]
pub struct ScheduleHealth {
    pub name: &'static str,
    pub expression: String,
    cron: croner::Cron,
    started_at: DateTime<Utc>,
    state: Mutex<ScheduleState>,
}

#[derive(Debug, Clone, Default)]
pub struct ScheduleState {
    pub last_fired: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

impl ScheduleHealth {
    /// A schedule whose first slot is the first one after `started_at`.
    pub(super) fn new(
        name: &'static str,
        expression: &str,
        started_at: DateTime<Utc>,
    ) -> Result<ScheduleHealth, croner::errors::CronError> {
        Ok(ScheduleHealth {
            name,
            expression: expression.to_owned(),
            cron: parse_schedule(expression)?,
            started_at,
            state: Mutex::new(ScheduleState::default()),
        })
    }

    pub fn state(&self) -> ScheduleState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, change: impl FnOnce(&mut ScheduleState)) {
        change(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The scheduler fired a slot at `at`.
    pub(super) fn fired(&self, at: DateTime<Utc>) {
        self.update(|state| state.last_fired = Some(at));
    }

    /// The work of a slot ended at `at`, with `error` if it failed.
    pub(super) fn finished(&self, at: DateTime<Utc>, error: Option<String>) {
        self.update(|state| {
            state.last_finished = Some(at);
            state.last_error = error;
        });
    }

    /// The slot that should have fired by now and did not, if any.
    pub fn missed_slot(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let since = self.state().last_fired.unwrap_or(self.started_at);
        let due = self.cron.find_next_occurrence(&since, false).ok()?;
        let grace = chrono::Duration::from_std(SLOT_GRACE).unwrap_or_default();
        (at > due + grace).then_some(due)
    }
}

/// The schedules of a running engine, for readiness, watchdog and status.
#[derive(Debug)]
pub struct Schedules {
    pub poll: ScheduleHealth,
    pub reconcile: ScheduleHealth,
    /// Which mappings' polls fail, since when, and why.
    pub poll_failures: PollFailures,
}

/// A mapping whose polls keep failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollFailure {
    /// The first failure of the current run of failures.
    pub since: DateTime<Utc>,
    pub last_error: String,
}

/// Per mapping, the run of failed polls it is in (none once a poll works).
/// A budget pause is no failure: the governor reports it on its own.
#[derive(Debug, Default)]
pub struct PollFailures {
    failing: Mutex<std::collections::BTreeMap<String, PollFailure>>,
}

impl PollFailures {
    pub(super) fn record(
        &self,
        results: &[(String, Result<super::IntakeReport, SyncError>)],
        at: DateTime<Utc>,
    ) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        for (mapping, result) in results {
            match result {
                Ok(_) => {
                    failing.remove(mapping);
                }
                Err(SyncError::Paused(_)) => {}
                Err(error) => {
                    let last_error = error.to_string();
                    failing
                        .entry(mapping.clone())
                        .and_modify(|failure| failure.last_error = last_error.clone())
                        .or_insert(PollFailure {
                            since: at,
                            last_error,
                        });
                }
            }
        }
        // A mapping removed by a reload fails no more.
        failing.retain(|mapping, _| results.iter().any(|(name, _)| name == mapping));
    }

    /// Every failing mapping, by name.
    pub fn failing(&self) -> std::collections::BTreeMap<String, PollFailure> {
        self.failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Schedules {
    /// True while every schedule fires on time.
    pub fn alive(&self, at: DateTime<Utc>) -> bool {
        self.poll.missed_slot(at).is_none() && self.reconcile.missed_slot(at).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10:MM:SS on a fixed day: the fake clock of these tests.
    fn at(minute: u32, second: u32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 3, 2, 10, minute, second)
            .single()
            .expect("a valid time")
    }

    /// Every 30 s, as the default poll, started at 10:00:10.
    fn poll() -> ScheduleHealth {
        ScheduleHealth::new("poll", "*/30 * * * * *", at(0, 10)).expect("a valid schedule")
    }

    fn schedules() -> Schedules {
        Schedules {
            poll: poll(),
            reconcile: ScheduleHealth::new("reconcile", "0 */10 * * * *", at(0, 10))
                .expect("a valid schedule"),
            poll_failures: PollFailures::default(),
        }
    }

    #[test]
    fn a_schedule_is_stalled_once_a_slot_passes_the_grace_without_firing() {
        let poll = poll();
        // The first slot is 10:00:30; the scheduler may be up to 5 s late.
        assert_eq!(poll.missed_slot(at(0, 10)), None);
        assert_eq!(poll.missed_slot(at(0, 35)), None);
        assert_eq!(poll.missed_slot(at(0, 36)), Some(at(0, 30)));
        // Much later, the slot reported is still the first one missed.
        assert_eq!(poll.missed_slot(at(7, 0)), Some(at(0, 30)));
    }

    #[test]
    fn a_schedule_that_fires_each_slot_stays_alive_and_recovers_after_a_stall() {
        let poll = poll();
        for (fired, looked) in [((0, 30), (1, 0)), ((1, 3), (1, 34)), ((1, 30), (2, 5))] {
            poll.fired(at(fired.0, fired.1));
            assert_eq!(poll.missed_slot(at(looked.0, looked.1)), None, "{looked:?}");
        }
        // 10:02:00 does not fire: stalled from 10:02:05 on.
        assert_eq!(poll.missed_slot(at(2, 6)), Some(at(2, 0)));
        // The scheduler comes back: alive again from its next firing on.
        poll.fired(at(2, 30));
        assert_eq!(poll.missed_slot(at(2, 31)), None);
    }

    #[test]
    fn the_engine_is_alive_only_while_every_schedule_fires() {
        let schedules = schedules();
        assert!(schedules.alive(at(0, 30)));
        // Reconcile's first slot is 10:10:00; poll fires throughout.
        for slot in 1..=20 {
            let minute = slot / 2;
            let second = if slot % 2 == 0 { 0 } else { 30 };
            schedules.poll.fired(at(minute, second));
        }
        assert!(schedules.alive(at(10, 5)));
        assert!(!schedules.alive(at(10, 6)), "reconcile missed 10:10:00");
        schedules.reconcile.fired(at(10, 7));
        assert!(schedules.alive(at(10, 8)));
    }

    #[test]
    fn the_end_of_a_slot_keeps_its_error_until_the_next_one_ends() {
        let poll = poll();
        poll.fired(at(0, 30));
        poll.finished(at(0, 31), Some("sales: salesforce: 503".to_owned()));
        let state = poll.state();
        assert_eq!(state.last_fired, Some(at(0, 30)));
        assert_eq!(state.last_finished, Some(at(0, 31)));
        assert_eq!(state.last_error.as_deref(), Some("sales: salesforce: 503"));
        poll.fired(at(1, 0));
        assert_eq!(
            poll.state().last_error.as_deref(),
            Some("sales: salesforce: 503")
        );
        poll.finished(at(1, 1), None);
        assert_eq!(poll.state().last_error, None);
    }
}
