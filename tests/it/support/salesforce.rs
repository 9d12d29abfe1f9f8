//! Starting a sandbox Salesforce for tests, seeded or not, and talking to it
//! with plain HTTP where a test needs a raw answer.

use ondorse_bridge::config::{SalesforceAuth, SalesforceConfig};
use ondorse_sandbox::salesforce::{
    JwtKeyPair, SalesforceSandbox, SalesforceSandboxOptions, generate_jwt_key_pair,
};
use secrecy::SecretString;
use serde_json::{Map, Value};

/// The share of the daily allowance our client may use in tests: the
/// product's default.
const API_BUDGET_PERCENT: u8 = 50;

/// A sandbox org with these options, listening on loopback.
pub async fn start_salesforce(options: SalesforceSandboxOptions) -> SalesforceSandbox {
    SalesforceSandbox::start(options)
        .await
        .expect("the sandbox salesforce binds loopback ports")
}

/// A sandbox org with default options and `count` generated Accounts
/// (deterministic for `seed`); answers the sandbox and the new Ids in order.
pub async fn start_seeded_salesforce(count: usize, seed: u64) -> (SalesforceSandbox, Vec<String>) {
    let sandbox = start_salesforce(SalesforceSandboxOptions::default()).await;
    let ids = sandbox.insert_accounts(SalesforceSandbox::generate_accounts(count, seed));
    (sandbox, ids)
}

/// A JSON object literal as a field map: `fields(json!({"Name": "Acme"}))`.
pub fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected a JSON object of fields, got {other}"),
    }
}

/// An access token through the client credentials flow on the instance
/// host, with the sandbox's consumer key and secret.
pub async fn access_token(http: &reqwest::Client, sandbox: &SalesforceSandbox) -> String {
    let defaults = sandbox.options();
    let answer: Value = http
        .post(format!("{}/services/oauth2/token", sandbox.instance_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", defaults.client_id.as_str()),
            ("client_secret", defaults.client_secret.as_str()),
        ])
        .send()
        .await
        .expect("the token endpoint answers")
        .json()
        .await
        .expect("the token answer is JSON");
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {answer}"))
        .to_owned()
}

/// A sandbox org that accepts JWT bearer assertions signed by the returned
/// key pair (for the default consumer key and integration user).
pub async fn start_salesforce_with_jwt(
    options: SalesforceSandboxOptions,
) -> (SalesforceSandbox, JwtKeyPair) {
    let keys = generate_jwt_key_pair();
    let sandbox = start_salesforce(SalesforceSandboxOptions {
        jwt_public_key_pem: Some(keys.public_key_pem.clone()),
        ..options
    })
    .await;
    (sandbox, keys)
}

/// Our client's `[salesforce]` settings for this sandbox with the client
/// credentials flow (token host: the org's My Domain, as in production).
pub fn client_credentials_config(sandbox: &SalesforceSandbox) -> SalesforceConfig {
    let options = sandbox.options();
    SalesforceConfig {
        login_url: sandbox.instance_url(),
        api_version: options.api_version,
        auth: SalesforceAuth::ClientCredentials {
            client_id: options.client_id,
            client_secret: SecretString::from(options.client_secret),
        },
        api_budget_percent: API_BUDGET_PERCENT,
        max_concurrent_requests: ondorse_bridge::config::DEFAULT_SALESFORCE_MAX_CONCURRENT_REQUESTS,
        link_batch_wait: std::time::Duration::from_secs(
            ondorse_bridge::config::DEFAULT_LINK_BATCH_WAIT_SECONDS,
        ),
    }
}

/// Our client's `[salesforce]` settings for this sandbox with the JWT bearer
/// flow against the login host, signing with `keys`.
pub fn jwt_config(sandbox: &SalesforceSandbox, keys: &JwtKeyPair) -> SalesforceConfig {
    let options = sandbox.options();
    SalesforceConfig {
        login_url: sandbox.login_url(),
        api_version: options.api_version,
        auth: SalesforceAuth::JwtBearer {
            client_id: options.client_id,
            username: options.username,
            audience: sandbox.login_url(),
            private_key: SecretString::from(keys.private_key_pem.clone()),
        },
        api_budget_percent: API_BUDGET_PERCENT,
        max_concurrent_requests: ondorse_bridge::config::DEFAULT_SALESFORCE_MAX_CONCURRENT_REQUESTS,
        link_batch_wait: std::time::Duration::from_secs(
            ondorse_bridge::config::DEFAULT_LINK_BATCH_WAIT_SECONDS,
        ),
    }
}
