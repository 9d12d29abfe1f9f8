//! Merged and deleted Accounts: a write Salesforce answers
//! `ENTITY_IS_DELETED` is looked up with `queryAll`; a merged Account's link
//! moves to the master (or closes when the master has its own portal), a
//! deleted Account's link closes and an undelete reopens it. Never a dead
//! letter, never two links on one Account.

use std::time::Duration;

use ondorse_bridge::sync::operations;
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::json;

use crate::support::world::{E2E_DEADLINE, World, eventually};

const BUSINESS: &str = "business-onboarding";

fn journal_steps(store: &ondorse_bridge::store::Store, id: &str) -> Vec<String> {
    operations::explain(store, id)
        .expect("explain")
        .journal
        .into_iter()
        .map(|entry| entry.step)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_accounts_link_and_decision_move_to_the_master() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let loser = world.seed(1, "Customer", 81).remove(0);
    // The master does not match the mapping: it has no link of its own.
    let master = world.seed(1, "Prospect", 82).remove(0);
    let daemon = world.daemon().await;
    eventually("the loser's portal link is written", E2E_DEADLINE, || {
        world.field(&loser, "KYC_Status__c") == json!("Portal sent")
    })
    .await;
    let portal_url = world.field(&loser, "Ondorse_Portal_Url__c");

    world.salesforce.merge_accounts(&master, &[&loser]);
    world.decide(&loser, "approved", 1, Some(42.0));

    // Both land, in either order: a decision processed once the link moved
    // is written at once, while the master's re-planning (which brings the
    // portal link) runs after the move is flushed.
    eventually(
        "the decision and the portal link land on the master",
        E2E_DEADLINE,
        || {
            world.field(&master, "KYC_Status__c") == json!("Approved")
                && world.field(&master, "Ondorse_Portal_Url__c") == portal_url
        },
    )
    .await;
    let store = daemon.engine.store();
    let moved = store
        .link(BUSINESS, &master)
        .expect("read")
        .expect("the link moved to the master");
    assert!(moved.is_open() && moved.portal.is_some(), "{moved:?}");
    assert_eq!(store.link(BUSINESS, &loser).expect("read"), None);
    assert_eq!(store.dead_letter_count(), 0);
    assert_eq!(world.ondorse.portals().len(), 1, "no second portal");
    assert!(journal_steps(store, &loser).contains(&"merged".to_owned()));
    assert!(journal_steps(store, &master).contains(&"link_moved_here".to_owned()));
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loser_whose_master_has_its_own_portal_is_closed_and_the_master_keeps_its_own() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(2, "Customer", 83);
    let (master, loser) = (ids[0].clone(), ids[1].clone());
    let daemon = world.daemon().await;
    eventually("both portal links are written", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
    })
    .await;
    let master_url = world.field(&master, "Ondorse_Portal_Url__c");

    world.salesforce.merge_accounts(&master, &[&loser]);
    world.decide(&loser, "approved", 1, Some(42.0));

    let store = daemon.engine.store();
    let expected = format!("merged into {master}, which has its own portal");
    eventually("the loser's link is closed", E2E_DEADLINE, || {
        operations::status(store, None)
            .expect("status")
            .closed
            .iter()
            .any(|closed| closed.account_id == loser && closed.reason == expected)
    })
    .await;
    // The master keeps its own link and values; nothing is pending or dead.
    let kept = store.link(BUSINESS, &master).expect("read").expect("kept");
    assert!(kept.is_open());
    assert_eq!(world.field(&master, "Ondorse_Portal_Url__c"), master_url);
    assert_eq!(world.field(&master, "KYC_Status__c"), json!("Portal sent"));
    assert_eq!(store.dead_letter_count(), 0);
    assert_eq!(store.pending_write(&loser).expect("read"), None);
    let explanation = operations::explain(store, &loser).expect("explain");
    assert_eq!(
        explanation.links[0].closed.as_deref(),
        Some(expected.as_str())
    );
    // The master's journal entry follows the close: wait for it, not assume it.
    eventually(
        "the master's journal records the merge",
        E2E_DEADLINE,
        || journal_steps(store, &master).contains(&"merged_in".to_owned()),
    )
    .await;
    // Nothing is rendered for the closed link again: it keeps no personal data.
    let closed = store.link(BUSINESS, &loser).expect("read").expect("closed");
    assert!(closed.account.is_empty(), "{:?}", closed.account);
    assert_eq!(closed.request, None);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_accounts_link_is_closed_not_retried_and_an_undelete_reopens_it() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let account = world.seed(1, "Customer", 84).remove(0);
    let daemon = world.daemon().await;
    eventually("the portal link is written", E2E_DEADLINE, || {
        world.field(&account, "KYC_Status__c") == json!("Portal sent")
    })
    .await;

    world.salesforce.delete_account(&account);
    world.decide(&account, "approved", 1, Some(42.0));
    let store = daemon.engine.store();
    eventually(
        "the link is closed and shown in status",
        E2E_DEADLINE,
        || {
            operations::status(store, None)
                .expect("status")
                .closed
                .iter()
                .any(|closed| closed.account_id == account && closed.reason.contains("deleted"))
        },
    )
    .await;
    assert_eq!(store.dead_letter_count(), 0);
    assert_eq!(store.pending_write_count(), 0);
    // Not retried: no write reaches Salesforce any more.
    let stats = world.salesforce.stats();
    daemon.engine.reconcile().await.expect("reconcile");
    daemon.engine.flush_writes().await.expect("write pass");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = world.salesforce.stats();
    assert_eq!(
        (after.composite_requests, after.single_updates),
        (stats.composite_requests, stats.single_updates)
    );

    // Restored from the recycle bin: reconcile sees it, the link reopens
    // and the decision lands.
    world.salesforce.undelete_account(&account);
    daemon.engine.reconcile().await.expect("reconcile");
    eventually("the decision lands once restored", E2E_DEADLINE, || {
        world.field(&account, "KYC_Status__c") == json!("Approved")
    })
    .await;
    let status = operations::status(store, None).expect("status");
    assert!(status.closed.is_empty(), "{:?}", status.closed);
    assert!(
        store
            .link(BUSINESS, &account)
            .expect("read")
            .expect("link")
            .is_open()
    );
    assert_eq!(world.ondorse.portals().len(), 1, "no second portal");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_a_read_back_no_longer_sees_is_looked_up_and_its_link_closed() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(3, "Customer", 85);
    let engine = world.engine();
    engine.poll(BUSINESS).await.expect("poll");
    world.salesforce.delete_account(&ids[0]);
    // The batch answer is unreadable, so the writer reads the Accounts back:
    // the deleted one is not there any more.
    world.salesforce.blank_collection_answers(1);
    let report = engine.flush_writes().await.expect("pass");
    assert_eq!((report.written, report.gone), (2, 1), "{report:?}");
    let link = engine
        .store()
        .link(BUSINESS, &ids[0])
        .expect("read")
        .expect("link");
    let closed = link.closed.expect("closed");
    assert!(
        closed.deleted && closed.reason.contains("deleted"),
        "{closed:?}"
    );
    assert_eq!(engine.store().dead_letter_count(), 0);
    assert_eq!(engine.store().pending_write_count(), 0);
}
