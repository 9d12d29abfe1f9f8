//! The stop path as systemd drives it (SIGTERM → `Daemon::stop`): work in
//! flight finishes within the one grace period, and what the daemon
//! promised durable is on disk when it returns.

use std::time::Duration;

use ondorse_bridge::daemon::SHUTDOWN_GRACE;
use ondorse_bridge::store::Store;
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::{Value, json};

use crate::support::config::ADMIN_TOKEN;
use crate::support::world::{E2E_DEADLINE, World, eventually};

const MAPPING: &str = "business-onboarding";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_portals_in_flight_records_them_and_a_restart_creates_no_second_portal() {
    const ACCOUNTS: usize = 4;
    let world = World::start(OndorseSandboxOptions::default()).await;
    // Each portal request takes long enough to be caught in flight.
    world.ondorse.set_latency(Duration::from_millis(600));
    let ids = world.seed(ACCOUNTS, "Customer", 31);
    let daemon = world.daemon().await;
    eventually("a portal request is in flight", E2E_DEADLINE, || {
        world.ondorse.stats().requests > 0
    })
    .await;

    // The stop returns on its own: its grace period bounds it, and past it
    // what still runs is cut off. The timeout only keeps a broken stop
    // from hanging the suite.
    tokio::time::timeout(SHUTDOWN_GRACE * 3, daemon.stop())
        .await
        .expect("the stop path ends")
        .expect("a clean stop");

    // Every portal Ondorse created is recorded, flushed, in the store the
    // stopped daemon let go of.
    let created = world.ondorse.portals();
    assert!(!created.is_empty(), "the request in flight finished");
    {
        let store = Store::open_existing(&world.config.store.path)
            .await
            .expect("the store reopens");
        for portal in &created {
            let account = portal["default_custom_fields"]["salesforce_account_id"]
                .as_str()
                .expect("the portal names its Account");
            let link = store
                .link(MAPPING, account)
                .expect("the link reads")
                .unwrap_or_else(|| panic!("no link for {account}"));
            assert_eq!(
                link.portal
                    .as_ref()
                    .map(|portal| Value::from(portal.id.as_str())),
                Some(portal["id"].clone()),
                "the portal of {account} is recorded"
            );
        }
    }

    // A restart finishes the rest without a second portal for anyone.
    world.ondorse.set_latency(Duration::ZERO);
    let daemon = world.daemon().await;
    eventually(
        "every Account has its portal link written back",
        E2E_DEADLINE,
        || {
            ids.iter()
                .all(|id| world.field(id, "Ondorse_Portal_Url__c").is_string())
        },
    )
    .await;
    daemon.stop().await.expect("a clean stop");
    assert_eq!(world.ondorse.portals().len(), ACCOUNTS);
    assert_eq!(world.ondorse.stats().portals_created, ACCOUNTS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_resync_waits_for_it_even_once_its_client_hung_up() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(3, "Customer", 98);
    let daemon = world.daemon().await;
    eventually("portal links are written", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
    })
    .await;
    for id in &ids {
        world.decide(id, "approved", 1, Some(10.0));
    }
    eventually("the decisions are written", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Approved"))
    })
    .await;

    // A slow Ondorse: the resync fetches each application, one by one.
    world.ondorse.set_latency(Duration::from_millis(700));
    let queries = world.salesforce.stats().query_requests;
    let request = tokio::spawn(
        reqwest::Client::new()
            .post(format!("http://{}/admin/resync", daemon.admin_address()))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "accounts": ids }))
            .send(),
    );
    eventually("the resync reads the Accounts", E2E_DEADLINE, || {
        world.salesforce.stats().query_requests > queries
    })
    .await;
    // The client hangs up; then the daemon is told to stop.
    request.abort();
    daemon.stop().await.expect("clean stop");

    // The stop waited for the resync: the store is free, and every
    // Account's journal says it was resynced.
    let store = Store::open_existing(&world.config.store.path)
        .await
        .expect("the store is released");
    for id in &ids {
        let steps: Vec<String> = store
            .journal_of(id)
            .expect("journal")
            .into_iter()
            .map(|entry| entry.step)
            .collect();
        assert!(steps.contains(&"resynced".to_owned()), "{id}: {steps:?}");
    }
}
