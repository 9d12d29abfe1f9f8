//! The Salesforce API budget governor against the sandbox org's allowance:
//! what pauses at which usage, that nothing reaches Salesforce while it
//! should not, and that work resumes by itself.

use std::time::Duration;

use chrono::Utc;
use ondorse_bridge::salesforce::Id;
use ondorse_bridge::sync::{
    BudgetSettings, Engine, EngineSettings, IntakeReport, PauseReason, SyncError,
};
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use ondorse_sandbox::salesforce::SalesforceSandboxOptions;
use serde_json::json;

use crate::support::world::{E2E_DEADLINE, World, eventually, quick_settings};

const BUSINESS: &str = "business-onboarding";
/// A small allowance, so usage percentages are easy to set.
const DAILY_LIMIT: u64 = 1_000;

async fn world(extra_config: &str) -> World {
    World::start_with(
        SalesforceSandboxOptions {
            daily_api_limit: DAILY_LIMIT,
            ..SalesforceSandboxOptions::default()
        },
        OndorseSandboxOptions::default(),
        extra_config,
    )
    .await
}

/// The pause reason of a step the governor turned away; panics otherwise.
fn paused<T: std::fmt::Debug>(result: Result<T, SyncError>) -> PauseReason {
    match result {
        Err(SyncError::Paused(paused)) => paused.reason,
        other => panic!("expected the governor to turn the step away, got {other:?}"),
    }
}

/// Polls until the governor lets the poll through (it looks at `GET
/// /limits` on its own schedule), and returns that poll's report.
async fn poll_once_resumed(engine: &Engine) -> IntakeReport {
    let until = tokio::time::Instant::now() + E2E_DEADLINE;
    loop {
        match engine.poll(BUSINESS).await {
            Ok(report) => return report,
            Err(SyncError::Paused(_)) => {
                assert!(
                    tokio::time::Instant::now() < until,
                    "polling never resumed: {:?}",
                    engine.budget_state()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(error) => panic!("poll failed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_and_reconcile_pause_over_budget_and_resume_when_usage_drops() {
    let world = world("").await;
    let ids = world.seed(5, "Customer", 11);
    world.salesforce.set_api_usage(600);
    let engine = world.engine();

    // The first step reads the usage (GET /limits) before any query.
    assert_eq!(paused(engine.poll(BUSINESS).await), PauseReason::OverBudget);
    assert_eq!(paused(engine.reconcile().await), PauseReason::OverBudget);
    assert_eq!(
        world.salesforce.stats().query_requests,
        0,
        "no query reached salesforce"
    );
    assert!(world.ondorse.portals().is_empty());
    let state = engine.budget_state();
    assert!(state.paused, "{state:?}");
    assert_eq!(state.reason, Some(PauseReason::OverBudget));
    assert_eq!(
        state.usage.map(|usage| (usage.used, usage.max)),
        Some((601, DAILY_LIMIT))
    );
    assert_eq!(state.budget_percent, 50);
    assert!(state.deferred_steps >= 2, "{state:?}");
    let message = state.message.expect("a paused state explains itself");
    assert!(
        message.contains("601/1000 (60.1%)") && message.contains("api_budget_percent = 50"),
        "{message}"
    );

    // The rolling window moves on: usage drops, the governor notices alone.
    world.salesforce.set_api_usage(100);
    let report = poll_once_resumed(&engine).await;
    assert_eq!(report.portals_created, ids.len());
    assert!(world.salesforce.stats().query_requests >= 1);
    engine.reconcile().await.expect("reconcile runs again");
    let state = engine.budget_state();
    assert!(
        !state.paused && state.reason.is_none() && state.until.is_none(),
        "{state:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_backs_go_on_over_budget_and_wait_near_the_limit() {
    let world = world("").await;
    let ids = world.seed(5, "Customer", 12);
    let engine = world.engine();
    assert_eq!(
        engine.poll(BUSINESS).await.expect("poll").portals_created,
        ids.len()
    );
    assert_eq!(engine.store().pending_write_count(), ids.len());

    world.salesforce.set_api_usage(960);
    // Any answer tells the usage; this one is what a concurrent step would
    // see (a describe is a lookup, which waits only for the daily limit).
    engine.forget_describe().await;
    engine.describe().await.expect("describe");
    let composite = world.salesforce.stats().composite_requests;
    let report = engine.flush_writes().await.expect("write pass");
    assert_eq!(report.calls, 0, "{report:?}");
    assert_eq!(world.salesforce.stats().composite_requests, composite);
    assert_eq!(
        engine.store().pending_write_count(),
        ids.len(),
        "the writes wait, not lost"
    );
    assert_eq!(engine.budget_state().reason, Some(PauseReason::NearLimit));

    // Below 95 % but over the budget: decisions and links are written,
    // polling still waits.
    world.salesforce.set_api_usage(700);
    let until = tokio::time::Instant::now() + E2E_DEADLINE;
    while engine.store().pending_write_count() > 0 {
        assert!(
            tokio::time::Instant::now() < until,
            "write-backs never resumed: {:?}",
            engine.budget_state()
        );
        engine.flush_writes().await.expect("write pass");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for id in &ids {
        assert_eq!(
            world.field(id, "KYC_Status__c"),
            json!("Portal sent"),
            "{id}"
        );
    }
    assert_eq!(engine.budget_state().reason, Some(PauseReason::OverBudget));
    assert_eq!(paused(engine.poll(BUSINESS).await), PauseReason::OverBudget);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limit_exceeded_stops_every_call_and_backs_off_until_limits_show_room() {
    // Long enough to act inside the first backoff even on a loaded machine.
    const BASE: Duration = Duration::from_millis(1_000);
    let world = world("").await;
    let ids = world.seed(5, "Customer", 13);
    world.salesforce.set_api_usage(DAILY_LIMIT);
    let engine = world.engine_with(EngineSettings {
        budget: BudgetSettings {
            limit_backoff_base: BASE,
            limit_backoff_cap: BASE * 4,
            ..quick_settings().budget
        },
        ..quick_settings()
    });

    // The org is out of calls: the governor's own look is refused.
    let started = Utc::now();
    assert_eq!(
        paused(engine.poll(BUSINESS).await),
        PauseReason::LimitExceeded
    );
    let first = engine.budget_state();
    assert_eq!(first.reason, Some(PauseReason::LimitExceeded), "{first:?}");
    let first_until = first.until.expect("a stop says until when");
    let first_wait = (first_until - started).to_std().unwrap();
    assert!(
        first_wait >= BASE - Duration::from_millis(50) && first_wait <= BASE * 2,
        "{first_wait:?}"
    );

    // Still exhausted at the next look: the wait doubles.
    let until = tokio::time::Instant::now() + E2E_DEADLINE;
    let second = loop {
        let state = engine.budget_state();
        if state.until.is_some_and(|next| next > first_until) {
            break state;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the governor never looked again: {state:?}"
        );
        let _ = engine.poll(BUSINESS).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let second_wait = (second.until.unwrap() - first_until).to_std().unwrap();
    assert!(
        second_wait >= BASE * 2 - Duration::from_millis(50),
        "{second_wait:?}"
    );
    assert_eq!(second.since, first.since, "one stop, two looks");

    // Room again, but within the backoff nothing is sent at all.
    world.salesforce.set_api_usage(0);
    let calls = world.salesforce.stats().api_requests;
    assert_eq!(
        paused(engine.poll(BUSINESS).await),
        PauseReason::LimitExceeded
    );
    assert_eq!(paused(engine.describe().await), PauseReason::LimitExceeded);
    assert_eq!(engine.flush_writes().await.expect("write pass").calls, 0);
    assert!(
        Utc::now() < second.until.unwrap(),
        "the machine was too slow to check inside the backoff"
    );
    assert_eq!(
        world.salesforce.stats().api_requests,
        calls,
        "no call reached salesforce while stopped"
    );

    // After the backoff GET /limits shows room and everything resumes.
    let report = poll_once_resumed(&engine).await;
    assert_eq!(report.portals_created, ids.len());
    engine.flush_writes().await.expect("write pass");
    for id in &ids {
        assert_eq!(
            world.field(id, "KYC_Status__c"),
            json!("Portal sent"),
            "{id}"
        );
    }
    assert!(!engine.budget_state().paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_pauses_over_budget_and_resumes_by_itself() {
    let world = world("[schedule]\npoll = \"* * * * * *\"\nreconcile = \"* * * * * *\"\n").await;
    let ids = world.seed(5, "Customer", 14);
    world.salesforce.set_api_usage(700);
    let daemon = world.daemon().await;

    // The start-up poll and reconcile plus at least one more slot each.
    eventually(
        "the governor turned away several scheduled steps",
        E2E_DEADLINE,
        || {
            let state = daemon.engine.budget_state();
            state.reason == Some(PauseReason::OverBudget) && state.deferred_steps >= 4
        },
    )
    .await;
    assert_eq!(
        world.salesforce.stats().query_requests,
        0,
        "no query reached salesforce while paused"
    );
    assert!(world.ondorse.portals().is_empty());

    world.salesforce.set_api_usage(10);
    eventually("every Account gets its portal link", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
    })
    .await;
    assert!(!daemon.engine.budget_state().paused);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_resync_honours_api_budget_percent() {
    let world = world("").await;
    world.seed(3, "Customer", 15);
    // A budget below the default, so only a resync that reads the
    // configuration stops.
    let text = std::fs::read_to_string(&world.config_path).expect("read the config");
    std::fs::write(
        &world.config_path,
        text.replacen(
            "[salesforce]\n",
            "[salesforce]\napi_budget_percent = 20\n",
            1,
        ),
    )
    .expect("write the config");
    world.salesforce.set_api_usage(300);
    // The daemon ran before and is stopped now: its store exists (offline
    // commands never create one).
    drop(
        ondorse_bridge::store::Store::open(&world.config.store.path)
            .await
            .expect("create the store"),
    );

    let output = crate::support::daemon::cli(&world.config_path, &["resync", "--all"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("salesforce.api_budget_percent = 20"),
        "the refusal names the budget: {stderr}"
    );
    let stats = world.salesforce.stats();
    assert_eq!(stats.query_requests, 0, "no query over the budget");
    assert_eq!(stats.composite_requests, 0);
    assert!(world.ondorse.portals().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_limit_stop_holds_only_the_governors_own_look_reaches_salesforce() {
    let world = world("").await;
    let ids = world.seed(3, "Customer", 16);
    let engine = world.engine_with(EngineSettings {
        budget: BudgetSettings {
            // Longer than this test: no look at GET /limits comes due.
            limit_backoff_base: Duration::from_secs(120),
            limit_backoff_cap: Duration::from_secs(240),
            ..quick_settings().budget
        },
        ..quick_settings()
    });
    assert_eq!(
        engine.poll(BUSINESS).await.expect("poll").portals_created,
        ids.len()
    );
    world.salesforce.set_api_usage(DAILY_LIMIT);
    // The writer meets REQUEST_LIMIT_EXCEEDED: every call stops.
    let report = engine
        .flush_writes()
        .await
        .expect("a refused pass is no error");
    assert!(report.paused, "{report:?}");
    assert_eq!(engine.store().pending_write_count(), ids.len());
    assert_eq!(engine.store().dead_letter_count(), 0);
    assert_eq!(
        engine.budget_state().reason,
        Some(PauseReason::LimitExceeded)
    );

    let before = world.salesforce.stats();
    assert_eq!(
        paused(engine.poll(BUSINESS).await),
        PauseReason::LimitExceeded
    );
    assert_eq!(
        paused(
            engine
                .intake_accounts(
                    &ids.iter()
                        .map(|id| Id::parse(id).unwrap())
                        .collect::<Vec<_>>()
                )
                .await
        ),
        PauseReason::LimitExceeded
    );
    assert_eq!(paused(engine.reconcile().await), PauseReason::LimitExceeded);
    engine.forget_describe().await;
    assert_eq!(paused(engine.describe().await), PauseReason::LimitExceeded);
    assert!(engine.flush_writes().await.expect("pass").paused);
    let reload = engine.reload_mappings(&world.config.mappings.dir).await;
    assert_eq!(
        reload,
        ondorse_bridge::sync::ReloadOutcome::Applied {
            mappings: 2,
            checked_online: false
        },
        "the reload is checked offline only"
    );
    let after = world.salesforce.stats();
    let but_limits = |stats: &ondorse_sandbox::salesforce::SalesforceSandboxStats| {
        let mut received = stats.received.clone();
        received.remove("limits");
        received
    };
    assert_eq!(
        but_limits(&after),
        but_limits(&before),
        "no call but GET /limits reached salesforce"
    );
    assert_eq!(after.token_requests, before.token_requests);
}
