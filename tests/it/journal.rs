//! The journal is stored in chunks of entries (a few sled values per
//! Account, not one per entry) and reads exactly as it was journaled:
//! order, repeat counts, `explain`, pruning, concurrent appends and a store
//! written one entry per value by an earlier version.

use chrono::{DateTime, Duration, Utc};
use ondorse_bridge::store::{JOURNAL_CHUNK_BYTES, JournalEntry, PruneReport, Retention, Store};
use ondorse_bridge::sync::operations;
use serde_json::json;

use crate::retention::{entry, now};
use crate::support::raw_sled_after_release;

/// The Salesforce id of test Account `number`.
fn account(number: u32) -> String {
    format!("001{number:012}AAA")
}

/// What a decided Account journals, in order: its intent with the Account
/// read, the portal with what was sent and answered, the link written, the
/// application fetched, the decision written.
fn typical_history(at: DateTime<Utc>, name: &str) -> Vec<JournalEntry> {
    let fields = json!({ "Name": name, "BillingCountryCode": "FR", "BillingCity": "Lyon", "Website": "https://example.com" });
    vec![
        entry(
            at,
            "intent_recorded",
            "matched; a portal will be created",
            json!({ "idempotency_key": format!("key-{name}"), "fields": fields }),
        ),
        entry(
            at + Duration::seconds(1),
            "portal_created",
            "portal created",
            json!({ "request": { "company_name": name, "country": "FR" }, "answer": { "id": format!("portal-{name}"), "url": format!("https://kyc.example.com/p/{name}"), "status": "pending" } }),
        ),
        entry(
            at + Duration::seconds(2),
            "write_queued",
            "1 field(s) queued for Salesforce",
            json!({ "fields": { "KYC_Portal_URL__c": format!("https://kyc.example.com/p/{name}") } }),
        ),
        entry(
            at + Duration::seconds(3),
            "written",
            "Salesforce accepted 1 field(s)",
            json!({ "fields": { "KYC_Portal_URL__c": format!("https://kyc.example.com/p/{name}") } }),
        ),
        entry(
            at + Duration::seconds(4),
            "application_fetched",
            "application is approved",
            json!({ "status_review": "approved", "id": format!("application-{name}") }),
        ),
        entry(
            at + Duration::seconds(5),
            "write_queued",
            "2 field(s) queued for Salesforce",
            json!({ "fields": { "KYC_Status__c": "Approved", "KYC_Risk__c": "low" } }),
        ),
        entry(
            at + Duration::seconds(6),
            "written",
            "Salesforce accepted 2 field(s)",
            json!({ "fields": { "KYC_Status__c": "Approved", "KYC_Risk__c": "low" } }),
        ),
    ]
}

/// How many sled values the journal holds for each Account, read from the
/// store's files once the store is closed.
async fn stored_values(path: &std::path::Path, accounts: &[String]) -> Vec<usize> {
    let db = raw_sled_after_release(path).await;
    let journal = db.open_tree("journal").unwrap();
    let counts = accounts
        .iter()
        .map(|account| {
            let mut prefix = account.as_bytes().to_vec();
            prefix.push(0);
            journal.scan_prefix(prefix).count()
        })
        .collect();
    drop(journal);
    drop(db);
    counts
}

fn explained(store: &Store, account: &str) -> Vec<JournalEntry> {
    operations::explain(store, account)
        .expect("explain")
        .journal
}

#[tokio::test]
async fn a_typical_accounts_history_is_one_stored_value_and_explain_shows_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).await.unwrap();
    let accounts: Vec<String> = (1..=3).map(account).collect();
    let histories: Vec<Vec<JournalEntry>> = accounts
        .iter()
        .enumerate()
        .map(|(index, id)| typical_history(now() + Duration::minutes(index as i64), id))
        .collect();
    // The Accounts are worked on together, as the engine does.
    for step in 0..histories[0].len() {
        for (id, history) in accounts.iter().zip(&histories) {
            store.journal(id, &history[step]).unwrap();
        }
    }

    for (id, history) in accounts.iter().zip(&histories) {
        assert_eq!(&explained(&store, id), history);
    }
    drop(store);
    assert_eq!(stored_values(&path, &accounts).await, [1, 1, 1]);
}

#[tokio::test]
async fn a_long_history_takes_a_few_stored_values_and_keeps_its_order() {
    const ENTRIES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).await.unwrap();
    let id = account(7);
    let history: Vec<JournalEntry> = (0..ENTRIES)
        .map(|index| {
            entry(
                now() + Duration::minutes(index as i64),
                "application_fetched",
                &format!("application a1 fetched, revision {index}"),
                json!({ "revision": index }),
            )
        })
        .collect();
    for item in &history {
        store.journal(&id, item).unwrap();
    }

    assert_eq!(explained(&store, &id), history);
    drop(store);
    let values = stored_values(&path, std::slice::from_ref(&id)).await[0];
    assert!(
        (2..=ENTRIES / 10).contains(&values),
        "{ENTRIES} entries in {values} values"
    );
}

#[tokio::test]
async fn a_repeated_failure_counts_on_its_entry_in_the_chunk_before_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).await.unwrap();
    let id = account(8);
    let at = now();
    let fetch_failed = |at| {
        entry(
            at,
            "application_fetch_failed",
            "fetching application a1 failed: 503",
            json!({ "http_status": 503 }),
        )
    };
    let parked = |at| {
        entry(
            at,
            "inbox_parked",
            "application a1: http 503; parked, retried later with a growing delay",
            serde_json::Value::Null,
        )
    };
    // Evidence just large enough that the failed fetch fills its chunk and
    // the parked webhook starts the next one.
    let length = |item: &JournalEntry| serde_json::to_vec(item).unwrap().len();
    let padded = |padding: usize| {
        entry(
            at,
            "application_fetched",
            "application a1 is in review",
            json!({ "status_review": "in_review", "note": "x".repeat(padding) }),
        )
    };
    let room = JOURNAL_CHUNK_BYTES - 1 - length(&fetch_failed(at));
    let evidence = padded(room - length(&padded(0)));
    assert_eq!(length(&evidence), room);
    store.journal(&id, &evidence).unwrap();
    for minutes in 0..20 {
        let at = at + Duration::minutes(minutes);
        store.journal(&id, &fetch_failed(at)).unwrap();
        store.journal(&id, &parked(at)).unwrap();
    }

    let journal = explained(&store, &id);
    let steps: Vec<(&str, u64)> = journal
        .iter()
        .map(|item| (item.step.as_str(), item.count))
        .collect();
    assert_eq!(
        steps,
        [
            ("application_fetched", 1),
            ("application_fetch_failed", 20),
            ("inbox_parked", 20),
        ]
    );
    assert_eq!(journal[1].last_at, Some(at + Duration::minutes(19)));
    drop(store);
    assert_eq!(stored_values(&path, &[id]).await, [2]);
}

#[tokio::test]
async fn appends_racing_on_one_account_all_land_each_writer_in_its_own_order() {
    const WRITERS: usize = 4;
    const EACH: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).await.unwrap();
    let id = account(9);
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let (store, id) = (&store, &id);
            scope.spawn(move || {
                for index in 0..EACH {
                    let item = entry(
                        now(),
                        "written",
                        &format!("writer {writer} wrote {index}"),
                        json!({ "writer": writer, "index": index }),
                    );
                    store.journal(id, &item).unwrap();
                }
            });
        }
    });

    let journal = explained(&store, &id);
    assert_eq!(journal.len(), WRITERS * EACH);
    for writer in 0..WRITERS {
        let indexes: Vec<u64> = journal
            .iter()
            .filter(|item| item.detail["writer"] == json!(writer))
            .map(|item| item.detail["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, (0..EACH as u64).collect::<Vec<_>>());
    }
    assert!(journal.iter().all(|item| item.count == 1));
}

#[tokio::test]
async fn a_journal_stored_one_entry_per_value_reads_in_order_takes_appends_and_is_packed_by_pruning()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // A store of the earlier version: each entry its own value, under
    // `account \0 sequence`, the sequence from sled's id generator.
    drop(Store::open(&path).await.unwrap());
    let id = account(10);
    let at = now() - Duration::days(60);
    let mut history = typical_history(at, &id);
    history.push(entry(
        at + Duration::days(1),
        "write_retry",
        "Salesforce answered UNABLE_TO_LOCK_ROW; retried with a growing delay",
        json!({ "code": "UNABLE_TO_LOCK_ROW" }),
    ));
    let failing = entry(
        now() - Duration::days(2),
        "application_refresh_failed",
        "application a1 could not be re-fetched: 503",
        json!({ "http_status": 503 }),
    );
    history.push(failing.clone());
    {
        let db = raw_sled_after_release(&path).await;
        let journal = db.open_tree("journal").unwrap();
        for item in &history {
            let mut key = id.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(&db.generate_id().unwrap().to_be_bytes());
            journal
                .insert(key, serde_json::to_vec(item).unwrap())
                .unwrap();
        }
        db.flush().unwrap();
    }
    let store = Store::open(&path).await.unwrap();
    assert_eq!(explained(&store, &id), history);

    // The same failure again counts on its entry; a new event goes last.
    store
        .journal(
            &id,
            &JournalEntry {
                at: now() - Duration::days(1),
                ..failing.clone()
            },
        )
        .unwrap();
    let fetched = entry(
        now(),
        "application_fetched",
        "application a1 is approved",
        json!({ "status_review": "approved" }),
    );
    store.journal(&id, &fetched).unwrap();
    let journal = explained(&store, &id);
    assert_eq!(journal.len(), history.len() + 1);
    assert_eq!(journal[..history.len() - 1], history[..history.len() - 1]);
    assert_eq!(journal[history.len() - 1].count, 2);
    assert_eq!(
        journal[history.len() - 1].last_at,
        Some(now() - Duration::days(1))
    );
    assert_eq!(journal[history.len()], fetched);

    // Pruning drops the stopped retry and the intent's Account fields, and
    // packs what is left into one value.
    let report = store.prune_journal(now(), Retention::default()).unwrap();
    assert_eq!(
        report,
        PruneReport {
            evidence: 0,
            noise: 1,
            snapshots: 1,
        }
    );
    let pruned = explained(&store, &id);
    let steps: Vec<&str> = pruned.iter().map(|item| item.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "intent_recorded",
            "portal_created",
            "write_queued",
            "written",
            "application_fetched",
            "write_queued",
            "written",
            "application_refresh_failed",
            "application_fetched",
        ]
    );
    assert_eq!(
        pruned[0].detail,
        json!({ "idempotency_key": format!("key-{id}") })
    );
    assert_eq!(pruned[1], history[1]);
    assert_eq!(pruned[7].count, 2);
    assert_eq!(
        store.prune_journal(now(), Retention::default()).unwrap(),
        PruneReport::default()
    );
    drop(store);
    assert_eq!(stored_values(&path, &[id]).await, [1]);
}

#[tokio::test]
async fn pruning_an_account_spread_over_chunks_keeps_the_evidence_in_order_in_fewer_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).await.unwrap();
    let id = account(11);
    let old = now() - Duration::days(90);
    // Decisions interleaved with failures whose details are large: each
    // failure is noise once it stopped, and the decisions stay.
    let mut decisions = Vec::new();
    for round in 0..12 {
        let at = old + Duration::hours(round);
        store
            .journal(
                &id,
                &entry(
                    at,
                    "write_call_failed",
                    &format!("the write-back call failed, round {round}"),
                    json!({ "http_status": 503, "body": "y".repeat(JOURNAL_CHUNK_BYTES / 3) }),
                ),
            )
            .unwrap();
        let decision = entry(
            at,
            "application_fetched",
            &format!("application a1 reviewed, round {round}"),
            json!({ "round": round }),
        );
        store.journal(&id, &decision).unwrap();
        decisions.push(decision);
    }
    drop(store);
    let before = stored_values(&path, std::slice::from_ref(&id)).await[0];
    let store = Store::open(&path).await.unwrap();

    let report = store.prune_journal(now(), Retention::default()).unwrap();

    assert_eq!(report.noise, 12);
    assert_eq!(report.evidence, 0);
    assert_eq!(explained(&store, &id), decisions);
    drop(store);
    let after = stored_values(&path, std::slice::from_ref(&id)).await[0];
    assert!(before >= 4, "the failures spread over {before} values");
    assert_eq!(after, 1, "12 small decisions fit one value");
}

#[tokio::test]
async fn an_unreadable_entry_in_a_chunk_is_reported_with_its_place_in_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(Store::open(&path).await.unwrap());
    let id = account(12);
    {
        let db = raw_sled_after_release(&path).await;
        let mut key = id.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&db.generate_id().unwrap().to_be_bytes());
        let mut value = serde_json::to_vec(&typical_history(now(), &id)[0]).unwrap();
        value.extend_from_slice(b"\n{\"at\":");
        db.open_tree("journal").unwrap().insert(key, value).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(&path).await.unwrap();

    let error = operations::explain(&store, &id)
        .expect_err("a chunk with a broken entry")
        .to_string();

    assert!(error.contains("keyspace journal"), "{error}");
    assert!(error.contains("(entry 2)"), "{error}");
}
