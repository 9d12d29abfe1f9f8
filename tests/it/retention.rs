//! The journal keeps evidence for the retention and drops noise: pruning is
//! driven directly, with backdated entries and an injected "now", and
//! `explain` shows what is left.

use chrono::{DateTime, Duration, Utc};
use ondorse_bridge::store::{JournalEntry, NOISE_STEPS, PruneReport, Retention, Store};
use ondorse_bridge::sync::operations;
use serde_json::json;

pub(crate) const MAPPING: &str = "business-onboarding";
const DECIDED: &str = "001000000000001AAA";
const WAITING: &str = "001000000000002AAA";

pub(crate) fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2031-06-01T12:00:00Z")
        .unwrap()
        .to_utc()
}

/// A journal entry of the mapping.
pub(crate) fn entry(
    at: DateTime<Utc>,
    step: &str,
    summary: &str,
    detail: serde_json::Value,
) -> JournalEntry {
    JournalEntry::new(
        at,
        Some(MAPPING.to_owned()),
        step,
        summary.to_owned(),
        detail,
    )
}

/// Two Accounts' journals over six years: one decided, one whose portal
/// was never created.
fn seeded(dir: &std::path::Path) -> Store {
    let store = Store::open_blocking(&dir.join("store")).unwrap();
    let now = now();
    let years = |count: i64| now - Duration::days(365 * count);
    let snapshot = json!({ "idempotency_key": "k1", "fields": { "Name": "Dupont SAS", "BillingCountryCode": "FR" } });
    for (at, step, summary, detail) in [
        (
            years(6),
            "intent_recorded",
            "matched; a portal will be created",
            snapshot.clone(),
        ),
        (
            years(6),
            "portal_created",
            "portal p1 created",
            json!({ "request": { "company_name": "Dupont SAS" } }),
        ),
        (
            years(4),
            "application_fetched",
            "application a1 is approved",
            json!({ "status_review": "approved" }),
        ),
        (
            years(4),
            "written",
            "Salesforce accepted 2 field(s)",
            json!({ "fields": { "KYC_Status__c": "Approved" } }),
        ),
        (
            now - Duration::days(60),
            "write_retry",
            "Salesforce answered UNABLE_TO_LOCK_ROW; retried with a growing delay",
            json!({ "code": "UNABLE_TO_LOCK_ROW" }),
        ),
        (
            now - Duration::days(40),
            "application_refresh_failed",
            "application a1 could not be re-fetched: 503",
            serde_json::Value::Null,
        ),
    ] {
        store
            .journal(DECIDED, &entry(at, step, summary, detail))
            .unwrap();
    }
    // A failure that started two months ago and still happens today.
    let failing = entry(
        now - Duration::days(60),
        "application_fetch_failed",
        "fetching application a1 failed: 503",
        json!({ "http_status": 503 }),
    );
    store.journal(DECIDED, &failing).unwrap();
    store
        .journal(
            DECIDED,
            &JournalEntry {
                at: now - Duration::hours(1),
                ..failing
            },
        )
        .unwrap();
    // The other Account's intent still waits for its portal: its fields are
    // what the portal will be created from.
    store
        .journal(
            WAITING,
            &entry(
                now - Duration::days(90),
                "intent_recorded",
                "matched; a portal will be created",
                snapshot,
            ),
        )
        .unwrap();
    store
        .journal(
            WAITING,
            &entry(
                now - Duration::days(89),
                "inbox_parked",
                "ondorse is down; parked",
                serde_json::Value::Null,
            ),
        )
        .unwrap();
    store
}

fn steps(store: &Store, account: &str) -> Vec<String> {
    operations::explain(store, account)
        .expect("explain")
        .journal
        .into_iter()
        .map(|entry| entry.step)
        .collect()
}

#[test]
fn pruning_drops_noise_and_expired_evidence_and_keeps_the_decisions_of_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());

    let report = store.prune_journal(now(), Retention::default()).unwrap();

    assert_eq!(
        report,
        PruneReport {
            evidence: 2,
            noise: 3,
            snapshots: 0,
        }
    );
    // Five years: the six-year-old intent and portal go; the decision and
    // what was written stay; stopped failures go, the ongoing one stays.
    assert_eq!(
        steps(&store, DECIDED),
        ["application_fetched", "written", "application_fetch_failed"]
    );
    let explained = operations::explain(&store, DECIDED).unwrap();
    assert_eq!(
        explained.journal[0].detail["status_review"],
        json!("approved")
    );
    assert_eq!(
        explained.journal[1].detail["fields"]["KYC_Status__c"],
        json!("Approved")
    );
    assert_eq!(explained.journal[2].count, 2);
    // The waiting intent keeps its Account fields: its portal needs them.
    let waiting = operations::explain(&store, WAITING).unwrap().journal;
    assert_eq!(waiting.len(), 1, "{waiting:#?}");
    assert_eq!(waiting[0].detail["fields"]["Name"], json!("Dupont SAS"));

    // A second pass finds nothing more to drop.
    assert_eq!(
        store.prune_journal(now(), Retention::default()).unwrap(),
        PruneReport::default()
    );
}

#[test]
fn kept_forever_evidence_stays_but_the_account_fields_of_an_intent_go_once_its_portal_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());

    let report = store.prune_journal(now(), Retention::from_days(0)).unwrap();

    assert_eq!(report.evidence, 0);
    assert_eq!(report.noise, 3);
    assert_eq!(report.snapshots, 1);
    assert_eq!(
        steps(&store, DECIDED),
        [
            "intent_recorded",
            "portal_created",
            "application_fetched",
            "written",
            "application_fetch_failed"
        ]
    );
    let journal = operations::explain(&store, DECIDED).unwrap().journal;
    // The intent's evidence stays, the Account's personal data goes; what
    // was sent stays in the portal entry.
    assert_eq!(journal[0].detail, json!({ "idempotency_key": "k1" }));
    assert_eq!(
        journal[1].detail["request"]["company_name"],
        json!("Dupont SAS")
    );
    let waiting = operations::explain(&store, WAITING).unwrap().journal;
    assert_eq!(waiting[0].detail["fields"]["Name"], json!("Dupont SAS"));
}

#[test]
fn a_short_retention_drops_evidence_older_than_it_and_every_noisy_step_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = seeded(dir.path());

    store
        .prune_journal(now(), Retention::from_days(30))
        .unwrap();

    assert_eq!(steps(&store, DECIDED), ["application_fetch_failed"]);
    assert!(
        operations::explain(&store, WAITING).is_err(),
        "nothing left"
    );
    for step in [
        "application_fetched",
        "written",
        "portal_created",
        "portal_refused",
        "dead_lettered",
    ] {
        assert!(!NOISE_STEPS.contains(&step), "{step} is evidence");
    }
}

/// What `explain` shows of an Account: each entry's step and count.
fn steps_and_counts(store: &Store, account: &str) -> Vec<(String, u64)> {
    operations::explain(store, account)
        .expect("explain")
        .journal
        .into_iter()
        .map(|entry| (entry.step, entry.count))
        .collect()
}

#[test]
fn a_retry_cycle_keeps_one_entry_per_step_with_its_count_and_pruning_keeps_the_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_blocking(&dir.path().join("store")).unwrap();
    let now = now();
    let account = "001000000000003AAA";
    let journal = |at, step, summary, detail| {
        store
            .journal(account, &entry(at, step, summary, detail))
            .unwrap();
    };
    let in_review = json!({ "status_review": "in_review" });
    let approved = json!({ "status_review": "approved" });
    let written = json!({ "fields": { "KYC_Status__c": "In review" } });
    let fetch_failed = |at| {
        journal(
            at,
            "application_fetch_failed",
            "fetching application a1 failed: 503",
            json!({ "http_status": 503 }),
        );
    };
    journal(
        now - Duration::days(50),
        "application_fetched",
        "application a1 is in review",
        in_review,
    );
    journal(
        now - Duration::days(50),
        "written",
        "Salesforce accepted 1 field(s)",
        written,
    );
    // Forty days ago Ondorse failed for two hours: each attempt journals a
    // failed fetch, then the webhook parked, in turn.
    for attempt in 0..60 {
        let at = now - Duration::days(40) + Duration::minutes(2 * attempt);
        fetch_failed(at);
        journal(
            at,
            "inbox_parked",
            "application a1: http 503; parked, retried later with a growing delay",
            serde_json::Value::Null,
        );
    }
    journal(
        now - Duration::days(39),
        "application_fetched",
        "application a1 is approved",
        approved,
    );
    journal(
        now - Duration::days(39),
        "written",
        "Salesforce accepted 1 field(s)",
        json!({ "fields": { "KYC_Status__c": "Approved" } }),
    );
    // Yesterday the write-back of a later change kept failing, and a
    // reconcile's fetch failed too: a failure after the decision is a new
    // entry, not a count on the one before it.
    for attempt in 0..30 {
        let at = now - Duration::days(1) + Duration::minutes(attempt);
        journal(
            at,
            "write_call_failed",
            "the write-back call failed: http 503; kept queued while the writer pauses",
            json!({ "fields": { "KYC_Risk__c": "low" }, "http_status": 503 }),
        );
        journal(
            at,
            "write_retry",
            "Salesforce answered UNABLE_TO_LOCK_ROW; retried with a growing delay",
            json!({ "code": "UNABLE_TO_LOCK_ROW" }),
        );
        fetch_failed(at);
    }

    let owned = |pairs: &[(&str, u64)]| {
        pairs
            .iter()
            .map(|(step, count)| ((*step).to_owned(), *count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        steps_and_counts(&store, account),
        owned(&[
            ("application_fetched", 1),
            ("written", 1),
            ("application_fetch_failed", 60),
            ("inbox_parked", 60),
            ("application_fetched", 1),
            ("written", 1),
            ("write_call_failed", 30),
            ("write_retry", 30),
            ("application_fetch_failed", 30),
        ])
    );

    let report = store.prune_journal(now, Retention::default()).unwrap();

    assert_eq!(
        report,
        PruneReport {
            evidence: 0,
            noise: 2,
            snapshots: 0,
        }
    );
    // The outage of forty days ago is gone; both decisions and what was
    // written stay, and so does yesterday's failure, with its count.
    assert_eq!(
        steps_and_counts(&store, account),
        owned(&[
            ("application_fetched", 1),
            ("written", 1),
            ("application_fetched", 1),
            ("written", 1),
            ("write_call_failed", 30),
            ("write_retry", 30),
            ("application_fetch_failed", 30),
        ])
    );
    let journal = operations::explain(&store, account).unwrap().journal;
    assert_eq!(journal[2].detail["status_review"], json!("approved"));
    assert_eq!(
        journal[6].last_at,
        Some(now - Duration::days(1) + Duration::minutes(29))
    );
}
