//! Our [`SalesforceClient`] pointed at a sandbox org, for any test that
//! needs to talk to Salesforce the way the daemon does.

use std::sync::OnceLock;
use std::time::Duration;

use ondorse_bridge::config::{SalesforceAuth, SalesforceConfig};
use ondorse_bridge::salesforce::{ClientSettings, SalesforceClient};
use ondorse_bridge::telemetry::Metrics;
use ondorse_sandbox::salesforce::{
    JwtKeyPair, SalesforceSandbox, SalesforceSandboxOptions, generate_jwt_key_pair,
};
use secrecy::SecretString;

use super::salesforce::start_salesforce;

/// The product's default share of the daily allowance.
const API_BUDGET_PERCENT: u8 = 50;

/// Short timeouts: the sandbox is on loopback, so a hang is a bug to see
/// quickly, not a slow network to wait for.
pub const TEST_CLIENT_SETTINGS: ClientSettings = ClientSettings {
    connect_timeout: Duration::from_secs(2),
    request_timeout: Duration::from_secs(10),
};

/// One RSA key pair for the whole test binary: generating one per test
/// would cost more than the tests themselves.
pub fn test_keys() -> &'static JwtKeyPair {
    static KEYS: OnceLock<JwtKeyPair> = OnceLock::new();
    KEYS.get_or_init(generate_jwt_key_pair)
}

/// A sandbox org that trusts [`test_keys`] for the JWT bearer flow.
pub async fn start_jwt_salesforce(options: SalesforceSandboxOptions) -> SalesforceSandbox {
    start_salesforce(SalesforceSandboxOptions {
        jwt_public_key_pem: Some(test_keys().public_key_pem.clone()),
        ..options
    })
    .await
}

/// `[salesforce]` for the JWT bearer flow against the sandbox login host,
/// signed with [`test_keys`].
pub fn jwt_client_config(sandbox: &SalesforceSandbox) -> SalesforceConfig {
    let options = sandbox.options();
    config(
        sandbox.login_url(),
        options.api_version,
        SalesforceAuth::JwtBearer {
            client_id: options.client_id,
            username: options.username,
            audience: sandbox.login_url(),
            private_key: SecretString::from(test_keys().private_key_pem.clone()),
        },
    )
}

/// `[salesforce]` for client credentials on the org's My Domain.
pub fn client_credentials_client_config(sandbox: &SalesforceSandbox) -> SalesforceConfig {
    let options = sandbox.options();
    config(
        sandbox.instance_url(),
        options.api_version,
        SalesforceAuth::ClientCredentials {
            client_id: options.client_id,
            client_secret: SecretString::from(options.client_secret),
        },
    )
}

/// `[salesforce]` for the refresh token flow with `refresh_token`.
pub fn refresh_token_client_config(
    sandbox: &SalesforceSandbox,
    refresh_token: &str,
) -> SalesforceConfig {
    let options = sandbox.options();
    config(
        sandbox.login_url(),
        options.api_version,
        SalesforceAuth::RefreshToken {
            client_id: options.client_id,
            client_secret: SecretString::from(options.client_secret),
            refresh_token: SecretString::from(refresh_token.to_owned()),
        },
    )
}

fn config(login_url: String, api_version: String, auth: SalesforceAuth) -> SalesforceConfig {
    SalesforceConfig {
        login_url,
        api_version,
        auth,
        api_budget_percent: API_BUDGET_PERCENT,
        max_concurrent_requests: ondorse_bridge::config::DEFAULT_SALESFORCE_MAX_CONCURRENT_REQUESTS,
        link_batch_wait: std::time::Duration::from_secs(
            ondorse_bridge::config::DEFAULT_LINK_BATCH_WAIT_SECONDS,
        ),
    }
}

/// Our client for `config`, with [`TEST_CLIENT_SETTINGS`].
pub fn client(config: &SalesforceConfig) -> SalesforceClient {
    SalesforceClient::with_settings(config, TEST_CLIENT_SETTINGS, Metrics::new())
        .expect("a test salesforce configuration builds a client")
}

/// Our client logging in to `sandbox` (started with [`start_jwt_salesforce`])
/// through the JWT bearer flow; no token is requested until the first call.
pub fn jwt_client(sandbox: &SalesforceSandbox) -> SalesforceClient {
    client(&jwt_client_config(sandbox))
}
