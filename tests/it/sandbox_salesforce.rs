//! The sandbox Salesforce against Salesforce's documented REST and OAuth
//! behaviour, over raw HTTP:
//! token flows and refusals, sessions, query pages, SOQL, describe, writes,
//! limits and every fault switch.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ondorse_bridge::config::SalesforceAuth;
use ondorse_sandbox::salesforce::{
    SalesforceSandbox, SalesforceSandboxOptions, generate_jwt_key_pair, sales_user_ids,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::support::salesforce::{
    access_token, client_credentials_config, fields, jwt_config, start_salesforce,
    start_salesforce_with_jwt, start_seeded_salesforce,
};

const VERSION: &str = "v62.0";

/// What a test looks at in an answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    body: Value,
}

impl Answer {
    fn error_code(&self) -> &str {
        self.body[0]["errorCode"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error array, got {} {}", self.status, self.text))
    }

    fn message(&self) -> &str {
        self.body[0]["message"].as_str().unwrap_or_default()
    }

    fn limit_info(&self) -> Option<&str> {
        self.headers
            .get("Sforce-Limit-Info")
            .and_then(|value| value.to_str().ok())
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the sandbox answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("the body is readable");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        text,
        body,
    }
}

/// A REST session on one sandbox.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn new(sandbox: &SalesforceSandbox) -> Api {
        let http = reqwest::Client::new();
        let token = access_token(&http, sandbox).await;
        Api {
            http,
            base: sandbox.instance_url(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/services/data/{VERSION}{path}", self.base)
    }

    async fn get(&self, path: &str) -> Answer {
        send(self.http.get(self.url(path)).bearer_auth(&self.token)).await
    }

    /// GET on a path relative to the instance (a `nextRecordsUrl`).
    async fn get_absolute(&self, path: &str) -> Answer {
        send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token),
        )
        .await
    }

    async fn query_answer(&self, soql: &str) -> Answer {
        send(
            self.http
                .get(self.url("/query"))
                .query(&[("q", soql)])
                .bearer_auth(&self.token),
        )
        .await
    }

    /// A query that must succeed: its first page.
    async fn query(&self, soql: &str) -> Value {
        let answer = self.query_answer(soql).await;
        assert_eq!(answer.status, StatusCode::OK, "{soql}: {}", answer.text);
        answer.body
    }

    /// Every record of a query, following `nextRecordsUrl`; also the page sizes.
    async fn query_everything(
        &self,
        soql: &str,
        batch_size: Option<usize>,
    ) -> (Vec<Value>, Vec<usize>) {
        let mut request = self
            .http
            .get(self.url("/query"))
            .query(&[("q", soql)])
            .bearer_auth(&self.token);
        if let Some(batch_size) = batch_size {
            request = request.header("Sforce-Query-Options", format!("batchSize={batch_size}"));
        }
        let mut answer = send(request).await;
        let mut records = Vec::new();
        let mut pages = Vec::new();
        loop {
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            let page = answer.body["records"].as_array().expect("records").clone();
            pages.push(page.len());
            records.extend(page);
            if answer.body["done"] == json!(true) {
                assert!(answer.body.get("nextRecordsUrl").is_none());
                break;
            }
            let next = answer.body["nextRecordsUrl"]
                .as_str()
                .expect("nextRecordsUrl")
                .to_owned();
            answer = self.get_absolute(&next).await;
        }
        (records, pages)
    }

    async fn patch(&self, path: &str, body: Value) -> Answer {
        send(
            self.http
                .patch(self.url(path))
                .bearer_auth(&self.token)
                .json(&body),
        )
        .await
    }

    /// One collection call setting `KYC_Status__c` on every Account of `ids`.
    async fn set_status(&self, ids: &[String], status: &str) -> Answer {
        let records = ids
            .iter()
            .map(|id| account_update(id, json!({ "KYC_Status__c": status })))
            .collect();
        self.composite(false, records).await
    }

    async fn composite(&self, all_or_none: bool, records: Vec<Value>) -> Answer {
        self.patch(
            "/composite/sobjects",
            json!({"allOrNone": all_or_none, "records": records}),
        )
        .await
    }
}

fn account_update(id: &str, changes: Value) -> Value {
    let mut record = json!({"attributes": {"type": "Account"}, "id": id});
    for (key, value) in changes.as_object().expect("changes are an object") {
        record[key] = value.clone();
    }
    record
}

async fn token_answer(url: &str, form: &[(&str, &str)]) -> Answer {
    send(
        reqwest::Client::new()
            .post(format!("{url}/services/oauth2/token"))
            .form(form),
    )
    .await
}

const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn jwt(private_key_pem: &str, algorithm: Algorithm, claims: Value) -> String {
    let key = match algorithm {
        Algorithm::HS256 => EncodingKey::from_secret(b"not an rsa key"),
        _ => EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).expect("a PEM RSA key"),
    };
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).expect("the JWT signs")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn assert_token_success(answer: &Answer, sandbox: &SalesforceSandbox) {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = &answer.body;
    let token = body["access_token"].as_str().expect("access_token");
    assert!(token.starts_with("00D") && token.contains("!AR"), "{token}");
    assert_eq!(body["instance_url"], json!(sandbox.instance_url()));
    assert_eq!(body["token_type"], json!("Bearer"));
    assert_eq!(body["scope"], json!("api"));
    assert!(
        body["id"]
            .as_str()
            .expect("id")
            .starts_with(&format!("{}/id/00D", sandbox.login_url()))
    );
    let issued_at: i64 = body["issued_at"]
        .as_str()
        .expect("issued_at is a string")
        .parse()
        .expect("milliseconds");
    assert!((issued_at / 1000 - now()).abs() < 60);
    assert!(body["signature"].is_string());
    assert!(
        body.get("expires_in").is_none(),
        "Salesforce never sends expires_in: {body}"
    );
}

fn assert_refused(answer: &Answer, error: &str, description: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_eq!(answer.body["error"], json!(error), "{}", answer.text);
    let actual = answer.body["error_description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        actual.contains(description),
        "{actual:?} should contain {description:?}"
    );
}

#[tokio::test]
async fn client_credentials_work_on_my_domain_only() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let good = [
        ("grant_type", "client_credentials"),
        ("client_id", "sandbox-client-id"),
        ("client_secret", "sandbox-client-secret"),
    ];
    assert_token_success(
        &token_answer(&sandbox.instance_url(), &good).await,
        &sandbox,
    );
    assert_refused(
        &token_answer(&sandbox.login_url(), &good).await,
        "invalid_grant",
        "request not supported on this domain",
    );
    let basic = send(
        reqwest::Client::new()
            .post(format!("{}/services/oauth2/token", sandbox.instance_url()))
            .basic_auth("sandbox-client-id", Some("sandbox-client-secret"))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    assert_token_success(&basic, &sandbox);
    assert_refused(
        &token_answer(
            &sandbox.instance_url(),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "nope"),
                ("client_secret", "sandbox-client-secret"),
            ],
        )
        .await,
        "invalid_client_id",
        "client identifier invalid",
    );
    assert_refused(
        &token_answer(
            &sandbox.instance_url(),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "sandbox-client-id"),
                ("client_secret", "wrong"),
            ],
        )
        .await,
        "invalid_client",
        "invalid client credentials",
    );
    assert_refused(
        &token_answer(&sandbox.instance_url(), &[("grant_type", "password")]).await,
        "unsupported_grant_type",
        "grant type not supported",
    );
    assert_eq!(sandbox.stats().token_requests, 6);
    assert_eq!(
        sandbox.stats().api_requests,
        0,
        "token calls are not API calls"
    );
}

#[tokio::test]
async fn jwt_bearer_checks_signature_issuer_audience_expiry_and_user() {
    let keys = generate_jwt_key_pair();
    let sandbox = start_salesforce(SalesforceSandboxOptions {
        jwt_public_key_pem: Some(keys.public_key_pem.clone()),
        unapproved_usernames: vec!["newbie@example.com".into()],
        ..SalesforceSandboxOptions::default()
    })
    .await;
    assert_eq!(
        sandbox.jwt_audiences(),
        vec![
            sandbox.login_url(),
            "https://login.salesforce.com".to_owned(),
            "https://test.salesforce.com".to_owned()
        ]
    );
    let claims = |changes: Value| {
        let mut claims = json!({
            "iss": "sandbox-client-id",
            "sub": "integration@example.com",
            "aud": "https://login.salesforce.com",
            "exp": now() + 120,
        });
        for (key, value) in changes.as_object().unwrap() {
            claims[key] = value.clone();
        }
        claims
    };
    let exchange = |assertion: String| {
        let url = sandbox.login_url();
        async move {
            token_answer(
                &url,
                &[("grant_type", JWT_GRANT), ("assertion", &assertion)],
            )
            .await
        }
    };
    let private = keys.private_key_pem.as_str();

    assert_token_success(
        &exchange(jwt(private, Algorithm::RS256, claims(json!({})))).await,
        &sandbox,
    );
    let on_instance = token_answer(
        &sandbox.instance_url(),
        &[
            ("grant_type", JWT_GRANT),
            (
                "assertion",
                &jwt(
                    private,
                    Algorithm::RS256,
                    claims(json!({"aud": sandbox.login_url()})),
                ),
            ),
        ],
    )
    .await;
    assert_token_success(&on_instance, &sandbox);

    let other_key = generate_jwt_key_pair();
    let cases = [
        (
            jwt(
                &other_key.private_key_pem,
                Algorithm::RS256,
                claims(json!({})),
            ),
            "invalid_grant",
            "invalid assertion",
        ),
        (
            jwt(private, Algorithm::HS256, claims(json!({}))),
            "invalid_grant",
            "RS256",
        ),
        (
            jwt(
                private,
                Algorithm::RS256,
                claims(json!({"iss": "someone-else"})),
            ),
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            jwt(
                private,
                Algorithm::RS256,
                claims(json!({"aud": "https://evil.example"})),
            ),
            "invalid_grant",
            "audience is invalid",
        ),
        (
            jwt(
                private,
                Algorithm::RS256,
                claims(json!({"exp": now() - 60})),
            ),
            "invalid_grant",
            "expired authorization code",
        ),
        (
            jwt(
                private,
                Algorithm::RS256,
                claims(json!({"exp": now() + 3600})),
            ),
            "invalid_grant",
            "3 minutes",
        ),
        (
            jwt(
                private,
                Algorithm::RS256,
                claims(json!({"sub": "newbie@example.com"})),
            ),
            "invalid_grant",
            "user hasn't approved this consumer",
        ),
        (
            jwt(
                private,
                Algorithm::RS256,
                claims(json!({"sub": "stranger@example.com"})),
            ),
            "invalid_grant",
            "invalid user",
        ),
        ("not.a.jwt".to_owned(), "invalid_grant", "invalid assertion"),
    ];
    for (assertion, error, description) in cases {
        assert_refused(&exchange(assertion).await, error, description);
    }
}

#[tokio::test]
async fn the_seeded_jwt_helper_signs_what_the_sandbox_accepts() {
    let (sandbox, keys) = start_salesforce_with_jwt(SalesforceSandboxOptions::default()).await;
    let assertion = jwt(
        &keys.private_key_pem,
        Algorithm::RS256,
        json!({"iss": "sandbox-client-id", "sub": "integration@example.com", "aud": sandbox.login_url(), "exp": now() + 60}),
    );
    let answer = token_answer(
        &sandbox.login_url(),
        &[("grant_type", JWT_GRANT), ("assertion", &assertion)],
    )
    .await;
    assert_token_success(&answer, &sandbox);
    assert!(
        !format!("{keys:?}").contains("PRIVATE"),
        "Debug hides the private key"
    );
}

#[tokio::test]
async fn the_client_configs_from_the_helpers_are_accepted() {
    let (sandbox, keys) = start_salesforce_with_jwt(SalesforceSandboxOptions::default()).await;
    let config = client_credentials_config(&sandbox);
    let SalesforceAuth::ClientCredentials {
        client_id,
        client_secret,
    } = &config.auth
    else {
        panic!("expected client credentials, got {:?}", config.auth);
    };
    let answer = token_answer(
        &config.login_url,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret.expose_secret()),
        ],
    )
    .await;
    assert_token_success(&answer, &sandbox);

    let config = jwt_config(&sandbox, &keys);
    let SalesforceAuth::JwtBearer {
        client_id,
        username,
        audience,
        private_key,
    } = &config.auth
    else {
        panic!("expected JWT bearer, got {:?}", config.auth);
    };
    let assertion = jwt(
        private_key.expose_secret(),
        Algorithm::RS256,
        json!({"iss": client_id, "sub": username, "aud": audience, "exp": now() + 60}),
    );
    let answer = token_answer(
        &config.login_url,
        &[("grant_type", JWT_GRANT), ("assertion", &assertion)],
    )
    .await;
    assert_token_success(&answer, &sandbox);
    assert_eq!(config.api_version, "62.0");
}

#[tokio::test]
async fn a_dropped_sandbox_stops_answering() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let api = Api::new(&sandbox).await;
    assert_eq!(api.get("/limits").await.status, StatusCode::OK);
    drop(sandbox);
    let deadline = Instant::now() + crate::support::world::E2E_DEADLINE;
    loop {
        let outcome = api
            .http
            .get(api.url("/limits"))
            .bearer_auth(&api.token)
            .send()
            .await;
        if outcome.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped sandbox still answers"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_bad_jwt_key_is_refused_at_start() {
    let refused = SalesforceSandbox::start(SalesforceSandboxOptions {
        jwt_public_key_pem: Some(
            "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n".into(),
        ),
        ..SalesforceSandboxOptions::default()
    })
    .await
    .expect_err("a garbage key must not start");
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        refused.to_string().contains("jwt_public_key_pem"),
        "{refused}"
    );
}

#[tokio::test]
async fn jwt_bearer_is_refused_without_a_key() {
    let keys = generate_jwt_key_pair();
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let assertion = jwt(
        &keys.private_key_pem,
        Algorithm::RS256,
        json!({"iss": "sandbox-client-id", "sub": "integration@example.com", "aud": sandbox.login_url(), "exp": now() + 60}),
    );
    assert_refused(
        &token_answer(
            &sandbox.login_url(),
            &[("grant_type", JWT_GRANT), ("assertion", &assertion)],
        )
        .await,
        "invalid_grant",
        "invalid assertion",
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_when_asked() {
    for rotate in [false, true] {
        let sandbox = start_salesforce(SalesforceSandboxOptions {
            refresh_tokens: vec!["5Aep861first".into()],
            rotate_refresh_tokens: rotate,
            ..SalesforceSandboxOptions::default()
        })
        .await;
        let refresh = |token: String| {
            let url = sandbox.login_url();
            async move {
                token_answer(
                    &url,
                    &[
                        ("grant_type", "refresh_token"),
                        ("client_id", "sandbox-client-id"),
                        ("client_secret", "sandbox-client-secret"),
                        ("refresh_token", &token),
                    ],
                )
                .await
            }
        };
        let first = refresh("5Aep861first".into()).await;
        assert_token_success(&first, &sandbox);
        let again = refresh("5Aep861first".into()).await;
        if rotate {
            let fresh = first.body["refresh_token"]
                .as_str()
                .expect("a rotated refresh token")
                .to_owned();
            assert_refused(&again, "invalid_grant", "expired access/refresh token");
            assert_token_success(&refresh(fresh).await, &sandbox);
        } else {
            assert!(first.body.get("refresh_token").is_none());
            assert_token_success(&again, &sandbox);
        }
        assert_refused(
            &refresh("5Aep861unknown".into()).await,
            "invalid_grant",
            "expired access/refresh token",
        );
    }
}

#[tokio::test]
async fn sessions_are_checked_and_expire_on_demand() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let api = Api::new(&sandbox).await;
    let http = reqwest::Client::new();
    let missing = send(http.get(api.url("/limits"))).await;
    let bogus = send(http.get(api.url("/limits")).bearer_auth("00Dbogus!ARnope")).await;
    for answer in [&missing, &bogus] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            answer.body,
            json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
        );
        assert!(answer.limit_info().is_some());
    }
    assert_eq!(api.get("/limits").await.status, StatusCode::OK);
    sandbox.expire_tokens();
    let expired = api.get("/limits").await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.error_code(), "INVALID_SESSION_ID");
    let renewed = Api::new(&sandbox).await;
    assert_eq!(renewed.get("/limits").await.status, StatusCode::OK);
}

#[tokio::test]
async fn query_records_look_like_salesforce() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let owner = sales_user_ids()[0].clone();
    let ids = sandbox.insert_accounts(vec![fields(json!({
        "Name": "Acme SAS",
        "OwnerId": owner,
        "SystemModstamp": "2026-11-25T20:49:32Z",
        "NumberOfEmployees": 12,
        "Date_Of_Birth__c": "1980-02-29",
    }))]);
    let api = Api::new(&sandbox).await;
    let body = api
        .query("SELECT Id, Name, SystemModstamp, Owner.Email, Owner.Name, AnnualRevenue, NumberOfEmployees, Date_Of_Birth__c FROM Account")
        .await;
    let id = &ids[0];
    assert_eq!(id.len(), 18);
    assert_eq!(
        body,
        json!({
            "totalSize": 1,
            "done": true,
            "records": [{
                "attributes": {"type": "Account", "url": format!("/services/data/v62.0/sobjects/Account/{id}")},
                "Id": id,
                "Name": "Acme SAS",
                "SystemModstamp": "2026-11-25T20:49:32.000+0000",
                "Owner": {
                    "attributes": {"type": "User", "url": format!("/services/data/v62.0/sobjects/User/{owner}")},
                    "Email": "sam.carter@example.com",
                    "Name": "Sam Carter",
                },
                "AnnualRevenue": null,
                "NumberOfEmployees": 12,
                "Date_Of_Birth__c": "1980-02-29",
            }],
        })
    );
    // Field names come back in their canonical case, whatever the query says.
    let body = api.query("select name, owner.email from account").await;
    assert_eq!(body["records"][0]["Name"], json!("Acme SAS"));
    assert_eq!(
        body["records"][0]["Owner"]["Email"],
        json!("sam.carter@example.com")
    );
    let users = api
        .query("SELECT Id, Email, IsActive FROM User WHERE Email = 'sam.carter@example.com'")
        .await;
    assert_eq!(users["records"][0]["attributes"]["type"], json!("User"));
    assert_eq!(users["records"][0]["Id"], json!(owner));
}

#[tokio::test]
async fn pages_follow_the_server_size_and_the_batch_size_hint() {
    let (sandbox, ids) = start_seeded_salesforce(5000, 1).await;
    let api = Api::new(&sandbox).await;
    let soql = "SELECT Id, SystemModstamp FROM Account ORDER BY SystemModstamp, Id";
    let first = api.query(soql).await;
    assert_eq!(first["totalSize"], json!(5000));
    assert_eq!(first["done"], json!(false));
    let next = first["nextRecordsUrl"].as_str().unwrap();
    assert!(
        next.starts_with("/services/data/v62.0/query/01g") && next.ends_with("-2000"),
        "{next}"
    );

    let (records, pages) = api.query_everything(soql, None).await;
    assert_eq!(pages, vec![2000, 2000, 1000]);
    let returned: Vec<&str> = records
        .iter()
        .map(|record| record["Id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(
        returned, expected,
        "every row once, tied stamps ordered by Id"
    );

    let (_, pages) = api.query_everything(soql, Some(1500)).await;
    assert_eq!(pages, vec![1500, 1500, 1500, 500]);
    let (_, pages) = api.query_everything(soql, Some(50)).await;
    assert_eq!(pages.len(), 25, "a batchSize below 200 is raised to 200");
    let (_, pages) = api.query_everything(soql, Some(9000)).await;
    assert_eq!(
        pages,
        vec![2000, 2000, 1000],
        "a batchSize above 2000 is lowered to 2000"
    );
    let stats = sandbox.stats();
    assert_eq!(stats.query_requests, 5);
    assert_eq!(stats.query_more_requests, 2 + 3 + 24 + 2);

    let small = start_salesforce(SalesforceSandboxOptions {
        page_size: 100,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    small.insert_accounts(SalesforceSandbox::generate_accounts(250, 2));
    let api = Api::new(&small).await;
    let (records, pages) = api
        .query_everything("SELECT Id FROM Account", Some(1000))
        .await;
    assert_eq!(
        (records.len(), pages),
        (250, vec![100, 100, 50]),
        "never above the server page size"
    );
}

#[tokio::test]
async fn cursor_pages_come_from_a_snapshot_and_can_expire() {
    let sandbox = start_salesforce(SalesforceSandboxOptions {
        page_size: 100,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    let ids = sandbox.insert_accounts(SalesforceSandbox::generate_accounts(150, 3));
    let api = Api::new(&sandbox).await;
    let first = api.query("SELECT Id, Name FROM Account ORDER BY Id").await;
    sandbox.insert_accounts(SalesforceSandbox::generate_accounts(10, 4));
    sandbox.edit_account(&ids[149], fields(json!({"Name": "Renamed Later"})));
    let next = first["nextRecordsUrl"].as_str().unwrap().to_owned();
    let second = api.get_absolute(&next).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body["totalSize"], json!(150));
    assert_eq!(second.body["done"], json!(true));
    let records = second.body["records"].as_array().unwrap();
    assert_eq!(records.len(), 50);
    assert_ne!(
        records[49]["Name"],
        json!("Renamed Later"),
        "pages show the rows as they were"
    );

    let again = api.query("SELECT Id FROM Account ORDER BY Id").await;
    sandbox.expire_query_locators();
    let expired = api
        .get_absolute(again["nextRecordsUrl"].as_str().unwrap())
        .await;
    assert_eq!(expired.status, StatusCode::BAD_REQUEST);
    assert_eq!(expired.error_code(), "INVALID_QUERY_LOCATOR");
    let unknown = api.get("/query/01gSb0000000999-100").await;
    assert_eq!(unknown.error_code(), "INVALID_QUERY_LOCATOR");
}

#[tokio::test]
async fn push_hints_read_accounts_by_id_and_query_all_pages_too() {
    let sandbox = start_salesforce(SalesforceSandboxOptions {
        page_size: 100,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    let ids = sandbox.insert_accounts(SalesforceSandbox::generate_accounts(250, 12));
    let api = Api::new(&sandbox).await;
    // 15- and 18-char Ids name the same records.
    let wanted = format!(
        "'{}', '{}', '{}'",
        &ids[3][..15],
        ids[200],
        "001Sb00000ZZZZZ"
    );
    let body = api
        .query(&format!(
            "SELECT Id FROM Account WHERE Id IN ({wanted}) ORDER BY Id"
        ))
        .await;
    let found: Vec<&str> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["Id"].as_str().unwrap())
        .collect();
    assert_eq!(found, vec![ids[3].as_str(), ids[200].as_str()]);
    let bad = api
        .query_answer("SELECT Id FROM Account WHERE Id = 'not-an-id'")
        .await;
    assert_eq!(bad.error_code(), "INVALID_QUERY_FILTER_OPERATOR");

    sandbox.delete_account(&ids[0]);
    let first = send(
        api.http
            .get(api.url("/queryAll"))
            .query(&[("q", "SELECT Id, IsDeleted FROM Account")])
            .bearer_auth(&api.token),
    )
    .await;
    assert_eq!(first.body["totalSize"], json!(250));
    let next = first.body["nextRecordsUrl"].as_str().unwrap().to_owned();
    let second = api.get_absolute(&next).await;
    assert_eq!(
        second.limit_info(),
        Some("api-usage=4/1000000"),
        "cursor pages count and report usage"
    );
    assert_eq!(second.body["records"].as_array().unwrap().len(), 100);
    sandbox.expire_tokens();
    let expired = api
        .get_absolute(second.body["nextRecordsUrl"].as_str().unwrap())
        .await;
    assert_eq!(expired.error_code(), "INVALID_SESSION_ID");
}

#[tokio::test]
async fn late_commits_appear_with_their_old_stamp() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let api = Api::new(&sandbox).await;
    let stamp = chrono::Utc::now() - chrono::Duration::minutes(5);
    let ids = sandbox.insert_accounts(vec![fields(
        json!({"Name": "Slow Transaction Ltd", "SystemModstamp": stamp.to_rfc3339()}),
    )]);
    let account = sandbox.account(&ids[0]).unwrap();
    let expected = stamp.format("%Y-%m-%dT%H:%M:%S.000+0000").to_string();
    assert_eq!(account["SystemModstamp"], json!(expected));
    assert_eq!(account["CreatedDate"], json!(expected));
    let one_minute_ago =
        (chrono::Utc::now() - chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let ten_minutes_ago =
        (chrono::Utc::now() - chrono::Duration::minutes(10)).format("%Y-%m-%dT%H:%M:%SZ");
    let recent = api
        .query(&format!(
            "SELECT Id FROM Account WHERE SystemModstamp >= {one_minute_ago}"
        ))
        .await;
    assert_eq!(recent["totalSize"], json!(0));
    let overlapping = api
        .query(&format!(
            "SELECT Id FROM Account WHERE SystemModstamp >= {ten_minutes_ago}"
        ))
        .await;
    assert_eq!(overlapping["totalSize"], json!(1));

    sandbox.edit_account(
        &ids[0],
        fields(json!({"Phone": "+33 1 00", "SystemModstamp": stamp.to_rfc3339()})),
    );
    let edited = sandbox.account(&ids[0]).unwrap();
    assert_eq!(
        edited["SystemModstamp"],
        json!(expected),
        "a late edit keeps its stamp"
    );
    assert_eq!(edited["LastModifiedDate"], json!(expected));
    assert_eq!(edited["Phone"], json!("+33 1 00"));
    sandbox.edit_account(&ids[0], fields(json!({"Phone": "+33 1 01"})));
    let stamped_now = sandbox.account(&ids[0]).unwrap()["SystemModstamp"].clone();
    assert!(
        stamped_now.as_str().unwrap() > expected.as_str(),
        "a plain edit stamps now: {stamped_now}"
    );
}

#[tokio::test]
async fn soql_filters_sort_and_limit() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let owners = sales_user_ids();
    sandbox.insert_accounts(vec![
        fields(json!({"Name": "Alpha", "Type": "Customer", "NumberOfEmployees": 10, "OwnerId": owners[0], "SystemModstamp": "2026-11-25T10:00:00Z"})),
        fields(json!({"Name": "beta", "Type": "Prospect", "NumberOfEmployees": 200, "OwnerId": owners[1], "SystemModstamp": "2026-11-25T11:00:00Z"})),
        fields(json!({"Name": "Gamma", "Type": null, "OwnerId": owners[0], "KYC_Status__c": "Approved", "SystemModstamp": "2026-11-25T12:00:00Z"})),
        fields(json!({"Name": "Delta", "Type": "Customer", "NumberOfEmployees": 50, "OwnerId": owners[2], "SystemModstamp": "2026-11-25T12:00:00Z"})),
    ]);
    let api = Api::new(&sandbox).await;
    let names = |body: Value| -> Vec<String> {
        body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| record["Name"].as_str().unwrap().to_owned())
            .collect()
    };
    let cases: &[(&str, &[&str])] = &[
        ("Type = 'customer' ORDER BY Name", &["Alpha", "Delta"]),
        (
            "Type = 'Customer' AND KYC_Status__c = null ORDER BY Name",
            &["Alpha", "Delta"],
        ),
        ("Type != 'Customer' ORDER BY Name", &["beta", "Gamma"]),
        ("Type = null", &["Gamma"]),
        ("Type IN ('Prospect', 'Partner')", &["beta"]),
        ("Type NOT IN ('Customer') ORDER BY Name", &["beta", "Gamma"]),
        (
            "Name LIKE '%a' ORDER BY Name",
            &["Alpha", "beta", "Delta", "Gamma"],
        ),
        ("Name LIKE 'g_mm%'", &["Gamma"]),
        (
            "NumberOfEmployees >= 50 ORDER BY NumberOfEmployees DESC",
            &["beta", "Delta"],
        ),
        ("NumberOfEmployees < 50", &["Alpha"]),
        (
            "(Type = 'Prospect' OR Type = null) AND NOT Name = 'Gamma'",
            &["beta"],
        ),
        (
            "SystemModstamp > 2026-11-25T11:00:00Z ORDER BY Name",
            &["Delta", "Gamma"],
        ),
        (
            "SystemModstamp >= 2026-11-25T12:00:00+01:00 ORDER BY Name",
            &["beta", "Delta", "Gamma"],
        ),
        (
            "Owner.Email = 'sam.carter@example.com' ORDER BY Name",
            &["Alpha", "Gamma"],
        ),
        (
            "Name != null ORDER BY Type NULLS LAST, Name DESC LIMIT 3",
            &["Delta", "Alpha", "beta"],
        ),
        (
            "Name != null ORDER BY Type, Name",
            &["Gamma", "Alpha", "Delta", "beta"],
        ),
        (
            "Name != null ORDER BY Type DESC, Name",
            &["beta", "Alpha", "Delta", "Gamma"],
        ),
        (
            "Name != null ORDER BY Owner.Name, Name",
            &["beta", "Delta", "Alpha", "Gamma"],
        ),
    ];
    for (condition, expected) in cases {
        let body = api
            .query(&format!("SELECT Name FROM Account WHERE {condition}"))
            .await;
        assert_eq!(names(body), *expected, "{condition}");
    }
    // The keyset predicate a cursor (SystemModstamp, Id) resumes with.
    let tied = api
        .query(
            "SELECT Id, Name FROM Account WHERE SystemModstamp = 2026-11-25T12:00:00Z ORDER BY Id",
        )
        .await;
    let first_tied = tied["records"][0]["Id"].as_str().unwrap().to_owned();
    let resumed = api
        .query(&format!(
            "SELECT Name FROM Account WHERE SystemModstamp > 2026-11-25T12:00:00Z \
             OR (SystemModstamp = 2026-11-25T12:00:00Z AND Id > '{first_tied}') ORDER BY SystemModstamp, Id"
        ))
        .await;
    assert_eq!(
        names(resumed),
        vec![tied["records"][1]["Name"].as_str().unwrap().to_owned()]
    );
    let limited = api.query("SELECT Id FROM Account LIMIT 2").await;
    assert_eq!(limited["totalSize"], json!(2));
}

#[tokio::test]
async fn bad_soql_gets_salesforce_errors() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let api = Api::new(&sandbox).await;
    let cases = [
        (
            "SELECT Id FROM Account WHERE Name = 'x' AND",
            "MALFORMED_QUERY",
            "unexpected token: '<EOF>'",
        ),
        (
            "SELECT Id FROM Account WHERE Name = 'a' AND Type = 'b' OR Type = 'c'",
            "MALFORMED_QUERY",
            "Column:56",
        ),
        (
            "SELECT Id FROM Account WHERE Name = 'bad \\x escape'",
            "MALFORMED_QUERY",
            "escape",
        ),
        (
            "SELECT Id FROM Account WHERE Name = 'open",
            "MALFORMED_QUERY",
            "unterminated",
        ),
        (
            "SELECT Id FROM Account LIMIT many",
            "MALFORMED_QUERY",
            "unexpected token: 'many'",
        ),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > 2026-13-45T99:00:00Z",
            "MALFORMED_QUERY",
            "datetime",
        ),
        (
            "SELECT Id, Foo__c FROM Account",
            "INVALID_FIELD",
            "No such column 'Foo__c' on entity 'Account'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.",
        ),
        (
            "SELECT Id FROM Account WHERE Bar__c = 'x'",
            "INVALID_FIELD",
            "No such column 'Bar__c'",
        ),
        (
            "SELECT Id FROM Account ORDER BY Baz",
            "INVALID_FIELD",
            "No such column 'Baz'",
        ),
        (
            "SELECT Manager.Email FROM Account",
            "INVALID_FIELD",
            "Didn't understand relationship 'Manager'",
        ),
        (
            "SELECT Owner.Phone FROM Account",
            "INVALID_FIELD",
            "No such column 'Phone' on entity 'User'",
        ),
        (
            "SELECT Id FROM Account WHERE SystemModstamp > '2026-11-25T00:00:00Z'",
            "INVALID_FIELD",
            "must be of type dateTime and should not be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Account WHERE Name = 42",
            "INVALID_FIELD",
            "must be of type string and should be enclosed in quotes",
        ),
        (
            "SELECT Id FROM Contact",
            "INVALID_TYPE",
            "sObject type 'Contact' is not supported.",
        ),
    ];
    for (soql, code, message) in cases {
        let answer = api.query_answer(soql).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{soql}");
        assert_eq!(answer.error_code(), code, "{soql}: {}", answer.text);
        assert!(
            answer.message().contains(message),
            "{soql}: {:?} should contain {message:?}",
            answer.message()
        );
    }
}

#[tokio::test]
async fn only_the_escaped_literal_finds_a_name_with_quotes() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let tricky = "Evil' OR Name != 'x";
    sandbox.insert_accounts(vec![
        fields(json!({"Name": tricky})),
        fields(json!({"Name": "Innocent Ltd"})),
        fields(json!({"Name": "Back\\slash\tand tab"})),
    ]);
    let api = Api::new(&sandbox).await;
    let escaped = api
        .query(r"SELECT Name FROM Account WHERE Name = 'Evil\' OR Name != \'x'")
        .await;
    assert_eq!(escaped["totalSize"], json!(1));
    assert_eq!(escaped["records"][0]["Name"], json!(tricky));
    // Pasted without escaping, the value rewrites the query and matches everything.
    let injected = api
        .query(&format!("SELECT Name FROM Account WHERE Name = '{tricky}'"))
        .await;
    assert_eq!(injected["totalSize"], json!(3));
    let escapes = api
        .query(r"SELECT Name FROM Account WHERE Name = 'back\\slash\tAND TAB'")
        .await;
    assert_eq!(escapes["totalSize"], json!(1));
    let unicode = api
        .query(r"SELECT Name FROM Account WHERE Name = '\u0049nnocent ltd'")
        .await;
    assert_eq!(unicode["totalSize"], json!(1));
}

#[tokio::test]
async fn describe_serves_the_kyc_fields() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let api = Api::new(&sandbox).await;
    let answer = api.get("/sobjects/Account/describe").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["name"], json!("Account"));
    let fields = answer.body["fields"].as_array().unwrap();
    let field = |name: &str| {
        fields
            .iter()
            .find(|field| field["name"] == json!(name))
            .unwrap_or_else(|| panic!("no {name} in describe"))
            .clone()
    };
    for name in [
        "Id",
        "Name",
        "Type",
        "AccountSource",
        "Industry",
        "BillingStreet",
        "BillingCity",
        "BillingPostalCode",
        "BillingCountry",
        "BillingCountryCode",
        "Phone",
        "Website",
        "AnnualRevenue",
        "NumberOfEmployees",
        "Description",
        "OwnerId",
        "CreatedDate",
        "LastModifiedDate",
        "SystemModstamp",
        "IsDeleted",
        "Registration_Number__c",
        "Contact_First_Name__c",
        "Contact_Last_Name__c",
        "Contact_Email__c",
        "Date_Of_Birth__c",
        "KYC_Status__c",
        "KYC_Risk_Level__c",
        "KYC_Risk_Score__c",
        "KYC_Decision_Date__c",
        "Ondorse_Portal_Url__c",
        "Ondorse_Collect_Url__c",
        "Ondorse_Application_Id__c",
        "KYC_Score_Band__c",
    ] {
        let described = field(name);
        for key in [
            "type",
            "label",
            "updateable",
            "nillable",
            "calculated",
            "filterable",
            "length",
            "restrictedPicklist",
            "picklistValues",
            "referenceTo",
            "relationshipName",
        ] {
            assert!(described.get(key).is_some(), "{name} lacks {key}");
        }
    }
    let status = field("KYC_Status__c");
    assert_eq!(status["type"], json!("picklist"));
    assert_eq!(status["restrictedPicklist"], json!(true));
    assert!(status["picklistValues"].as_array().unwrap().contains(
        &json!({"value": "Legacy", "label": "Legacy", "active": false, "defaultValue": false})
    ));
    assert!(status["picklistValues"].as_array().unwrap().contains(
        &json!({"value": "Approved", "label": "Approved", "active": true, "defaultValue": false})
    ));
    let owner = field("OwnerId");
    assert_eq!(
        (
            owner["type"].clone(),
            owner["referenceTo"].clone(),
            owner["relationshipName"].clone()
        ),
        (json!("reference"), json!(["User"]), json!("Owner"))
    );
    let score = field("KYC_Risk_Score__c");
    assert_eq!(
        (
            score["type"].clone(),
            score["precision"].clone(),
            score["scale"].clone()
        ),
        (json!("double"), json!(5), json!(2))
    );
    let band = field("KYC_Score_Band__c");
    assert_eq!(
        (band["calculated"].clone(), band["updateable"].clone()),
        (json!(true), json!(false))
    );
    let stamp = field("SystemModstamp");
    assert_eq!(
        (stamp["type"].clone(), stamp["updateable"].clone()),
        (json!("datetime"), json!(false))
    );
    assert_eq!(field("Registration_Number__c")["length"], json!(32));
    assert_eq!(field("Description")["filterable"], json!(false));

    let parsed: ondorse_bridge::salesforce::model::SObjectDescribe =
        serde_json::from_value(answer.body.clone()).expect("the shared describe model reads it");
    assert!(
        parsed
            .field("kyc_status__c")
            .unwrap()
            .active_picklist_values()
            .all(|value| value != "Legacy")
    );

    let user = api.get("/sobjects/User/describe").await;
    let names: Vec<&str> = user.body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| field["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Id", "Name", "Email", "Username", "IsActive"]);
    let unknown = api.get("/sobjects/Opportunity/describe").await;
    assert_eq!(
        (unknown.status, unknown.error_code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    assert_eq!(sandbox.stats().describe_requests, 3);
}

#[tokio::test]
async fn single_updates_answer_204_and_bump_the_stamp() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let ids = sandbox.insert_accounts(vec![fields(
        json!({"Name": "Acme", "SystemModstamp": "2026-01-01T00:00:00Z"}),
    )]);
    let api = Api::new(&sandbox).await;
    let answer = api
        .patch(&format!("/sobjects/Account/{}", ids[0]), json!({"KYC_Status__c": "Approved", "KYC_Risk_Score__c": 42.123, "KYC_Decision_Date__c": "2026-11-25T21:49:32+01:00"}))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.text.is_empty());
    let account = sandbox.account(&ids[0]).unwrap();
    assert_eq!(account["KYC_Status__c"], json!("Approved"));
    assert_eq!(account["KYC_Risk_Score__c"], json!(42.12));
    assert_eq!(
        account["KYC_Decision_Date__c"],
        json!("2026-11-25T20:49:32.000+0000")
    );
    assert_eq!(
        account["KYC_Score_Band__c"],
        json!("Medium"),
        "formulas follow the data"
    );
    assert!(
        account["SystemModstamp"].as_str().unwrap() > "2026-01-01T00:00:00.000+0000",
        "{}",
        account["SystemModstamp"]
    );
    assert_eq!(account["SystemModstamp"], account["LastModifiedDate"]);
    assert_eq!(
        account["CreatedDate"],
        json!("2026-01-01T00:00:00.000+0000")
    );

    // The 15-char form of an Id addresses the same record.
    let short = &ids[0][..15];
    assert_eq!(
        api.patch(
            &format!("/sobjects/Account/{short}"),
            json!({"Phone": "+33 1 23"})
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );

    let refused = api
        .patch(
            &format!("/sobjects/Account/{}", ids[0]),
            json!({"KYC_Risk_Level__c": "Extreme"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.error_code(),
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );
    assert_eq!(refused.body[0]["fields"], json!(["KYC_Risk_Level__c"]));
    let missing = api
        .patch("/sobjects/Account/001Sb00000ZZZZZ", json!({"Phone": "1"}))
        .await;
    assert_eq!(
        (missing.status, missing.error_code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let malformed = api
        .patch("/sobjects/Account/nonsense", json!({"Phone": "1"}))
        .await;
    assert_eq!(malformed.error_code(), "MALFORMED_ID");
    let garbage = send(
        api.http
            .patch(api.url(&format!("/sobjects/Account/{}", ids[0])))
            .bearer_auth(&api.token)
            .body("{not json"),
    )
    .await;
    assert_eq!(
        (garbage.status, garbage.error_code()),
        (StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR")
    );
    let stats = sandbox.stats();
    assert_eq!((stats.single_updates, stats.records_updated), (6, 2));
}

#[tokio::test]
async fn collections_answer_one_result_per_record_in_order() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let ids = sandbox.insert_accounts(SalesforceSandbox::generate_accounts(14, 5));
    sandbox.delete_account(&ids[3]);
    sandbox.add_validation_rule(&[&ids[4]], "Risk level requires a review date");
    let api = Api::new(&sandbox).await;
    let records = vec![
        account_update(
            &ids[0],
            json!({"KYC_Status__c": "Approved", "KYC_Risk_Level__c": "Low"}),
        ),
        account_update(&ids[1], json!({"KYC_Status__c": "Legacy"})),
        account_update(&ids[2], json!({"Registration_Number__c": "x".repeat(33)})),
        account_update(&ids[3], json!({"KYC_Status__c": "Approved"})),
        account_update(&ids[4], json!({"KYC_Risk_Level__c": "High"})),
        account_update(&ids[5], json!({"Unknown__c": 1})),
        account_update(&ids[6], json!({"KYC_Score_Band__c": "High"})),
        account_update(&ids[7], json!({"KYC_Risk_Score__c": "very high"})),
        account_update(&ids[8], json!({"Name": null})),
        account_update("001Sb00000ZZZZZ", json!({"Phone": "1"})),
        account_update("001-not-an-id", json!({"Phone": "1"})),
        account_update(&ids[9], json!({"SystemModstamp": "2020-01-01T00:00:00Z"})),
        account_update(&ids[10], json!({"Date_Of_Birth__c": "25/11/1980"})),
        account_update(
            &ids[11],
            json!({"KYC_Risk_Score__c": 12.5, "Ondorse_Portal_Url__c": "https://collect.ondorse.co/p/1", "Ondorse_Application_Id__c": null}),
        ),
    ];
    let answer = api.composite(false, records).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let results = answer.body.as_array().unwrap();
    assert_eq!(results.len(), 14);
    assert_eq!(
        results[0],
        json!({"id": ids[0], "success": true, "errors": []})
    );
    assert_eq!(
        results[13],
        json!({"id": ids[11], "success": true, "errors": []})
    );
    let codes: Vec<&str> = results[1..13]
        .iter()
        .map(|result| {
            assert_eq!(result["success"], json!(false));
            assert!(result.get("id").is_none());
            result["errors"][0]["statusCode"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "STRING_TOO_LONG",
            "ENTITY_IS_DELETED",
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "INVALID_FIELD",
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "REQUIRED_FIELD_MISSING",
            "NOT_FOUND",
            "MALFORMED_ID",
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
        ]
    );
    assert_eq!(
        results[4]["errors"][0]["message"],
        json!("Risk level requires a review date")
    );
    assert_eq!(
        results[2]["errors"][0]["fields"],
        json!(["Registration_Number__c"])
    );
    assert_eq!(
        sandbox.account(&ids[0]).unwrap()["KYC_Status__c"],
        json!("Approved")
    );
    assert_eq!(
        sandbox.account(&ids[11]).unwrap()["Ondorse_Portal_Url__c"],
        json!("https://collect.ondorse.co/p/1")
    );
    assert!(
        sandbox.account(&ids[1]).unwrap()["KYC_Status__c"].is_null(),
        "failed records stay as they were"
    );
    assert!(sandbox.account(&ids[4]).unwrap()["KYC_Risk_Level__c"].is_null());
    let stats = sandbox.stats();
    assert_eq!((stats.composite_requests, stats.records_updated), (1, 2));

    sandbox.clear_validation_rules();
    let retried = api
        .composite(
            false,
            vec![account_update(
                &ids[4],
                json!({"KYC_Risk_Level__c": "High"}),
            )],
        )
        .await;
    assert_eq!(retried.body[0]["success"], json!(true));
}

#[tokio::test]
async fn all_or_none_rolls_everything_back() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let ids = sandbox.insert_accounts(SalesforceSandbox::generate_accounts(3, 6));
    let before: Vec<_> = ids.iter().map(|id| sandbox.account(id).unwrap()).collect();
    let api = Api::new(&sandbox).await;
    let answer = api
        .composite(
            true,
            vec![
                account_update(&ids[0], json!({"KYC_Status__c": "Approved"})),
                account_update(&ids[1], json!({"KYC_Risk_Level__c": "Bogus"})),
                account_update(&ids[2], json!({"KYC_Status__c": "Rejected"})),
            ],
        )
        .await;
    let results = answer.body.as_array().unwrap();
    assert_eq!(
        results[1]["errors"][0]["statusCode"],
        json!("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
    );
    for index in [0, 2] {
        assert_eq!(results[index]["success"], json!(false));
        assert_eq!(
            results[index]["errors"][0]["statusCode"],
            json!("ALL_OR_NONE_OPERATION_ROLLED_BACK")
        );
    }
    let after: Vec<_> = ids.iter().map(|id| sandbox.account(id).unwrap()).collect();
    assert_eq!(before, after, "nothing changed, stamps included");
    assert_eq!(sandbox.stats().records_updated, 0);

    let answer = api
        .composite(
            true,
            vec![
                account_update(&ids[0], json!({"KYC_Status__c": "Approved"})),
                account_update(&ids[2], json!({"KYC_Status__c": "Rejected"})),
            ],
        )
        .await;
    assert!(
        answer
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|result| result["success"] == json!(true))
    );
    assert_eq!(sandbox.stats().records_updated, 2);
}

#[tokio::test]
async fn collections_refuse_more_than_200_records_and_bad_bodies() {
    let (sandbox, ids) = start_seeded_salesforce(201, 7).await;
    let api = Api::new(&sandbox).await;
    let records: Vec<Value> = ids
        .iter()
        .map(|id| account_update(id, json!({"KYC_Status__c": "In review"})))
        .collect();
    let answer = api.composite(false, records.clone()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "EXCEEDED_ID_LIMIT");
    assert_eq!(sandbox.stats().records_updated, 0);

    let answer = api.composite(false, records[..200].to_vec()).await;
    assert_eq!(answer.body.as_array().unwrap().len(), 200);
    assert_eq!(sandbox.stats().records_updated, 200);

    for body in [
        json!({"allOrNone": false}),
        json!({"allOrNone": "yes", "records": []}),
        json!([1, 2]),
    ] {
        let answer = api.patch("/composite/sobjects", body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(answer.error_code().len() > 3);
    }
    let garbage = send(
        api.http
            .patch(api.url("/composite/sobjects"))
            .bearer_auth(&api.token)
            .body("{\"records\": ["),
    )
    .await;
    assert_eq!(
        (garbage.status, garbage.error_code()),
        (StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR")
    );
    let untyped = api
        .patch(
            "/composite/sobjects",
            json!({"records": [{"id": ids[0], "Phone": "1"}]}),
        )
        .await;
    assert_eq!(
        untyped.body[0]["errors"][0]["statusCode"],
        json!("INVALID_TYPE")
    );
}

#[tokio::test]
async fn usage_is_reported_and_the_api_limits_enforced() {
    let sandbox = start_salesforce(SalesforceSandboxOptions {
        daily_api_limit: 100,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    let api = Api::new(&sandbox).await;
    let first = api.get("/limits").await;
    assert_eq!(first.limit_info(), Some("api-usage=1/100"));
    assert_eq!(
        first.body["DailyApiRequests"],
        json!({"Max": 100, "Remaining": 99})
    );
    let second = api.query_answer("SELECT Id FROM Nothing").await;
    assert_eq!(
        second.limit_info(),
        Some("api-usage=2/100"),
        "errors carry the header too"
    );
    sandbox.set_api_usage(99);
    let last = api.get("/limits").await;
    assert_eq!(
        (last.status, last.limit_info()),
        (StatusCode::OK, Some("api-usage=100/100"))
    );
    let refused = api.get("/limits").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.body,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(refused.limit_info(), Some("api-usage=100/100"));
    assert_eq!(sandbox.stats().api_requests, 3);
    sandbox.set_api_usage(0);
    assert_eq!(api.get("/limits").await.status, StatusCode::OK);

    // Too many long-running requests: the same code, another limit, and
    // nothing counted against the day's allowance.
    sandbox.refuse_long_requests(1);
    let used = sandbox.stats().api_requests;
    let busy = api.get("/limits").await;
    assert_eq!(busy.status, StatusCode::FORBIDDEN);
    assert_eq!(
        busy.body,
        json!([{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(sandbox.stats().api_requests, used);
    assert_eq!(api.get("/limits").await.status, StatusCode::OK);
}

#[tokio::test]
async fn other_api_versions_are_not_found() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let api = Api::new(&sandbox).await;
    let answer = send(
        api.http
            .get(format!("{}/services/data/v58.0/limits", api.base))
            .bearer_auth(&api.token),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error_code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let unknown = api.get("/sobjects").await;
    assert_eq!(
        (unknown.status, unknown.error_code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
}

#[tokio::test]
async fn deleted_accounts_leave_query_but_not_query_all() {
    let (sandbox, ids) = start_seeded_salesforce(3, 8).await;
    sandbox.delete_account(&ids[1]);
    let api = Api::new(&sandbox).await;
    assert_eq!(
        api.query("SELECT Id FROM Account").await["totalSize"],
        json!(2)
    );
    let all = send(
        api.http
            .get(api.url("/queryAll"))
            .query(&[(
                "q",
                "SELECT Id, IsDeleted FROM Account WHERE IsDeleted = true",
            )])
            .bearer_auth(&api.token),
    )
    .await;
    assert_eq!(all.body["totalSize"], json!(1));
    assert_eq!(all.body["records"][0]["Id"], json!(ids[1]));
    assert_eq!(all.body["records"][0]["IsDeleted"], json!(true));
    let write = api
        .patch(
            &format!("/sobjects/Account/{}", ids[1]),
            json!({"Phone": "1"}),
        )
        .await;
    assert_eq!(write.error_code(), "ENTITY_IS_DELETED");
    assert_eq!(sandbox.accounts().len(), 3);
}

#[tokio::test]
async fn injected_failures_are_html_503s_for_rest_calls_only() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let api = Api::new(&sandbox).await;
    sandbox.fail_next_requests(2);
    Api::new(&sandbox).await; // token calls pass through
    for _ in 0..2 {
        let answer = api.get("/limits").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            answer.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(answer.text.contains("<html>"));
    }
    assert_eq!(api.get("/limits").await.status, StatusCode::OK);
}

#[tokio::test]
async fn locked_rows_fail_then_succeed() {
    let (sandbox, ids) = start_seeded_salesforce(2, 9).await;
    sandbox.lock_rows(&[&ids[0]], 2);
    let api = Api::new(&sandbox).await;
    let update = || {
        api.composite(
            false,
            vec![
                account_update(&ids[0], json!({"KYC_Status__c": "In review"})),
                account_update(&ids[1], json!({"KYC_Status__c": "In review"})),
            ],
        )
    };
    for _ in 0..2 {
        let answer = update().await;
        assert_eq!(
            answer.body[0]["errors"][0]["statusCode"],
            json!("UNABLE_TO_LOCK_ROW")
        );
        assert_eq!(answer.body[1]["success"], json!(true));
    }
    let answer = update().await;
    assert_eq!(answer.body[0]["success"], json!(true));
    assert_eq!(
        sandbox.account(&ids[0]).unwrap()["KYC_Status__c"],
        json!("In review")
    );
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let api = Api::new(&sandbox).await;
    sandbox.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(api.get("/limits").await.status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    Api::new(&sandbox).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "token calls too: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn schema_drift_reaches_describe_queries_and_writes() {
    let (sandbox, ids) = start_seeded_salesforce(1, 10).await;
    let api = Api::new(&sandbox).await;
    sandbox.remove_field("Registration_Number__c");
    sandbox.set_field_updateable("KYC_Status__c", false);
    let describe = api.get("/sobjects/Account/describe").await;
    let fields = describe.body["fields"].as_array().unwrap();
    assert!(
        fields
            .iter()
            .all(|field| field["name"] != json!("Registration_Number__c"))
    );
    let status = fields
        .iter()
        .find(|field| field["name"] == json!("KYC_Status__c"))
        .unwrap();
    assert_eq!(status["updateable"], json!(false));
    let query = api
        .query_answer("SELECT Registration_Number__c FROM Account")
        .await;
    assert_eq!(query.error_code(), "INVALID_FIELD");
    let write = api
        .composite(
            false,
            vec![
                account_update(&ids[0], json!({"Registration_Number__c": "1"})),
                account_update(&ids[0], json!({"KYC_Status__c": "Approved"})),
            ],
        )
        .await;
    assert_eq!(
        write.body[0]["errors"][0]["statusCode"],
        json!("INVALID_FIELD")
    );
    assert_eq!(
        write.body[1]["errors"][0]["statusCode"],
        json!("INVALID_FIELD_FOR_INSERT_UPDATE")
    );
    assert!(
        sandbox
            .account(&ids[0])
            .unwrap()
            .get("Registration_Number__c")
            .is_none()
    );
}

#[tokio::test]
async fn ten_thousand_rows_are_queried_whole_in_pages_and_in_order() {
    let (sandbox, _) = start_seeded_salesforce(10_000, 11).await;
    let api = Api::new(&sandbox).await;
    let (records, pages) = api
        .query_everything(
            "SELECT Id, Name, Type, BillingCountryCode, Owner.Email, SystemModstamp FROM Account \
             WHERE Type = 'Customer' AND KYC_Status__c = null ORDER BY SystemModstamp, Id",
            None,
        )
        .await;
    let selected = sandbox
        .accounts()
        .iter()
        .filter(|account| {
            account.get("Type") == Some(&json!("Customer"))
                && account.get("KYC_Status__c").is_none_or(Value::is_null)
        })
        .count();
    assert!(selected > 6000, "{selected} customers");
    assert_eq!(records.len(), selected, "every selected row, once");
    assert!(pages.iter().all(|page| *page <= 2000), "{pages:?}");
    assert_eq!(pages.len(), selected.div_ceil(2000), "{pages:?}");
    let order: Vec<(&str, &str)> = records
        .iter()
        .map(|record| {
            (
                record["SystemModstamp"].as_str().expect("SystemModstamp"),
                record["Id"].as_str().expect("Id"),
            )
        })
        .collect();
    assert!(
        order.windows(2).all(|pair| pair[0] < pair[1]),
        "ordered by SystemModstamp, Id without repeats"
    );
}

#[tokio::test]
async fn refused_logins_answer_invalid_grant_for_a_while() {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let http = reqwest::Client::new();
    let options = sandbox.options();
    let login = || {
        http.post(format!("{}/services/oauth2/token", sandbox.instance_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", options.client_id.as_str()),
                ("client_secret", options.client_secret.as_str()),
            ])
            .send()
    };
    sandbox.refuse_logins(2);
    for _ in 0..2 {
        let answer = login().await.expect("the token endpoint answers");
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        let body: Value = answer.json().await.expect("an OAuth error");
        assert_eq!(body["error"], json!("invalid_grant"));
        assert_eq!(body["error_description"], json!("authentication failure"));
    }
    let answer = login().await.expect("the token endpoint answers");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(sandbox.stats().token_requests, 3);
}

#[tokio::test]
async fn a_blank_collection_answer_still_updates_the_records() {
    let (sandbox, ids) = start_seeded_salesforce(2, 31).await;
    let api = Api::new(&sandbox).await;
    sandbox.blank_collection_answers(1);
    let answer = api.set_status(&ids, "In review").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.text.is_empty(), "{}", answer.text);
    for id in &ids {
        assert_eq!(
            sandbox.account(id).expect("seeded")["KYC_Status__c"],
            json!("In review")
        );
    }
    // One blank answer only.
    let answer = api.set_status(&ids, "Approved").await;
    assert_eq!(answer.body[0]["success"], json!(true));
    assert_eq!(sandbox.stats().records_updated, 4);
}

#[tokio::test]
async fn requests_are_counted_per_endpoint_even_when_refused() {
    let sandbox = start_salesforce(SalesforceSandboxOptions {
        daily_api_limit: 2,
        ..SalesforceSandboxOptions::default()
    })
    .await;
    let api = Api::new(&sandbox).await;
    assert_eq!(api.get("/limits").await.status, StatusCode::OK);
    assert_eq!(
        api.get("/sobjects/Account/describe").await.status,
        StatusCode::OK
    );
    // The allowance is used up: refused, and still counted.
    assert_eq!(api.get("/limits").await.status, StatusCode::FORBIDDEN);
    let stats = sandbox.stats();
    assert_eq!(stats.received["limits"], 2);
    assert_eq!(stats.received["describe"], 1);
    assert_eq!(stats.limits_requests, 1, "only answered looks");
    assert_eq!(stats.api_requests, 2);
}

#[tokio::test]
async fn ignored_collections_answer_204_change_nothing_and_leave_single_updates_working() {
    let (sandbox, ids) = start_seeded_salesforce(2, 9).await;
    sandbox.ignore_collection_updates(true);
    let api = Api::new(&sandbox).await;
    let approve = vec![account_update(
        &ids[0],
        json!({"KYC_Status__c": "Approved"}),
    )];
    let ignored = api.composite(false, approve.clone()).await;
    assert_eq!(ignored.status, StatusCode::NO_CONTENT);
    assert!(ignored.text.is_empty(), "{}", ignored.text);
    assert_eq!(
        sandbox.account(&ids[0]).unwrap()["KYC_Status__c"],
        Value::Null
    );
    let single = api
        .patch(
            &format!("/sobjects/Account/{}", ids[1]),
            json!({"KYC_Status__c": "Approved"}),
        )
        .await;
    assert_eq!(single.status, StatusCode::NO_CONTENT);
    assert_eq!(
        sandbox.account(&ids[1]).unwrap()["KYC_Status__c"],
        json!("Approved")
    );

    sandbox.ignore_collection_updates(false);
    let answered = api.composite(false, approve).await;
    assert_eq!(answered.status, StatusCode::OK);
    assert_eq!(answered.body[0]["success"], json!(true));
    assert_eq!(
        sandbox.account(&ids[0]).unwrap()["KYC_Status__c"],
        json!("Approved")
    );
    let stats = sandbox.stats();
    assert_eq!((stats.composite_requests, stats.records_updated), (2, 2));
}

#[tokio::test]
async fn merges_and_undeletes_show_in_query_and_query_all() {
    let (sandbox, ids) = start_seeded_salesforce(4, 10).await;
    sandbox.merge_accounts(&ids[0], &[&ids[1], &ids[2]]);
    sandbox.delete_account(&ids[3]);
    let api = Api::new(&sandbox).await;
    assert_eq!(
        api.query("SELECT Id FROM Account").await["totalSize"],
        json!(1),
        "losers and deleted Accounts leave query"
    );
    let all = send(
        api.http
            .get(api.url("/queryAll"))
            .query(&[(
                "q",
                "SELECT Id, IsDeleted, MasterRecordId FROM Account ORDER BY Id",
            )])
            .bearer_auth(&api.token),
    )
    .await;
    let rows: Vec<(Value, Value, Value)> = all.body["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|row| {
            (
                row["Id"].clone(),
                row["IsDeleted"].clone(),
                row["MasterRecordId"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (json!(ids[0]), json!(false), Value::Null),
            (json!(ids[1]), json!(true), json!(ids[0])),
            (json!(ids[2]), json!(true), json!(ids[0])),
            (json!(ids[3]), json!(true), Value::Null),
        ]
    );
    let loser = api
        .patch(
            &format!("/sobjects/Account/{}", ids[1]),
            json!({"Phone": "1"}),
        )
        .await;
    assert_eq!(loser.error_code(), "ENTITY_IS_DELETED");

    let stamp = sandbox.account(&ids[3]).unwrap()["SystemModstamp"].clone();
    // Stamps are to the second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sandbox.undelete_account(&ids[3]);
    let restored = sandbox.account(&ids[3]).unwrap();
    assert_eq!(restored["IsDeleted"], json!(false));
    assert_ne!(restored["SystemModstamp"], stamp, "an undelete is a change");
    assert_eq!(
        api.query("SELECT Id FROM Account").await["totalSize"],
        json!(2)
    );
    let write = api
        .patch(
            &format!("/sobjects/Account/{}", ids[3]),
            json!({"Phone": "1"}),
        )
        .await;
    assert_eq!(write.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_short_collection_answer_and_a_disabled_api() {
    let (sandbox, ids) = start_seeded_salesforce(2, 32).await;
    let api = Api::new(&sandbox).await;
    sandbox.short_collection_answers(1);
    let answer = api.set_status(&ids, "In review").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        answer.text
    );
    assert_eq!(
        sandbox.account(&ids[1]).expect("seeded")["KYC_Status__c"],
        json!("In review"),
        "both records were updated"
    );

    sandbox.disable_api(1);
    let answer = api.get("/limits").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.error_code(), "API_DISABLED_FOR_ORG");
    assert_eq!(api.get("/limits").await.status, StatusCode::OK);
}
