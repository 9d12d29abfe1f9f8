//! The Ondorse event ids already accepted and the application index are
//! kept in a bounded number of stored values (buckets), not one value per
//! id, and a store written one value per id by an earlier version keeps
//! telling redeliveries apart and finding links by their application.

use chrono::{Duration, Utc};
use ondorse_bridge::ondorse::webhook::{WebhookEnvelope, parse_envelope};
use ondorse_bridge::store::{Accepted, Store};

use crate::large_store::link;
use crate::retention::now;
use crate::support::raw_sled_after_release;

/// At most this many values hold the seen event ids, however many there are.
const MOST_VALUES: usize = 16_384;

fn envelope(event_id: &str) -> WebhookEnvelope {
    parse_envelope(
        format!(r#"{{"event_id":"{event_id}","type":"application.updated","data":{{"object":{{"id":"app_1"}}}}}}"#)
            .as_bytes(),
    )
    .unwrap()
}

#[tokio::test]
async fn seen_event_ids_stored_one_per_value_are_moved_into_buckets_and_stay_duplicates() {
    const IDS: usize = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(Store::open(&path).await.unwrap());
    // A store of the earlier version: one value per id, the instant it was
    // accepted as big-endian milliseconds.
    let recent = now() - Duration::hours(1);
    let old = now() - Duration::days(3);
    {
        let db = raw_sled_after_release(&path).await;
        let legacy = db.open_tree("seen_events").unwrap();
        for index in 0..IDS {
            legacy
                .insert(
                    format!("evt_{index:05}"),
                    &recent.timestamp_millis().to_be_bytes(),
                )
                .unwrap();
        }
        legacy
            .insert("evt_old", &old.timestamp_millis().to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }

    let store = Store::open(&path).await.unwrap();

    // Every id is still known, and ids never seen are stored, though most
    // share a bucket with ids seen before (40,000 ids fill most buckets).
    for index in (0..IDS).step_by(397) {
        let event_id = format!("evt_{index:05}");
        assert_eq!(
            store
                .accept_webhook(&envelope(&event_id), now())
                .await
                .unwrap(),
            Accepted::Duplicate,
            "{event_id}"
        );
    }
    for index in 0..100 {
        let event_id = format!("evt_new_{index}");
        assert!(
            matches!(
                store
                    .accept_webhook(&envelope(&event_id), now())
                    .await
                    .unwrap(),
                Accepted::Stored { .. }
            ),
            "{event_id}"
        );
    }
    // The retention still holds: only the id accepted three days ago goes.
    assert_eq!(store.prune_seen_events(now()).unwrap(), 1);
    assert!(matches!(
        store
            .accept_webhook(&envelope("evt_old"), now())
            .await
            .unwrap(),
        Accepted::Stored { .. }
    ));
    assert_eq!(
        store
            .accept_webhook(&envelope("evt_new_7"), now())
            .await
            .unwrap(),
        Accepted::Duplicate
    );
    drop(store);

    let db = raw_sled_after_release(&path).await;
    let names: Vec<String> = db
        .tree_names()
        .iter()
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    assert!(!names.contains(&"seen_events".to_owned()), "{names:?}");
    let buckets = db.open_tree("seen_event_buckets").unwrap().len();
    assert!(
        (1..=MOST_VALUES).contains(&buckets),
        "{} ids in {buckets} values",
        IDS + 101
    );
}

#[tokio::test]
async fn an_application_index_stored_one_value_per_id_is_moved_into_buckets_and_finds_every_link() {
    const LINKS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let at = Utc::now() - Duration::days(1);
    let links: Vec<_> = (0..LINKS).map(|index| link(index, at)).collect();
    let store = Store::open(&path).await.unwrap();
    for link in &links {
        store.put_link(link).unwrap();
    }
    drop(store);
    // The index as an earlier version kept it: application id → link key
    // (`account \0 mapping`), one value each.
    {
        let db = raw_sled_after_release(&path).await;
        db.open_tree("application_buckets")
            .unwrap()
            .clear()
            .unwrap();
        let legacy = db.open_tree("applications").unwrap();
        for link in &links {
            let application_id = link.application_id.as_deref().unwrap();
            let key = format!("{}\0{}", link.account_id, link.mapping);
            legacy.insert(application_id, key.as_bytes()).unwrap();
        }
        db.flush().unwrap();
    }

    let store = Store::open(&path).await.unwrap();

    for link in &links {
        let application_id = link.application_id.as_deref().unwrap();
        assert_eq!(
            store.link_by_application(application_id).unwrap().as_ref(),
            Some(link),
            "{application_id}"
        );
    }
    assert_eq!(store.link_by_application("app_never_seen").unwrap(), None);
    // A link whose application changes is found by its new id.
    let mut changed = links[7].clone();
    changed.application_id = Some("app_resubmitted_7".to_owned());
    store.put_link(&changed).unwrap();
    assert_eq!(
        store.link_by_application("app_resubmitted_7").unwrap(),
        Some(changed)
    );
    drop(store);
    let db = raw_sled_after_release(&path).await;
    assert!(
        !db.tree_names()
            .iter()
            .any(|name| name == b"applications".as_slice()),
        "the earlier keyspace is dropped"
    );
    let buckets = db.open_tree("application_buckets").unwrap().len();
    // 301 ids: the 300 links' and the resubmitted one.
    assert!((1..=LINKS + 1).contains(&buckets), "{buckets} values");
}
