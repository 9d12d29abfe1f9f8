//! The writer as a sink, against the faults the sandbox org reproduces: a
//! failure of the call itself pauses the writer and keeps every record
//! queued; a row lock is retried for as long as it lasts; an unreadable
//! answer is settled by reading back what landed; only a refusal a human
//! must fix becomes a dead letter, once.

use std::sync::Arc;
use std::time::Duration;

use ondorse_bridge::daemon::Daemon;
use ondorse_bridge::sync::operations::{self, RetrySelection};
use ondorse_bridge::sync::{Endpoint, Engine};
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::{Value, json};

use crate::support::world::{E2E_DEADLINE, World, eventually};

const BUSINESS: &str = "business-onboarding";

/// A world whose `count` Accounts have their portals, with the portal
/// links queued for Salesforce and not yet sent.
async fn links_queued(count: usize, seed: u64) -> (World, Arc<Engine>, Vec<String>) {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(count, "Customer", seed);
    let engine = world.engine();
    let report = engine.poll(BUSINESS).await.expect("poll");
    assert_eq!(report.portals_created, count, "{report:?}");
    assert_eq!(engine.store().pending_write_count(), count);
    (world, engine, ids)
}

/// Runs write passes (the writer loop is not running) until nothing is
/// pending, waiting out the writer's pauses.
async fn drain(engine: &Engine) {
    let until = tokio::time::Instant::now() + E2E_DEADLINE;
    while engine.store().pending_write_count() > 0 {
        assert!(
            tokio::time::Instant::now() < until,
            "the writer never caught up: {} pending, {:?}",
            engine.store().pending_write_count(),
            engine.writer_state()
        );
        engine.flush_writes().await.expect("a write pass");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A running daemon whose org refuses (by a validation rule) every write
/// to the last of `count` seeded Accounts, once that Account's portal link
/// is its dead letter.
async fn portal_link_refused(count: usize, seed: u64) -> (World, Daemon, Vec<String>) {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(count, "Customer", seed);
    world
        .salesforce
        .add_validation_rule(&[ids[count - 1].as_str()], "KYC fields need a review date");
    let daemon = world.daemon().await;
    let store = daemon.engine.store().clone();
    eventually("the portal link is refused", E2E_DEADLINE, || {
        store.dead_letter_count() == 1
    })
    .await;
    (world, daemon, ids)
}

fn assert_links_written(world: &World, ids: &[String]) {
    for id in ids {
        assert_eq!(
            world.field(id, "KYC_Status__c"),
            json!("Portal sent"),
            "{id}"
        );
        assert!(world.field(id, "Ondorse_Portal_Url__c").is_string(), "{id}");
    }
}

/// Approves the even and rejects the odd Accounts' applications, and waits
/// until every decision is in Salesforce.
async fn decide_all_and_wait(world: &World, ids: &[String]) {
    // (review decision, what Salesforce shows)
    let decision = |index: usize| {
        if index.is_multiple_of(2) {
            ("approved", "Approved")
        } else {
            ("rejected", "Rejected")
        }
    };
    for (index, id) in ids.iter().enumerate() {
        world.decide(id, decision(index).0, 1, Some(42.0));
    }
    eventually("every decision is in Salesforce", E2E_DEADLINE, || {
        ids.iter().enumerate().all(|(index, id)| {
            world.field(id, "KYC_Status__c") == json!(decision(index).1)
                && world.field(id, "KYC_Risk_Level__c") == json!("Medium")
        })
    })
    .await;
}

/// A first write pass meets a call-level fault: the writer pauses, nothing
/// is dead-lettered, every record stays queued; then it recovers alone.
async fn a_call_level_fault_pauses_the_writer(
    arm: impl FnOnce(&World),
    error_mentions: &str,
    seed: u64,
) {
    let (world, engine, ids) = links_queued(12, seed).await;
    arm(&world);
    let report = engine
        .flush_writes()
        .await
        .expect("a paused pass is no error");
    assert!(report.paused, "{report:?}");
    assert_eq!((report.written, report.dead_lettered), (0, 0), "{report:?}");
    assert_eq!(engine.store().pending_write_count(), ids.len());
    assert_eq!(engine.store().dead_letter_count(), 0);
    let writer = engine.writer_state();
    assert_eq!(writer.endpoint, Endpoint::SalesforceWrites);
    // The pause itself is a time window (the first one lasts tens of
    // milliseconds, over before a loaded machine gets here): what must hold
    // is that the failure was counted and a next attempt scheduled.
    assert!(
        writer.failures >= 1 && writer.since.is_some() && writer.until.is_some(),
        "{writer:?}"
    );
    let last_error = writer.last_error.clone().unwrap_or_default();
    assert!(last_error.contains(error_mentions), "{last_error}");

    // While the pause lasts, a pass sends nothing at all. Checked when the
    // whole pass ran inside the pause the writer showed before it (on a
    // loaded machine the first pause may end before or during the pass, and
    // a pass after it rightly calls again).
    let composite = world.salesforce.stats().composite_requests;
    let pause = engine.writer_state();
    let again = engine.flush_writes().await.expect("pass");
    let pass_ended = chrono::Utc::now();
    let inside_the_pause = pause.open
        && pause
            .until
            .is_some_and(|until| pass_ended + chrono::Duration::milliseconds(10) < until);
    if inside_the_pause {
        assert!(again.paused && again.calls == 0, "{again:?}");
        assert_eq!(world.salesforce.stats().composite_requests, composite);
    }

    drain(&engine).await;
    assert_links_written(&world, &ids);
    assert_eq!(engine.store().dead_letter_count(), 0);
    assert!(!engine.writer_state().open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_pauses_the_writer_and_writes_off_nothing() {
    a_call_level_fault_pauses_the_writer(
        |world| {
            world.salesforce.expire_tokens();
            world.salesforce.refuse_logins(4);
        },
        "invalid_grant",
        61,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_503_pauses_the_writer_and_writes_off_nothing() {
    a_call_level_fault_pauses_the_writer(|world| world.salesforce.fail_next_requests(3), "503", 62)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_disabled_for_the_org_pauses_the_writer_and_writes_off_nothing() {
    a_call_level_fault_pauses_the_writer(
        |world| world.salesforce.disable_api(3),
        "API_DISABLED_FOR_ORG",
        69,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_long_running_requests_pause_the_writer_and_write_off_nothing() {
    a_call_level_fault_pauses_the_writer(
        |world| world.salesforce.refuse_long_requests(3),
        "ConcurrentPerOrgLongTxn",
        72,
    )
    .await;
}

/// A write call lands but its answer cannot be read (`lose` arms how): the
/// writer reads the Accounts back and settles what landed, sending nothing
/// twice.
async fn an_unknown_outcome_is_settled_by_reading_back(lose: impl FnOnce(&World), seed: u64) {
    let (world, engine, ids) = links_queued(12, seed).await;
    lose(&world);
    let before = world.salesforce.stats();
    let report = engine.flush_writes().await.expect("pass");
    let after = world.salesforce.stats();
    assert_eq!(report.calls, 1, "{report:?}");
    assert_eq!(after.composite_requests, before.composite_requests + 1);
    assert!(
        after.query_requests > before.query_requests,
        "the writer read the Accounts back"
    );
    // The update landed although its answer was lost: read back, nothing is
    // pending, nothing was sent twice, nothing dead-lettered.
    assert_eq!(report.written, ids.len(), "{report:?}");
    assert_eq!(engine.store().pending_write_count(), 0);
    assert_eq!(
        after.records_updated,
        before.records_updated + ids.len() as u64
    );
    assert_eq!(engine.store().dead_letter_count(), 0);
    assert_links_written(&world, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_answer_is_settled_by_reading_back_what_landed() {
    an_unknown_outcome_is_settled_by_reading_back(
        |world| world.salesforce.blank_collection_answers(1),
        63,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_a_result_missing_is_settled_by_reading_back_what_landed() {
    an_unknown_outcome_is_settled_by_reading_back(
        |world| world.salesforce.short_collection_answers(1),
        70,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_locked_for_more_than_twenty_attempts_are_written_in_the_end() {
    let (world, engine, ids) = links_queued(12, 64).await;
    let locked: Vec<&str> = ids[..3].iter().map(String::as_str).collect();
    world.salesforce.lock_rows(&locked, 25);
    let first = engine.flush_writes().await.expect("pass");
    assert_eq!(first.written, ids.len() - locked.len(), "{first:?}");
    assert_eq!(first.retried, locked.len(), "{first:?}");
    // A row lock is about the record, not the endpoint: the writer goes on.
    assert!(!engine.writer_state().open);
    drain(&engine).await;
    assert_links_written(&world, &ids);
    assert_eq!(engine.store().dead_letter_count(), 0);
    // The same refusal again and again is one journal entry with a count.
    let journal = engine.store().journal_of(locked[0]).expect("journal");
    let retries: Vec<_> = journal
        .iter()
        .filter(|entry| entry.step == "write_retry")
        .collect();
    assert_eq!(retries.len(), 1, "{journal:#?}");
    assert_eq!(retries[0].count, 25, "{journal:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_out_a_row_lock_when_the_daemon_stops_is_written_by_the_next_one() {
    let (world, engine, ids) = links_queued(6, 66).await;
    let locked: Vec<&str> = ids[..2].iter().map(String::as_str).collect();
    world.salesforce.lock_rows(&locked, 1);
    let first = engine.flush_writes().await.expect("pass");
    assert_eq!(first.retried, locked.len(), "{first:?}");
    assert_eq!(engine.store().pending_write_count(), locked.len());
    // Stopped while those wait out their backoff: nothing else will queue
    // them again, the next daemon finds them in the store.
    drop(engine);
    let daemon = world.daemon().await;
    eventually("the locked rows are written", E2E_DEADLINE, || {
        daemon.engine.store().pending_write_count() == 0
    })
    .await;
    assert_links_written(&world, &ids);
    assert_eq!(daemon.engine.store().dead_letter_count(), 0);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_written_through_login_outages_503s_and_long_row_locks() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(10, "Customer", 65);
    let daemon = world.daemon().await;
    eventually("the portal links are written", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
    })
    .await;
    let locked: Vec<&str> = ids[..2].iter().map(String::as_str).collect();
    world.salesforce.lock_rows(&locked, 25);
    world.salesforce.expire_tokens();
    world.salesforce.refuse_logins(3);
    world.salesforce.fail_next_requests(3);
    let tokens = world.salesforce.stats().token_requests;
    decide_all_and_wait(&world, &ids).await;
    assert!(
        world.salesforce.stats().token_requests >= tokens + 4,
        "the refused logins were met"
    );
    assert_eq!(daemon.engine.store().dead_letter_count(), 0);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_refusal_dead_letters_once_not_once_per_reconcile() {
    let (world, daemon, ids) = portal_link_refused(2, 66).await;
    let refused = ids[1].as_str();
    let engine = daemon.engine.clone();
    let store = engine.store().clone();
    let letter = &store.dead_letters().expect("letters")[0];
    assert_eq!(letter.code, "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    assert_eq!(letter.fields["KYC_Status__c"], json!("Portal sent"));
    assert_eq!(
        letter.kept["KYC_Status__c"],
        Value::Null,
        "what Salesforce kept"
    );

    // An undecided application: reconcile re-fetches it on every pass.
    let application = world
        .ondorse
        .submit_portal(&world.portal_of(refused))
        .expect("submitted");
    eventually("the application's fields are refused", E2E_DEADLINE, || {
        store.dead_letter_count() == 2 && store.pending_write_count() == 0
    })
    .await;
    let composite = world.salesforce.stats().composite_requests;
    for _ in 0..3 {
        engine.reconcile().await.expect("reconcile");
        engine.flush_writes().await.expect("write pass");
    }
    assert_eq!(store.dead_letter_count(), 2, "{:?}", store.dead_letters());
    assert_eq!(
        world.salesforce.stats().composite_requests,
        composite,
        "a refused value is not sent again while its inputs are unchanged"
    );

    // The inputs change (a decision): the new value is planned and sent.
    world.ondorse.review(&application, "approved", 0, Some(3.0));
    eventually("the decision is tried too", E2E_DEADLINE, || {
        store.dead_letter_count() == 3
    })
    .await;
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_dead_letter_after_a_newer_decision_leaves_the_newer_value() {
    let (world, daemon, ids) = portal_link_refused(1, 67).await;
    let account = ids[0].as_str();
    let engine = daemon.engine.clone();
    let store = engine.store().clone();
    let application = world
        .ondorse
        .submit_portal(&world.portal_of(account))
        .expect("submitted");
    eventually("\"In review\" is refused", E2E_DEADLINE, || {
        store
            .dead_letters()
            .expect("letters")
            .iter()
            .any(|letter| letter.fields.get("KYC_Status__c") == Some(&json!("In review")))
    })
    .await;

    world.salesforce.clear_validation_rules();
    world.ondorse.review(&application, "approved", 0, Some(3.0));
    eventually("the newer decision is written", E2E_DEADLINE, || {
        world.field(account, "KYC_Status__c") == json!("Approved")
    })
    .await;

    let report = engine
        .retry_dead_letters(&RetrySelection {
            ids: Vec::new(),
            all: true,
        })
        .await
        .expect("retry");
    assert_eq!(report.retried.len(), 2);
    eventually(
        "the retried Account is planned and written",
        E2E_DEADLINE,
        || {
            store.pending_write_count() == 0
                && world.field(account, "Ondorse_Portal_Url__c").is_string()
        },
    )
    .await;
    assert_eq!(
        world.field(account, "KYC_Status__c"),
        json!("Approved"),
        "the old \"In review\" is never put back"
    );
    assert_eq!(store.dead_letter_count(), 0);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_retry_is_planned_again_when_the_daemon_next_runs() {
    let (world, daemon, ids) = portal_link_refused(1, 68).await;
    let account = ids[0].as_str();
    daemon.stop().await.expect("clean stop");

    world.salesforce.clear_validation_rules();
    let output =
        crate::support::daemon::cli(&world.config_path, &["dead-letters", "retry", "--all"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("at its first reconcile after it starts"),
        "{stdout}"
    );
    assert_eq!(world.field(account, "Ondorse_Portal_Url__c"), Value::Null);

    let daemon = world.daemon().await;
    eventually(
        "the Account is planned again and written",
        E2E_DEADLINE,
        || {
            world.field(account, "KYC_Status__c") == json!("Portal sent")
                && world.field(account, "Ondorse_Portal_Url__c").is_string()
        },
    )
    .await;
    assert_eq!(daemon.engine.store().dead_letter_count(), 0);
    assert!(daemon.engine.store().replans().expect("replans").is_empty());
    daemon.stop().await.expect("clean stop");
}

/// Engine settings whose writer tries a batch again soon after falling back.
fn quick_probe() -> ondorse_bridge::sync::EngineSettings {
    ondorse_bridge::sync::EngineSettings {
        collection_probe: Duration::from_secs(1),
        ..crate::support::world::quick_settings()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_answers_that_break_the_contract_fall_back_to_one_update_per_record() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(12, "Customer", 66);
    let engine = world.engine_with(quick_probe());
    engine.poll(BUSINESS).await.expect("poll");
    world.salesforce.ignore_collection_updates(true);

    let first = engine
        .flush_writes()
        .await
        .expect("a paused pass is no error");
    assert!(first.paused && first.written == 0, "{first:?}");
    let last_error = engine.writer_state().last_error.unwrap_or_default();
    assert!(
        last_error.contains("answered 204 with no body") && !last_error.contains("refused"),
        "{last_error}"
    );
    // explain says what Salesforce answered, and that it is not a refusal.
    let explanation = operations::explain(engine.store(), &ids[0]).expect("explain");
    let unknown = explanation
        .journal
        .iter()
        .find(|entry| entry.step == "write_unknown")
        .expect("the unknown outcome is journaled");
    assert!(
        unknown.summary.contains("204") && unknown.summary.contains("no body"),
        "{unknown:?}"
    );
    assert!(
        explanation
            .journal
            .iter()
            .all(|entry| !entry.summary.contains("refused")),
        "{:?}",
        explanation.journal
    );
    assert!(
        !engine.writer_falls_back(),
        "one unreadable answer is not yet a habit"
    );

    drain(&engine).await;
    assert_links_written(&world, &ids);
    assert!(engine.writer_falls_back());
    assert_eq!(engine.store().dead_letter_count(), 0);
    let stats = world.salesforce.stats();
    assert!(stats.single_updates >= ids.len() as u64, "{stats:?}");
    assert_eq!(stats.records_updated, ids.len() as u64, "{stats:?}");

    // Once batches are answered again, the writer goes back to them.
    world.salesforce.ignore_collection_updates(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = world.seed(5, "Customer", 67);
    engine.poll(BUSINESS).await.expect("poll");
    drain(&engine).await;
    assert_links_written(&world, &later);
    assert!(!engine.writer_falls_back());
    let after = world.salesforce.stats();
    assert_eq!(after.single_updates, stats.single_updates, "{after:?}");
    assert_eq!(after.composite_requests, stats.composite_requests + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_collections_answered_204_and_ignored_every_link_and_decision_lands() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(8, "Customer", 68);
    world.salesforce.ignore_collection_updates(true);
    let daemon = world.daemon().await;
    eventually("every portal link is in Salesforce", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
    })
    .await;
    decide_all_and_wait(&world, &ids).await;
    for id in &ids {
        assert!(world.field(id, "Ondorse_Portal_Url__c").is_string(), "{id}");
    }
    assert!(daemon.engine.writer_falls_back());
    assert_eq!(daemon.engine.store().dead_letter_count(), 0);
    assert!(world.salesforce.stats().single_updates >= 2 * ids.len() as u64);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_waiting_together_while_calls_are_free_each_go_in_a_call_of_their_own() {
    const DECISIONS: usize = 4;
    let (world, engine, ids) = links_queued(DECISIONS, 71).await;
    drain(&engine).await;
    assert_links_written(&world, &ids);
    for id in &ids {
        world.decide(id, "approved", 1, Some(42.0));
    }
    world.store_raised_events(&engine).await;
    let report = engine
        .process_inbox()
        .await
        .expect("the inbox is worked off");
    assert_eq!(report.applications_fetched, DECISIONS, "{report:?}");
    assert_eq!(engine.store().pending_write_count(), DECISIONS);
    drop(engine);
    let before = world.salesforce.stats();

    // The writer finds the four decisions waiting together, with calls to
    // spare: none waits for a batched call, which takes longer.
    let daemon = world.daemon().await;
    eventually("every decision is in Salesforce", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Approved"))
    })
    .await;
    let after = world.salesforce.stats();
    assert_eq!(
        (
            after.single_updates - before.single_updates,
            after.composite_requests - before.composite_requests
        ),
        (DECISIONS as u64, 0),
        "{after:?}"
    );
    daemon.stop().await.expect("clean stop");
}
