//! Sandbox Salesforce: a real HTTP server that answers as Salesforce's REST
//! API and OAuth do: OAuth token endpoint, SOQL query with cursor
//! pages, describe, single and collection updates, limits, and fault
//! switches.
//!
//! Two listeners play two hosts: [`SalesforceSandbox::login_url`] is
//! `login.salesforce.com` (token endpoint only, no client credentials) and
//! [`SalesforceSandbox::instance_url`] is the org's My Domain (token
//! endpoint with every flow, and the REST API). Data lives in memory behind
//! one lock; a query over 10,000 rows or a 200-record update takes
//! milliseconds, unless [`SalesforceSandboxOptions::latency`] asks for a
//! realistic latency (token calls, query pages, single and composite
//! updates each wait their draw before being carried out).
//!
//! # Layout
//!
//! - `data`: the schema (what describe serves), Ids, write rules per field.
//! - `soql`: lexer, parser, resolver and evaluator of the SOQL subset.
//! - `org`: the state: records, sessions, cursors, counters.
//! - `auth`: the token endpoint; `rest`: the REST routes and their gate.
//! - `faults`: the switches tests flip; `seed`: users and generated companies.

mod auth;
mod data;
mod faults;
mod org;
mod rest;
mod seed;
mod soql;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, patch, post};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{JwtKeyPair, generate_jwt_key_pair};
pub use seed::sales_user_ids;

use super::latency::{Latency, LatencyProfile};
use auth::Host;
use org::Org;

/// The server page size when nothing else is said: Salesforce's maximum.
pub const DEFAULT_PAGE_SIZE: usize = 2000;
/// A comfortable daily allowance, so only budget tests ever reach it.
pub const DEFAULT_DAILY_API_LIMIT: u64 = 1_000_000;
/// The API version the sandbox serves unless told otherwise.
pub const DEFAULT_API_VERSION: &str = "62.0";
/// Seeds the latency profile's draws: any fixed value makes runs repeatable.
const LATENCY_SEED: u64 = 62;
/// JWT audiences Salesforce accepts besides the login host itself.
const PUBLIC_AUDIENCES: [&str; 2] = [
    "https://login.salesforce.com",
    "https://test.salesforce.com",
];

/// How the sandbox org is set up.
#[derive(Clone)]
pub struct SalesforceSandboxOptions {
    /// Connected app consumer key: JWT `iss`, `client_id` of the other flows.
    pub client_id: String,
    pub client_secret: String,
    /// The integration user: JWT `sub`.
    pub username: String,
    /// RS256 verification key (PEM); `None` refuses the JWT flow.
    pub jwt_public_key_pem: Option<String>,
    /// JWT subjects refused with "user hasn't approved this consumer".
    pub unapproved_usernames: Vec<String>,
    /// Refresh tokens valid at start.
    pub refresh_tokens: Vec<String>,
    /// Answer a new refresh token on each refresh, and revoke the old one.
    pub rotate_refresh_tokens: bool,
    /// `DailyApiRequests` Max.
    pub daily_api_limit: u64,
    /// Records per query page; `Sforce-Query-Options: batchSize` may lower it.
    pub page_size: usize,
    /// The newest version the org serves, e.g. `62.0`; versions it does
    /// not serve answer 404 `NOT_FOUND` on every path under them.
    pub api_version: String,
    /// Older versions the org serves too (listed by `GET /services/data/`).
    pub older_api_versions: Vec<String>,
    /// How long token calls, query pages and updates take.
    pub latency: LatencyProfile,
}

/// Debug output leaves the secrets out, even fake ones: habits travel.
impl std::fmt::Debug for SalesforceSandboxOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SalesforceSandboxOptions")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("username", &self.username)
            .field("jwt_public_key_pem", &self.jwt_public_key_pem.is_some())
            .field("unapproved_usernames", &self.unapproved_usernames)
            .field("refresh_tokens", &self.refresh_tokens.len())
            .field("rotate_refresh_tokens", &self.rotate_refresh_tokens)
            .field("daily_api_limit", &self.daily_api_limit)
            .field("page_size", &self.page_size)
            .field("api_version", &self.api_version)
            .field("older_api_versions", &self.older_api_versions)
            .field("latency", &self.latency)
            .finish()
    }
}

impl Default for SalesforceSandboxOptions {
    fn default() -> Self {
        SalesforceSandboxOptions {
            client_id: "sandbox-client-id".into(),
            client_secret: "sandbox-client-secret".into(),
            username: "integration@example.com".into(),
            jwt_public_key_pem: None,
            unapproved_usernames: Vec::new(),
            refresh_tokens: Vec::new(),
            rotate_refresh_tokens: false,
            daily_api_limit: DEFAULT_DAILY_API_LIMIT,
            page_size: DEFAULT_PAGE_SIZE,
            api_version: DEFAULT_API_VERSION.into(),
            older_api_versions: Vec::new(),
            latency: LatencyProfile::Loopback,
        }
    }
}

/// What the sandbox has been asked so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalesforceSandboxStats {
    pub token_requests: u64,
    /// REST calls counted against the daily allowance.
    pub api_requests: u64,
    /// First pages of queries (`/query`, `/queryAll`).
    pub query_requests: u64,
    /// Follow-up pages (`nextRecordsUrl`).
    pub query_more_requests: u64,
    pub describe_requests: u64,
    /// `GET /limits` answered (the API budget governor's own look).
    pub limits_requests: u64,
    /// Every REST request that arrived, refused or not, by endpoint:
    /// `query`, `query_more`, `describe`, `update_one`, `composite`,
    /// `limits`, `other`.
    pub received: std::collections::BTreeMap<String, u64>,
    pub composite_requests: u64,
    pub single_updates: u64,
    /// Record writes that succeeded (single and collection).
    pub records_updated: u64,
    /// REST requests in flight now (arrival to answer, latency included),
    /// and the most ever at once.
    pub in_flight: u64,
    pub most_in_flight: u64,
}

/// The state both listeners share.
#[derive(Clone)]
pub(crate) struct Shared {
    org: Arc<Mutex<Org>>,
    /// The latency profile's draws, waited by each route.
    latency: Arc<Latency>,
}

impl Shared {
    /// The org; a panic in another request does not poison the sandbox.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Org> {
        self.org
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits the configured latency (`set_latency`).
    pub(crate) async fn delay(&self) {
        let latency = self.lock().faults.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
}

/// JWT audiences accepted when the login host is `login_url`.
fn audiences(login_url: &str) -> Vec<String> {
    std::iter::once(login_url.to_owned())
        .chain(
            PUBLIC_AUDIENCES
                .iter()
                .map(|audience| (*audience).to_owned()),
        )
        .collect()
}

/// A running sandbox org; its servers stop when it is dropped.
pub struct SalesforceSandbox {
    shared: Shared,
    login_url: String,
    instance_url: String,
    /// Dropping it (with the handle) tells both listeners to stop: they
    /// finish in-flight requests and close idle keep-alive connections, so
    /// a client sees the org go away instead of a half-alive server.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for SalesforceSandbox {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SalesforceSandbox")
            .field("login_url", &self.login_url)
            .field("instance_url", &self.instance_url)
            .finish_non_exhaustive()
    }
}

impl SalesforceSandbox {
    /// Binds both listeners on `127.0.0.1:0` and starts serving; fails with
    /// `InvalidInput` when `jwt_public_key_pem` is not an RSA public key.
    pub async fn start(options: SalesforceSandboxOptions) -> std::io::Result<SalesforceSandbox> {
        let login_listener = TcpListener::bind("127.0.0.1:0").await?;
        let instance_listener = TcpListener::bind("127.0.0.1:0").await?;
        let login_url = format!("http://{}", login_listener.local_addr()?);
        let instance_url = format!("http://{}", instance_listener.local_addr()?);
        let jwt_key = options
            .jwt_public_key_pem
            .as_deref()
            .map(auth::verification_key)
            .transpose()?;
        let shared = Shared {
            latency: Arc::new(Latency::new(options.latency, LATENCY_SEED)),
            org: Arc::new(Mutex::new(Org::new(
                options,
                jwt_key,
                login_url.clone(),
                instance_url.clone(),
            ))),
        };
        let (shutdown, stopped) = watch::channel(());
        serve(
            login_listener,
            login_router(shared.clone()),
            stopped.clone(),
        );
        serve(instance_listener, instance_router(shared.clone()), stopped);
        tracing::debug!(%login_url, %instance_url, "sandbox salesforce listening");
        Ok(SalesforceSandbox {
            shared,
            login_url,
            instance_url,
            _shutdown: shutdown,
        })
    }

    /// The `login.salesforce.com` role: token endpoint for the JWT and refresh
    /// token flows; client credentials are refused here, as on the real host.
    pub fn login_url(&self) -> String {
        self.login_url.clone()
    }

    /// The org's My Domain: token endpoint for every flow, and the REST API.
    pub fn instance_url(&self) -> String {
        self.instance_url.clone()
    }

    /// The options the sandbox was started with (credentials for clients).
    pub fn options(&self) -> SalesforceSandboxOptions {
        self.org().options.clone()
    }

    /// Accepted JWT `aud` values.
    pub fn jwt_audiences(&self) -> Vec<String> {
        audiences(&self.login_url)
    }

    fn org(&self) -> MutexGuard<'_, Org> {
        self.shared.lock()
    }

    // -- data --------------------------------------------------------------

    /// Stores Accounts as a data load would. Fields are checked like the API
    /// does (a panic names a bad one); Ids are assigned unless `Id` is given;
    /// the stamps are now unless `SystemModstamp` is given, which is how a
    /// test simulates a late commit (a row stamped in the past that appears now).
    pub fn insert_accounts(&self, accounts: Vec<Map<String, Value>>) -> Vec<String> {
        self.org().insert_accounts(accounts)
    }

    /// The stored Account (every describe field, no `attributes`).
    pub fn account(&self, id: &str) -> Option<Map<String, Value>> {
        self.org().account_view(id)
    }

    /// Every stored Account, deleted ones included, in Id order.
    pub fn accounts(&self) -> Vec<Map<String, Value>> {
        self.org().account_views()
    }

    /// A human edit in the UI: no permission checks, bumps `SystemModstamp`
    /// (to now, or to the `SystemModstamp` given, which simulates an edit
    /// whose transaction commits late).
    pub fn edit_account(&self, id: &str, fields: Map<String, Value>) {
        self.org().edit_account(id, &fields);
    }

    /// Moves an Account to the recycle bin: hidden from query, visible to
    /// queryAll, and writes answer `ENTITY_IS_DELETED`.
    pub fn delete_account(&self, id: &str) {
        self.org().delete_account(id);
    }

    /// Restores a deleted Account from the recycle bin (its stamp bumped,
    /// as an undelete does): query sees it and writes work again.
    pub fn undelete_account(&self, id: &str) {
        self.org().undelete_account(id);
    }

    /// Merges `losers` into `master`: each loser goes to the recycle bin
    /// with `IsDeleted = true` and `MasterRecordId` = the master (queryAll
    /// shows both), and writes to it answer `ENTITY_IS_DELETED`.
    pub fn merge_accounts(&self, master: &str, losers: &[&str]) {
        self.org().merge_accounts(master, losers);
    }

    /// `count` realistic companies, deterministic per `seed`, without Ids;
    /// owners are the seeded sales users ([`sales_user_ids`]).
    pub fn generate_accounts(count: usize, seed: u64) -> Vec<Map<String, Value>> {
        seed::generate_accounts(count, seed)
    }

    // -- schema drift --------------------------------------------------------

    /// Removes an Account field from describe, queries and writes.
    pub fn remove_field(&self, name: &str) {
        assert!(
            self.org().account_schema.remove_field(name),
            "remove_field: no field {name:?} on Account"
        );
    }

    /// Makes an Account field writable or read-only for the integration user.
    pub fn set_field_updateable(&self, name: &str, updateable: bool) {
        assert!(
            self.org().account_schema.set_updateable(name, updateable),
            "set_field_updateable: no field {name:?} on Account"
        );
    }

    // -- faults --------------------------------------------------------------

    /// Every access token issued so far answers 401 `INVALID_SESSION_ID`.
    pub fn expire_tokens(&self) {
        self.org().expire_sessions();
    }

    /// The next `count` REST requests (not token calls) answer 503 with an
    /// HTML page, as an overloaded pod does: they never reach the API, so
    /// they carry no `Sforce-Limit-Info` and use none of the allowance.
    pub fn fail_next_requests(&self, count: usize) {
        self.org().faults.failing_requests = count;
    }

    /// The next `count` token requests are refused with `400 invalid_grant`
    /// ("authentication failure"), as a login outage or a locked integration
    /// user answers; expire the tokens too to make the client log in.
    pub fn refuse_logins(&self, count: usize) {
        self.org().faults.refused_logins = count;
    }

    /// The next `count` sObject Collections updates are carried out, then
    /// answered `200` with an empty body: the outcome is lost on the way back.
    pub fn blank_collection_answers(&self, count: usize) {
        self.org().faults.blank_collection_answers = count;
    }

    /// The next `count` sObject Collections updates answer 503 with an HTML
    /// page, changing nothing, while queries and every other call work.
    pub fn fail_next_collection_updates(&self, count: usize) {
        self.org().faults.failing_collection_updates = count;
    }

    /// The next `count` sObject Collections updates are carried out, then
    /// answered with one result fewer than the records sent.
    pub fn short_collection_answers(&self, count: usize) {
        self.org().faults.short_collection_answers = count;
    }

    /// The next `count` REST requests answer 403 `API_DISABLED_FOR_ORG`, as
    /// an org whose API was switched off does.
    pub fn disable_api(&self, count: usize) {
        self.org().faults.api_disabled_requests = count;
    }

    /// While `on`, sObject Collections updates change nothing and answer
    /// `204` with no body, as a Salesforce-compatible server that does not
    /// implement them does; `PATCH /sobjects/Account/{id}` still works.
    pub fn ignore_collection_updates(&self, on: bool) {
        self.org().faults.ignored_collections = on;
    }

    /// Each write to these records fails `UNABLE_TO_LOCK_ROW` `attempts`
    /// times, then goes through.
    pub fn lock_rows(&self, ids: &[&str], attempts: u32) {
        let mut org = self.org();
        for id in ids {
            let id =
                data::normalize_id(id).unwrap_or_else(|| panic!("lock_rows: malformed Id {id:?}"));
            org.faults.locked_rows.insert(id, attempts);
        }
    }

    /// Writes to these records fail `FIELD_CUSTOM_VALIDATION_EXCEPTION` with `message`.
    pub fn add_validation_rule(&self, ids: &[&str], message: &str) {
        let mut org = self.org();
        for id in ids {
            let id = data::normalize_id(id)
                .unwrap_or_else(|| panic!("add_validation_rule: malformed Id {id:?}"));
            org.faults.validation_rules.insert(id, message.to_owned());
        }
    }

    pub fn clear_validation_rules(&self) {
        self.org().faults.validation_rules.clear();
    }

    /// Every answer (token calls included) comes this much later.
    pub fn set_latency(&self, latency: Duration) {
        self.org().faults.latency = latency;
    }

    /// The next `requests` REST requests answer 403 `REQUEST_LIMIT_EXCEEDED`
    /// `ConcurrentPerOrgLongTxn Limit exceeded.` (the org runs too many
    /// requests of 20 s or more at once), counting nothing against the
    /// daily allowance.
    pub fn refuse_long_requests(&self, requests: usize) {
        self.org().faults.long_request_refusals = requests;
    }

    /// Sets today's API usage; at or above the limit every REST call answers
    /// 403 `REQUEST_LIMIT_EXCEEDED`.
    pub fn set_api_usage(&self, used: u64) {
        self.org().api_usage = used;
    }

    /// Outstanding `nextRecordsUrl`s answer 400 `INVALID_QUERY_LOCATOR`.
    pub fn expire_query_locators(&self) {
        self.org().expire_locators();
    }

    // -- observation -----------------------------------------------------------

    pub fn stats(&self) -> SalesforceSandboxStats {
        self.org().stats.clone()
    }
}

/// Serves `router` until the sandbox handle is dropped.
fn serve(listener: TcpListener, router: Router, mut stopped: watch::Receiver<()>) {
    tokio::spawn(async move {
        // `changed` fails once the sender (owned by the handle) is gone.
        let handle_dropped = async move { while stopped.changed().await.is_ok() {} };
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(handle_dropped)
            .await
        {
            tracing::warn!(%error, "sandbox salesforce listener stopped");
        }
    });
}

/// `login.salesforce.com`: the token endpoint only.
fn login_router(shared: Shared) -> Router {
    Router::new()
        .route(
            "/services/oauth2/token",
            post(move |headers, form| auth::token(shared, Host::Login, headers, form)),
        )
        .fallback(rest::not_found)
}

/// The org's My Domain: token endpoint and REST API.
fn instance_router(shared: Shared) -> Router {
    let api = Router::new()
        .route("/services/data/{version}/query", get(rest::query))
        .route("/services/data/{version}/queryAll", get(rest::query_all))
        .route(
            "/services/data/{version}/query/{locator}",
            get(rest::query_more),
        )
        .route(
            "/services/data/{version}/queryAll/{locator}",
            get(rest::query_more),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/describe",
            get(rest::describe),
        )
        .route(
            "/services/data/{version}/sobjects/{object}/{id}",
            patch(rest::update_one),
        )
        .route(
            "/services/data/{version}/composite/sobjects",
            patch(rest::update_collection),
        )
        .route("/services/data/{version}/limits", get(rest::limits))
        .fallback(rest::not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            rest::gate,
        ))
        .with_state(shared.clone());
    let token_shared = shared.clone();
    Router::new()
        .route(
            "/services/oauth2/token",
            post(move |headers, form| auth::token(token_shared, Host::Instance, headers, form)),
        )
        .route(
            "/services/data/",
            get(move || rest::versions(shared.clone())),
        )
        .merge(api)
}
