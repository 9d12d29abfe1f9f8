//! The Salesforce API budget governor.
//!
//! An org's API allowance is a rolling 24-hour count shared by every
//! integration of the org, so the bridge must never be the one that uses it
//! up. Three levels of restraint, each logged once when it starts and once
//! when it ends:
//!
//! - usage at or above `salesforce.api_budget_percent`: polling and
//!   reconcile wait ([`PauseReason::OverBudget`]); write-backs go on, since
//!   they carry compliance decisions people wait for;
//! - usage at or above [`DECISION_CEILING_PERCENT`]: write-backs wait too
//!   ([`PauseReason::NearLimit`]), keeping the last few percent for the
//!   org's own users;
//! - a `REQUEST_LIMIT_EXCEEDED` answer: no Salesforce call at all
//!   ([`PauseReason::LimitExceeded`]) for an exponential, capped backoff,
//!   after which `GET /limits` looks whether the org has room again.
//!
//! Usage comes from the `Sforce-Limit-Info` header of every answer (the
//! client keeps the last one). While work is paused nothing else would
//! refresh it, so `GET /limits` re-reads it every
//! [`BudgetSettings::recheck_interval`]; resumption needs no one.
//!
//! Every Salesforce call of the engine asks [`Governor::admit`] first (the
//! engine reaches Salesforce only through `sync::governed`), and the
//! state is readable for `status` ([`Governor::state`]) and as metrics.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::clock::{Clock, Moment};
use crate::salesforce::model::ApiUsage;
use crate::salesforce::{SalesforceClient, SalesforceError};
use crate::telemetry::Metrics;

/// Usage (percent of the daily allowance) from which write-backs wait too.
pub const DECISION_CEILING_PERCENT: u8 = 95;

/// How the governor behaves; production defaults, tests shorten delays.
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    /// `salesforce.api_budget_percent`.
    pub budget_percent: u8,
    /// While usage keeps work paused, how often `GET /limits` (one call)
    /// looks whether usage dropped.
    pub recheck_interval: Duration,
    /// The first wait after `REQUEST_LIMIT_EXCEEDED`; it doubles with each
    /// refusal in a row, up to `limit_backoff_cap`.
    pub limit_backoff_base: Duration,
    pub limit_backoff_cap: Duration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            budget_percent: crate::config::DEFAULT_API_BUDGET_PERCENT,
            // Usage drops as calls leave the rolling 24-hour window: minutes
            // matter, seconds do not, and each look is itself a call.
            recheck_interval: Duration::from_secs(5 * 60),
            limit_backoff_base: Duration::from_secs(60),
            limit_backoff_cap: Duration::from_secs(30 * 60),
        }
    }
}

/// The kinds of work that call Salesforce, from least to most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Polls, push hints, resync reads.
    Intake,
    Reconcile,
    /// Sending pending write-backs (portal links and decisions).
    WriteBack,
    /// Metadata the other steps need (describe).
    Lookup,
    /// The online check of reloaded mappings (describe, a `LIMIT 1` query).
    Check,
}

impl Work {
    /// The `work` label of metrics and logs.
    fn label(self) -> &'static str {
        match self {
            Work::Intake => "intake",
            Work::Reconcile => "reconcile",
            Work::WriteBack => "writeback",
            Work::Lookup => "lookup",
            Work::Check => "check",
        }
    }

    /// Whether this work waits while `reason` holds.
    fn waits_for(self, reason: PauseReason) -> bool {
        match reason {
            PauseReason::LimitExceeded => true,
            PauseReason::NearLimit => !matches!(self, Work::Lookup | Work::Check),
            PauseReason::OverBudget => matches!(self, Work::Intake | Work::Reconcile),
        }
    }
}

/// Why Salesforce work is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// Usage at or above `api_budget_percent`: polling and reconcile wait.
    OverBudget,
    /// Usage at or above [`DECISION_CEILING_PERCENT`]: write-backs wait too.
    NearLimit,
    /// Salesforce answered `REQUEST_LIMIT_EXCEEDED`: every call waits.
    LimitExceeded,
}

impl PauseReason {
    /// Every reason: the `ondorse_bridge_salesforce_paused` gauge shows each.
    const ALL: [PauseReason; 3] = [
        PauseReason::OverBudget,
        PauseReason::NearLimit,
        PauseReason::LimitExceeded,
    ];

    /// The `reason` label of metrics and logs (the JSON name too).
    pub fn label(self) -> &'static str {
        match self {
            PauseReason::OverBudget => "over_budget",
            PauseReason::NearLimit => "near_limit",
            PauseReason::LimitExceeded => "limit_exceeded",
        }
    }
}

/// What the governor is doing, for `status` and the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    pub paused: bool,
    pub reason: Option<PauseReason>,
    /// The reason in a sentence, with the numbers.
    pub message: Option<String>,
    /// The org's usage as last reported; `None` before the first answer.
    pub usage: Option<ApiUsage>,
    pub budget_percent: u8,
    pub since: Option<DateTime<Utc>>,
    /// When `GET /limits` next looks whether work can resume.
    pub until: Option<DateTime<Utc>>,
    /// Steps turned away since the engine started.
    pub deferred_steps: u64,
}

/// A step the governor turned away; retriable by waiting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Paused {
    pub reason: PauseReason,
    pub message: String,
    pub until: Option<DateTime<Utc>>,
}

/// Calls are stopped after `REQUEST_LIMIT_EXCEEDED`.
#[derive(Debug)]
struct LimitStop {
    /// Refusals in a row: the backoff step.
    strikes: u32,
    since: DateTime<Utc>,
}

#[derive(Debug)]
struct Inner {
    /// The client's refusal count already acted on.
    refusals_seen: u64,
    limit: Option<LimitStop>,
    /// The usage level in force (as last logged) and since when.
    usage_pause: Option<(PauseReason, DateTime<Utc>)>,
    /// When `GET /limits` is due next. Due at once on start, so the first
    /// poll already knows the usage.
    recheck: Option<Moment>,
    deferred_steps: u64,
}

/// Decides which Salesforce work may run now. One per engine.
pub struct Governor {
    salesforce: SalesforceClient,
    settings: BudgetSettings,
    /// What "now" is for the stops and the looks at usage.
    clock: Clock,
    inner: Mutex<Inner>,
    /// One `GET /limits` at a time; the others wait for its answer.
    recheck_lock: tokio::sync::Mutex<()>,
    /// The daemon's registry: the budget, the pauses, the deferred steps.
    metrics: Metrics,
}

impl std::fmt::Debug for Governor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Governor")
            .field("settings", &self.settings)
            .field("inner", &*self.lock())
            .finish()
    }
}

impl Governor {
    /// A governor for `salesforce`, deciding on `clock`, showing its budget
    /// and pauses in `metrics` from now on.
    pub fn new(
        salesforce: SalesforceClient,
        settings: BudgetSettings,
        clock: Clock,
        metrics: Metrics,
    ) -> Governor {
        metrics.salesforce_budget(settings.budget_percent);
        let governor = Governor {
            inner: Mutex::new(Inner {
                refusals_seen: salesforce.limit_refusals(),
                limit: None,
                usage_pause: None,
                recheck: Some(clock.now()),
                deferred_steps: 0,
            }),
            salesforce,
            settings,
            clock,
            recheck_lock: tokio::sync::Mutex::new(()),
            metrics,
        };
        // Every reason shows 0 from the start, not only once it held.
        governor.publish(&governor.lock());
        governor
    }

    /// `Ok` when `work` may call Salesforce now. Reads `GET /limits` first
    /// when a look is due.
    pub async fn admit(&self, work: Work) -> Result<(), Paused> {
        self.notice_refusals();
        if self.recheck_due() {
            self.recheck().await;
        }
        let mut inner = self.lock();
        let usage = self.salesforce.api_usage();
        let level = usage.and_then(|usage| self.level(usage));
        self.follow_usage(&mut inner, level, usage);
        let holding = if inner.limit.is_some() {
            Some(PauseReason::LimitExceeded)
        } else {
            level
        };
        match holding {
            Some(reason) if work.waits_for(reason) => {
                inner.deferred_steps += 1;
                self.metrics.salesforce_deferred(work.label());
                tracing::debug!(
                    work = work.label(),
                    reason = reason.label(),
                    "salesforce work deferred"
                );
                Err(Paused {
                    reason,
                    message: self.explain(reason, usage, inner.recheck),
                    until: inner.recheck.map(|due| due.wall),
                })
            }
            _ => Ok(()),
        }
    }

    /// The governor's state now (a refusal answered since the last step
    /// already counts).
    pub fn state(&self) -> BudgetState {
        self.notice_refusals();
        let inner = self.lock();
        let usage = self.salesforce.api_usage();
        let (reason, since) = match (&inner.limit, inner.usage_pause) {
            (Some(stop), _) => (Some(PauseReason::LimitExceeded), Some(stop.since)),
            (None, Some((reason, since))) => (Some(reason), Some(since)),
            (None, None) => (None, None),
        };
        BudgetState {
            paused: reason.is_some(),
            reason,
            message: reason.map(|reason| self.explain(reason, usage, inner.recheck)),
            usage,
            budget_percent: self.settings.budget_percent,
            since,
            until: reason.and(inner.recheck).map(|due| due.wall),
            deferred_steps: inner.deferred_steps,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn recheck_due(&self) -> bool {
        self.lock()
            .recheck
            .is_some_and(|due| self.clock.reached(due))
    }

    /// The usage level at `usage`, if it pauses anything.
    fn level(&self, usage: ApiUsage) -> Option<PauseReason> {
        let percent = usage.ratio() * 100.0;
        if percent >= f64::from(DECISION_CEILING_PERCENT) {
            Some(PauseReason::NearLimit)
        } else if percent >= f64::from(self.settings.budget_percent) {
            Some(PauseReason::OverBudget)
        } else {
            None
        }
    }

    /// Looks at the client's `REQUEST_LIMIT_EXCEEDED` count: a new refusal
    /// stops every call for the next backoff step.
    fn notice_refusals(&self) {
        let refusals = self.salesforce.limit_refusals();
        let mut inner = self.lock();
        if refusals > inner.refusals_seen {
            inner.refusals_seen = refusals;
            self.strike(&mut inner);
        }
    }

    /// One more refusal in a row: stop (or stay stopped) for the next step.
    fn strike(&self, inner: &mut Inner) {
        let strikes = inner.limit.as_ref().map_or(0, |stop| stop.strikes) + 1;
        let delay = self.backoff(strikes);
        let due = self.clock.after(delay);
        inner.recheck = Some(due);
        match &mut inner.limit {
            None => {
                inner.limit = Some(LimitStop {
                    strikes,
                    since: self.clock.now().wall,
                });
                tracing::error!(
                    retry_in_seconds = delay.as_secs_f64(),
                    until = %due.wall.to_rfc3339(),
                    "salesforce api limit exceeded: Salesforce refused a call with REQUEST_LIMIT_EXCEEDED, the org's daily API allowance is used up; every Salesforce call stops, GET /limits looks for room again at `until`, then at growing intervals; find what else uses the org's API (Setup > System Overview) if it keeps happening"
                );
            }
            Some(stop) => {
                stop.strikes = strikes;
                tracing::warn!(
                    strikes,
                    retry_in_seconds = delay.as_secs_f64(),
                    until = %due.wall.to_rfc3339(),
                    "salesforce still refuses calls (REQUEST_LIMIT_EXCEEDED); looking again later"
                );
            }
        }
        self.publish(inner);
    }

    /// The wait after the `strikes`-th refusal in a row: exponential from
    /// the base, capped. No jitter: one bridge per org, nothing to spread.
    fn backoff(&self, strikes: u32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.settings.limit_backoff_base)
            .with_max_delay(self.settings.limit_backoff_cap)
            .without_max_times()
            .build()
            .nth(strikes.saturating_sub(1) as usize)
            .unwrap_or(self.settings.limit_backoff_cap)
    }

    /// `GET /limits`, once for every waiting caller.
    async fn recheck(&self) {
        let _one_at_a_time = self.recheck_lock.lock().await;
        if !self.recheck_due() {
            return;
        }
        let answer = self.salesforce.limits().await;
        // A refused look counts as a refusal in a row.
        self.notice_refusals();
        let mut inner = self.lock();
        match answer {
            Ok(usage) if usage.used < usage.max => {
                inner.recheck = None;
                if inner.limit.take().is_some() {
                    tracing::info!(
                        used = usage.used,
                        max = usage.max,
                        "salesforce accepts calls again; the API limit stop is over"
                    );
                    self.publish(&inner);
                }
            }
            Ok(_) => self.strike(&mut inner),
            Err(SalesforceError::RequestLimitExceeded { .. }) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read the org's API usage (GET /limits)");
                inner.recheck = match &inner.limit {
                    Some(stop) => Some(self.clock.after(self.backoff(stop.strikes))),
                    None if inner.usage_pause.is_some() => {
                        Some(self.clock.after(self.settings.recheck_interval))
                    }
                    // Nothing paused: the next real call reports the usage.
                    None => None,
                };
            }
        }
    }

    /// Moves to the usage `level`, logging the change once.
    fn follow_usage(&self, inner: &mut Inner, level: Option<PauseReason>, usage: Option<ApiUsage>) {
        let current = inner.usage_pause.map(|(reason, _)| reason);
        if current == level {
            if level.is_some() && inner.recheck.is_none() {
                inner.recheck = Some(self.clock.after(self.settings.recheck_interval));
            }
            return;
        }
        let (used, max, percent) = usage.map_or((0, 0, 0.0), |usage| {
            (usage.used, usage.max, usage.ratio() * 100.0)
        });
        let budget_percent = self.settings.budget_percent;
        match (current, level) {
            (_, Some(PauseReason::NearLimit)) => tracing::warn!(
                used,
                max,
                percent,
                ceiling_percent = DECISION_CEILING_PERCENT,
                "salesforce API usage reached the ceiling: polling, reconcile and write-backs pause"
            ),
            (None, Some(_)) => tracing::warn!(
                used,
                max,
                percent,
                budget_percent,
                "salesforce API usage reached the budget: polling and reconcile pause; write-backs go on"
            ),
            (Some(_), Some(_)) => tracing::info!(
                used,
                max,
                percent,
                ceiling_percent = DECISION_CEILING_PERCENT,
                "salesforce API usage is below the ceiling again: write-backs resume; polling and reconcile stay paused"
            ),
            (Some(_), None) => tracing::info!(
                used,
                max,
                percent,
                budget_percent,
                "salesforce API usage is below the budget again: polling and reconcile resume"
            ),
            (None, None) => {}
        }
        inner.usage_pause = level.map(|reason| (reason, self.clock.now().wall));
        if inner.limit.is_none() {
            inner.recheck = level.map(|_| self.clock.after(self.settings.recheck_interval));
        }
        self.publish(inner);
    }

    fn publish(&self, inner: &Inner) {
        let in_force = |reason: PauseReason| match reason {
            PauseReason::LimitExceeded => inner.limit.is_some(),
            _ => inner.usage_pause.is_some_and(|(usage, _)| usage == reason),
        };
        self.metrics
            .salesforce_paused(&PauseReason::ALL.map(|reason| (reason.label(), in_force(reason))));
    }

    fn explain(
        &self,
        reason: PauseReason,
        usage: Option<ApiUsage>,
        recheck: Option<Moment>,
    ) -> String {
        let usage = usage.map_or_else(
            || "unknown".to_owned(),
            |usage| {
                format!(
                    "{}/{} ({:.1}%)",
                    usage.used,
                    usage.max,
                    usage.ratio() * 100.0
                )
            },
        );
        let next = recheck.map_or_else(String::new, |due| {
            format!("; next look at {}", due.wall.to_rfc3339())
        });
        match reason {
            PauseReason::OverBudget => format!(
                "salesforce API usage {usage} is at or above salesforce.api_budget_percent = {}: polling and reconcile wait, write-backs go on until {DECISION_CEILING_PERCENT}%{next}",
                self.settings.budget_percent
            ),
            PauseReason::NearLimit => format!(
                "salesforce API usage {usage} is at or above {DECISION_CEILING_PERCENT}%: polling, reconcile and write-backs wait{next}"
            ),
            PauseReason::LimitExceeded => format!(
                "salesforce refused calls with REQUEST_LIMIT_EXCEEDED (the org's daily API allowance is used up): no Salesforce call until GET /limits shows room{next}"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
