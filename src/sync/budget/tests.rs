//! The governor's levels, pauses and waits, on a manual clock.

use super::*;
use crate::config::{SalesforceAuth, SalesforceConfig};

/// A governor on a manual clock; its client answers no call (nothing
/// listens on port 9), so a look at the usage fails and is retried later.
fn governor(budget_percent: u8) -> Governor {
    let client = SalesforceClient::new(
        &SalesforceConfig {
            login_url: "http://127.0.0.1:9".to_owned(),
            api_version: "62.0".to_owned(),
            auth: SalesforceAuth::ClientCredentials {
                client_id: "id".to_owned(),
                client_secret: "secret".to_owned().into(),
            },
            api_budget_percent: budget_percent,
            max_concurrent_requests: crate::config::DEFAULT_SALESFORCE_MAX_CONCURRENT_REQUESTS,
            link_batch_wait: std::time::Duration::from_secs(
                crate::config::DEFAULT_LINK_BATCH_WAIT_SECONDS,
            ),
        },
        Metrics::new(),
    )
    .expect("a client");
    Governor::new(
        client,
        BudgetSettings {
            budget_percent,
            limit_backoff_base: Duration::from_secs(60),
            limit_backoff_cap: Duration::from_secs(300),
            ..BudgetSettings::default()
        },
        Clock::manual(),
        Metrics::new(),
    )
}

#[test]
fn levels_start_at_the_budget_and_at_the_ceiling() {
    let governor = governor(50);
    let level = |used| governor.level(ApiUsage { used, max: 1000 });
    assert_eq!(level(499), None);
    assert_eq!(level(500), Some(PauseReason::OverBudget));
    assert_eq!(level(949), Some(PauseReason::OverBudget));
    assert_eq!(level(950), Some(PauseReason::NearLimit));
    assert_eq!(
        governor.level(ApiUsage { used: 0, max: 0 }),
        Some(PauseReason::NearLimit)
    );
    // A budget above the ceiling: write-backs still stop at 95 %.
    assert_eq!(
        self::governor(100).level(ApiUsage {
            used: 990,
            max: 1000
        }),
        Some(PauseReason::NearLimit)
    );
}

#[test]
fn the_limit_backoff_doubles_up_to_its_cap() {
    let governor = governor(50);
    let waits: Vec<u64> = (1..=5)
        .map(|strikes| governor.backoff(strikes).as_secs())
        .collect();
    assert_eq!(waits, [60, 120, 240, 300, 300]);
}

#[test]
fn a_refusal_stops_everything_and_says_until_when() {
    let governor = governor(50);
    {
        let mut inner = governor.lock();
        governor.strike(&mut inner);
    }
    let state = governor.state();
    assert!(state.paused);
    assert_eq!(state.reason, Some(PauseReason::LimitExceeded));
    assert_eq!(state.since, Some(governor.clock.now().wall));
    let until = state.until.expect("until");
    assert_eq!((until - governor.clock.now().wall).num_seconds(), 60);
    let message = state.message.expect("message");
    assert!(
        message.contains("REQUEST_LIMIT_EXCEEDED") && message.contains(&until.to_rfc3339()),
        "{message}"
    );
}

#[tokio::test]
async fn a_limit_stop_holds_every_call_until_its_backoff_is_over() {
    let governor = governor(50);
    {
        let mut inner = governor.lock();
        inner.recheck = None;
        governor.strike(&mut inner);
    }
    for work in [Work::Lookup, Work::WriteBack, Work::Intake] {
        let paused = governor.admit(work).await.expect_err("stopped");
        assert_eq!(paused.reason, PauseReason::LimitExceeded);
    }
    governor.clock.advance(Duration::from_secs(59));
    assert!(!governor.recheck_due(), "the first wait is 60 s");
    governor.clock.advance(Duration::from_secs(1));
    assert!(governor.recheck_due(), "GET /limits looks after 60 s");
    // The look fails (nothing answers): still stopped, looking again
    // after the same step, not sooner.
    let paused = governor
        .admit(Work::Lookup)
        .await
        .expect_err("still stopped");
    assert_eq!(paused.reason, PauseReason::LimitExceeded);
    assert!(!governor.recheck_due());
    let until = governor.state().until.expect("until");
    assert_eq!((until - governor.clock.now().wall).num_seconds(), 60);
    // A second refusal in a row doubles the wait.
    {
        let mut inner = governor.lock();
        governor.strike(&mut inner);
    }
    governor.clock.advance(Duration::from_secs(119));
    assert!(!governor.recheck_due());
    governor.clock.advance(Duration::from_secs(1));
    assert!(governor.recheck_due());
    assert_eq!(governor.state().deferred_steps, 4);
}

#[tokio::test]
async fn usage_over_the_budget_is_looked_at_again_each_recheck_interval() {
    let governor = governor(50);
    let interval = governor.settings.recheck_interval;
    {
        let mut inner = governor.lock();
        inner.recheck = None;
        governor.follow_usage(
            &mut inner,
            Some(PauseReason::OverBudget),
            Some(ApiUsage {
                used: 600,
                max: 1000,
            }),
        );
    }
    let state = governor.state();
    assert_eq!(state.reason, Some(PauseReason::OverBudget));
    let until = state.until.expect("until");
    assert_eq!(
        (until - governor.clock.now().wall).to_std().ok(),
        Some(interval)
    );
    governor.clock.advance(interval - Duration::from_secs(1));
    assert!(!governor.recheck_due());
    governor.clock.advance(Duration::from_secs(1));
    assert!(governor.recheck_due());
}

#[test]
fn write_backs_outlast_polling_and_every_call_stops_on_the_limit() {
    for work in [Work::Intake, Work::Reconcile] {
        assert!(work.waits_for(PauseReason::OverBudget));
    }
    assert!(!Work::WriteBack.waits_for(PauseReason::OverBudget));
    assert!(Work::WriteBack.waits_for(PauseReason::NearLimit));
    assert!(!Work::Lookup.waits_for(PauseReason::NearLimit));
    assert!(Work::Lookup.waits_for(PauseReason::LimitExceeded));
    assert!(!Work::Check.waits_for(PauseReason::NearLimit));
    assert!(Work::Check.waits_for(PauseReason::LimitExceeded));
}
