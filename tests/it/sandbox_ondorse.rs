//! The sandbox Ondorse against the Ondorse API's documented behaviour: shapes, status codes,
//! error shapes, idempotency, auth variants, and the webhook journey
//! (delivery, retries, duplicates, reordering, signatures).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ondorse_bridge::ondorse::webhook::{
    DEFAULT_SIGNATURE_TOLERANCE, parse_envelope, verify_signature,
};
use ondorse_sandbox::ondorse::{OndorseSandbox, OndorseSandboxOptions};
use serde_json::{Value, json};

use crate::support::ondorse::{DEADLINE, WebhookReceiver, start_ondorse};
use crate::support::world::eventually;

/// `POST /api/portals` with raw HTTP, so the test sees exactly the wire.
async fn post_portal(
    sandbox: &OndorseSandbox,
    authorization: Option<&str>,
    idempotency_key: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/api/portals", sandbox.base_url()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("sandbox answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, json_or_null(response).await)
}

async fn get_application(sandbox: &OndorseSandbox, id: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}/api/applications/{id}", sandbox.base_url()))
        .bearer_auth(&sandbox.options().api_key)
        .send()
        .await
        .expect("sandbox answers");
    (response.status().as_u16(), json_or_null(response).await)
}

/// The answer's JSON body; `Null` for an empty body (a gateway's answer).
async fn json_or_null(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.expect("sandbox answers a body");
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("json answer")
    }
}

fn bearer(sandbox: &OndorseSandbox) -> String {
    format!("Bearer {}", sandbox.options().api_key)
}

fn is_ondorse_timestamp(value: &Value) -> bool {
    let text = value.as_str().unwrap_or_default();
    text.ends_with('Z')
        && text.split('.').nth(1).map(|fraction| fraction.len()) == Some(7)
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

/// The keys of a JSON object answer, in the order they came.
fn keys_of(answer: &Value) -> Vec<&str> {
    answer
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn is_hex_id(value: &Value, prefix: &str) -> bool {
    value.as_str().is_some_and(|id| {
        id.strip_prefix(prefix)
            .is_some_and(|hex| hex.len() >= 16 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
    })
}

#[tokio::test]
async fn portal_answer_and_stored_portal_follow_the_contract() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let body = json!({
        "type": "business",
        "redirect_url": "https://app.example.com/kyc/done?account=001A",
        "default_custom_fields": {"salesforce_account_id": "001A", "employees": 12, "vip": true},
        "language": "fr"
    });
    let (status, _, portal) =
        post_portal(&sandbox, Some(&bearer(&sandbox)), None, &body.to_string()).await;
    assert_eq!(status, 201);
    assert_eq!(keys_of(&portal), ["id", "link", "url", "created_at"]);
    assert!(is_hex_id(&portal["id"], "prt_"), "{portal}");
    let link = portal["link"].as_str().expect("link");
    assert_eq!(link.len(), 10);
    assert!(link.bytes().all(|byte| byte.is_ascii_alphanumeric()));
    assert_eq!(
        portal["url"],
        json!(format!("https://collect.ondorse.co/portals/{link}"))
    );
    assert!(is_ondorse_timestamp(&portal["created_at"]), "{portal}");

    let stored = sandbox
        .portal(portal["id"].as_str().expect("id"))
        .expect("stored");
    assert_eq!(stored["type"], json!("business"));
    assert_eq!(stored["language"], json!("fr"));
    assert_eq!(
        stored["default_custom_fields"],
        body["default_custom_fields"]
    );
    assert_eq!(stored["redirect_url"], body["redirect_url"]);
    assert_eq!(sandbox.portals(), vec![stored]);
    assert_eq!(sandbox.stats().portals_created, 1);
}

#[tokio::test]
async fn portal_answers_can_leave_out_the_url_and_link_while_the_portal_keeps_them() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    sandbox.omit_from_portal_answers(&["url", "link"]);
    let body = json!({
        "type": "business",
        "default_custom_fields": {"salesforce_account_id": "001A"}
    });
    let (status, _, portal) =
        post_portal(&sandbox, Some(&bearer(&sandbox)), None, &body.to_string()).await;
    assert_eq!(status, 201);
    assert_eq!(keys_of(&portal), ["id", "created_at"]);
    let stored = sandbox
        .portal(portal["id"].as_str().expect("id"))
        .expect("stored");
    assert!(
        stored["url"].is_string() && stored["link"].is_string(),
        "{stored}"
    );

    sandbox.omit_from_portal_answers(&[]);
    let (_, _, portal) =
        post_portal(&sandbox, Some(&bearer(&sandbox)), None, &body.to_string()).await;
    assert!(portal["url"].is_string(), "{portal}");
}

#[tokio::test]
async fn invalid_portal_bodies_get_422_with_locations() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let auth = bearer(&sandbox);
    for (body, location) in [
        (r#"{"redirect_url": 5}"#, json!(["body", "redirect_url"])),
        (
            r#"{"redirect_url": "not a url"}"#,
            json!(["body", "redirect_url"]),
        ),
        (
            r#"{"default_custom_fields": ["a"]}"#,
            json!(["body", "default_custom_fields"]),
        ),
        (
            r#"{"default_custom_fields": {"nested": {"a": 1}}}"#,
            json!(["body", "default_custom_fields", "nested"]),
        ),
        (r#"{"type": "robot"}"#, json!(["body", "type"])),
        (r#"[1, 2]"#, json!(["body"])),
        (r#"{"unterminated": "#, json!(["body"])),
    ] {
        let (status, _, answer) = post_portal(&sandbox, Some(&auth), None, body).await;
        assert_eq!(status, 422, "{body}");
        let detail = &answer["detail"][0];
        assert_eq!(detail["loc"], location, "{body} → {answer}");
        assert!(
            detail["msg"].as_str().is_some_and(|msg| !msg.is_empty()),
            "{answer}"
        );
        assert!(detail["type"].is_string(), "{answer}");
    }
    assert!(sandbox.portals().is_empty());
}

#[tokio::test]
async fn idempotency_key_replays_the_first_portal_and_refuses_another_body() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let auth = bearer(&sandbox);
    let body = r#"{"type":"person","default_custom_fields":{"salesforce_account_id":"001B"}}"#;
    let (first_status, _, first) = post_portal(&sandbox, Some(&auth), Some("intent-1"), body).await;
    let (second_status, headers, second) =
        post_portal(&sandbox, Some(&auth), Some("intent-1"), body).await;
    assert_eq!((first_status, second_status), (201, 201));
    assert_eq!(first, second);
    assert_eq!(headers["idempotent-replayed"], "true");

    let other = r#"{"type":"person","default_custom_fields":{"salesforce_account_id":"001C"}}"#;
    let (status, _, conflict) = post_portal(&sandbox, Some(&auth), Some("intent-1"), other).await;
    assert_eq!(status, 422);
    assert_eq!(
        conflict["detail"][0]["loc"],
        json!(["header", "Idempotency-Key"])
    );
    assert!(
        conflict["detail"][0]["msg"]
            .as_str()
            .expect("msg")
            .contains("intent-1")
    );

    assert_eq!(sandbox.portals().len(), 1);
    let stats = sandbox.stats();
    assert_eq!(
        (
            stats.portal_posts,
            stats.portals_created,
            stats.idempotent_replays
        ),
        (3, 1, 1)
    );
}

#[tokio::test]
async fn idempotency_key_can_be_ignored_like_a_server_that_does_not_honour_it() {
    let sandbox = start_ondorse(OndorseSandboxOptions {
        honour_idempotency_key: false,
        ..OndorseSandboxOptions::default()
    })
    .await;
    let auth = bearer(&sandbox);
    let (_, _, first) = post_portal(&sandbox, Some(&auth), Some("k"), "{}").await;
    let (_, _, second) = post_portal(&sandbox, Some(&auth), Some("k"), "{}").await;
    assert_ne!(first["id"], second["id"]);
    assert_eq!(sandbox.portals().len(), 2);
}

#[tokio::test]
async fn api_key_is_checked_in_the_configured_header_and_scheme() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some(sandbox.options().api_key.as_str()),
    ] {
        let (status, _, answer) = post_portal(&sandbox, authorization, None, "{}").await;
        assert_eq!(status, 401, "{authorization:?}");
        assert_eq!(answer, json!({"detail": "Invalid API key"}));
    }

    let bare = start_ondorse(OndorseSandboxOptions {
        auth_header: "X-API-Key".to_owned(),
        auth_scheme: String::new(),
        ..OndorseSandboxOptions::default()
    })
    .await;
    let answer = |header: &'static str, value: String| {
        let url = format!("{}/api/portals", bare.base_url());
        async move {
            reqwest::Client::new()
                .post(url)
                .header(header, value)
                .json(&json!({}))
                .send()
                .await
                .expect("answers")
                .status()
                .as_u16()
        }
    };
    let key = bare.options().api_key.clone();
    assert_eq!(answer("x-api-key", key.clone()).await, 201);
    assert_eq!(answer("x-api-key", format!("Bearer {key}")).await, 401);
    assert_eq!(answer("authorization", format!("Bearer {key}")).await, 401);
    assert_eq!(bare.stats().unauthorized, 2);
}

#[tokio::test]
async fn applications_follow_the_contract_and_unknown_ids_are_404() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let (status, missing) = get_application(&sandbox, "app_nope").await;
    assert_eq!((status, missing), (404, json!({"detail": "Not found"})));

    let auth = bearer(&sandbox);
    let body = json!({"type": "business", "default_custom_fields": {
        "salesforce_account_id": "001D", "company_name": "Acme SAS", "country": "FR", "local_number": "552100554"}});
    let (_, _, portal) = post_portal(&sandbox, Some(&auth), None, &body.to_string()).await;
    let application_id = sandbox
        .submit_portal(portal["id"].as_str().expect("id"))
        .expect("portal exists");
    let (status, application) = get_application(&sandbox, &application_id).await;
    assert_eq!(status, 200);
    assert!(is_hex_id(&application["id"], "app_"), "{application}");
    assert_eq!(application["status_review"], Value::Null);
    assert_eq!(application["risk_level"], json!(-1));
    assert_eq!(application["risk_score"], Value::Null);
    assert_eq!(application["custom_fields"], body["default_custom_fields"]);
    assert_eq!(
        application["business"],
        json!({"organization_name": "Acme SAS", "country": "FR", "local_number": "552100554"})
    );
    assert!(is_ondorse_timestamp(&application["created_at"]));
    assert!(is_ondorse_timestamp(&application["updated_at"]));
    assert!(application.get("portals").is_none());
    // A portal is submitted once.
    assert_eq!(
        sandbox.submit_portal(portal["id"].as_str().expect("id")),
        Some(application_id.clone())
    );
    assert_eq!(sandbox.applications().len(), 1);

    sandbox.review(&application_id, "approved", 1, Some(42.5));
    let (_, reviewed) = get_application(&sandbox, &application_id).await;
    assert_eq!(reviewed["status_review"], json!("approved"));
    assert_eq!(reviewed["status_execution"], json!("done"));
    assert_eq!(
        (
            reviewed["risk_level"].clone(),
            reviewed["risk_score"].clone()
        ),
        (json!(1), json!(42.5))
    );

    let link = sandbox
        .open_collect(&application_id)
        .expect("application exists");
    let (_, collecting) = get_application(&sandbox, &application_id).await;
    assert_eq!(collecting["portals"]["link"], json!(link));
    assert!(sandbox.close_collect(&application_id));
    let (_, resubmitted) = get_application(&sandbox, &application_id).await;
    assert!(resubmitted.get("portals").is_none(), "{resubmitted}");
    let last_event = sandbox.events().pop().expect("events were raised");
    assert_eq!(last_event["type"], json!("collect.closed"));
    assert!(
        !sandbox.close_collect(&application_id),
        "a closed collect closes once"
    );
    assert!(!sandbox.close_collect("app_unknown"));

    let person = json!({"type": "person", "default_custom_fields": {"first_name": "Ada", "last_name": "Lovelace"}});
    let (_, _, portal) = post_portal(&sandbox, Some(&auth), None, &person.to_string()).await;
    let person_id = sandbox
        .submit_portal(portal["id"].as_str().expect("id"))
        .expect("exists");
    let (_, person_application) = get_application(&sandbox, &person_id).await;
    assert_eq!(person_application["person"]["first_name"], json!("Ada"));
    assert_eq!(person_application["person"]["last_name"], json!("Lovelace"));
    assert!(person_application.get("business").is_none());
    assert_eq!(sandbox.stats().application_gets, 6);
}

async fn sandbox_with_receiver(
    options: OndorseSandboxOptions,
) -> (OndorseSandbox, WebhookReceiver) {
    let receiver = WebhookReceiver::start().await;
    let sandbox = start_ondorse(OndorseSandboxOptions {
        webhook_url: Some(receiver.url.clone()),
        ..options
    })
    .await;
    (sandbox, receiver)
}

/// Creates a portal through raw HTTP and submits it; returns the application id.
async fn submitted_application(sandbox: &OndorseSandbox, account_id: &str) -> String {
    let body =
        json!({"type": "business", "default_custom_fields": {"salesforce_account_id": account_id}});
    let (_, _, portal) =
        post_portal(sandbox, Some(&bearer(sandbox)), None, &body.to_string()).await;
    sandbox
        .submit_portal(portal["id"].as_str().expect("id"))
        .expect("portal exists")
}

#[tokio::test]
async fn journey_events_are_delivered_signed_with_snapshots() {
    let secret = "whsec-sandbox";
    let (sandbox, receiver) = sandbox_with_receiver(OndorseSandboxOptions {
        signing_secret: Some(secret.to_owned()),
        ..OndorseSandboxOptions::default()
    })
    .await;
    let application_id = submitted_application(&sandbox, "001E").await;
    assert!(sandbox.wait_deliveries_idle(DEADLINE).await);
    sandbox.review(&application_id, "rejected", 3, Some(91.0));
    let link = sandbox.open_collect(&application_id).expect("exists");
    let unknown_id = sandbox.send_event("application.archived", &application_id);
    assert!(sandbox.wait_deliveries_idle(DEADLINE).await);

    let mut types = receiver.accepted_types();
    let first_two: HashSet<String> = types.drain(..2).collect();
    assert_eq!(
        first_two,
        HashSet::from([
            "application.created".to_owned(),
            "application.submitted".to_owned()
        ])
    );
    types.sort();
    assert_eq!(
        types,
        [
            "application.archived",
            "application.review_updated",
            "collect.opened"
        ]
    );

    let now = chrono::Utc::now().timestamp();
    for received in receiver.received() {
        verify_signature(
            &[secret.as_bytes()],
            received.signature.as_deref(),
            &received.body,
            now,
            DEFAULT_SIGNATURE_TOLERANCE,
        )
        .expect("signature verifies with the receiver's own check");
        let envelope = parse_envelope(&received.body).expect("envelope parses");
        assert_eq!(
            envelope.application_id.as_deref(),
            Some(application_id.as_str())
        );
        assert!(envelope.event_id.starts_with("evt_"));
        assert!(is_ondorse_timestamp(&json!(envelope.created_at)));
    }
    let by_type: HashMap<String, Value> = receiver
        .accepted()
        .into_iter()
        .map(|event| (event["type"].as_str().expect("type").to_owned(), event))
        .collect();
    // Snapshots are taken when the event is raised.
    assert_eq!(
        by_type["application.submitted"]["data"]["object"]["status_review"],
        Value::Null
    );
    let reviewed = &by_type["application.review_updated"]["data"]["object"];
    assert_eq!(reviewed["status_review"], json!("rejected"));
    assert_eq!(
        (
            reviewed["risk_level"].clone(),
            reviewed["risk_score"].clone()
        ),
        (json!(3), json!(91.0))
    );
    assert!(reviewed.get("portals").is_none());
    assert_eq!(
        by_type["collect.opened"]["data"]["object"]["portals"]["link"],
        json!(link)
    );
    assert_eq!(
        by_type["application.archived"]["event_id"],
        json!(unknown_id)
    );
    assert_eq!(
        by_type["application.created"]["data"]["object"]["custom_fields"]["salesforce_account_id"],
        json!("001E")
    );
    let stats = sandbox.stats();
    assert_eq!(
        (
            stats.events_emitted,
            stats.deliveries_succeeded,
            stats.deliveries_pending
        ),
        (5, 5, 0)
    );
    assert_eq!(sandbox.events().len(), 5);
}

#[tokio::test]
async fn failed_deliveries_are_retried_until_the_receiver_accepts() {
    let (sandbox, receiver) = sandbox_with_receiver(OndorseSandboxOptions {
        retry_base: Duration::from_millis(10),
        delivery_concurrency: 1,
        ..OndorseSandboxOptions::default()
    })
    .await;
    receiver.fail_next(3);
    let event_id = sandbox.send_event("webhooks.test", "app_x");
    assert!(sandbox.wait_deliveries_idle(DEADLINE).await);
    let statuses: Vec<u16> = receiver
        .received()
        .iter()
        .map(|received| received.status.as_u16())
        .collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    assert!(
        receiver
            .received()
            .iter()
            .all(|received| received.json()["event_id"] == json!(event_id))
    );
    let stats = sandbox.stats();
    assert_eq!(
        (stats.deliveries_attempted, stats.deliveries_succeeded),
        (4, 1)
    );
}

#[tokio::test]
async fn slow_receivers_time_out_and_get_the_event_again() {
    let (sandbox, receiver) = sandbox_with_receiver(OndorseSandboxOptions {
        delivery_timeout: Duration::from_millis(100),
        ..OndorseSandboxOptions::default()
    })
    .await;
    receiver.hang_next(1, Duration::from_secs(2));
    let event_id = sandbox.send_event("webhooks.test", "app_x");
    assert!(sandbox.wait_deliveries_idle(DEADLINE).await);
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["event_id"], json!(event_id));
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn deliveries_are_abandoned_after_max_retries() {
    let (sandbox, receiver) = sandbox_with_receiver(OndorseSandboxOptions {
        retry_base: Duration::from_millis(5),
        max_retries: 2,
        ..OndorseSandboxOptions::default()
    })
    .await;
    receiver.fail_next(usize::MAX);
    sandbox.send_event("webhooks.test", "app_x");
    assert!(sandbox.wait_deliveries_idle(DEADLINE).await);
    assert_eq!(receiver.received().len(), 3);
    let stats = sandbox.stats();
    assert_eq!(
        (
            stats.deliveries_attempted,
            stats.deliveries_abandoned,
            stats.deliveries_succeeded
        ),
        (3, 1, 0)
    );
}

#[tokio::test]
async fn duplicates_repeat_event_ids() {
    let (sandbox, receiver) = sandbox_with_receiver(OndorseSandboxOptions {
        duplicate_ratio: 1.0,
        ..OndorseSandboxOptions::default()
    })
    .await;
    let ids: Vec<String> = (0..5)
        .map(|_| sandbox.send_event("webhooks.test", "app_x"))
        .collect();
    assert!(sandbox.wait_deliveries_idle(DEADLINE).await);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for event in receiver.accepted() {
        *counts
            .entry(event["event_id"].as_str().expect("id").to_owned())
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 5);
    assert!(ids.iter().all(|id| counts[id] == 2), "{counts:?}");
}

#[tokio::test]
async fn reordering_delivers_events_out_of_order() {
    let (sandbox, receiver) = sandbox_with_receiver(OndorseSandboxOptions {
        reorder: true,
        ..OndorseSandboxOptions::default()
    })
    .await;
    let emitted: Vec<String> = (0..30)
        .map(|_| sandbox.send_event("webhooks.test", "app_x"))
        .collect();
    assert!(sandbox.wait_deliveries_idle(DEADLINE).await);
    let arrived: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|event| event["event_id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(
        arrived.iter().collect::<HashSet<_>>(),
        emitted.iter().collect::<HashSet<_>>()
    );
    assert_ne!(
        arrived, emitted,
        "30 events with random delays arrived in order"
    );
}

#[tokio::test]
async fn automatic_submission_and_review_reach_a_decision() {
    let (sandbox, receiver) = sandbox_with_receiver(OndorseSandboxOptions {
        submit_after: Some(Duration::from_millis(10)),
        review_after: Some(Duration::from_millis(10)),
        approve_ratio: 1.0,
        ..OndorseSandboxOptions::default()
    })
    .await;
    let body = json!({"default_custom_fields": {"salesforce_account_id": "001F"}});
    let (_, _, portal) =
        post_portal(&sandbox, Some(&bearer(&sandbox)), None, &body.to_string()).await;
    eventually("the review event arrives", DEADLINE, || {
        receiver
            .accepted_types()
            .contains(&"application.review_updated".to_owned())
    })
    .await;
    let applications = sandbox.applications();
    assert_eq!(applications.len(), 1);
    let application = &applications[0];
    assert_eq!(application["portal_id"], portal["id"]);
    assert_eq!(application["status_review"], json!("approved"));
    assert!((-1..=2).contains(&application["risk_level"].as_i64().expect("level")));
}

#[tokio::test]
async fn suppressed_and_unaddressed_events_are_recorded_not_delivered() {
    let (sandbox, receiver) = sandbox_with_receiver(OndorseSandboxOptions::default()).await;
    sandbox.suppress_webhooks(true);
    sandbox.send_event("webhooks.test", "app_x");
    sandbox.suppress_webhooks(false);
    sandbox.set_webhook_url(None);
    sandbox.send_event("webhooks.test", "app_x");
    sandbox.set_webhook_url(Some(receiver.url.clone()));
    let delivered = sandbox.send_event("webhooks.test", "app_x");
    assert!(sandbox.wait_deliveries_idle(DEADLINE).await);
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["event_id"], json!(delivered));
    let stats = sandbox.stats();
    assert_eq!((stats.events_emitted, stats.events_undelivered), (3, 2));
    assert_eq!(sandbox.events().len(), 3);
}

#[tokio::test]
async fn a_down_sandbox_answers_503_with_an_empty_body_and_creates_nothing() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let auth = bearer(&sandbox);
    let application = submitted_application(&sandbox, "001D").await;
    let portals_before = sandbox.portals();

    sandbox.set_down(true);
    let (status, _, answer) = post_portal(&sandbox, Some(&auth), Some("down-1"), "{}").await;
    assert_eq!((status, answer), (503, Value::Null));
    assert_eq!(
        get_application(&sandbox, &application).await,
        (503, Value::Null)
    );
    assert_eq!(sandbox.portals(), portals_before);
    let stats = sandbox.stats();
    assert_eq!((stats.failed_requests, stats.portals_created), (2, 1));

    sandbox.set_down(false);
    let (status, _, _) = post_portal(&sandbox, Some(&auth), Some("down-1"), "{}").await;
    assert_eq!(status, 201);
    assert_eq!(get_application(&sandbox, &application).await.0, 200);
    assert_eq!(sandbox.portals().len(), 2);
}

#[tokio::test]
async fn throttled_portal_posts_get_429_with_retry_after_and_applications_are_served() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let auth = bearer(&sandbox);
    let application = submitted_application(&sandbox, "001T").await;

    sandbox.throttle_portals(Some(Duration::from_millis(1500)));
    let (status, headers, answer) =
        post_portal(&sandbox, Some(&auth), Some("throttled-1"), "{}").await;
    assert_eq!(status, 429);
    // Whole seconds, rounded up: the client never comes back early.
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(answer, json!({"detail": "Too many requests"}));
    let (status, served) = get_application(&sandbox, &application).await;
    assert_eq!(status, 200);
    assert_eq!(served["id"], json!(application));
    assert_eq!(sandbox.portals().len(), 1);
    let stats = sandbox.stats();
    assert_eq!((stats.rate_limited, stats.portals_created), (1, 1));

    sandbox.throttle_portals(None);
    let (status, headers, _) = post_portal(&sandbox, Some(&auth), Some("throttled-1"), "{}").await;
    assert_eq!(status, 201);
    assert!(headers.get("retry-after").is_none());
    assert_eq!(sandbox.portals().len(), 2);
}

#[tokio::test]
async fn a_refused_application_answers_its_status_with_a_detail_until_cleared() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let refused = submitted_application(&sandbox, "001R").await;
    let other = submitted_application(&sandbox, "001S").await;

    sandbox.refuse_application(&refused, Some(403));
    let (status, answer) = get_application(&sandbox, &refused).await;
    assert_eq!(status, 403);
    assert!(answer["detail"].is_string(), "{answer}");
    assert_eq!(get_application(&sandbox, &other).await.0, 200);

    sandbox.refuse_application(&refused, None);
    let (status, served) = get_application(&sandbox, &refused).await;
    assert_eq!(status, 200);
    assert_eq!(served["id"], json!(refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_application_answers_as_it_was_read_when_the_request_arrived() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let slow = submitted_application(&sandbox, "001T").await;
    let other = submitted_application(&sandbox, "001U").await;
    // Long enough for a quick request to be answered meanwhile, even on a
    // loaded machine.
    sandbox.slow_application(&slow, Some(Duration::from_secs(5)));

    let answer = tokio::spawn({
        let sandbox_url = sandbox.base_url();
        let key = sandbox.options().api_key.clone();
        let slow = slow.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{sandbox_url}/api/applications/{slow}"))
                .bearer_auth(key)
                .send()
                .await
                .expect("sandbox answers")
                .json::<Value>()
                .await
                .expect("json answer")
        }
    });
    // Counted once read: a review from now on is newer than its answer.
    eventually("the slow application is read", DEADLINE, || {
        sandbox.stats().application_gets == 1
    })
    .await;
    sandbox.review(&slow, "approved", 1, Some(12.0));
    let (status, served) = get_application(&sandbox, &other).await;
    assert_eq!((status, served["id"].clone()), (200, json!(other)));
    assert_eq!(
        sandbox.most_requests_in_flight(),
        2,
        "requests of every kind in flight are counted together"
    );
    let stale = answer.await.expect("the slow answer");
    assert_eq!(stale["id"], json!(slow));
    assert_eq!(
        stale["status_review"],
        Value::Null,
        "as it was read: {stale}"
    );

    sandbox.slow_application(&slow, None);
    let (status, fresh) = get_application(&sandbox, &slow).await;
    assert_eq!(
        (status, fresh["status_review"].clone()),
        (200, json!("approved"))
    );
}

#[tokio::test]
async fn portals_holding_a_refused_value_get_422_at_that_field_and_create_nothing() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let auth = bearer(&sandbox);
    sandbox.refuse_portals_with("employees", json!(-1));

    let refused =
        json!({"default_custom_fields": {"salesforce_account_id": "001N", "employees": -1}});
    let (status, _, answer) = post_portal(
        &sandbox,
        Some(&auth),
        Some("refused-1"),
        &refused.to_string(),
    )
    .await;
    assert_eq!(status, 422);
    let detail = answer["detail"].as_array().expect("detail list");
    assert_eq!(detail.len(), 1, "{answer}");
    assert_eq!(
        detail[0]["loc"],
        json!(["body", "default_custom_fields", "employees"])
    );
    assert!(detail[0]["msg"].is_string() && detail[0]["type"].is_string());
    assert!(sandbox.portals().is_empty());
    assert_eq!(sandbox.stats().portals_created, 0);

    let accepted =
        json!({"default_custom_fields": {"salesforce_account_id": "001N", "employees": 3}});
    let (status, _, _) = post_portal(
        &sandbox,
        Some(&auth),
        Some("accepted-1"),
        &accepted.to_string(),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(sandbox.portals().len(), 1);
}

#[tokio::test]
async fn portal_posts_are_counted_per_key_and_overlapping_retries_are_seen() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let auth = bearer(&sandbox);
    let latency = Duration::from_secs(1);
    sandbox.set_latency(latency);

    // Two posts of one key at once overlap; a third key's posts in turn do not.
    let started = std::time::Instant::now();
    let (first, second) = tokio::join!(
        post_portal(&sandbox, Some(&auth), Some("overlap"), "{}"),
        post_portal(&sandbox, Some(&auth), Some("overlap"), "{}"),
    );
    assert!(
        started.elapsed() >= latency,
        "every request waits the latency"
    );
    assert_eq!((first.0, second.0), (201, 201));
    assert_eq!(first.2["id"], second.2["id"]);
    for _ in 0..2 {
        assert_eq!(
            post_portal(&sandbox, Some(&auth), Some("in-turn"), "{}")
                .await
                .0,
            201
        );
    }
    // Refused posts count too.
    sandbox.throttle_portals(Some(Duration::from_secs(1)));
    assert_eq!(
        post_portal(&sandbox, Some(&auth), Some("throttled"), "{}")
            .await
            .0,
        429
    );

    assert_eq!(
        sandbox.portal_posts_by_key(),
        HashMap::from([
            ("overlap".to_owned(), 2),
            ("in-turn".to_owned(), 2),
            ("throttled".to_owned(), 1),
        ])
    );
    assert_eq!(
        sandbox.overlapping_portal_keys(),
        HashSet::from(["overlap".to_owned()])
    );
    assert_eq!(sandbox.portals().len(), 2);
}
