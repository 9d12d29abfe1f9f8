//! The engine under Ondorse's production faults, over real HTTP: lost
//! answers, Stripe-style key conflicts, throttling, outages, an application
//! it refuses to serve, a portal it refuses for good, a collect opened
//! without a link, a collect closed and its events out of order, and every path working on the same intents at once. The
//! sandbox reproduces each fault and counts what reached it.

use std::collections::BTreeSet;
use std::time::Duration;

use ondorse_bridge::salesforce::Id;
use ondorse_bridge::sync::operations::{self, ResyncGate, ResyncRequest, RetrySelection};
use ondorse_bridge::sync::{Endpoint, RetrySettings};
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::{Map, Value, json};

use crate::support::config::PATH_SECRET;
use crate::support::world::{E2E_DEADLINE, World, eventually};

const BUSINESS: &str = "business-onboarding";

fn fields(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("an object")
}

/// Every Account has exactly one portal, and no key was ever POSTed twice
/// at once.
fn assert_one_portal_each(world: &World, ids: &[String]) {
    let portals = world.portals_by_account();
    for id in ids {
        assert_eq!(portals.get(id), Some(&1), "{id} has exactly one portal");
    }
    assert_eq!(
        world.ondorse.overlapping_portal_keys(),
        Default::default(),
        "no intent was POSTed twice concurrently"
    );
}

/// Seeds one Customer Account and gives it its portal and link, with an
/// engine of its own (dropped before a daemon opens the store).
async fn linked_account(world: &World, seed: u64) -> String {
    let id = world.seed(1, "Customer", seed).remove(0);
    let engine = world.engine();
    engine.poll(BUSINESS).await.expect("first poll");
    engine.flush_writes().await.expect("write-back");
    id
}

/// Waits until `approved` shows its approval and `hinted` has its portal.
async fn approved_and_hinted_portal(world: &World, approved: &str, hinted: &str) {
    eventually(
        "the decision is written and the hinted Account has its portal",
        E2E_DEADLINE,
        || {
            world.field(approved, "KYC_Status__c") == json!("Approved")
                && world.portals_by_account().contains_key(hinted)
        },
    )
    .await;
}

/// Posts a Salesforce Flow's push hint for one Account to the daemon.
async fn send_hint(daemon: &ondorse_bridge::daemon::Daemon, account_id: &str) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/webhooks/salesforce/{PATH_SECRET}",
            daemon.webhook_address()
        ))
        .json(&json!({ "ids": [account_id] }))
        .send()
        .await
        .expect("the hint is delivered");
    assert!(response.status().is_success(), "{}", response.status());
}

/// Runs reconcile until `condition` holds (breakers wait out their delays
/// after a fault), or panics naming `what`.
async fn reconcile_until(
    engine: &ondorse_bridge::sync::Engine,
    what: &str,
    condition: impl Fn() -> bool,
) {
    rounds_until(engine, what, false, condition).await;
}

/// [`reconcile_until`], writing back what each round queued (and what was
/// queued before the first).
async fn reconcile_and_write_until(
    engine: &ondorse_bridge::sync::Engine,
    what: &str,
    condition: impl Fn() -> bool,
) {
    rounds_until(engine, what, true, condition).await;
}

async fn rounds_until(
    engine: &ondorse_bridge::sync::Engine,
    what: &str,
    write_back: bool,
    condition: impl Fn() -> bool,
) {
    let until = tokio::time::Instant::now() + E2E_DEADLINE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting until {what}"
        );
        // A step turned away by an open breaker is retried next round.
        if write_back {
            let _ = engine.flush_writes().await;
        }
        let _ = engine.reconcile().await;
        if write_back {
            let _ = engine.flush_writes().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `resync --account ID`, with the engine's own gate.
async fn resync_account(engine: &ondorse_bridge::sync::Engine, id: &str) {
    engine
        .resync(
            &ResyncGate::default().enter().expect("gate"),
            &ResyncRequest {
                accounts: vec![id.to_owned()],
                ..ResyncRequest::default()
            },
            &|_| {},
        )
        .await
        .expect("resync");
}

/// Waits until every Account shows its portal link was written back.
async fn portal_links_written(world: &World, ids: &[String]) {
    eventually("every Account has its portal link", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_portal_answer_then_an_account_edit_ends_with_one_portal_and_its_link() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 11).remove(0);
    let first_name = world.field(&id, "Name");
    world.ondorse.drop_next_portal_responses(1);
    let engine = world.engine();
    let report = engine.poll(BUSINESS).await.expect("poll");
    assert_eq!(
        (
            report.intents,
            report.portals_created,
            report.portals_failed
        ),
        (1, 0, 1)
    );
    assert_eq!(
        world.ondorse.portals().len(),
        1,
        "the portal exists; only its answer was lost"
    );
    // The Account's name, part of the portal body, changes before any retry.
    world.salesforce.edit_account(
        &id,
        fields(json!({ "Name": "Renamed After The Intent SAS" })),
    );
    engine.poll(BUSINESS).await.expect("poll after the edit");
    drop(engine);

    // No intervention: the running daemon retries the parked intent.
    let daemon = world.daemon().await;
    let portal = world.ondorse.portals().remove(0);
    eventually("the portal link is written back", E2E_DEADLINE, || {
        world.field(&id, "Ondorse_Portal_Url__c") == portal["url"]
    })
    .await;
    daemon.stop().await.expect("clean stop");

    assert_one_portal_each(&world, std::slice::from_ref(&id));
    assert_eq!(
        portal["default_custom_fields"]["company_name"], first_name,
        "the portal holds the request frozen with the intent"
    );
    let stats = world.ondorse.stats();
    assert!(stats.idempotent_replays >= 1, "{stats:?}");
    let posts = world.ondorse.portal_posts_by_key();
    assert_eq!(
        posts.len(),
        1,
        "every attempt used the intent's key: {posts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_and_a_push_hint_during_a_backfill_against_a_slow_ondorse_are_done_before_it_ends()
 {
    // An org's first backfill: large enough that the decision and the hint
    // would visibly wait behind it if they shared its lock or its queue.
    const BACKFILL: usize = 10_000;
    let world = World::start(OndorseSandboxOptions::default()).await;
    let early = linked_account(&world, 21).await;
    let backfill = world.seed(BACKFILL, "Customer", 22);
    world.ondorse.set_latency(Duration::from_millis(40));
    let daemon = world.daemon().await;
    eventually("the backfill is under way", E2E_DEADLINE, || {
        world.ondorse.portals().len() > 20
    })
    .await;

    // Intake, reconcile and a resync of everything run at once.
    let engine = daemon.engine.clone();
    let reconcile = tokio::spawn(async move { engine.reconcile().await });
    let engine = daemon.engine.clone();
    let resync = tokio::spawn(async move {
        let gate = ResyncGate::default();
        let ticket = gate.enter().expect("no other resync");
        let request = ResyncRequest {
            all: true,
            ..ResyncRequest::default()
        };
        engine.resync(&ticket, &request, &|_| {}).await
    });

    // A decision arrives by webhook, and a Flow hints at a new Account.
    world.decide(&early, "approved", 1, Some(42.0));
    let hinted = world.seed(1, "Customer", 23).remove(0);
    send_hint(&daemon, &hinted).await;

    let backfill_done = || {
        let portals = world.portals_by_account();
        backfill.iter().all(|id| portals.contains_key(id))
    };
    approved_and_hinted_portal(&world, &early, &hinted).await;
    assert!(
        !backfill_done(),
        "the decision and the hint did not wait for the backfill"
    );

    reconcile
        .await
        .expect("reconcile task")
        .expect("reconcile ran beside intake");
    resync
        .await
        .expect("resync task")
        .expect("resync ran beside intake");
    eventually("the backfill ends", E2E_DEADLINE * 3, backfill_done).await;
    daemon.stop().await.expect("clean stop");

    let mut everyone = backfill.clone();
    everyone.extend([early, hinted]);
    assert_one_portal_each(&world, &everyone);
    let posted_twice: Vec<(String, u64)> = world
        .ondorse
        .portal_posts_by_key()
        .into_iter()
        .filter(|(_, posts)| *posts > 1)
        .collect();
    assert!(
        posted_twice.is_empty(),
        "no intent was POSTed twice: {posted_twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_portal_creation_does_not_stop_decisions_and_resumes_within_the_cap() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let early = linked_account(&world, 31).await;
    world
        .ondorse
        .throttle_portals(Some(Duration::from_secs(86_400)));
    let waiting = world.seed(20, "Customer", 32);
    let cap = world.config.retry.retry_after_cap;
    let daemon = world.daemon().await;
    eventually("portal creation is throttled", E2E_DEADLINE, || {
        world.ondorse.stats().rate_limited > 0
    })
    .await;

    world.decide(&early, "rejected", 2, Some(80.0));
    eventually(
        "the decision is written while portals are throttled",
        E2E_DEADLINE,
        || world.field(&early, "KYC_Status__c") == json!("Rejected"),
    )
    .await;
    assert_eq!(world.ondorse.portals().len(), 1, "no portal got through");

    // The intents wait for the capped delay, not for a day.
    let status = operations::status(daemon.engine.store(), None).expect("status");
    let latest = chrono::Utc::now() + chrono::Duration::from_std(cap).unwrap();
    let parked: Vec<_> = status
        .parked
        .iter()
        .filter(|item| item.queue == "intents")
        .collect();
    assert!(!parked.is_empty(), "{status:?}");
    for item in &parked {
        let retry_at = item.retry_at.expect("a throttled intent is retried");
        assert!(retry_at <= latest, "{item:?} waits past the cap");
        assert!(item.reason.contains("rate limit"), "{item:?}");
    }

    world.ondorse.throttle_portals(None);
    portal_links_written(&world, &waiting).await;
    daemon.stop().await.expect("clean stop");
    assert_one_portal_each(&world, &waiting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ondorse_down_costs_a_bounded_decreasing_number_of_calls() {
    /// The first wait; each next one at least doubles it (no cap within
    /// the test).
    const FIRST_WAIT: Duration = Duration::from_millis(100);
    /// Failures in a row watched: the opening one, then five probes.
    const FAILURES: u32 = 6;
    /// Accounts waiting for a portal: before the breaker opens each is
    /// tried at most once (one worker per Account), so this bounds the
    /// burst that can fail together.
    const ACCOUNTS: usize = 30;
    let mut world = World::start(OndorseSandboxOptions::default()).await;
    world.config.retry = RetrySettings {
        initial_delay: FIRST_WAIT,
        max_delay: Duration::from_secs(30),
        ..world.config.retry
    };
    let ids = world.seed(ACCOUNTS, "Customer", 41);
    world.ondorse.set_down(true);
    let daemon = world.daemon().await;
    let breaker = || {
        daemon
            .engine
            .breakers()
            .get(Endpoint::PortalCreation)
            .state()
    };
    // Counted against the breaker's states, not against time: however
    // slowly a loaded machine runs the engine, the calls that reached
    // Ondorse are the first burst plus one probe per failure in a row, and
    // the n-th failure in a row comes no sooner than the waits before it
    // allow, each at least twice the last: 100 ms × (2^n − 1) after the first.
    let deadline = tokio::time::Instant::now() + E2E_DEADLINE;
    loop {
        // Calls first: a probe that fails after the count is counted
        // below as a failure, never the other way round.
        let calls = world.ondorse.stats().requests;
        let state = breaker();
        assert!(
            calls <= ACCOUNTS as u64 + u64::from(state.failures),
            "{calls} calls reached Ondorse for {} failure(s) in a row: more than the first burst and one probe per wait",
            state.failures
        );
        if let (Some(since), Some(until)) = (state.since, state.until) {
            let spread = (until - since).to_std().unwrap_or_default();
            let least = FIRST_WAIT * (2u32.pow(state.failures) - 1);
            assert!(
                spread >= least,
                "{} failures in a row and their waits span {spread:?}, less than {least:?}: the waits do not double",
                state.failures
            );
        }
        if state.failures >= FAILURES {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the breaker did not reach {FAILURES} failures in a row: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(world.ondorse.portals().is_empty());

    world.ondorse.set_down(false);
    portal_links_written(&world, &ids).await;
    daemon.stop().await.expect("clean stop");
    assert_one_portal_each(&world, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_ondorse_refuses_to_serve_is_parked_and_the_other_decisions_are_written() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(4, "Customer", 51);
    let daemon = world.daemon().await;
    portal_links_written(&world, &ids).await;
    // Applications are made and decided while webhooks are held back...
    world.ondorse.suppress_webhooks(true);
    let applications: Vec<String> = ids
        .iter()
        .map(|id| world.decide(id, "approved", 0, Some(5.0)))
        .collect();
    world
        .ondorse
        .refuse_application(&applications[0], Some(400));
    world.ondorse.suppress_webhooks(false);
    // ...then their decisions arrive together.
    for application in &applications {
        world
            .ondorse
            .send_event("application.review_updated", application);
    }

    eventually("the other decisions are written", E2E_DEADLINE, || {
        ids[1..]
            .iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Approved"))
    })
    .await;
    let store = daemon.engine.store();
    eventually("the refused application is parked", E2E_DEADLINE, || {
        operations::status(store, None)
            .expect("status")
            .parked
            .iter()
            .any(|item| item.queue == "webhooks" && item.subject.contains(&applications[0]))
    })
    .await;
    let status = operations::status(store, None).expect("status");
    let item = status
        .parked
        .iter()
        .find(|item| item.subject.contains(&applications[0]))
        .expect("parked");
    assert_eq!(item.account_id.as_deref(), Some(ids[0].as_str()));
    assert!(item.reason.contains("400"), "{item:?}");
    assert_eq!(world.field(&ids[0], "KYC_Status__c"), json!("Portal sent"));

    // Not a hot loop: the parked item waits longer after each failure.
    let gets = world.ondorse.stats().application_gets;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let retried = world.ondorse.stats().application_gets - gets;
    assert!(retried <= 4, "{retried} fetches in a second");

    let explanation = operations::explain(store, &ids[0]).expect("explain");
    assert_eq!(explanation.parked.len(), 1, "{explanation:?}");
    let parked_entries: Vec<_> = explanation
        .journal
        .iter()
        .filter(|entry| entry.step == "inbox_parked")
        .collect();
    assert_eq!(
        parked_entries.len(),
        1,
        "a repeated failure is one journal entry: {parked_entries:?}"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_refused_for_good_is_parked_until_an_operator_starts_a_fresh_intent() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 61).remove(0);
    world
        .salesforce
        .edit_account(&id, fields(json!({ "Name": "Refused Name SAS" })));
    world
        .ondorse
        .refuse_portals_with("company_name", json!("Refused Name SAS"));
    let engine = world.engine();
    let report = engine.poll(BUSINESS).await.expect("poll");
    assert_eq!((report.portals_created, report.portals_failed), (0, 1));

    let status = operations::status(engine.store(), None).expect("status");
    assert_eq!(status.parked.len(), 1, "{status:?}");
    let parked = &status.parked[0];
    assert_eq!(
        (parked.queue.as_str(), parked.retry_at),
        ("intents", None),
        "refused for good: waits for an operator"
    );
    assert!(parked.reason.contains("company_name"), "{parked:?}");
    let explanation = operations::explain(engine.store(), &id).expect("explain");
    assert!(
        explanation
            .journal
            .iter()
            .any(|entry| entry.summary.contains("--new-intent")),
        "explain says what to do: {explanation:?}"
    );

    // Neither reconcile nor a plain resync sends the refused request again.
    engine.reconcile().await.expect("reconcile");
    resync_account(&engine, &id).await;
    let posts: u64 = world.ondorse.portal_posts_by_key().values().sum();
    assert_eq!(posts, 1, "the refused intent was not sent again");

    // The data is fixed; the operator asks for a fresh intent.
    world
        .salesforce
        .edit_account(&id, fields(json!({ "Name": "Accepted Name SAS" })));
    let gate = ResyncGate::default();
    let report = engine
        .resync(
            &gate.enter().expect("gate"),
            &ResyncRequest {
                accounts: vec![id.clone()],
                new_intent: true,
                ..ResyncRequest::default()
            },
            &|_| {},
        )
        .await
        .expect("resync with a new intent");
    assert_eq!((report.intents_renewed, report.portals_created), (1, 1));
    engine.flush_writes().await.expect("write-back");
    let portals = world.ondorse.portals();
    assert_eq!(portals.len(), 1);
    assert_eq!(
        portals[0]["default_custom_fields"]["company_name"],
        json!("Accepted Name SAS")
    );
    assert_eq!(world.field(&id, "Ondorse_Portal_Url__c"), portals[0]["url"]);
    let keys: BTreeSet<String> = world.ondorse.portal_posts_by_key().into_keys().collect();
    assert_eq!(keys.len(), 2, "the fresh intent has its own key");

    // --new-intent names Accounts.
    let refused = engine
        .resync(
            &gate.enter().expect("gate"),
            &ResyncRequest {
                all: true,
                new_intent: true,
                ..ResyncRequest::default()
            },
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("--account"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_refetch_counts_on_the_last_journal_entry() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 71).remove(0);
    let daemon = world.daemon().await;
    eventually("the portal link is written", E2E_DEADLINE, || {
        world.field(&id, "KYC_Status__c") == json!("Portal sent")
    })
    .await;
    world
        .ondorse
        .submit_portal(&world.portal_of(&id))
        .expect("submitted");
    eventually("the application is in review", E2E_DEADLINE, || {
        world.field(&id, "KYC_Status__c") == json!("In review")
    })
    .await;
    let store = daemon.engine.store();
    daemon.engine.reconcile().await.expect("reconcile");
    let before = operations::explain(store, &id).expect("explain").journal;
    for _ in 0..3 {
        daemon.engine.reconcile().await.expect("reconcile");
    }
    let after = operations::explain(store, &id).expect("explain").journal;
    assert_eq!(after.len(), before.len(), "no new entry: {after:#?}");
    let last = after.last().expect("an entry");
    assert_eq!(last.step, "application_fetched");
    assert!(
        last.count >= before.last().unwrap().count + 3,
        "{last:?} after {:?}",
        before.last()
    );
    assert!(last.last_at.is_some());
    let text = ondorse_bridge::cli::explain::render(&operations::explain(store, &id).unwrap());
    assert!(text.contains(&format!("(x{}", last.count)), "{text}");
    daemon.stop().await.expect("clean stop");
}

/// Polls while Salesforce fails: Ondorse answers slowly and, while the
/// portal POSTs are out, Salesforce starts failing (and stays so), so the
/// describe that planning the write-back needs fails. Returns how many
/// portals were created.
async fn poll_while_salesforce_fails(
    world: &World,
    engine: &ondorse_bridge::sync::Engine,
) -> usize {
    world.ondorse.set_latency(Duration::from_millis(300));
    let report = tokio::join!(engine.poll(BUSINESS), async {
        eventually("the portal POSTs are out", E2E_DEADLINE, || {
            !world.ondorse.portal_posts_by_key().is_empty()
        })
        .await;
        world.salesforce.fail_next_requests(1_000);
    })
    .0
    .expect("the poll succeeds");
    report.portals_created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_created_while_salesforce_fails_is_recorded_first_and_its_link_written_later() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(3, "Customer", 81);
    let engine = world.engine();
    assert_eq!(poll_while_salesforce_fails(&world, &engine).await, 3);
    for id in &ids {
        let link = engine
            .store()
            .link(BUSINESS, id)
            .expect("read the link")
            .expect("a link");
        assert!(link.portal.is_some(), "{id}: the portal is recorded");
        assert!(link.request.is_none(), "{id}: its request is dropped");
        assert!(
            link.portal_writeback_due,
            "{id}: its write-back is still due"
        );
    }
    assert_eq!(
        engine.store().pending_write_count(),
        0,
        "planning failed: nothing queued yet"
    );

    // Salesforce is back: reconcile plans the write-backs it could not.
    world.salesforce.fail_next_requests(0);
    world.ondorse.set_latency(Duration::ZERO);
    reconcile_until(&engine, "every portal link is queued", || {
        engine.store().pending_write_count() == ids.len()
    })
    .await;
    engine.flush_writes().await.expect("write-back");
    assert_one_portal_each(&world, &ids);
    for id in &ids {
        assert_eq!(
            world.field(id, "Ondorse_Portal_Url__c"),
            world
                .ondorse
                .portal(&world.portal_of(id))
                .expect("the portal")["url"],
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_write_back_planned_after_the_decision_writes_the_link_and_keeps_the_decision() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 83).remove(0);
    let engine = world.engine();
    // The portal is created while Salesforce fails: its write-back is left due.
    assert_eq!(poll_while_salesforce_fails(&world, &engine).await, 1);
    let link = engine.store().link(BUSINESS, &id).unwrap().expect("a link");
    assert!(
        link.portal_writeback_due,
        "the write-back is left due: {link:?}"
    );
    world.salesforce.fail_next_requests(0);
    world.ondorse.set_latency(Duration::ZERO);

    // The decision lands first, received as the webhook listener would.
    world.decide(&id, "approved", 1, Some(42.0));
    world.store_raised_events(&engine).await;
    let until = tokio::time::Instant::now() + E2E_DEADLINE;
    while world.field(&id, "KYC_Status__c") != json!("Approved") {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for the decision"
        );
        // An item parked while Salesforce recovers is due again shortly.
        let _ = engine.process_inbox().await;
        let _ = engine.flush_writes().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Then reconcile plans the portal's write-back it still owes.
    reconcile_until(&engine, "the portal write-back is planned", || {
        !engine
            .store()
            .link(BUSINESS, &id)
            .unwrap()
            .expect("a link")
            .portal_writeback_due
    })
    .await;
    engine.flush_writes().await.expect("write-back");
    assert_eq!(
        world.field(&id, "Ondorse_Portal_Url__c"),
        world
            .ondorse
            .portal(&world.portal_of(&id))
            .expect("the portal")["url"],
        "the portal link is written"
    );
    assert_eq!(
        world.field(&id, "KYC_Status__c"),
        json!("Approved"),
        "the late portal moment does not put \"Portal sent\" over the decision"
    );
}

/// The approval is still in Salesforce after `what` was planned late.
fn assert_decision_kept(world: &World, id: &str, what: &str) {
    assert_eq!(
        world.field(id, "KYC_Status__c"),
        json!("Approved"),
        "the {what} does not put \"Portal sent\" over the decision"
    );
}

/// One Customer Account with its portal link written and its approval
/// written back over it, by an engine driven step by step.
async fn decided_account(
    world: &World,
    engine: &ondorse_bridge::sync::Engine,
    seed: u64,
) -> String {
    let id = world.seed(1, "Customer", seed).remove(0);
    engine
        .poll(BUSINESS)
        .await
        .expect("poll creates the portal");
    engine.flush_writes().await.expect("write-back");
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("Portal sent"));
    world.decide(&id, "approved", 1, Some(42.0));
    apply_events(world, engine).await;
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("Approved"));
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_after_the_decision_rewrites_the_portal_link_and_keeps_the_decision() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let engine = world.engine();
    let id = decided_account(&world, &engine, 88).await;
    let portal_url = world.field(&id, "Ondorse_Portal_Url__c");
    // Someone clears the portal link by hand, and Ondorse no longer serves
    // the application: a resync re-plans the portal moment alone.
    world
        .salesforce
        .edit_account(&id, fields(json!({ "Ondorse_Portal_Url__c": null })));
    let application = engine
        .store()
        .link(BUSINESS, &id)
        .unwrap()
        .and_then(|link| link.application_id)
        .expect("the application is linked");
    world.ondorse.refuse_application(&application, Some(404));
    resync_account(&engine, &id).await;
    engine.flush_writes().await.expect("write-back");
    assert_eq!(world.field(&id, "Ondorse_Portal_Url__c"), portal_url);
    assert_decision_kept(&world, &id, "re-planned portal moment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_after_the_decision_re_plans_the_master_and_keeps_the_decision() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let engine = world.engine();
    let loser = decided_account(&world, &engine, 89).await;
    let portal_url = world.field(&loser, "Ondorse_Portal_Url__c");
    // The master does not match the mapping: it has no link of its own. The
    // admin merging keeps the loser's KYC values on it.
    let master = world.seed(1, "Prospect", 90).remove(0);
    let kept: Map<String, Value> = ["KYC_Status__c", "KYC_Risk_Level__c", "KYC_Risk_Score__c"]
        .into_iter()
        .map(|field| (field.to_owned(), world.field(&loser, field)))
        .collect();
    world.salesforce.edit_account(&master, kept);
    world.salesforce.merge_accounts(&master, &[&loser]);

    // The risk is revised: its write finds the loser merged away, the link
    // moves to the master, which is planned again from every moment. While
    // Ondorse refuses to serve the application, only the portal moment is
    // planned: it writes the link alone, not "Portal sent".
    let application = world.decide(&loser, "approved", 2, Some(60.0));
    world.store_raised_events(&engine).await;
    engine
        .process_inbox()
        .await
        .expect("the inbox is worked off");
    world.ondorse.refuse_application(&application, Some(503));
    // The write finds the merge; re-planning the master runs in reconcile
    // (its application read fails).
    reconcile_and_write_until(&engine, "the master has the portal link", || {
        world.field(&master, "Ondorse_Portal_Url__c") == portal_url
    })
    .await;
    assert!(engine.store().link(BUSINESS, &master).unwrap().is_some());
    assert_decision_kept(&world, &master, "master's re-planned portal moment");

    // Ondorse serves it again: the revised risk lands, the decision stays.
    world.ondorse.refuse_application(&application, None);
    reconcile_and_write_until(&engine, "the revised risk is on the master", || {
        world.field(&master, "KYC_Risk_Score__c") == json!(60.0)
    })
    .await;
    assert_eq!(world.field(&master, "KYC_Status__c"), json!("Approved"));
    assert_eq!(engine.store().dead_letter_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_retried_after_the_decision_writes_the_link_and_keeps_the_decision() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 91).remove(0);
    let engine = world.engine();
    // The portal link is refused: a dead letter.
    world
        .salesforce
        .add_validation_rule(&[id.as_str()], "Portal links need a review date");
    engine
        .poll(BUSINESS)
        .await
        .expect("poll creates the portal");
    engine.flush_writes().await.expect("write-back");
    assert_eq!(engine.store().dead_letter_count(), 1);
    world.salesforce.clear_validation_rules();
    let application = world.decide(&id, "approved", 1, Some(42.0));
    apply_events(&world, &engine).await;
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("Approved"));
    assert!(world.field(&id, "Ondorse_Portal_Url__c").is_null());

    // Retried while Ondorse refuses to serve the application: only the
    // portal moment is planned again, and it writes the link alone.
    world.ondorse.refuse_application(&application, Some(503));
    let retried = engine
        .retry_dead_letters(&RetrySelection {
            ids: Vec::new(),
            all: true,
        })
        .await;
    assert!(retried.is_err(), "the application read fails: {retried:?}");
    assert_eq!(engine.store().dead_letter_count(), 0);
    engine.flush_writes().await.expect("write-back");
    assert_eq!(
        world.field(&id, "Ondorse_Portal_Url__c"),
        world
            .ondorse
            .portal(&world.portal_of(&id))
            .expect("the portal")["url"]
    );
    assert_decision_kept(&world, &id, "retried portal moment");

    // Ondorse serves it again: reconcile finishes the re-planning.
    world.ondorse.refuse_application(&application, None);
    reconcile_until(&engine, "the Account is planned again", || {
        engine.store().replans().expect("replans").is_empty()
    })
    .await;
    engine.flush_writes().await.expect("write-back");
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("Approved"));
}

/// Applies every event Ondorse raised so far (no webhook URL is set), as
/// the webhook listener would store them, then writes back what they planned.
async fn apply_events(world: &World, engine: &ondorse_bridge::sync::Engine) {
    apply_events_of_type(world, engine, None).await;
}

/// Ondorse approves `application` and its events are applied: the decision
/// is written back.
async fn approve(world: &World, engine: &ondorse_bridge::sync::Engine, application: &str) {
    world.ondorse.review(application, "approved", 1, Some(42.0));
    apply_events(world, engine).await;
}

/// [`apply_events`] for the events of one type only (delivered in the order
/// the test chooses), or of all types.
async fn apply_events_of_type(
    world: &World,
    engine: &ondorse_bridge::sync::Engine,
    event_type: Option<&str>,
) {
    world
        .store_raised_events_where(engine, |event| {
            event_type.is_none_or(|event_type| event["type"] == json!(event_type))
        })
        .await;
    engine
        .process_inbox()
        .await
        .expect("the inbox is worked off");
    engine.flush_writes().await.expect("write-back");
}

/// Seeds one Customer Account, gives it its portal, submits it and opens a
/// collect on its application, each step written back; returns the
/// Account Id and the application id.
async fn documents_requested(
    world: &World,
    engine: &ondorse_bridge::sync::Engine,
    seed: u64,
) -> (String, String) {
    let id = world.seed(1, "Customer", seed).remove(0);
    engine
        .poll(BUSINESS)
        .await
        .expect("poll creates the portal");
    let application = world
        .ondorse
        .submit_portal(&world.portal_of(&id))
        .expect("the portal is submitted");
    apply_events(world, engine).await;
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("In review"));
    world
        .ondorse
        .open_collect(&application)
        .expect("the application exists");
    apply_events(world, engine).await;
    assert_eq!(
        world.field(&id, "KYC_Status__c"),
        json!("Documents requested")
    );
    (id, application)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_after_documents_were_requested_keeps_the_status_until_the_decision() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let engine = world.engine();
    let (id, application) = documents_requested(&world, &engine, 85).await;

    // The undecided application is read again, by reconcile and by a late
    // review event: its other fields are written, its status is not.
    world.ondorse.review(&application, "pending", 2, Some(55.0));
    engine.reconcile().await.expect("reconcile");
    engine.flush_writes().await.expect("write-back");
    apply_events(&world, &engine).await;
    assert_eq!(world.field(&id, "KYC_Risk_Score__c"), json!(55.0));
    assert_eq!(
        world.field(&id, "KYC_Status__c"),
        json!("Documents requested"),
        "a refresh does not put the review status over the collect"
    );

    // The final decision overrides "documents requested".
    approve(&world, &engine, &application).await;
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("Approved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmission_after_documents_were_requested_puts_the_status_back_in_review_for_good() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let engine = world.engine();
    let (id, application) = documents_requested(&world, &engine, 86).await;

    // The applicant sends the documents: the case is back in review.
    assert!(world.ondorse.close_collect(&application));
    apply_events(&world, &engine).await;
    assert_eq!(
        world.field(&id, "KYC_Status__c"),
        json!("In review"),
        "the status follows the closed collect"
    );

    // A second collect, opened then closed, whose events arrive in the
    // other order: the late `collect.opened` was raised before the close,
    // so it brings back neither the status nor the collect.
    world
        .ondorse
        .open_collect(&application)
        .expect("the application exists");
    assert!(world.ondorse.close_collect(&application));
    apply_events_of_type(&world, &engine, Some("collect.closed")).await;
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("In review"));
    apply_events_of_type(&world, &engine, Some("collect.opened")).await;
    assert_eq!(
        world.field(&id, "KYC_Status__c"),
        json!("In review"),
        "a collect.opened raised before the close changes nothing"
    );
    // A refresh carrying no collect event keeps it too.
    engine.reconcile().await.expect("reconcile");
    engine.flush_writes().await.expect("write-back");
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("In review"));

    approve(&world, &engine, &application).await;
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("Approved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_stored_before_requests_were_frozen_is_frozen_at_its_next_attempt() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 91).remove(0);
    let engine = world.engine();
    world.ondorse.set_down(true);
    assert_eq!(engine.poll(BUSINESS).await.expect("poll").portals_failed, 1);
    // As an older version stored it: no request, due now.
    let mut link = engine
        .store()
        .link(BUSINESS, &id)
        .expect("read")
        .expect("the intent");
    assert!(link.request.is_some(), "new intents carry their request");
    link.request = None;
    link.retry_at = None;
    engine.store().put_link(&link).expect("store the old form");
    world.ondorse.set_down(false);

    reconcile_until(&engine, "the portal is created", || {
        !world.ondorse.portals().is_empty()
    })
    .await;
    let portal = world.ondorse.portals().remove(0);
    assert_eq!(
        portal["default_custom_fields"]["company_name"],
        world.field(&id, "Name")
    );
    let link = engine.store().link(BUSINESS, &id).unwrap().unwrap();
    assert!(link.portal.is_some() && link.request.is_none(), "{link:?}");
    let explanation = operations::explain(engine.store(), &id).expect("explain");
    let created = explanation
        .journal
        .iter()
        .find(|entry| entry.step == "portal_created")
        .expect("journaled");
    assert_eq!(
        created.detail["request"]["default_custom_fields"]["company_name"],
        world.field(&id, "Name"),
        "the journal keeps the request that was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_push_hint_is_parked_and_never_holds_up_webhooks() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let early = world.seed(1, "Customer", 101).remove(0);
    let daemon = world.daemon().await;
    portal_links_written(&world, std::slice::from_ref(&early)).await;
    let application = world
        .ondorse
        .submit_portal(&world.portal_of(&early))
        .expect("submitted");
    eventually("the submission is in review", E2E_DEADLINE, || {
        world.field(&early, "KYC_Status__c") == json!("In review")
    })
    .await;

    // Salesforce's queries fail: a push hint cannot be read...
    let hinted = world.seed(1, "Customer", 102).remove(0);
    world.salesforce.fail_next_requests(1_000_000);
    send_hint(&daemon, &hinted).await;
    let store = daemon.engine.store();
    eventually("the hint is parked", E2E_DEADLINE, || {
        operations::status(store, None)
            .expect("status")
            .parked
            .iter()
            .any(|item| item.queue == "hints" && item.subject.contains(&hinted))
    })
    .await;

    // ...while a decision webhook behind it is worked off at once.
    world.ondorse.review(&application, "approved", 0, Some(3.0));
    eventually("the webhook left the inbox", E2E_DEADLINE, || {
        let status = operations::status(store, None).expect("status");
        status.queues.inbox == 1 && status.queues.pending_writes == 1
    })
    .await;

    // Salesforce is back: the hint is retried by itself, the decision written.
    world.salesforce.fail_next_requests(0);
    approved_and_hinted_portal(&world, &early, &hinted).await;
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_with_a_15_character_id_meets_its_account_which_is_read_once() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 87).remove(0);
    let engine = world.engine();
    // One Flow sends the Id as a Classic URL shows it, another as the API does.
    for given in [&id[..15], id.as_str()] {
        let hinted = Id::parse_account(given).expect("an Account Id");
        assert_eq!(
            hinted.as_str(),
            id,
            "{given} is read in its 18-character form"
        );
        engine
            .store()
            .accept_salesforce_hint(vec![hinted], chrono::Utc::now())
            .await
            .expect("stored");
    }
    let report = engine
        .process_inbox()
        .await
        .expect("the hints are worked off");
    assert_eq!(report.items, 2);
    engine.flush_writes().await.expect("write-back");

    assert_eq!(world.portals_by_account().get(&id), Some(&1));
    assert!(engine.store().link(BUSINESS, &id).unwrap().is_some());
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("Portal sent"));
    // Every mapping reads it once: one row seen in all.
    let metrics = engine.metrics().render();
    let seen: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("ondorse_bridge_accounts_seen_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(seen, 1.0, "both hints are one read of one Account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_started_by_hand_with_a_15_character_account_id_meets_its_account() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = linked_account(&world, 92).await;
    let engine = world.engine();
    // Ondorse staff start a portal by hand, pasting the Id as a Salesforce
    // Classic URL shows it.
    let options = world.ondorse.options();
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/api/portals", world.ondorse.base_url()))
        .header(
            options.auth_header.as_str(),
            format!("{} {}", options.auth_scheme, options.api_key),
        )
        .json(&json!({
            "type": "business",
            "default_custom_fields": { "salesforce_account_id": &id[..15] },
        }))
        .send()
        .await
        .expect("the portal is posted")
        .json()
        .await
        .expect("a portal");
    let application = world
        .ondorse
        .submit_portal(answer["id"].as_str().expect("a portal id"))
        .expect("the portal is submitted");
    approve(&world, &engine, &application).await;

    assert_eq!(world.field(&id, "KYC_Status__c"), json!("Approved"));
    let link = engine.store().link(BUSINESS, &id).unwrap().expect("a link");
    assert_eq!(link.application_id.as_deref(), Some(application.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collect_opened_without_a_link_keeps_the_collect_url_in_salesforce() {
    const KEPT: &str = "https://collect.ondorse.co/portals/kept000001";
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 81).remove(0);
    world
        .salesforce
        .edit_account(&id, fields(json!({"Ondorse_Collect_Url__c": KEPT})));
    let daemon = world.daemon().await;
    portal_links_written(&world, std::slice::from_ref(&id)).await;
    let application = world
        .ondorse
        .submit_portal(&world.portal_of(&id))
        .expect("the portal is submitted");
    // The submission's events are delivered and applied first: one still
    // being redelivered (a slow answer on a loaded machine) would be applied
    // after the collect below and write the application's status over it.
    eventually(
        "the submission is delivered and applied",
        E2E_DEADLINE,
        || {
            let stats = world.ondorse.stats();
            stats.deliveries_succeeded + stats.deliveries_abandoned + stats.events_undelivered
                >= stats.events_emitted
                && world.field(&id, "KYC_Status__c") == json!("In review")
        },
    )
    .await;

    // Ondorse says a collect was opened, but the application holds no link.
    world.ondorse.send_event("collect.opened", &application);
    eventually("the collect's status is written", E2E_DEADLINE, || {
        world.field(&id, "KYC_Status__c") == json!("Documents requested")
    })
    .await;
    assert_eq!(world.field(&id, "Ondorse_Collect_Url__c"), json!(KEPT));

    // A collect with its link is written as usual.
    let link = world
        .ondorse
        .open_collect(&application)
        .expect("the application exists");
    let url = format!("https://collect.ondorse.co/portals/{link}");
    eventually("the collect's url is written", E2E_DEADLINE, || {
        world.field(&id, "Ondorse_Collect_Url__c") == json!(url)
    })
    .await;
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_answered_without_a_url_leaves_the_url_field_as_it_is() {
    const KEPT: &str = "https://collect.ondorse.co/portals/kept000002";
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 95).remove(0);
    world
        .salesforce
        .edit_account(&id, fields(json!({"Ondorse_Portal_Url__c": KEPT})));
    // Ondorse answers the portal without `url` and without `link`, from
    // which the url would be built: the portal has no url to write.
    world.ondorse.omit_from_portal_answers(&["url", "link"]);
    let engine = world.engine();
    let report = engine.poll(BUSINESS).await.expect("poll");
    assert_eq!(report.portals_created, 1, "{report:?}");
    engine.flush_writes().await.expect("write-back");

    // The rest of the moment is written; the missing url clears nothing.
    assert_eq!(world.field(&id, "KYC_Status__c"), json!("Portal sent"));
    assert_eq!(world.field(&id, "Ondorse_Portal_Url__c"), json!(KEPT));
}
