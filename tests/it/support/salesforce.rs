//! Starting a sandbox Salesforce for tests, seeded or not, and talking to it
//! with plain HTTP where a test needs a raw answer.

use ondorse_bridge::sandbox::salesforce::{
    JwtKeyPair, SalesforceSandbox, SalesforceSandboxOptions, generate_jwt_key_pair,
};
use serde_json::{Map, Value};

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
/// host, with the default options' consumer key and secret.
pub async fn access_token(http: &reqwest::Client, sandbox: &SalesforceSandbox) -> String {
    let defaults = SalesforceSandboxOptions::default();
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
