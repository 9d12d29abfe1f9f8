//! Which collect events open or close the collect (documents requested),
//! and in which order they count: the time Ondorse raised them.

use chrono::{DateTime, Utc};

use crate::ondorse::webhook::EventType;
use crate::store::CollectChange;

/// What an Ondorse event says about the application's collect, if
/// anything: `collect.opened` opens it; `collect.closed` and
/// `application.submitted` (the applicant sending the documents, or
/// submitting again) close it, and the case is back in review. Timed by the
/// event's `created_at`, else by when we received it: delivery order is not
/// guaranteed, the time Ondorse raised it is.
pub fn collect_change(
    kind: &EventType,
    created_at: Option<&str>,
    received_at: DateTime<Utc>,
) -> Option<CollectChange> {
    let open = match kind {
        EventType::CollectOpened => true,
        EventType::CollectClosed | EventType::ApplicationSubmitted => false,
        _ => return None,
    };
    let at = created_at
        .and_then(|created_at| DateTime::parse_from_rfc3339(created_at).ok())
        .map_or(received_at, |created_at| created_at.with_timezone(&Utc));
    Some(CollectChange { open, at })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::mapping::Moment;
    use crate::store::Link;
    use crate::sync::plan::reached;

    #[test]
    fn the_latest_collect_event_raised_decides_whether_documents_are_requested() {
        let received = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("a time")
                .with_timezone(&Utc)
        };
        let opened_at = "2026-11-26T09:00:00.000001Z";
        let closed_at = "2026-11-26T10:00:00.000002Z";
        for (kind, created_at, expected) in [
            (
                "collect.opened",
                Some(opened_at),
                Some(CollectChange {
                    open: true,
                    at: at(opened_at),
                }),
            ),
            (
                "collect.closed",
                Some(closed_at),
                Some(CollectChange {
                    open: false,
                    at: at(closed_at),
                }),
            ),
            (
                "application.submitted",
                Some(closed_at),
                Some(CollectChange {
                    open: false,
                    at: at(closed_at),
                }),
            ),
            // Without a usable time, the time we received it orders it.
            (
                "collect.opened",
                None,
                Some(CollectChange {
                    open: true,
                    at: received,
                }),
            ),
            (
                "collect.closed",
                Some("yesterday"),
                Some(CollectChange {
                    open: false,
                    at: received,
                }),
            ),
            ("application.review_updated", Some(closed_at), None),
            ("application.updated", None, None),
            ("webhooks.test", None, None),
        ] {
            assert_eq!(
                collect_change(&EventType::parse(kind), created_at, received),
                expected,
                "{kind} at {created_at:?}"
            );
        }

        let opened = CollectChange {
            open: true,
            at: at(opened_at),
        };
        let closed = CollectChange {
            open: false,
            at: at(closed_at),
        };
        assert_eq!(
            CollectChange::latest(Some(opened), Some(closed)),
            Some(closed)
        );
        assert_eq!(
            CollectChange::latest(Some(closed), Some(opened)),
            Some(closed)
        );
        assert_eq!(CollectChange::latest(None, Some(opened)), Some(opened));
        assert_eq!(CollectChange::latest(Some(opened), None), Some(opened));

        let mut link: Link = serde_json::from_value(json!({
            "mapping": "table",
            "account_id": "001000000000001AAA",
            "idempotency_key": "key",
            "intent_at": "2026-11-25T08:00:00Z",
            "portal": null,
            "application_id": "app_1",
            "collect_opened": true,
            "account": { "Id": "001000000000001AAA" },
        }))
        .expect("a link stored before collect times were kept");
        assert!(
            link.apply_collect(closed),
            "any event moves a link with no time"
        );
        assert!(!link.collect_opened);
        assert!(
            !link.apply_collect(opened),
            "an opening raised before the close is late"
        );
        assert!(!link.collect_opened);
        let reopened = CollectChange {
            open: true,
            at: at("2026-11-26T11:00:00Z"),
        };
        assert!(link.apply_collect(reopened));
        assert_eq!(reached(&link), Some(Moment::CollectOpened));
    }
}
