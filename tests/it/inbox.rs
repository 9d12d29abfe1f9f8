//! The webhook inbox is worked off as a stream, over real HTTP: a webhook
//! is fetched as soon as it is stored, never behind another application's
//! slow fetch; events stored before a fetch begins share it; an event
//! stored while its application's fetch is in flight gets a fetch of its
//! own, so a stale answer never has the last word. Nothing here is timed:
//! the sandboxes count the fetches and hold what was written. Application
//! reads have their own Ondorse slots, beside the portal POSTs'.

use std::time::Duration;

use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::json;

use crate::support::world::{E2E_DEADLINE, World, eventually};

const BUSINESS: &str = "business-onboarding";

/// Waits until every Account shows its portal link was written back.
async fn links_written(world: &World, ids: &[String]) {
    eventually("every Account has its portal link", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
    })
    .await;
}

/// Submits the Account's portal with its webhooks held back; the
/// application id.
fn submitted_quietly(world: &World, account_id: &str) -> String {
    world.ondorse.suppress_webhooks(true);
    let application = world
        .ondorse
        .submit_portal(&world.portal_of(account_id))
        .expect("the portal is submitted");
    world.ondorse.suppress_webhooks(false);
    application
}

/// Waits until Ondorse has been asked for applications `count` times (an
/// application is read when its request is counted).
async fn fetched(world: &World, count: u64) {
    eventually(
        &format!("{count} application fetches"),
        E2E_DEADLINE,
        || world.ondorse.stats().application_gets >= count,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_stored_while_another_applications_fetch_is_slow_is_written_back_without_waiting_for_it()
 {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(2, "Customer", 141);
    let daemon = world.daemon().await;
    links_written(&world, &ids).await;
    let (slow_account, quick_account) = (&ids[0], &ids[1]);
    let slow = submitted_quietly(&world, slow_account);
    let quick = submitted_quietly(&world, quick_account);
    world.ondorse.suppress_webhooks(true);
    world.ondorse.review(&slow, "approved", 1, Some(10.0));
    world.ondorse.review(&quick, "rejected", 2, Some(80.0));
    world.ondorse.suppress_webhooks(false);
    // The slow application's answer takes longer than the quick decision's
    // whole path, even on a loaded machine (and less than the client's
    // 30 s request timeout).
    world
        .ondorse
        .slow_application(&slow, Some(Duration::from_secs(20)));
    let before = world.ondorse.stats().application_gets;

    world
        .ondorse
        .send_event("application.review_updated", &slow);
    fetched(&world, before + 1).await;
    world
        .ondorse
        .send_event("application.review_updated", &quick);
    eventually("the quick decision is in Salesforce", E2E_DEADLINE, || {
        world.field(quick_account, "KYC_Status__c") == json!("Rejected")
    })
    .await;
    assert_eq!(
        world.field(slow_account, "KYC_Status__c"),
        json!("Portal sent"),
        "the quick decision was written while the slow fetch was still in flight"
    );
    eventually(
        "the slow decision is in Salesforce once fetched",
        E2E_DEADLINE,
        || world.field(slow_account, "KYC_Status__c") == json!("Approved"),
    )
    .await;
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_during_its_applications_fetch_gets_a_fetch_of_its_own() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(1, "Customer", 142);
    let daemon = world.daemon().await;
    links_written(&world, &ids).await;
    let account = &ids[0];
    let application = submitted_quietly(&world, account);
    // The first fetch reads the application undecided and answers later.
    world
        .ondorse
        .slow_application(&application, Some(Duration::from_secs(2)));
    let before = world.ondorse.stats().application_gets;

    world
        .ondorse
        .send_event("application.submitted", &application);
    fetched(&world, before + 1).await;
    // Reviewed (and its webhook stored) while that fetch is in flight: the
    // fetch's answer predates the decision.
    world.ondorse.review(&application, "approved", 0, Some(3.0));
    world.ondorse.slow_application(&application, None);

    eventually("the decision is in Salesforce", E2E_DEADLINE, || {
        world.field(account, "KYC_Status__c") == json!("Approved")
    })
    .await;
    assert_eq!(
        world.ondorse.stats().application_gets,
        before + 2,
        "the stale fetch, then one more for the event stored during it"
    );
    assert_eq!(world.field(account, "KYC_Risk_Level__c"), json!("Low"));
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_about_one_application_stored_before_its_fetch_share_that_fetch() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(1, "Customer", 143);
    let engine = world.engine();
    engine.poll(BUSINESS).await.expect("poll");
    engine.flush_writes().await.expect("write-back");
    let account = &ids[0];
    world.decide(account, "approved", 3, Some(99.0));
    assert_eq!(
        world.store_raised_events(&engine).await,
        3,
        "created, submitted, reviewed"
    );
    let before = world.ondorse.stats().application_gets;

    let report = engine
        .process_inbox()
        .await
        .expect("the inbox is worked off");
    assert_eq!(
        (report.items, report.applications_fetched),
        (3, 1),
        "{report:?}"
    );
    assert_eq!(world.ondorse.stats().application_gets, before + 1);
    assert!(
        engine.store().inbox_pending(10).unwrap().is_empty(),
        "every event was completed by the one fetch"
    );
    engine.flush_writes().await.expect("write-back");
    assert_eq!(world.field(account, "KYC_Status__c"), json!("Approved"));
    assert_eq!(
        world.field(account, "KYC_Risk_Level__c"),
        json!("Forbidden")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_during_a_backfill_is_read_beside_its_portal_posts_not_behind_them() {
    const BACKFILL: usize = 40;
    let mut world = World::start(OndorseSandboxOptions::default()).await;
    // One portal POST at a time, each slow, back to back: a read sharing
    // their one slot could never be in flight beside one of them.
    world.config.ondorse.max_concurrent_requests = 1;
    world.ondorse.set_latency(Duration::from_millis(300));
    let early = world.seed(1, "Customer", 144).remove(0);
    let backfill = world.seed(BACKFILL, "Customer", 145);
    let daemon = world.daemon().await;
    eventually("the first portal exists", E2E_DEADLINE, || {
        world.portals_by_account().contains_key(&early)
    })
    .await;

    world.decide(&early, "approved", 1, Some(20.0));
    eventually("the decision is in Salesforce", E2E_DEADLINE, || {
        world.field(&early, "KYC_Status__c") == json!("Approved")
    })
    .await;
    assert_eq!(world.ondorse.most_portal_posts_in_flight(), 1);
    assert_eq!(
        world.ondorse.most_requests_in_flight(),
        2,
        "an application read went beside a portal POST, in its own slot"
    );
    world.ondorse.set_latency(Duration::ZERO);
    links_written(&world, &backfill).await;
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_reads_have_their_own_limit_above_the_portal_posts_one() {
    const READS: usize = 3;
    let mut world = World::start(OndorseSandboxOptions::default()).await;
    // One portal POST at a time, three reads: decisions arriving together
    // are read three at a time, never one by one behind each other, and
    // never more than three.
    world.config.ondorse.max_concurrent_requests = 1;
    world.config.ondorse.max_concurrent_reads = READS;
    let ids = world.seed(2 * READS, "Customer", 146);
    let daemon = world.daemon().await;
    links_written(&world, &ids).await;
    assert_eq!(world.ondorse.most_requests_in_flight(), 1);

    world.ondorse.set_latency(Duration::from_millis(500));
    for (index, account) in ids.iter().enumerate() {
        world.decide(account, "approved", (index % 4) as i64, Some(10.0));
    }
    eventually("every decision is in Salesforce", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Approved"))
    })
    .await;
    assert_eq!(
        world.ondorse.most_requests_in_flight(),
        READS as u64,
        "application reads went {READS} at a time, past the one POST slot"
    );
    world.ondorse.set_latency(Duration::ZERO);
    daemon.stop().await.expect("clean stop");
}
