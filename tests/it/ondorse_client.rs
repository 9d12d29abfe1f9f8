//! The Ondorse client against the sandbox (and a canned server for answers
//! the sandbox never gives): round trips, errors, retries, tolerance.

use std::time::Duration;

use ondorse_bridge::ondorse::{Decision, OndorseError, RiskLevel};
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::{Map, Value, json};

use crate::support::ondorse::{client_for, client_with, serve_canned, start_ondorse};

/// The bytes the engine sends: a body frozen once.
fn bytes(body: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(body).expect("a json object")
}

fn portal_body(account_id: &str) -> Map<String, Value> {
    json!({
        "type": "business",
        "redirect_url": format!("https://app.example.com/kyc/done?account={account_id}"),
        "default_custom_fields": {"salesforce_account_id": account_id, "company_name": "Acme SAS"},
    })
    .as_object()
    .expect("object")
    .clone()
}

#[tokio::test]
async fn portal_and_application_round_trip() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let client = client_for(&sandbox);
    let portal = client
        .create_portal(&bytes(&portal_body("001A")), "intent-001A")
        .await
        .expect("portal created");
    let stored = sandbox.portal(&portal.id).expect("sandbox holds it");
    assert_eq!(
        stored["default_custom_fields"]["salesforce_account_id"],
        json!("001A")
    );
    assert_eq!(stored["type"], json!("business"));
    assert_eq!(portal.url.as_deref(), stored["url"].as_str());
    assert_eq!(
        portal.resolved_url("https://elsewhere.example"),
        portal.url,
        "the url given by ondorse wins"
    );

    let application_id = sandbox.submit_portal(&portal.id).expect("submitted");
    let pending = client
        .get_application(&application_id)
        .await
        .expect("fetched");
    assert_eq!(pending.decision(), Decision::Pending(None));
    assert_eq!(pending.risk_level, Some(RiskLevel::Unset));
    assert_eq!(pending.risk_score, None);
    assert_eq!(
        pending.custom_fields["salesforce_account_id"],
        json!("001A")
    );

    sandbox.review(&application_id, "approved", 2, Some(61.5));
    let reviewed = client
        .get_application(&application_id)
        .await
        .expect("fetched");
    assert!(reviewed.is_final());
    assert_eq!(reviewed.decision(), Decision::Approved);
    let template = reviewed.template_value();
    assert_eq!(template["risk_level"], json!(2));
    assert_eq!(template["risk_score"], json!(61.5));
    assert_eq!(template["business"]["organization_name"], json!("Acme SAS"));
    assert_eq!(template["portal_id"], json!(portal.id));
}

#[tokio::test]
async fn key_travels_in_the_configured_header_and_scheme() {
    for (header, scheme) in [
        ("X-API-Key", ""),
        ("Authorization", "Token"),
        ("Authorization", "Bearer"),
    ] {
        let sandbox = start_ondorse(OndorseSandboxOptions {
            auth_header: header.to_owned(),
            auth_scheme: scheme.to_owned(),
            ..OndorseSandboxOptions::default()
        })
        .await;
        client_for(&sandbox)
            .create_portal(&bytes(&portal_body("001B")), "k")
            .await
            .unwrap_or_else(|error| panic!("{header}/{scheme:?}: {error}"));
        let wrong_scheme = client_with(
            &sandbox.base_url(),
            &sandbox.options().api_key,
            header,
            "Basic",
        );
        let error = wrong_scheme
            .create_portal(&bytes(&portal_body("001B")), "k2")
            .await
            .unwrap_err();
        assert!(
            matches!(error, OndorseError::Unauthorized { status: 401, .. }),
            "{error:?}"
        );
        assert!(!error.is_retriable());
        assert!(
            error.to_string().contains("ondorse.api_key_file"),
            "{error}"
        );
        assert!(
            !error.to_string().contains(&sandbox.options().api_key),
            "{error}"
        );
        assert_eq!(sandbox.portals().len(), 1);
    }
}

#[tokio::test]
async fn not_found_and_validation_errors_are_precise() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let client = client_for(&sandbox);
    let error = client
        .get_application("app_missing/../x")
        .await
        .unwrap_err();
    match &error {
        OndorseError::NotFound { what, detail } => {
            assert!(what.contains("app_missing/../x"), "{what}");
            assert_eq!(detail, "Not found");
        }
        other => panic!("expected not found, got {other:?}"),
    }
    assert!(!error.is_retriable());

    let mut body = portal_body("001C");
    body.insert("redirect_url".to_owned(), json!(17));
    body.insert("default_custom_fields".to_owned(), json!({"list": [1]}));
    let error = client.create_portal(&bytes(&body), "k").await.unwrap_err();
    match &error {
        OndorseError::Validation { detail } => assert_eq!(
            detail,
            "body.redirect_url: Input should be a valid URL; body.default_custom_fields.list: Input should be a valid string, number or boolean"
        ),
        other => panic!("expected validation, got {other:?}"),
    }
    assert!(!error.is_retriable());

    client
        .create_portal(&bytes(&portal_body("001C")), "same")
        .await
        .expect("first");
    let error = client
        .create_portal(&bytes(&portal_body("001D")), "same")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OndorseError::IdempotencyConflict { detail, .. } if detail.contains("Idempotency-Key")),
        "{error:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retriable_and_not_retried_inside_the_client() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let client = client_for(&sandbox);
    sandbox.fail_next_requests(1, 503);
    let error = client
        .create_portal(&bytes(&portal_body("001E")), "k")
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OndorseError::Server { status: 503, body_excerpt } if body_excerpt == "<empty body>"),
        "{error:?}"
    );
    assert!(error.is_retriable());
    assert_eq!(sandbox.stats().requests, 1, "no retry inside the client");
    assert!(sandbox.portals().is_empty());

    sandbox.fail_next_requests(1, 500);
    let error = client.get_application("app_x").await.unwrap_err();
    assert!(
        matches!(&error, OndorseError::Server { status: 500, body_excerpt } if body_excerpt == "Internal server error"),
        "{error:?}"
    );
    client
        .create_portal(&bytes(&portal_body("001E")), "k")
        .await
        .expect("recovers");
    assert_eq!(sandbox.portals().len(), 1);
}

#[tokio::test]
async fn a_rate_limit_is_handed_back_with_the_servers_delay_not_retried_inside_the_client() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let client = client_for(&sandbox);
    sandbox.rate_limit_next_requests(1, Some(Duration::from_secs(86_400)));
    let error = client
        .create_portal(&bytes(&portal_body("001F")), "k")
        .await
        .unwrap_err();
    assert!(
        matches!(error, OndorseError::RateLimited { retry_after: Some(delay) } if delay == Duration::from_secs(86_400)),
        "{error:?}"
    );
    assert!(error.is_retriable());
    let stats = sandbox.stats();
    assert_eq!(
        (stats.requests, stats.rate_limited, stats.portals_created),
        (1, 1, 0),
        "one request, no retry inside the client (the engine owns retries)"
    );
    client
        .create_portal(&bytes(&portal_body("001F")), "k")
        .await
        .expect("created once the limit is over");
    assert_eq!(sandbox.portals().len(), 1);
}

#[tokio::test]
async fn slow_answers_time_out() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let client = client_for(&sandbox).with_request_timeout(Duration::from_millis(100));
    sandbox.set_latency(Duration::from_millis(600));
    let error = client.get_application("app_x").await.unwrap_err();
    assert!(matches!(error, OndorseError::Timeout { .. }), "{error:?}");
    assert!(error.is_retriable());
    sandbox.set_latency(Duration::ZERO);
    let error = client.get_application("app_x").await.unwrap_err();
    assert!(matches!(error, OndorseError::NotFound { .. }), "{error:?}");
}

#[tokio::test]
async fn a_lost_portal_answer_is_recovered_with_the_same_key() {
    let sandbox = start_ondorse(OndorseSandboxOptions::default()).await;
    let client = client_for(&sandbox);
    sandbox.drop_next_portal_responses(1);
    let error = client
        .create_portal(&bytes(&portal_body("001G")), "intent-001G")
        .await
        .unwrap_err();
    assert!(matches!(error, OndorseError::Transport { .. }), "{error:?}");
    assert!(error.is_retriable());
    assert_eq!(
        sandbox.portals().len(),
        1,
        "the write happened before the drop"
    );

    let portal = client
        .create_portal(&bytes(&portal_body("001G")), "intent-001G")
        .await
        .expect("retry with the same key");
    let portals = sandbox.portals();
    assert_eq!(portals.len(), 1, "exactly one portal exists");
    assert_eq!(portals[0]["id"], json!(portal.id));
    let stats = sandbox.stats();
    assert_eq!(
        (
            stats.dropped_responses,
            stats.idempotent_replays,
            stats.portals_created
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn unknown_fields_and_loose_types_are_tolerated() {
    let server = serve_canned(
        200,
        "application/json",
        r#"{"id":"app_1","status_review":"escalated","status_execution":"running",
            "risk_level":"High","custom_fields":{"salesforce_account_id":"001H"},
            "business":{"organization_name":"Acme"},"tags":["a"],"updated_at":"2026-11-26T09:12:03.104000Z"}"#,
    )
    .await;
    let client = client_with(&server.base_url, "k", "Authorization", "Bearer");
    let application = client.get_application("app_1").await.expect("decodes");
    assert_eq!(application.risk_level, Some(RiskLevel::High));
    assert_eq!(application.risk_score, None);
    assert_eq!(
        application.decision(),
        Decision::Pending(Some("escalated".to_owned()))
    );
    assert_eq!(application.extra["tags"], json!(["a"]));
    let template = application.template_value();
    assert_eq!(template["risk_level"], json!(2));
    assert_eq!(template["risk_score"], Value::Null);
    assert_eq!(template["tags"], json!(["a"]));
    assert_eq!(template["business"]["organization_name"], json!("Acme"));

    let server = serve_canned(
        200,
        "application/json",
        r#"{"id":"app_2","status_review":null,"risk_level":{"x":1},"risk_score":null}"#,
    )
    .await;
    let client = client_with(&server.base_url, "k", "Authorization", "Bearer");
    let application = client
        .get_application("app_2")
        .await
        .expect("decodes despite risk_level");
    assert_eq!(application.risk_level, None);
    assert_eq!(application.extra["risk_level_raw"], json!({"x": 1}));
    assert_eq!(application.template_value()["risk_level"], json!(-1));
}

#[tokio::test]
async fn garbage_answers_keep_an_excerpt() {
    let server = serve_canned(502, "text/html", "<html><body>Bad gateway</body></html>").await;
    let client = client_with(&server.base_url, "k", "Authorization", "Bearer");
    let error = client.get_application("app_1").await.unwrap_err();
    assert!(
        matches!(&error, OndorseError::Server { status: 502, body_excerpt } if body_excerpt.contains("Bad gateway")),
        "{error:?}"
    );

    let server = serve_canned(200, "application/json", r#"{"link":"abc"}"#).await;
    let client = client_with(&server.base_url, "k", "Authorization", "Bearer");
    let error = client.create_portal(b"{}", "k").await.unwrap_err();
    match &error {
        OndorseError::Decode { what, excerpt, .. } => {
            assert_eq!(*what, "portal");
            assert_eq!(excerpt, r#"{"link":"abc"}"#);
        }
        other => panic!("expected decode error, got {other:?}"),
    }
    assert!(!error.is_retriable());

    let server = serve_canned(409, "application/json", r#"{"detail":"portal locked"}"#).await;
    let client = client_with(&server.base_url, "k", "Authorization", "Bearer");
    let error = client.get_application("app_1").await.unwrap_err();
    assert!(
        matches!(&error, OndorseError::Client { status: 409, detail } if detail == "portal locked"),
        "{error:?}"
    );
}

/// A server that redirects `/api/applications/moved` within its own host
/// and `/api/applications/away` to another host name for the same port,
/// and records the key each request to `/api/applications/app_1` carried.
async fn redirecting_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = keys.clone();
    let redirect = |to: String| {
        move || {
            let to = to.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response() }
        }
    };
    let app = axum::Router::new()
        .route(
            "/api/applications/moved",
            get(redirect("/api/applications/app_1".to_owned())),
        )
        .route(
            "/api/applications/away",
            get(redirect(format!(
                "http://localhost:{port}/api/applications/app_1"
            ))),
        )
        .route(
            "/api/applications/app_1",
            get(move |headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let key = headers
                        .get("x-api-key")
                        .map(|value| value.to_str().unwrap_or_default().to_owned())
                        .unwrap_or_default();
                    seen.lock().unwrap().push(key);
                    axum::Json(json!({"id": "app_1", "status_review": "approved"}))
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://127.0.0.1:{port}"), keys)
}

#[tokio::test]
async fn a_custom_key_header_never_follows_a_redirect_to_another_host() {
    let (base_url, keys) = redirecting_server().await;
    let client = client_with(&base_url, "s3cret-key", "X-API-KEY", "");

    let moved = client
        .get_application("moved")
        .await
        .expect("a redirect within the host is followed");
    assert_eq!(moved.id, "app_1");
    assert_eq!(*keys.lock().unwrap(), vec!["s3cret-key".to_owned()]);

    let error = client.get_application("away").await.unwrap_err();
    match &error {
        OndorseError::Redirected {
            status, location, ..
        } => {
            assert_eq!(*status, 307);
            assert!(location.starts_with("http://localhost:"), "{location}");
        }
        other => panic!("expected a refused redirect, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("ondorse.base_url"), "{message}");
    assert!(!message.contains("s3cret-key"), "{message}");
    assert!(!error.is_retriable());
    assert_eq!(
        keys.lock().unwrap().len(),
        1,
        "the other host never saw a request, so never the key"
    );
}
