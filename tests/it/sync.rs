//! The sync end to end: Accounts → portals → decisions back in Salesforce,
//! over real HTTP against both sandboxes, checking what each ends up holding.

use std::collections::BTreeSet;
use std::time::Duration;

use ondorse_bridge::sync::{Endpoint, RetrySettings};
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::{Value, json};

use crate::support::daemon::Daemon as ChildDaemon;
use crate::support::world::{E2E_DEADLINE, TEST_ONDORSE_CONCURRENCY, World, eventually};

const BUSINESS: &str = "business-onboarding";
const PERSON: &str = "person-onboarding";
const PORTAL_PREFIX: &str = "https://collect.ondorse.co/portals/";

/// The picklist label the shipped business mapping writes for a risk level.
fn risk_label(level: &Value) -> Value {
    match level.as_i64() {
        Some(0) => json!("Low"),
        Some(1) => json!("Medium"),
        Some(2) => json!("High"),
        Some(3) => json!("Forbidden"),
        _ => Value::Null,
    }
}

/// What Salesforce must hold for an application Ondorse decided.
fn assert_decision_written(world: &World, application: &Value) {
    let account_id = application["custom_fields"]["salesforce_account_id"]
        .as_str()
        .expect("the application carries its Account Id");
    let expected_status = match application["status_review"].as_str() {
        Some("approved") => json!("Approved"),
        Some("rejected") => json!("Rejected"),
        _ => json!("In review"),
    };
    assert_eq!(
        world.field(account_id, "KYC_Status__c"),
        expected_status,
        "{account_id}"
    );
    assert_eq!(
        world.field(account_id, "KYC_Risk_Level__c"),
        risk_label(&application["risk_level"]),
        "{account_id}"
    );
    let score = world.field(account_id, "KYC_Risk_Score__c");
    match application["risk_score"].as_f64() {
        Some(expected) => assert!(
            (score.as_f64().expect("a score") - expected).abs() < 0.01,
            "{account_id}: {score}"
        ),
        None => assert_eq!(
            score,
            Value::Null,
            "{account_id}: no score must stay empty, never \"none\""
        ),
    }
    assert_eq!(
        world.field(account_id, "Ondorse_Application_Id__c"),
        application["id"],
        "{account_id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_matching_account_gets_one_portal_and_its_link_across_polls_and_restarts() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let matching = world.seed(420, "Customer", 1);
    let others = world.seed(80, "Prospect", 2);
    let engine = world.engine();

    let report = engine.poll(BUSINESS).await.expect("first poll");
    assert_eq!((report.intents, report.portals_created), (420, 420));
    engine.flush_writes().await.expect("write-back");
    assert_eq!(
        world.salesforce.stats().composite_requests,
        3,
        "420 write-backs: 200 + 200 + 20"
    );

    assert_eq!(world.ondorse.portals().len(), 420);
    let portals = world.portals_by_account();
    for id in &matching {
        assert_eq!(portals.get(id), Some(&1), "{id} has one portal");
        let url = world.field(id, "Ondorse_Portal_Url__c");
        assert!(
            url.as_str()
                .is_some_and(|url| url.starts_with(PORTAL_PREFIX)),
            "{id}: {url}"
        );
        assert_eq!(world.field(id, "KYC_Status__c"), json!("Portal sent"));
    }
    for id in &others {
        assert!(!portals.contains_key(id), "{id} does not match the mapping");
        assert_eq!(world.field(id, "Ondorse_Portal_Url__c"), Value::Null);
    }

    // Our own write-backs bumped every SystemModstamp: the next poll reads
    // them again and must find nothing to do.
    let portal_posts = world.ondorse.stats().portal_posts;
    let composite_calls = world.salesforce.stats().composite_requests;
    let report = engine.poll(BUSINESS).await.expect("second poll");
    engine.flush_writes().await.expect("write-back");
    assert_eq!(report.intents, 0);
    assert_eq!(
        world.ondorse.stats().portal_posts,
        portal_posts,
        "no portal posted again"
    );
    assert_eq!(
        world.salesforce.stats().composite_requests,
        composite_calls,
        "nothing written again"
    );

    // A late commit: stamped minutes ago (behind the cursor), visible now.
    let stamped = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let mut late =
        ondorse_sandbox::salesforce::SalesforceSandbox::generate_accounts(1, 99).remove(0);
    late.insert("Type".to_owned(), json!("Customer"));
    late.insert("SystemModstamp".to_owned(), json!(stamped));
    let late_id = world.salesforce.insert_accounts(vec![late]).remove(0);
    let report = engine
        .poll(BUSINESS)
        .await
        .expect("poll after the late commit");
    engine.flush_writes().await.expect("write-back");
    assert_eq!(report.intents, 1, "the late Account is picked up");
    assert_eq!(world.portals_by_account().get(&late_id), Some(&1));

    // A restart (same store) changes nothing.
    drop(engine);
    let engine = world.engine();
    let report = engine.poll(BUSINESS).await.expect("poll after restart");
    assert_eq!(report.intents, 0);
    assert_eq!(world.ondorse.portals().len(), 421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_converge_despite_duplicated_and_reordered_webhooks() {
    let world = World::start(OndorseSandboxOptions {
        submit_after: Some(Duration::from_millis(20)),
        review_after: Some(Duration::from_millis(60)),
        duplicate_ratio: 0.3,
        reorder: true,
        ..OndorseSandboxOptions::default()
    })
    .await;
    let ids = world.seed(60, "Customer", 3);
    let daemon = world.daemon().await;

    eventually(
        "every application is reviewed and written back",
        E2E_DEADLINE,
        || {
            let applications = world.ondorse.applications();
            applications.len() == ids.len()
                && applications.iter().all(|application| {
                    let account = application["custom_fields"]["salesforce_account_id"]
                        .as_str()
                        .unwrap_or_default();
                    !application["status_review"].is_null()
                        && world.field(account, "KYC_Status__c") != json!("Portal sent")
                        && world.field(account, "KYC_Status__c") != json!("In review")
                })
        },
    )
    .await;
    daemon.stop().await.expect("clean stop");
    for application in world.ondorse.applications() {
        assert_decision_written(&world, &application);
    }
    let stats = world.ondorse.stats();
    assert!(
        stats.deliveries_succeeded > stats.events_emitted,
        "duplicates were delivered: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_writes_decisions_whose_webhooks_never_arrived() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    world.seed(20, "Customer", 4);
    let daemon = world.daemon().await;
    eventually("portals exist", E2E_DEADLINE, || {
        world.ondorse.portals().len() == 20
    })
    .await;
    // Submissions are delivered, so the bridge knows the applications...
    let applications: Vec<String> = world
        .ondorse
        .portals()
        .iter()
        .filter_map(|portal| world.ondorse.submit_portal(portal["id"].as_str().unwrap()))
        .collect();
    eventually("each Account shows In review", E2E_DEADLINE, || {
        world.ondorse.applications().iter().all(|application| {
            let account = application["custom_fields"]["salesforce_account_id"]
                .as_str()
                .unwrap_or_default();
            world.field(account, "KYC_Status__c") == json!("In review")
        })
    })
    .await;
    // ...but the decisions' webhooks are lost.
    world.ondorse.suppress_webhooks(true);
    for (index, application) in applications.iter().enumerate() {
        let decision = if index % 3 == 0 {
            "rejected"
        } else {
            "approved"
        };
        world.ondorse.review(
            application,
            decision,
            (index % 5) as i64 - 1,
            Some(10.0 + index as f64),
        );
    }
    daemon.engine.reconcile().await.expect("reconcile");
    daemon.engine.flush_writes().await.expect("write-back");
    for application in world.ondorse.applications() {
        assert_decision_written(&world, &application);
    }
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_rows_are_retried_and_a_validation_failure_is_dead_lettered_alone() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(200, "Customer", 5);
    let locked: Vec<&str> = ids[..10].iter().map(String::as_str).collect();
    let refused = ids[10].as_str();
    world.salesforce.lock_rows(&locked, 2);
    world
        .salesforce
        .add_validation_rule(&[refused], "Portal links need a review date");
    let engine = world.engine();
    engine.poll(BUSINESS).await.expect("poll");

    let first = engine.flush_writes().await.expect("first write pass");
    // The locked rows may come due again within the pass on a slow machine.
    assert_eq!(first.dead_lettered, 1, "{first:?}");
    assert!(first.written >= 189 && first.retried >= 10, "{first:?}");
    // The writer loop is not running: drive the retries by hand.
    let mut passes = 0;
    while engine.store().pending_write_count() > 0 && passes < 50 {
        passes += 1;
        tokio::time::sleep(Duration::from_millis(60)).await;
        engine.flush_writes().await.expect("retry pass");
    }
    eventually("locked rows are written", E2E_DEADLINE, || {
        locked
            .iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
    })
    .await;
    for id in &ids {
        if id == refused {
            assert_eq!(world.field(id, "Ondorse_Portal_Url__c"), Value::Null);
        } else {
            assert_eq!(
                world.field(id, "KYC_Status__c"),
                json!("Portal sent"),
                "{id}"
            );
        }
    }
    let letters = engine.store().dead_letters().expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].account_id, refused);
    assert_eq!(letters[0].code, "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    assert!(
        letters[0]
            .message
            .contains("Portal links need a review date"),
        "{}",
        letters[0].message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_during_a_backfill_never_creates_a_second_portal() {
    const ACCOUNTS: usize = 2_000;
    let world = World::start_with(
        Default::default(),
        OndorseSandboxOptions::default(),
        "[schedule]\npoll = \"* * * * * *\"\nreconcile = \"*/2 * * * * *\"\n",
    )
    .await;
    let ids: BTreeSet<String> = world.seed(ACCOUNTS, "Customer", 6).into_iter().collect();
    for kill_after in [150, 700, 1_400] {
        let daemon = ChildDaemon::start(&world.config_path).await;
        let deadline = tokio::time::Instant::now() + E2E_DEADLINE;
        while world.ondorse.portals().len() < kill_after {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress:\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        daemon.kill();
    }
    let daemon = ChildDaemon::start(&world.config_path).await;
    let deadline = tokio::time::Instant::now() + E2E_DEADLINE;
    loop {
        let missing = ids
            .iter()
            .filter(|id| !world.field(id, "Ondorse_Portal_Url__c").is_string())
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} Accounts still lack their portal link:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, log) = daemon.terminate().await;
    assert!(status.success(), "clean exit after SIGTERM:\n{log}");
    let portals = world.portals_by_account();
    assert_eq!(portals.len(), ACCOUNTS);
    assert!(
        portals.values().all(|count| *count == 1),
        "a second portal was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_ondorse_is_down_intents_wait_and_resume_without_duplicates() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(30, "Customer", 7);
    let engine = world.engine();
    // Every portal POST fails for this poll.
    world.ondorse.fail_next_requests(10_000, 503);
    let report = engine
        .poll(BUSINESS)
        .await
        .expect("the poll itself succeeds");
    assert_eq!((report.intents, report.portals_created), (30, 0));
    assert!(report.portals_failed >= 1, "{report:?}");
    // The first failure opens portal creation's breaker: the other intents
    // wait as a whole instead of each hammering Ondorse. Beyond the first
    // burst (the POSTs already in flight), a POST goes only as the probe at
    // the end of a wait, and each wait that ends counts one more failure
    // (on a loaded machine the burst's answers can outlast the first wait).
    let posts: u64 = world.ondorse.portal_posts_by_key().values().sum();
    let failures = u64::from(
        engine
            .breakers()
            .get(Endpoint::PortalCreation)
            .state()
            .failures,
    );
    assert!(
        posts < 30 && posts < TEST_ONDORSE_CONCURRENCY as u64 + failures,
        "{posts} POSTs for 30 intents after {failures} failures in a row"
    );
    assert!(world.ondorse.portals().is_empty());
    assert!(
        engine.store().cursor(BUSINESS).unwrap().is_some(),
        "the intents are durable, so the cursor moves on"
    );

    // Ondorse is back: once their waits are over, reconcile creates the
    // waiting portals, once each.
    world.ondorse.fail_next_requests(0, 503);
    let mut created = 0;
    let until = tokio::time::Instant::now() + E2E_DEADLINE;
    while created < 30 && tokio::time::Instant::now() < until {
        created += engine.reconcile().await.expect("reconcile").portals_created;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(created, 30);
    engine.flush_writes().await.expect("write-back");
    let portals = world.portals_by_account();
    for id in &ids {
        assert_eq!(portals.get(id), Some(&1), "{id}");
        assert!(world.field(id, "Ondorse_Portal_Url__c").is_string(), "{id}");
    }
    let failed = ids
        .iter()
        .filter(|id| {
            engine
                .store()
                .journal_of(id)
                .unwrap()
                .iter()
                .any(|entry| entry.step == "portal_failed")
        })
        .count() as u64;
    assert_eq!(
        failed, posts,
        "each refused POST is in its Account's journal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_for_an_ondorse_slot_do_not_go_out_once_its_breaker_opens() {
    let mut world = World::start(OndorseSandboxOptions::default()).await;
    // One call slot, and a breaker wait longer than the test: once open,
    // the breaker lets no probe through while the polls run.
    world.config.ondorse.max_concurrent_requests = 1;
    world.config.retry = RetrySettings {
        initial_delay: Duration::from_secs(600),
        max_delay: Duration::from_secs(600),
        retry_after_cap: Duration::from_secs(1),
    };
    world.seed(3, "Customer", 93);
    world.seed(3, "Other", 94);
    let engine = world.engine();
    // Ondorse is down and slow to say so: while the first POST waits for
    // its 503, the other mapping's first POST waits for the one slot.
    world.ondorse.set_latency(Duration::from_millis(300));
    world.ondorse.set_down(true);

    let (business, person) = tokio::join!(engine.poll(BUSINESS), engine.poll(PERSON));
    let (business, person) = (business.expect("poll"), person.expect("poll"));

    assert_eq!(business.portals_created + person.portals_created, 0);
    let breaker = engine.breakers().get(Endpoint::PortalCreation).state();
    assert!(breaker.open, "{breaker:?}");
    // Every POST Ondorse received is a failure the breaker counted, and
    // only the call that held the slot when Ondorse failed went out: the
    // call that waited for the slot asked the breaker once it had it.
    let posts: u64 = world.ondorse.portal_posts_by_key().values().sum();
    assert_eq!(
        (posts, breaker.failures),
        (1, 1),
        "{posts} POSTs with one call slot, breaker {breaker:?}"
    );
    // The intents are kept for when Ondorse is back.
    let pending = engine
        .store()
        .link_counts()
        .expect("counts")
        .values()
        .map(|counts| counts.pending_portals)
        .sum::<u64>();
    assert_eq!(pending, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_about_applications_we_never_created_change_nothing() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(3, "Customer", 8);
    let daemon = world.daemon().await;
    eventually("portal links are written", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "Ondorse_Portal_Url__c").is_string())
    })
    .await;
    let composite_calls = world.salesforce.stats().composite_requests;
    // An application Ondorse does not know, and an unknown event type.
    world
        .ondorse
        .send_event("application.review_updated", "app_does_not_exist");
    world
        .ondorse
        .send_event("kyc.something_new", "app_does_not_exist");
    eventually("the inbox is worked off", E2E_DEADLINE, || {
        world.ondorse.stats().deliveries_succeeded >= 2 && daemon.engine.store().inbox_depth() == 0
    })
    .await;
    daemon.stop().await.expect("clean stop");
    assert_eq!(
        world.salesforce.stats().composite_requests,
        composite_calls,
        "nothing written"
    );
    for id in &ids {
        assert_eq!(world.field(id, "KYC_Status__c"), json!("Portal sent"));
    }
}
