//! The store as the daemon and the operator meet it: ordering across
//! reopen, the deduplication window, exclusive opening, group commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ondorse_bridge::ondorse::webhook::{WebhookEnvelope, parse_envelope};
use ondorse_bridge::salesforce::Id;
use ondorse_bridge::store::{
    Accepted, Fields, GoneLink, InboxKind, InboxQueue, Link, LinkClosure, LinkState, PortalRecord,
    SEEN_EVENT_RETENTION, Store, StoreError, Urgency, WriteSettlement,
};
use serde_json::json;

fn envelope(event_id: &str) -> WebhookEnvelope {
    parse_envelope(
        format!(r#"{{"event_id":"{event_id}","type":"application.updated","data":{{"object":{{"id":"app_1"}}}}}}"#)
            .as_bytes(),
    )
    .unwrap()
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

fn event_ids(store: &Store) -> Vec<String> {
    store
        .inbox_pending(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|item| match item.kind {
            InboxKind::Webhook(envelope) => envelope.event_id,
            InboxKind::SalesforceHint { ids } => {
                ids.iter().map(Id::as_str).collect::<Vec<_>>().join("+")
            }
        })
        .collect()
}

/// Stores `evt_0`..`evt_{count-1}` (all new) and returns their sequences.
async fn accept_events(store: &Store, count: usize, received: DateTime<Utc>) -> Vec<u64> {
    let mut sequences = Vec::new();
    for index in 0..count {
        match store
            .accept_webhook(&envelope(&format!("evt_{index}")), received)
            .await
            .unwrap()
        {
            Accepted::Stored { sequence } => sequences.push(sequence),
            Accepted::Duplicate => panic!("evt_{index} is new"),
        }
    }
    sequences
}

#[tokio::test]
async fn a_parked_item_waits_for_its_time_and_never_blocks_the_items_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).await.unwrap();
    let received = at("2026-11-26T09:00:00Z");
    let sequences = accept_events(&store, 3, received).await;
    let hint = store
        .accept_salesforce_hint(vec![Id::parse("001xx000003DGb2AAG").unwrap()], received)
        .await
        .unwrap();
    let now = at("2026-11-26T10:00:00Z");
    let retry_at = at("2026-11-26T10:05:00Z");
    let attempts = store
        .park_inbox_item(
            sequences[0],
            "application app_1: http 400",
            Some("001A"),
            |_| retry_at,
        )
        .unwrap();
    assert_eq!(attempts, 1);
    let due = |at| {
        store
            .due_inbox_items(InboxQueue::Webhooks, at, 10)
            .unwrap()
            .into_iter()
            .map(|item| item.sequence)
            .collect::<Vec<_>>()
    };
    assert_eq!(due(now), sequences[1..], "the items behind it go on");
    assert_eq!(due(retry_at), sequences, "due again at its time");
    let hints: Vec<u64> = store
        .due_inbox_items(InboxQueue::Hints, now, 10)
        .unwrap()
        .into_iter()
        .map(|item| item.sequence)
        .collect();
    assert_eq!(hints, [hint], "hints have their own queue head");

    // A second failure counts, and keeps the reason and the Account.
    let attempts = store
        .park_inbox_item(
            sequences[0],
            "application app_1: http 400",
            Some("001A"),
            |attempts| retry_at + chrono::Duration::minutes(i64::from(attempts)),
        )
        .unwrap();
    assert_eq!(attempts, 2);
    let parked = store.parked_inbox_items(usize::MAX).unwrap();
    assert_eq!(parked.len(), 1);
    let state = parked[0].parked.clone().unwrap();
    assert_eq!(
        (state.attempts, state.account_id.as_deref(), state.retry_at),
        (2, Some("001A"), retry_at + chrono::Duration::minutes(2))
    );
    store.complete_inbox_items(&sequences[..1]).await.unwrap();
    assert!(store.parked_inbox_items(usize::MAX).unwrap().is_empty());
    assert_eq!(
        store
            .park_inbox_item(sequences[0], "gone", None, |_| retry_at)
            .unwrap(),
        0,
        "a completed item stays completed"
    );
}

#[tokio::test]
async fn inbox_order_and_sequences_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let received = at("2026-11-26T09:00:00Z");
    let mut sequences;
    {
        let store = Store::open(&path).await.unwrap();
        sequences = accept_events(&store, 5, received).await;
        sequences.push(
            store
                .accept_salesforce_hint(vec![Id::parse("001xx000003DGb2AAG").unwrap()], received)
                .await
                .unwrap(),
        );
        store.complete_inbox_items(&sequences[1..2]).await.unwrap();
        store.flush().await.unwrap();
        assert!(
            sequences.windows(2).all(|pair| pair[0] < pair[1]),
            "{sequences:?}"
        );
    }

    let store = Store::open(&path).await.unwrap();
    assert_eq!(
        event_ids(&store),
        ["evt_0", "evt_2", "evt_3", "evt_4", "001xx000003DGb2AAG"]
    );
    assert_eq!(store.inbox_depth(), 5);
    let pending = store.inbox_pending(2).unwrap();
    assert_eq!(
        pending.iter().map(|item| item.sequence).collect::<Vec<_>>(),
        [sequences[0], sequences[2]]
    );
    assert_eq!(pending[0].received_at, received);
    // New work after the reopen still sorts after the old.
    let Accepted::Stored { sequence } = store
        .accept_webhook(&envelope("evt_5"), received)
        .await
        .unwrap()
    else {
        panic!("evt_5 is new");
    };
    assert!(sequence > *sequences.last().unwrap());
    // Webhooks keep their arrival order in their queue; hints have their own.
    assert_eq!(
        event_ids(&store),
        [
            "evt_0",
            "evt_2",
            "evt_3",
            "evt_4",
            "evt_5",
            "001xx000003DGb2AAG"
        ]
    );
    // Completed items stay completed, and their ids stay known.
    assert_eq!(
        store
            .accept_webhook(&envelope("evt_1"), received)
            .await
            .unwrap(),
        Accepted::Duplicate
    );
}

/// The queue depths the gauges, `status` and the writer read, from the
/// store's counters: webhooks waiting, parked webhooks, parked hints,
/// Accounts with a write pending, dead letters.
fn depths(store: &Store) -> [usize; 5] {
    [
        usize::try_from(store.inbox_depth()).unwrap(),
        store.parked_inbox_count(InboxQueue::Webhooks),
        store.parked_inbox_count(InboxQueue::Hints),
        store.pending_write_count(),
        store.dead_letter_count(),
    ]
}

/// The same depths, counted entry by entry.
fn counted(store: &Store) -> [usize; 5] {
    let parked = store.parked_inbox_items(usize::MAX).unwrap();
    let parked_hints = parked
        .iter()
        .filter(|item| matches!(item.kind, InboxKind::SalesforceHint { .. }))
        .count();
    let far_future = at("2100-01-01T00:00:00Z");
    [
        store.inbox_pending(usize::MAX).unwrap().len(),
        parked.len() - parked_hints,
        parked_hints,
        store.due_writes(far_future, usize::MAX).unwrap().len(),
        store.dead_letters().unwrap().len(),
    ]
}

fn fields(value: serde_json::Value) -> Fields {
    value.as_object().unwrap().clone()
}

#[tokio::test]
async fn queue_depths_come_from_counters_that_stay_exact_across_adds_removals_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let received = at("2026-11-26T09:00:00Z");
    let retry_at = at("2026-11-26T10:00:00Z");
    let store = Store::open(&path).await.unwrap();
    let check = |store: &Store, expected: [usize; 5], when: &str| {
        assert_eq!(depths(store), expected, "counters {when}");
        assert_eq!(counted(store), expected, "entries {when}");
    };
    check(&store, [0; 5], "on a new store");

    // The inbox: webhooks (a replay stores nothing), hints, parked items
    // (parked twice counts once), completed items (completed twice too).
    let events = accept_events(&store, 4, received).await;
    assert_eq!(
        store
            .accept_webhook(&envelope("evt_0"), received)
            .await
            .unwrap(),
        Accepted::Duplicate
    );
    let hint = store
        .accept_salesforce_hint(vec![Id::parse("001xx000003DGb2AAG").unwrap()], received)
        .await
        .unwrap();
    store
        .accept_salesforce_hint(vec![Id::parse("001xx000003DGb3AAG").unwrap()], received)
        .await
        .unwrap();
    for sequence in [events[0], events[0], events[1], hint] {
        store
            .park_inbox_item(sequence, "http 503", None, |_| retry_at)
            .unwrap();
    }
    check(&store, [6, 2, 1, 0, 0], "after adds and parks");
    for sequence in [events[0], events[0], events[2], hint] {
        store.complete_inbox_items(&[sequence]).await.unwrap();
    }
    check(&store, [3, 1, 0, 0, 0], "after completions");

    // Pending writes, coalesced per Account, and dead letters.
    let mapping = "business-onboarding";
    let (first, second, gone, fourth) = (
        "001000000000001AAA",
        "001000000000002AAA",
        "001000000000003AAA",
        "001000000000004AAA",
    );
    let first_link = linked_with_write(&store, mapping, first);
    store
        .put_link_and_queue(
            &first_link,
            Some(&fields(json!({ "KYC_Risk__c": "low" }))),
            Urgency::Now,
            received,
        )
        .unwrap();
    linked_with_write(&store, mapping, second);
    let mut gone_link = linked_with_write(&store, mapping, gone);
    linked_with_write(&store, mapping, fourth);
    check(&store, [3, 1, 0, 4, 0], "after queued writes");
    let pending = |account: &str| store.pending_write(account).unwrap().unwrap();
    let retried = pending(first);
    store
        .settle_write(
            &retried,
            &WriteSettlement::Retry {
                not_before: retry_at,
                error: "http 503".to_owned(),
            },
        )
        .unwrap();
    check(&store, [3, 1, 0, 4, 0], "after a retry");
    store
        .settle_write(&retried, &WriteSettlement::Written)
        .unwrap();
    store
        .settle_write(&retried, &WriteSettlement::Written)
        .unwrap();
    store
        .dead_letter_write(
            &pending(second),
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "no",
            received,
        )
        .unwrap();
    store
        .add_dead_letter(
            "001000000000005AAA",
            vec![mapping.to_owned()],
            fields(json!({ "KYC_Risk__c": 12 })),
            "INVALID_TYPE",
            "not a picklist value",
            received,
        )
        .unwrap();
    gone_link.closed = Some(LinkClosure {
        reason: "the Account was deleted".to_owned(),
        at: received,
        deleted: true,
    });
    for _ in 0..2 {
        store
            .settle_gone_account(gone, &[GoneLink::Close(gone_link.clone())])
            .unwrap();
    }
    check(&store, [3, 1, 0, 1, 2], "after settlements");
    let letters = store.dead_letters().unwrap();
    store.retry_dead_letters(&letters[..1]).unwrap();
    store.retry_dead_letters(&letters[..1]).unwrap();
    check(&store, [3, 1, 0, 1, 1], "after a retried dead letter");

    // The counters are counted again on open: they match what is on disk.
    store.flush().await.unwrap();
    drop(store);
    let store = Store::open(&path).await.unwrap();
    check(&store, [3, 1, 0, 1, 1], "after a reopen");
    store.complete_inbox_items(&[events[1]]).await.unwrap();
    check(&store, [2, 0, 0, 1, 1], "after a completion once reopened");
}

#[tokio::test]
async fn seen_event_ids_are_forgotten_only_after_the_retention_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).await.unwrap();
    let first = at("2026-11-26T09:00:00Z");
    let retention = chrono::Duration::from_std(SEEN_EVENT_RETENTION).unwrap();
    assert!(
        retention >= chrono::Duration::hours(27),
        "Ondorse retries for about 27 h"
    );

    store
        .accept_webhook(&envelope("evt_old"), first)
        .await
        .unwrap();
    store
        .accept_webhook(&envelope("evt_recent"), first + chrono::Duration::hours(30))
        .await
        .unwrap();

    // Just inside the window: nothing is dropped, a retry is a duplicate.
    let inside = first + retention - chrono::Duration::seconds(1);
    assert_eq!(store.prune_seen_events(inside).unwrap(), 0);
    assert_eq!(
        store
            .accept_webhook(&envelope("evt_old"), inside)
            .await
            .unwrap(),
        Accepted::Duplicate
    );

    // Past it: only the old id goes, and the event would be stored again.
    let past = first + retention + chrono::Duration::seconds(1);
    assert_eq!(store.prune_seen_events(past).unwrap(), 1);
    assert_eq!(
        store
            .accept_webhook(&envelope("evt_recent"), past)
            .await
            .unwrap(),
        Accepted::Duplicate
    );
    assert!(matches!(
        store
            .accept_webhook(&envelope("evt_old"), past)
            .await
            .unwrap(),
        Accepted::Stored { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_all_released_with_their_writes_durable() {
    const WRITERS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).await.unwrap();
    let received = Utc::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|index| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .accept_webhook(&envelope(&format!("evt_{index:03}")), received)
                    .await
            })
        })
        .collect();
    let all = futures::future::join_all(writers);
    let results = tokio::time::timeout(crate::support::world::E2E_DEADLINE, all)
        .await
        .expect("every writer is released");
    for result in results {
        assert!(matches!(result.unwrap().unwrap(), Accepted::Stored { .. }));
    }
    drop(store);
    let store = Store::open(&path).await.unwrap();
    let mut ids = event_ids(&store);
    ids.sort();
    assert_eq!(
        ids,
        (0..WRITERS)
            .map(|index| format!("evt_{index:03}"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn concurrent_deliveries_of_one_event_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).await.unwrap());
    let deliveries: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .accept_webhook(&envelope("evt_same"), Utc::now())
                    .await
            })
        })
        .collect();
    let mut stored = 0;
    for delivery in deliveries {
        if let Accepted::Stored { .. } = delivery.await.unwrap().unwrap() {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(event_ids(&store), ["evt_same"]);
}

#[test]
fn a_store_in_use_says_so_and_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let _held = Store::open_blocking(&path).unwrap();
    let error = Store::open_blocking(&path).unwrap_err();
    assert!(matches!(error, StoreError::InUse { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "the store at {} is in use by another process (is the daemon running? use its admin API)",
            path.display()
        )
    );
    assert!(!error.is_retriable());
}

#[tokio::test]
async fn a_store_closed_in_this_process_reopens_at_once() {
    // sled lets go of a dropped handle's lock from its own threads (most
    // often after the first close of a new store): each round gives a
    // reopen the chance to arrive before it has.
    const ROUNDS: usize = 20;
    let received = at("2026-11-26T09:00:00Z");
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = Store::open(&path).await.unwrap();
        accept_events(&store, 1, received).await;
        drop(store);
        let store = Store::open(&path)
            .await
            .unwrap_or_else(|error| panic!("round {round}: the closed store reopens: {error}"));
        assert_eq!(event_ids(&store), ["evt_0"], "round {round}");
        // A live handle in this process still holds it.
        let error = Store::open(&path).await.unwrap_err();
        assert!(matches!(error, StoreError::InUse { .. }), "{error:?}");
    }
}

#[test]
fn a_store_that_cannot_be_created_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let path = blocker.join("store");
    let error = Store::open_blocking(&path).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot open the store at {}: ", path.display())),
        "{error}"
    );
}

/// An open link with a portal and its portal write-back queued.
fn linked_with_write(store: &Store, mapping: &str, account_id: &str) -> Link {
    let now = Utc::now();
    let link = link_with_portal(mapping, account_id, now);
    let mut fields = Fields::new();
    fields.insert("KYC_Status__c".to_owned(), json!("Approved"));
    store
        .put_link_and_queue(&link, Some(&fields), Urgency::Now, now)
        .unwrap();
    assert!(store.pending_write(account_id).unwrap().is_some());
    link
}

/// A link whose portal Ondorse created at `now`.
fn link_with_portal(mapping: &str, account_id: &str, now: DateTime<Utc>) -> Link {
    Link {
        mapping: mapping.to_owned(),
        account_id: account_id.to_owned(),
        idempotency_key: format!("key-{account_id}"),
        intent_at: now,
        portal: Some(PortalRecord {
            id: format!("portal-{account_id}"),
            url: Some(format!("https://collect.example.com/p/{account_id}")),
            created_at: now,
            answer: json!({ "id": format!("portal-{account_id}") }),
        }),
        application_id: Some(format!("app-{account_id}")),
        decision_final: false,
        collect_opened: false,
        collect_changed_at: None,
        account: serde_json::Map::new(),
        portal_attempts: 0,
        last_error: None,
        request: None,
        retry_at: None,
        refused: false,
        portal_writeback_due: false,
        closed: None,
    }
}

/// The writes due at `now`, in the order the writer is offered them.
fn due_at(store: &Store, now: DateTime<Utc>) -> Vec<(String, Urgency)> {
    store
        .due_writes(now, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|pending| (pending.account_id, pending.urgency))
        .collect()
}

#[tokio::test]
async fn pending_writes_come_due_oldest_first_and_a_reopen_keeps_when_each_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).await.unwrap();
    let mapping = "business-onboarding";
    let start = at("2026-11-26T09:00:00Z");
    let second = |seconds: i64| start + chrono::Duration::seconds(seconds);
    // Queued in the reverse of their Id order; one row stays locked.
    let (early, link, late, locked) = (
        "001000000000004AAA",
        "001000000000003AAA",
        "001000000000002AAA",
        "001000000000001AAA",
    );
    for (account_id, urgency, queued_at) in [
        (early, Urgency::Now, second(0)),
        (link, Urgency::MayWait, second(1)),
        (late, Urgency::Now, second(2)),
        (locked, Urgency::Now, second(3)),
    ] {
        store
            .put_link_and_queue(
                &link_with_portal(mapping, account_id, queued_at),
                Some(&fields(json!({ "KYC_Status__c": "Approved" }))),
                urgency,
                queued_at,
            )
            .unwrap();
    }
    let attempted = store.pending_write(locked).unwrap().unwrap();
    store
        .settle_write(
            &attempted,
            &WriteSettlement::Retry {
                not_before: second(60),
                error: "UNABLE_TO_LOCK_ROW".to_owned(),
            },
        )
        .unwrap();
    let owned = |due: &[(&str, Urgency)]| -> Vec<(String, Urgency)> {
        due.iter()
            .map(|(account_id, urgency)| ((*account_id).to_owned(), *urgency))
            .collect()
    };
    let waiting = owned(&[
        (early, Urgency::Now),
        (link, Urgency::MayWait),
        (late, Urgency::Now),
    ]);
    let check = |store: &Store, when: &str| {
        assert_eq!(store.next_write_due(), Some(second(0)), "{when}");
        assert_eq!(
            due_at(store, second(1)),
            owned(&[(early, Urgency::Now), (link, Urgency::MayWait)]),
            "{when}: a write is not due before it was queued"
        );
        assert_eq!(
            due_at(store, second(59)),
            waiting,
            "{when}: the locked row waits for its retry"
        );
        let mut all = waiting.clone();
        all.push((locked.to_owned(), Urgency::Now));
        assert_eq!(due_at(store, second(60)), all, "{when}");
    };
    check(&store, "as queued");

    store.flush().await.unwrap();
    drop(store);
    let store = Store::open(&path).await.unwrap();
    check(&store, "after a reopen");

    // Written ones leave; the retried one is due when its backoff ends.
    for account_id in [early, link, late] {
        let attempted = store.pending_write(account_id).unwrap().unwrap();
        store
            .settle_write(&attempted, &WriteSettlement::Written)
            .unwrap();
    }
    assert_eq!(store.next_write_due(), Some(second(60)));
    assert_eq!(due_at(&store, second(59)), Vec::new());
    assert_eq!(due_at(&store, second(60)), owned(&[(locked, Urgency::Now)]));
}

#[test]
fn closing_a_gone_accounts_links_drops_its_queued_write_in_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_blocking(dir.path()).unwrap();
    let deleted = "001000000000001AAA";
    let mut link = linked_with_write(&store, "business-onboarding", deleted);
    link.closed = Some(LinkClosure {
        reason: "the Account was deleted".to_owned(),
        at: Utc::now(),
        deleted: true,
    });

    store
        .settle_gone_account(deleted, &[GoneLink::Close(link)])
        .unwrap();

    // One store operation: the closed link and the dropped write are seen together.
    assert_eq!(store.pending_write(deleted).unwrap(), None);
    let closed: Vec<Link> = store
        .links_in(LinkState::Closed)
        .map(Result::unwrap)
        .collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].account_id, deleted);
    // A write queued for a closed link afterwards is refused by the store.
    let mut fields = Fields::new();
    fields.insert("KYC_Status__c".to_owned(), json!("Rejected"));
    store
        .put_link_and_queue(&closed[0], Some(&fields), Urgency::Now, Utc::now())
        .unwrap();
    assert_eq!(store.pending_write_count(), 0);
}

#[test]
fn a_link_moved_to_the_master_drops_the_losers_write_and_marks_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_blocking(dir.path()).unwrap();
    let (loser, master) = ("001000000000002AAA", "001000000000003AAA");
    let link = linked_with_write(&store, "business-onboarding", loser);
    let moved = Link {
        account_id: master.to_owned(),
        ..link
    };

    store
        .settle_gone_account(loser, &[GoneLink::Move(moved.clone())])
        .unwrap();

    assert_eq!(store.pending_write(loser).unwrap(), None);
    assert_eq!(store.link("business-onboarding", loser).unwrap(), None);
    assert_eq!(
        store.link("business-onboarding", master).unwrap(),
        Some(moved)
    );
    assert_eq!(
        store
            .link_by_application(&format!("app-{loser}"))
            .unwrap()
            .map(|link| link.account_id),
        Some(master.to_owned())
    );
    let replans = store.replans().unwrap();
    assert_eq!(replans.len(), 1);
    assert_eq!(replans[0].account_id, master);
}
