//! Pipelining and adaptive write batching, over real HTTP: a lone decision
//! is written at once by itself; decisions arriving while a slow call is in
//! flight share the next call; portal links during a backfill fill their
//! calls; the requests in flight towards each API never exceed what the
//! configuration allows. Nothing here is timed: the sandboxes count calls,
//! records and requests in flight.

use std::time::Duration;

use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::json;

use crate::support::world::{E2E_DEADLINE, World, eventually};

/// Waits until every Account shows its portal link was written back.
async fn links_written(world: &World, ids: &[String]) {
    eventually("every Account has its portal link", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
    })
    .await;
}

/// Makes and reviews each Account's application with its webhooks held
/// back, then sends one `application.review_updated` per application, so
/// each decision is one write of its final fields.
fn decide_at_once(world: &World, ids: &[String]) {
    world.ondorse.suppress_webhooks(true);
    let applications: Vec<String> = ids
        .iter()
        .map(|id| world.decide(id, "approved", 0, Some(5.0)))
        .collect();
    world.ondorse.suppress_webhooks(false);
    for application in &applications {
        world
            .ondorse
            .send_event("application.review_updated", application);
    }
}

async fn decisions_written(world: &World, ids: &[String]) {
    eventually("every decision is in Salesforce", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Approved"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_writer_idle_a_lone_decision_is_written_at_once_as_one_single_record_update() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(1, "Customer", 131);
    let daemon = world.daemon().await;
    links_written(&world, &ids).await;
    let before = world.salesforce.stats();

    decide_at_once(&world, &ids);
    decisions_written(&world, &ids).await;
    let after = world.salesforce.stats();
    // One call carrying one record, not a collection call waiting for
    // company.
    assert_eq!(after.single_updates, before.single_updates + 1, "{after:?}");
    assert_eq!(
        after.composite_requests, before.composite_requests,
        "{after:?}"
    );
    assert_eq!(
        after.records_updated,
        before.records_updated + 1,
        "{after:?}"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_arriving_while_a_slow_call_is_in_flight_share_the_next_call() {
    const ACCOUNTS: usize = 8;
    let mut world = World::start(OndorseSandboxOptions::default()).await;
    // One call at a time, so the decisions behind a slow one must wait.
    world.config.salesforce.max_concurrent_requests = 1;
    let ids = world.seed(ACCOUNTS, "Customer", 132);
    let daemon = world.daemon().await;
    links_written(&world, &ids).await;
    world.salesforce.set_latency(Duration::from_millis(1_500));
    let before = world.salesforce.stats();

    decide_at_once(&world, &ids);
    decisions_written(&world, &ids).await;
    let after = world.salesforce.stats();
    let calls = (after.single_updates - before.single_updates)
        + (after.composite_requests - before.composite_requests);
    assert_eq!(
        after.records_updated,
        before.records_updated + ACCOUNTS as u64,
        "{after:?}"
    );
    // The first goes alone; those that arrived meanwhile go together.
    assert!(
        after.composite_requests > before.composite_requests,
        "decisions queued behind a call in flight were batched: {after:?}"
    );
    assert!(
        calls < ACCOUNTS as u64 / 2,
        "{calls} calls for {ACCOUNTS} decisions: {after:?}"
    );
    assert!(
        after.most_in_flight <= 1,
        "at most one Salesforce call in flight: {after:?}"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_fills_its_link_calls_and_keeps_each_api_within_its_concurrency() {
    const ACCOUNTS: usize = 450;
    const SALESFORCE_CONCURRENCY: usize = 3;
    const ONDORSE_CONCURRENCY: usize = 5;
    let mut world = World::start(OndorseSandboxOptions::default()).await;
    // Links wait long enough for company that only full calls and the
    // last partial one go.
    world.config.salesforce.link_batch_wait = Duration::from_secs(10);
    world.config.salesforce.max_concurrent_requests = SALESFORCE_CONCURRENCY;
    world.config.ondorse.max_concurrent_requests = ONDORSE_CONCURRENCY;
    world.ondorse.set_latency(Duration::from_millis(5));
    let ids = world.seed(ACCOUNTS, "Customer", 133);
    let daemon = world.daemon().await;
    links_written(&world, &ids).await;

    let stats = world.salesforce.stats();
    let calls = stats.single_updates + stats.composite_requests;
    let full_calls = ACCOUNTS.div_ceil(200) as u64;
    assert_eq!(stats.records_updated, ACCOUNTS as u64, "{stats:?}");
    assert!(
        calls <= full_calls + 1,
        "{calls} write-back calls for {ACCOUNTS} links (full calls: {full_calls}): {stats:?}"
    );
    assert!(
        stats.most_in_flight <= SALESFORCE_CONCURRENCY as u64,
        "salesforce calls in flight: {stats:?}"
    );
    let posts = world.ondorse.most_portal_posts_in_flight();
    assert!(
        (1..=ONDORSE_CONCURRENCY as u32).contains(&posts),
        "{posts} portal POSTs were in flight at once"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_org_has_too_many_long_running_requests_at_most_25_calls_are_in_flight() {
    const ACCOUNTS: usize = 60;
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(ACCOUNTS, "Customer", 171);
    let daemon = world.daemon().await;
    links_written(&world, &ids).await;

    // The org refuses the next call (a decision's write or a poll) for its
    // long-running requests in flight: not the daily allowance.
    let limits_read = |world: &World| world.salesforce.stats().limits_requests;
    let limits_before = limits_read(&world);
    world.salesforce.refuse_long_requests(1);
    decide_at_once(&world, &ids[..1]);
    eventually("the first decision is in Salesforce", E2E_DEADLINE, || {
        world.field(&ids[0], "KYC_Status__c") == json!("Approved")
    })
    .await;

    // Slow calls, and more decisions at once than the org's 25: every free
    // call would carry one.
    world.salesforce.set_latency(Duration::from_millis(300));
    decide_at_once(&world, &ids[1..]);
    eventually("every decision is in Salesforce", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Approved"))
    })
    .await;

    let stats = world.salesforce.stats();
    assert!(
        stats.most_in_flight <= 25,
        "salesforce calls in flight after the refusal: {stats:?}"
    );
    assert_eq!(
        limits_read(&world),
        limits_before,
        "the refusal was taken for the daily allowance (GET /limits): {stats:?}"
    );
    daemon.stop().await.expect("clean stop");
}
