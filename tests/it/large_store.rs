//! A store the size of a large org: `status`, reconcile and the intent
//! retries read counters and the links that call for work, never every
//! link with its Account record. The links are seeded straight into the
//! store (fast); the proof is the store's count of links it decoded.

use chrono::{DateTime, Duration, Utc};
use ondorse_bridge::ondorse::webhook::parse_envelope;
use ondorse_bridge::salesforce::Id;
use ondorse_bridge::store::{Accepted, Link, LinkClosure, LinkState, PortalRecord, Store};
use ondorse_bridge::sync::operations;
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::json;

use crate::support::world::World;

const MAPPING: &str = "business-onboarding";
const LINKS: usize = 100_000;
/// Of them: links with an application; all but `UNDECIDED` have a final
/// decision.
const APPLICATIONS: usize = 2_000;
const UNDECIDED: usize = 10;
/// Intents without a portal, parked (refused by Ondorse): no automatic
/// attempt, so reconcile sends no portal POST.
const PARKED_INTENTS: usize = 3;
/// Closed links (Accounts merged away).
const CLOSED: usize = 4;

pub(crate) fn account_id(index: usize) -> String {
    format!("001{index:015}")
}

/// One seeded link: a portal for all but the parked intents, an
/// application for the first [`APPLICATIONS`], the last of those undecided.
pub(crate) fn link(index: usize, at: DateTime<Utc>) -> Link {
    let account_id = account_id(index);
    let parked = index >= LINKS - PARKED_INTENTS;
    let closed = (LINKS - PARKED_INTENTS - CLOSED..LINKS - PARKED_INTENTS).contains(&index);
    let application = index < APPLICATIONS;
    let mut account = serde_json::Map::new();
    account.insert("Id".to_owned(), json!(account_id));
    account.insert("Name".to_owned(), json!(format!("Company {index}")));
    Link {
        mapping: MAPPING.to_owned(),
        idempotency_key: format!("key-{index}"),
        intent_at: at,
        portal: (!parked).then(|| PortalRecord {
            id: format!("portal_{index}"),
            url: Some(format!("https://collect.example.com/p/{index}")),
            created_at: at,
            answer: json!({ "id": format!("portal_{index}") }),
        }),
        application_id: application.then(|| format!("app_missing_{index}")),
        decision_final: application && index >= UNDECIDED,
        collect_opened: false,
        collect_changed_at: None,
        account: account.clone(),
        portal_attempts: u32::from(parked),
        last_error: parked.then(|| "ondorse refused the portal: invalid country".to_owned()),
        request: None,
        retry_at: None,
        refused: parked,
        portal_writeback_due: false,
        closed: closed.then(|| LinkClosure {
            reason: "merged into another Account".to_owned(),
            at,
            deleted: false,
        }),
        account_id,
    }
}

fn seed(store: &Store) {
    let at = Utc::now() - Duration::days(1);
    for index in 0..LINKS {
        store.put_link(&link(index, at)).expect("seed a link");
    }
}

#[tokio::test]
async fn status_of_a_store_with_100000_links_comes_from_counters_and_reads_only_the_links_waiting_for_work()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).await.unwrap();
    seed(&store);

    let before = store.links_read();
    let status = operations::status(&store, None).expect("status");
    let read = store.links_read() - before;
    let mapping = status
        .mappings
        .iter()
        .find(|mapping| mapping.name == MAPPING)
        .expect("the seeded mapping");
    assert_eq!(mapping.accounts, LINKS as u64);
    assert_eq!(mapping.portals, (LINKS - PARKED_INTENTS) as u64);
    assert_eq!(mapping.applications, APPLICATIONS as u64);
    assert_eq!(mapping.final_decisions, (APPLICATIONS - UNDECIDED) as u64);
    assert_eq!(mapping.failing_portals, PARKED_INTENTS as u64);
    assert_eq!(
        mapping.last_error.as_deref(),
        Some("ondorse refused the portal: invalid country")
    );
    assert_eq!(status.queues.pending_portals, PARKED_INTENTS as u64);
    assert_eq!(status.parked.len(), PARKED_INTENTS);
    assert_eq!(status.closed.len(), CLOSED);
    // The parked intents and the closed links, nothing else.
    assert_eq!(read, (PARKED_INTENTS + CLOSED) as u64);

    // A store written before the counters existed gets them once, on open,
    // and status reads the same figures from them.
    drop(store);
    let legacy = crate::support::raw_sled_after_release(&path).await;
    for tree in ["link_counts", "link_states"] {
        legacy.open_tree(tree).unwrap().clear().unwrap();
    }
    legacy.flush().unwrap();
    drop(legacy);
    let reopened = Store::open(&path).await.unwrap();
    let rebuilt = operations::status(&reopened, None).expect("status after the rebuild");
    assert_eq!(rebuilt.mappings, status.mappings);
    assert_eq!(rebuilt.closed, status.closed);
}

#[tokio::test]
async fn reconcile_of_a_store_with_100000_links_re_fetches_only_the_undecided_applications() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let engine = world.engine();
    seed(engine.store());
    let gets_before = world.ondorse.stats().application_gets;
    let read_before = engine.store().links_read();

    let report = engine.reconcile().await.expect("reconcile");

    // Each undecided application is asked for once (Ondorse does not know
    // these ids: nothing to write), the decided ones not at all.
    assert_eq!(report.applications_checked, UNDECIDED);
    assert_eq!(
        world.ondorse.stats().application_gets - gets_before,
        UNDECIDED as u64
    );
    assert_eq!(report.intents_retried, 0);
    let read = engine.store().links_read() - read_before;
    assert!(
        read <= (4 * (UNDECIDED + PARKED_INTENTS + CLOSED)) as u64,
        "reconcile decoded {read} links of {LINKS}: a few per link waiting for work at most"
    );
    // The undecided links are still the ones the index hands out.
    let undecided: Vec<String> = engine
        .store()
        .links_in(LinkState::Undecided)
        .map(|link| link.unwrap().account_id)
        .collect();
    assert_eq!(
        undecided,
        (0..UNDECIDED).map(account_id).collect::<Vec<_>>()
    );
}

/// Webhooks and hints that Ondorse or Salesforce keep failing: `status`
/// lists a bounded number of them and counts them all.
#[tokio::test]
async fn status_of_a_store_with_many_parked_inbox_items_lists_a_bounded_number_and_counts_them_all()
{
    const WEBHOOKS: usize = 180;
    const HINTS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).await.unwrap();
    let now = Utc::now();
    let retry_at = now + Duration::hours(1);
    let mut parked_sequences = Vec::new();
    for index in 0..WEBHOOKS {
        let body = json!({
            "event_id": format!("evt_{index}"),
            "type": "application.review_updated",
            "data": { "object": { "id": format!("app_{index}") } },
        });
        let envelope = parse_envelope(body.to_string().as_bytes()).unwrap();
        let Accepted::Stored { sequence } = store.accept_webhook(&envelope, now).await.unwrap()
        else {
            panic!("a new event");
        };
        // Every third one is still due: not parked, not listed.
        if index % 3 != 0 {
            parked_sequences.push(sequence);
        }
    }
    for index in 0..HINTS {
        let id = Id::parse(&account_id(index)[..15]).unwrap();
        parked_sequences.push(store.accept_salesforce_hint(vec![id], now).await.unwrap());
    }
    for sequence in &parked_sequences {
        let attempts = store
            .park_inbox_item(*sequence, "ondorse answered 503", None, |_| retry_at)
            .unwrap();
        assert_eq!(attempts, 1);
    }
    let parked_webhooks = (WEBHOOKS - WEBHOOKS.div_ceil(3)) as u64;
    assert!(parked_webhooks + HINTS as u64 > operations::PARKED_LISTED as u64);

    check_parked(
        &store,
        parked_webhooks,
        HINTS as u64,
        (WEBHOOKS + HINTS) as u64,
    );
    // The counters are counted anew from what is on disk when it reopens.
    drop(store);
    let store = Store::open(&path).await.unwrap();
    check_parked(
        &store,
        parked_webhooks,
        HINTS as u64,
        (WEBHOOKS + HINTS) as u64,
    );
}

/// `status` counts every parked webhook and hint and lists the oldest
/// [`operations::PARKED_LISTED`], webhooks first.
fn check_parked(store: &Store, parked_webhooks: u64, parked_hints: u64, inbox: u64) {
    let status = operations::status(store, None).expect("status");
    assert_eq!(status.queues.parked_webhooks, parked_webhooks);
    assert_eq!(status.queues.parked_hints, parked_hints);
    assert_eq!(status.parked_total(), parked_webhooks + parked_hints);
    assert_eq!(status.parked.len(), operations::PARKED_LISTED);
    assert!(
        status
            .parked
            .iter()
            .all(|item| item.queue == "webhooks" && item.attempts == 1),
        "{:?}",
        status.parked
    );
    // Every third webhook is still due: the first parked one is the second.
    assert_eq!(
        status.parked[0].subject,
        "application.review_updated about application app_1"
    );
    assert_eq!(status.queues.inbox, inbox);
}
