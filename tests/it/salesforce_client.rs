//! The Salesforce client against the sandbox org, over real HTTP: the three
//! OAuth flows and their failures, paged queries, token renewal, composite
//! updates, error classification and API usage.

use std::collections::HashSet;

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use futures::future::join_all;
use ondorse_bridge::config::SalesforceAuth;
use ondorse_bridge::salesforce::{
    Disposition, RecordUpdate, SalesforceClient, SalesforceError, soql,
};
use ondorse_bridge::telemetry::Metrics;
use ondorse_sandbox::salesforce::{SalesforceSandbox, SalesforceSandboxOptions};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::support::salesforce::{fields, start_salesforce};
use crate::support::salesforce_client::{
    client, client_credentials_client_config, jwt_client, jwt_client_config,
    refresh_token_client_config, start_jwt_salesforce,
};

/// Every row of a query, page by page, with the number of pages.
async fn read_all(
    client: &SalesforceClient,
    query: &str,
) -> (Vec<serde_json::Map<String, Value>>, usize) {
    let mut pages = client.query(query);
    let mut rows = Vec::new();
    let mut count = 0;
    while let Some(page) = pages.next_page().await.expect("the query page is read") {
        count += 1;
        rows.extend(page);
    }
    (rows, count)
}

fn text<'a>(row: &'a serde_json::Map<String, Value>, field: &str) -> &'a str {
    row.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no text {field} in {row:?}"))
}

async fn expect_auth_error(client: &SalesforceClient) -> SalesforceError {
    let error = client
        .authenticate()
        .await
        .expect_err("the login must be refused");
    assert!(!error.is_retriable(), "{error}");
    error
}

#[tokio::test]
async fn jwt_bearer_logs_in_and_calls_the_instance() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions::default()).await;
    sandbox.insert_accounts(SalesforceSandbox::generate_accounts(3, 7));
    let client = jwt_client(&sandbox);
    assert_eq!(
        client.instance_url(),
        None,
        "nothing is sent before the first call"
    );
    assert_eq!(sandbox.stats().token_requests, 0);

    client.authenticate().await.expect("the jwt login succeeds");
    assert_eq!(client.instance_url(), Some(sandbox.instance_url()));
    let (rows, _) = read_all(&client, "SELECT Id, Name FROM Account").await;
    assert_eq!(rows.len(), 3);
    let describe = client.describe("Account").await.expect("describe works");
    assert!(describe.field("KYC_Status__c").is_some());
    assert_eq!(sandbox.stats().token_requests, 1);
}

#[tokio::test]
async fn client_credentials_log_in_on_my_domain() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let client = client(&client_credentials_client_config(&sandbox));
    client
        .authenticate()
        .await
        .expect("client credentials work on My Domain");
    assert_eq!(client.instance_url(), Some(sandbox.instance_url()));
    client
        .limits()
        .await
        .expect("the token is accepted by the API");
}

#[tokio::test]
async fn refresh_token_rotation_keeps_the_newest_token() {
    let original = "5Aep861-original-refresh-token";
    let sandbox = start_salesforce(SalesforceSandboxOptions {
        refresh_tokens: vec![original.to_owned()],
        rotate_refresh_tokens: true,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    let rotating = client(&refresh_token_client_config(&sandbox, original));
    rotating
        .authenticate()
        .await
        .expect("the first refresh succeeds");
    // The sandbox revoked `original`: this second refresh only works if the
    // client sends the rotated token.
    rotating
        .authenticate()
        .await
        .expect("the second refresh uses the rotated token");
    rotating
        .describe("Account")
        .await
        .expect("the new access token works");
    assert_eq!(sandbox.stats().token_requests, 2);

    let stale = client(&refresh_token_client_config(&sandbox, original));
    let error = expect_auth_error(&stale).await;
    assert_eq!(error.error_code(), Some("invalid_grant"), "{error}");
}

#[tokio::test]
async fn refused_logins_say_why_and_are_not_retriable() {
    let unapproved = "intern@example.com";
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions {
        unapproved_usernames: vec![unapproved.to_owned()],
        ..SalesforceSandboxOptions::default()
    })
    .await;

    // A wrong client secret.
    let mut config = client_credentials_client_config(&sandbox);
    let wrong_secret = "not-the-secret-42";
    config.auth = SalesforceAuth::ClientCredentials {
        client_id: sandbox.options().client_id,
        client_secret: SecretString::from(wrong_secret.to_owned()),
    };
    let error = expect_auth_error(&client(&config)).await;
    assert!(matches!(error, SalesforceError::Auth { .. }), "{error:?}");
    assert_eq!(error.error_code(), Some("invalid_client"));
    assert!(!format!("{error} {error:?}").contains(wrong_secret));

    // A user who has not approved the connected app.
    let mut config = jwt_client_config(&sandbox);
    if let SalesforceAuth::JwtBearer { username, .. } = &mut config.auth {
        *username = unapproved.to_owned();
    }
    let error = expect_auth_error(&client(&config)).await;
    assert_eq!(error.error_code(), Some("invalid_grant"));
    assert!(error.to_string().contains("approved"), "{error}");

    // An audience the org does not accept.
    let mut config = jwt_client_config(&sandbox);
    if let SalesforceAuth::JwtBearer { audience, .. } = &mut config.auth {
        *audience = "https://evil.example.com".to_owned();
    }
    let error = expect_auth_error(&client(&config)).await;
    assert_eq!(error.error_code(), Some("invalid_grant"));
    assert!(error.to_string().contains("audience"), "{error}");

    // Client credentials on the login host instead of My Domain.
    let mut config = client_credentials_client_config(&sandbox);
    config.login_url = sandbox.login_url();
    let error = expect_auth_error(&client(&config)).await;
    assert!(error.to_string().contains(&sandbox.login_url()), "{error}");
    assert!(error.to_string().contains("My Domain"), "{error}");

    assert_eq!(
        sandbox.stats().api_requests,
        0,
        "no REST call without a token"
    );
}

#[tokio::test]
async fn a_private_key_that_is_not_pem_is_refused_before_any_call() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions::default()).await;
    let mut config = jwt_client_config(&sandbox);
    let not_a_key = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC-secret-material";
    if let SalesforceAuth::JwtBearer { private_key, .. } = &mut config.auth {
        *private_key = SecretString::from(not_a_key.to_owned());
    }
    let error = SalesforceClient::new(&config, Metrics::new()).expect_err("the key is refused");
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("private_key_file"), "{shown}");
    assert!(shown.contains("PEM"), "{shown}");
    assert!(!shown.contains("secret-material"), "{shown}");
    assert!(!error.is_retriable());
    assert_eq!(sandbox.stats().token_requests, 0);

    let client = jwt_client(&sandbox);
    assert!(!format!("{client:?}").contains("PRIVATE KEY"));
}

/// 5,000 Accounts over 25 seconds (200 sharing each stamp), inserted in an
/// order unrelated to either stamp or Id.
fn tied_accounts(count: usize) -> Vec<serde_json::Map<String, Value>> {
    let start = Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 0).unwrap();
    SalesforceSandbox::generate_accounts(count, 42)
        .into_iter()
        .enumerate()
        .map(|(index, mut account)| {
            let second = (index * 7919) % 25;
            let stamp = start + ChronoDuration::seconds(second as i64);
            account.insert(
                "SystemModstamp".to_owned(),
                json!(stamp.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()),
            );
            account
        })
        .collect()
}

#[tokio::test]
async fn a_long_query_returns_every_row_once_in_cursor_order() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions {
        page_size: 1000,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    let inserted: HashSet<String> = sandbox
        .insert_accounts(tied_accounts(5000))
        .into_iter()
        .collect();
    let client = jwt_client(&sandbox);

    let mut pages =
        client.query("SELECT Id, Name, SystemModstamp FROM Account ORDER BY SystemModstamp, Id");
    assert_eq!(pages.total_size(), None);
    let mut rows = Vec::new();
    let mut page_count = 0;
    while let Some(page) = pages.next_page().await.expect("the page is read") {
        page_count += 1;
        assert_eq!(pages.total_size(), Some(5000));
        rows.extend(page);
    }
    assert_eq!(page_count, 5);
    assert!(
        pages.next_page().await.unwrap().is_none(),
        "an exhausted query stays exhausted"
    );

    let keys: Vec<(chrono::DateTime<Utc>, String)> = rows
        .iter()
        .map(|row| {
            let stamp =
                soql::parse_datetime(text(row, "SystemModstamp")).expect("a salesforce datetime");
            (stamp, text(row, "Id").to_owned())
        })
        .collect();
    assert!(
        keys.windows(2).all(|pair| pair[0] < pair[1]),
        "strictly ordered by (SystemModstamp, Id)"
    );
    let seen: HashSet<String> = keys.into_iter().map(|(_, id)| id).collect();
    assert_eq!(seen, inserted);
    let stats = sandbox.stats();
    assert_eq!((stats.query_requests, stats.query_more_requests), (1, 4));
}

#[tokio::test]
async fn a_token_expired_mid_query_is_renewed_once_and_the_query_goes_on() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions {
        page_size: 500,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    sandbox.insert_accounts(SalesforceSandbox::generate_accounts(1500, 3));
    let client = jwt_client(&sandbox);
    let mut pages = client.query("SELECT Id FROM Account ORDER BY SystemModstamp, Id");
    let mut ids = pages.next_page().await.unwrap().expect("a first page");
    let tokens_before = sandbox.stats().token_requests;

    sandbox.expire_tokens();
    while let Some(page) = pages
        .next_page()
        .await
        .expect("the query survives the expiry")
    {
        ids.extend(page);
    }
    assert_eq!(sandbox.stats().token_requests, tokens_before + 1);
    assert_eq!(ids.len(), 1500);
    let unique: HashSet<&str> = ids.iter().map(|row| text(row, "Id")).collect();
    assert_eq!(unique.len(), 1500);
    assert_eq!(
        sandbox.stats().query_requests,
        1,
        "the same locator continued"
    );
}

#[tokio::test]
async fn concurrent_calls_after_expiry_cost_one_token_request() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions::default()).await;
    let client = jwt_client(&sandbox);
    client.authenticate().await.unwrap();
    sandbox.expire_tokens();
    let tokens_before = sandbox.stats().token_requests;

    let calls = (0..8).map(|_| {
        let client = client.clone();
        async move { client.describe("Account").await }
    });
    for result in join_all(calls).await {
        result.expect("every call succeeds after the renewal");
    }
    assert_eq!(sandbox.stats().token_requests, tokens_before + 1);
}

#[tokio::test]
async fn an_expired_query_locator_is_its_own_error() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions {
        page_size: 200,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    sandbox.insert_accounts(SalesforceSandbox::generate_accounts(500, 5));
    let client = jwt_client(&sandbox);
    let mut pages = client.query("SELECT Id FROM Account ORDER BY SystemModstamp, Id");
    pages.next_page().await.unwrap();
    sandbox.expire_query_locators();
    let error = pages.next_page().await.expect_err("the locator is gone");
    assert!(
        matches!(error, SalesforceError::InvalidQueryLocator { .. }),
        "{error:?}"
    );
    assert_eq!(error.error_code(), Some("INVALID_QUERY_LOCATOR"));
}

#[tokio::test]
async fn a_composite_update_reports_each_record() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions::default()).await;
    let ids = sandbox.insert_accounts(SalesforceSandbox::generate_accounts(200, 11));
    let locked: Vec<&str> = ids[0..5].iter().map(String::as_str).collect();
    let validated: Vec<&str> = ids[5..10].iter().map(String::as_str).collect();
    let deleted = ids[10].as_str();
    sandbox.lock_rows(&locked, 1);
    sandbox.add_validation_rule(&validated, "Risk level requires a review date");
    sandbox.delete_account(deleted);

    let client = jwt_client(&sandbox);
    let updates: Vec<RecordUpdate> = ids
        .iter()
        .map(|id| RecordUpdate {
            id: id.clone(),
            fields: fields(json!({"KYC_Status__c": "Approved", "KYC_Risk_Score__c": 12.5})),
        })
        .collect();
    let outcomes = client
        .update_records("Account", &updates)
        .await
        .expect("the call succeeds");
    assert_eq!(outcomes.len(), 200);
    for (index, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.id, ids[index]);
        let expected = match index {
            0..5 => Some(Disposition::Retry),
            5..10 => Some(Disposition::Permanent),
            10 => Some(Disposition::Gone),
            _ => None,
        };
        assert_eq!(
            outcome.disposition(),
            expected,
            "record {index}: {outcome:?}"
        );
        let stored = sandbox.account(&outcome.id).expect("the account is stored");
        let written = stored.get("KYC_Status__c") == Some(&json!("Approved"));
        assert_eq!(
            written,
            expected.is_none(),
            "record {index} stored {:?}",
            stored.get("KYC_Status__c")
        );
    }
    let errors = outcomes[5].result.as_ref().unwrap_err();
    assert_eq!(errors[0].status_code, "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    assert_eq!(errors[0].message, "Risk level requires a review date");
    assert_eq!(
        outcomes[0].result.as_ref().unwrap_err()[0].status_code,
        "UNABLE_TO_LOCK_ROW"
    );

    // The locks were for one attempt: the retry the engine would make works.
    let retried = client
        .update_records("Account", &updates[0..5])
        .await
        .unwrap();
    assert!(
        retried.iter().all(|outcome| outcome.result.is_ok()),
        "{retried:?}"
    );
    assert_eq!(sandbox.stats().composite_requests, 2);
}

#[tokio::test]
async fn more_than_two_hundred_records_are_refused_without_a_call() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions::default()).await;
    let ids = sandbox.insert_accounts(SalesforceSandbox::generate_accounts(201, 13));
    let client = jwt_client(&sandbox);
    let updates: Vec<RecordUpdate> = ids
        .iter()
        .map(|id| RecordUpdate {
            id: id.clone(),
            fields: fields(json!({"KYC_Status__c": "Approved"})),
        })
        .collect();
    let error = client
        .update_records("Account", &updates)
        .await
        .expect_err("201 is too many");
    assert!(
        matches!(error, SalesforceError::TooManyRecords { count: 201 }),
        "{error:?}"
    );
    assert!(!error.is_retriable());
    assert!(
        client
            .update_records("Account", &[])
            .await
            .unwrap()
            .is_empty()
    );
    let stats = sandbox.stats();
    assert_eq!((stats.composite_requests, stats.token_requests), (0, 0));
}

#[tokio::test]
async fn limits_and_server_errors_are_classified() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions {
        daily_api_limit: 1000,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    let client = jwt_client(&sandbox);
    client.authenticate().await.unwrap();

    sandbox.fail_next_requests(1);
    let error = client.describe("Account").await.expect_err("a 503");
    assert!(
        matches!(error, SalesforceError::Server { status: 503, .. }),
        "{error:?}"
    );
    assert!(error.is_retriable());
    client
        .describe("Account")
        .await
        .expect("the next call goes through");

    sandbox.set_api_usage(1000);
    let error = client.limits().await.expect_err("the allowance is used up");
    assert!(
        matches!(error, SalesforceError::RequestLimitExceeded { .. }),
        "{error:?}"
    );
    assert!(error.is_retriable());
    assert_eq!(error.error_code(), Some("REQUEST_LIMIT_EXCEEDED"));
    sandbox.set_api_usage(10);

    for (query, code) in [
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY"),
        ("SELECT Id, No_Such_Field__c FROM Account", "INVALID_FIELD"),
    ] {
        let error = client.query(query).next_page().await.expect_err("bad soql");
        assert_eq!(error.error_code(), Some(code), "{error}");
        assert!(!error.is_retriable(), "{error}");
    }
}

#[tokio::test]
async fn api_usage_follows_the_limit_header() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions {
        daily_api_limit: 15000,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    let client = jwt_client(&sandbox);
    assert_eq!(client.api_usage(), None);
    sandbox.set_api_usage(7000);
    client.describe("Account").await.unwrap();
    let usage = client.api_usage().expect("the header was read");
    assert_eq!(usage.max, 15000);
    assert!((7000..=7001).contains(&usage.used), "{usage:?}");

    let limits = client.limits().await.unwrap();
    assert_eq!(limits.max, 15000);
    assert!(limits.used >= usage.used, "{limits:?} after {usage:?}");
    assert_eq!(client.api_usage(), Some(limits));
    assert!((limits.ratio() - limits.used as f64 / 15000.0).abs() < 1e-9);
}

#[tokio::test]
async fn a_quoted_value_cannot_widen_a_query() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions::default()).await;
    let hostile = "Acme' OR Name != '";
    let names = ["Acme", "Globex", hostile, r"Back\slash 'n' Co"];
    sandbox.insert_accounts(
        names
            .iter()
            .map(|name| fields(json!({"Name": name})))
            .collect(),
    );
    let client = jwt_client(&sandbox);
    for name in names {
        let query = format!(
            "SELECT Id, Name FROM Account WHERE Name = {}",
            soql::quote(name)
        );
        let (rows, _) = read_all(&client, &query).await;
        let found: Vec<&str> = rows.iter().map(|row| text(row, "Name")).collect();
        assert_eq!(found, [name], "{query}");
    }
}

#[tokio::test]
async fn datetime_literals_select_by_cursor() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions::default()).await;
    let accounts = tied_accounts(100);
    sandbox.insert_accounts(accounts);
    let client = jwt_client(&sandbox);
    let cursor =
        Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 20).unwrap() + ChronoDuration::milliseconds(500);
    let query = format!(
        "SELECT Id, SystemModstamp FROM Account WHERE SystemModstamp >= {} ORDER BY SystemModstamp, Id",
        soql::datetime_literal(cursor)
    );
    let (rows, _) = read_all(&client, &query).await;
    assert!(!rows.is_empty());
    let floor = Utc.with_ymd_and_hms(2026, 11, 25, 8, 0, 20).unwrap();
    for row in &rows {
        assert!(soql::parse_datetime(text(row, "SystemModstamp")).unwrap() >= floor);
    }
    let expected = sandbox
        .accounts()
        .iter()
        .filter(|account| soql::parse_datetime(text(account, "SystemModstamp")).unwrap() >= floor)
        .count();
    assert_eq!(rows.len(), expected);
}

/// A token host that is not an OAuth server: it redirects, or answers HTML.
async fn start_wrong_token_host() -> String {
    use axum::Router;
    use axum::http::{StatusCode, header};
    use axum::routing::post;

    let router = Router::new()
        .route(
            "/redirect/services/oauth2/token",
            post(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "https://login.example.com/")],
                    "",
                )
            }),
        )
        .route(
            "/html/services/oauth2/token",
            post(|| async {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html>maintenance</html>",
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

#[tokio::test]
async fn token_hosts_that_do_not_speak_oauth_are_named() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let host = start_wrong_token_host().await;
    for (path, status, detail) in [
        ("/redirect", 302, "redirect to https://login.example.com/"),
        ("/html", 200, "body withheld"),
    ] {
        let mut config = client_credentials_client_config(&sandbox);
        config.login_url = format!("{host}{path}");
        let error = client(&config)
            .authenticate()
            .await
            .expect_err("not an oauth answer");
        let shown = error.to_string();
        assert!(
            matches!(&error, SalesforceError::TokenEndpoint { status: got, .. } if *got == status),
            "{error:?}"
        );
        assert!(
            shown.contains(&format!("{host}{path}/services/oauth2/token")),
            "{shown}"
        );
        assert!(shown.contains(detail), "{shown}");
        assert!(!error.is_retriable(), "{shown}");
    }
}

#[tokio::test]
async fn slow_and_unreachable_hosts_are_retriable_transport_errors() {
    let sandbox = start_jwt_salesforce(SalesforceSandboxOptions::default()).await;
    let settings = ondorse_bridge::salesforce::ClientSettings {
        connect_timeout: std::time::Duration::from_secs(1),
        request_timeout: std::time::Duration::from_millis(200),
    };
    let slow =
        SalesforceClient::with_settings(&jwt_client_config(&sandbox), settings, Metrics::new())
            .unwrap();
    slow.authenticate().await.unwrap();
    sandbox.set_latency(std::time::Duration::from_millis(1000));
    let error = slow
        .describe("Account")
        .await
        .expect_err("the call times out");
    assert!(
        matches!(
            error,
            SalesforceError::Transport {
                timed_out: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retriable());

    // A port nobody listens on any more.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut config = jwt_client_config(&sandbox);
    config.login_url = format!("http://{closed}");
    let error = client(&config)
        .authenticate()
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(error, SalesforceError::Transport { .. }),
        "{error:?}"
    );
    assert!(error.is_retriable());
}
