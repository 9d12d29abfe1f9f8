//! [`SalesforceClient`]: SOQL queries page by page, describe, sObject
//! Collections updates and the org's API usage, over one reqwest client.
//!
//! Every call goes to the `instance_url` of the current token. A `401`
//! renews the token (one request for all concurrent callers) and replays
//! the call once; there is no other retry here: the sync engine owns the
//! retry policy and asks [`SalesforceError::is_retriable`].
//!
//! - `pages`: [`QueryPages`], a query read page by page.
//! - `answer`: error answers, sObject Collections results and `GET /limits`
//!   read as the contract says they come; names and Ids checked before they
//!   go into a path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::config::SalesforceConfig;
use crate::salesforce::auth::Authenticator;
use crate::salesforce::error::{RecordError, SalesforceError, excerpt, transport_reason};
use crate::salesforce::model::{ApiUsage, RecordOutcome, RecordUpdate, SObjectDescribe};
use crate::telemetry::{Api, ApiEndpoint, Metrics};

mod answer;
mod pages;

use answer::{
    Limits, check_record_id, check_sobject_name, classify, decode, read_results, transport,
};
pub use pages::QueryPages;

/// The most records one `PATCH /composite/sobjects` accepts.
pub const MAX_RECORDS_PER_UPDATE: usize = 200;
/// The longest SOQL statement Salesforce accepts, in characters.
pub const MAX_SOQL_LENGTH: usize = 100_000;
/// Time to open a TCP (and TLS) connection before giving up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole call, body included. Generous because a 200-record
/// update runs the org's triggers and flows, and a 2,000-row query page
/// with relationship fields can take tens of seconds on a busy org.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Ask for the largest pages Salesforce serves (a hint it may ignore).
const QUERY_BATCH_HINT: &str = "batchSize=2000";
const QUERY_OPTIONS_HEADER: &str = "sforce-query-options";
const LIMIT_INFO_HEADER: &str = "sforce-limit-info";
const USER_AGENT: &str = concat!("ondorse-bridge/", env!("CARGO_PKG_VERSION"));
/// The versions an org serves; no authentication needed.
const VERSIONS_PATH: &str = "/services/data/";
/// How long a refusal of the configured version stands before the org is
/// asked again (orgs are upgraded a few times a year; an operator who
/// changed `api_version` restarts anyway).
const VERSION_RECHECK: Duration = Duration::from_secs(300);

/// Timeouts of the client; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A Salesforce org, as the integration user sees it. Cheap to clone: all
/// clones share one connection pool, one token and one usage reading.
#[derive(Clone)]
pub struct SalesforceClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    auth: Authenticator,
    /// The daemon's registry: requests by endpoint, the org's usage.
    metrics: Metrics,
    /// Without the `v`: `62.0`.
    api_version: String,
    /// The last `Sforce-Limit-Info` seen, whatever the call and its outcome.
    api_usage: SyncMutex<Option<ApiUsage>>,
    /// `REQUEST_LIMIT_EXCEEDED` answers so far: the budget governor stops
    /// every call when it grows.
    limit_refusals: AtomicU64,
    /// Whether the org serves `api_version`, from `GET /services/data/` on
    /// first contact; held across that call so it is made once.
    version: tokio::sync::Mutex<Option<VersionCheck>>,
    /// The refusal in force, readable without waiting (status, readiness).
    version_refusal: SyncMutex<Option<String>>,
}

/// What the org answered about the configured version.
enum VersionCheck {
    Offered,
    NotOffered { newest: String, checked: Instant },
}

/// One entry of `GET /services/data/`.
#[derive(Deserialize)]
struct OfferedVersion {
    version: String,
}

impl std::fmt::Debug for SalesforceClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SalesforceClient")
            .field("token_url", &self.inner.auth.token_url())
            .field("flow", &self.inner.auth.flow_name())
            .field("client_id", &self.inner.auth.client_id())
            .field("instance_url", &self.instance_url())
            .field("api_version", &self.inner.api_version)
            .finish_non_exhaustive()
    }
}

impl SalesforceClient {
    /// A client with the default timeouts, counting its requests in
    /// `metrics`. Sends nothing yet; a JWT key is checked now.
    pub fn new(
        config: &SalesforceConfig,
        metrics: Metrics,
    ) -> Result<SalesforceClient, SalesforceError> {
        SalesforceClient::with_settings(config, ClientSettings::default(), metrics)
    }

    pub fn with_settings(
        config: &SalesforceConfig,
        settings: ClientSettings,
        metrics: Metrics,
    ) -> Result<SalesforceClient, SalesforceError> {
        let http = reqwest::Client::builder()
            // The token endpoint must not be followed anywhere (the contract),
            // and the REST API never redirects a correct request.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .pool_idle_timeout(crate::memory::IDLE_CONNECTION_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|error| {
                SalesforceError::Configuration(format!(
                    "cannot build the http client: {}",
                    transport_reason(error)
                ))
            })?;
        let auth = Authenticator::new(http.clone(), config, metrics.clone())?;
        Ok(SalesforceClient {
            inner: Arc::new(Inner {
                http,
                auth,
                metrics,
                api_version: config.api_version.trim_start_matches('v').to_owned(),
                api_usage: SyncMutex::new(None),
                limit_refusals: AtomicU64::new(0),
                version: tokio::sync::Mutex::new(None),
                version_refusal: SyncMutex::new(None),
            }),
        })
    }

    /// Keeps rotated refresh tokens in `keeper` (the store), and starts from
    /// the newest one kept there (the `salesforce::auth` module says how).
    pub fn keep_refresh_tokens_in(&self, keeper: Arc<dyn crate::salesforce::RefreshTokenKeeper>) {
        self.inner.auth.keep_refresh_tokens_in(keeper);
    }

    /// Gets a new token now, to prove the credentials at startup or in
    /// `check --online`.
    pub async fn authenticate(&self) -> Result<(), SalesforceError> {
        let current = self.inner.auth.current();
        self.inner.auth.renew(current.as_ref()).await.map(drop)
    }

    /// The rows matching `soql`, fetched lazily page by page.
    pub fn query(&self, soql: impl Into<String>) -> QueryPages {
        QueryPages::new(self.clone(), soql.into(), "query")
    }

    /// Like [`SalesforceClient::query`], deleted and archived rows included
    /// (`IsDeleted = true`).
    pub fn query_all(&self, soql: impl Into<String>) -> QueryPages {
        QueryPages::new(self.clone(), soql.into(), "queryAll")
    }

    /// The fields of `sobject` as the integration user sees them.
    pub async fn describe(&self, sobject: &str) -> Result<SObjectDescribe, SalesforceError> {
        check_sobject_name(sobject)?;
        let path = format!("{}/sobjects/{sobject}/describe", self.data_path());
        let endpoint = format!("GET {path}");
        let body = self
            .execute(Endpoint::Describe, &endpoint, |instance_url| {
                self.inner.http.get(format!("{instance_url}{path}"))
            })
            .await?;
        decode(&endpoint, &body)
    }

    /// Sets fields on up to [`MAX_RECORDS_PER_UPDATE`] records with one
    /// `PATCH /composite/sobjects` (`allOrNone: false`): each record
    /// succeeds or fails alone, and the outcomes come back in input order.
    ///
    /// More records fail with [`SalesforceError::TooManyRecords`] and no
    /// records send nothing.
    pub async fn update_records(
        &self,
        sobject: &str,
        records: &[RecordUpdate],
    ) -> Result<Vec<RecordOutcome>, SalesforceError> {
        check_sobject_name(sobject)?;
        if records.len() > MAX_RECORDS_PER_UPDATE {
            return Err(SalesforceError::TooManyRecords {
                count: records.len(),
            });
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::json!({
            "allOrNone": false,
            "records": records.iter().map(|record| {
                let mut fields = serde_json::Map::new();
                fields.insert("attributes".to_owned(), serde_json::json!({ "type": sobject }));
                fields.insert("id".to_owned(), record.id.clone().into());
                fields.extend(record.fields.iter().map(|(name, value)| (name.clone(), value.clone())));
                serde_json::Value::Object(fields)
            }).collect::<Vec<_>>(),
        });
        let path = format!("{}/composite/sobjects", self.data_path());
        let endpoint = format!("PATCH {path}");
        let (status, answer) = self
            .send(Endpoint::Composite, &endpoint, |instance_url| {
                self.inner
                    .http
                    .patch(format!("{instance_url}{path}"))
                    .json(&body)
            })
            .await?;
        let results = read_results(records, &answer).map_err(|problem| {
            SalesforceError::UnexpectedAnswer {
                endpoint: endpoint.clone(),
                status: status.as_u16(),
                problem,
                excerpt: excerpt(&answer),
            }
        })?;
        let outcomes: Vec<RecordOutcome> = records
            .iter()
            .zip(results)
            .map(|(record, result)| RecordOutcome {
                id: record.id.clone(),
                result: if result.success {
                    Ok(())
                } else {
                    Err(result.errors)
                },
            })
            .collect();
        tracing::debug!(
            sobject,
            records = outcomes.len(),
            failed = outcomes
                .iter()
                .filter(|outcome| outcome.result.is_err())
                .count(),
            "salesforce records updated"
        );
        Ok(outcomes)
    }

    /// Sets fields on one record with `PATCH /sobjects/{sobject}/{id}`
    /// (success is `204` with no body): the writer's fallback when sObject
    /// Collections answers are unreadable. A refusal of the record itself
    /// (a `400` or `404` error array) is its outcome, as it would be in a
    /// collection; a failure of the call is an error.
    pub async fn update_record(
        &self,
        sobject: &str,
        record: &RecordUpdate,
    ) -> Result<RecordOutcome, SalesforceError> {
        check_sobject_name(sobject)?;
        check_record_id(&record.id)?;
        let path = format!("{}/sobjects/{sobject}/{}", self.data_path(), record.id);
        let endpoint = format!("PATCH {path}");
        let answer = self
            .execute(Endpoint::Record, &endpoint, |instance_url| {
                self.inner
                    .http
                    .patch(format!("{instance_url}{path}"))
                    .json(&record.fields)
            })
            .await;
        let result = match answer {
            Ok(_) => Ok(()),
            Err(SalesforceError::Api {
                status: 400 | 404,
                code,
                message,
                fields,
                ..
            }) => Err(vec![RecordError {
                status_code: code,
                message,
                fields,
            }]),
            Err(error) => return Err(error),
        };
        Ok(RecordOutcome {
            id: record.id.clone(),
            result,
        })
    }

    /// The org's daily API usage from `GET /limits` (which is itself a call).
    pub async fn limits(&self) -> Result<ApiUsage, SalesforceError> {
        let path = format!("{}/limits", self.data_path());
        let endpoint = format!("GET {path}");
        let body = self
            .execute(Endpoint::Limits, &endpoint, |instance_url| {
                self.inner.http.get(format!("{instance_url}{path}"))
            })
            .await?;
        let limits: Limits = decode(&endpoint, &body)?;
        let daily = limits.daily_api_requests;
        let usage = ApiUsage {
            used: daily.max.saturating_sub(daily.remaining),
            max: daily.max,
        };
        *self.lock_api_usage() = Some(usage);
        self.inner.metrics.salesforce_usage(usage);
        Ok(usage)
    }

    /// The usage from the last `Sforce-Limit-Info` header (or `limits()`),
    /// `None` before the first call.
    pub fn api_usage(&self) -> Option<ApiUsage> {
        *self.lock_api_usage()
    }

    /// How many calls Salesforce refused with `REQUEST_LIMIT_EXCEEDED`.
    pub fn limit_refusals(&self) -> u64 {
        self.inner.limit_refusals.load(Ordering::Relaxed)
    }

    /// The org's API host from the current token, `None` before the first one.
    pub fn instance_url(&self) -> Option<String> {
        self.inner.auth.instance_url()
    }

    /// Why the last login was refused (bad or revoked credentials), while
    /// no login succeeded since.
    pub fn login_problem(&self) -> Option<crate::salesforce::LoginRefusal> {
        self.inner.auth.refusal()
    }

    /// Why the configured `api_version` cannot be used (the org does not
    /// offer it), `None` while it works or before first contact.
    pub fn api_version_problem(&self) -> Option<String> {
        self.inner
            .version_refusal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes sure the org serves the configured version, asking it once
    /// (again after `VERSION_RECHECK` while it does not): every REST call
    /// passes here, so none goes to a version the org does not serve.
    pub async fn check_api_version(&self) -> Result<(), SalesforceError> {
        let session = self.inner.auth.session().await?;
        self.ensure_api_version(&session.instance_url).await
    }

    async fn ensure_api_version(&self, instance_url: &str) -> Result<(), SalesforceError> {
        let mut check = self.inner.version.lock().await;
        let configured = &self.inner.api_version;
        match &*check {
            Some(VersionCheck::Offered) => return Ok(()),
            Some(VersionCheck::NotOffered { newest, checked })
                if checked.elapsed() < VERSION_RECHECK =>
            {
                return Err(SalesforceError::ApiVersionNotOffered {
                    configured: configured.clone(),
                    newest: newest.clone(),
                });
            }
            _ => {}
        }
        let endpoint = format!("GET {VERSIONS_PATH}");
        let started = Instant::now();
        let response = self
            .inner
            .http
            .get(format!("{instance_url}{VERSIONS_PATH}"))
            .send()
            .await
            .map_err(|error| {
                let metrics = &self.inner.metrics;
                metrics.api_request(Endpoint::Versions, None, started.elapsed());
                transport(&endpoint, error)
            })?;
        let status = response.status();
        self.inner.metrics.api_request(
            Endpoint::Versions,
            Some(status.as_u16()),
            started.elapsed(),
        );
        let body = response
            .bytes()
            .await
            .map_err(|error| transport(&endpoint, error))?;
        if !status.is_success() {
            return Err(classify(&endpoint, status, None, &body));
        }
        let offered: Vec<OfferedVersion> = decode(&endpoint, &body)?;
        let mut refusal = self
            .inner
            .version_refusal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if offered.iter().any(|offered| offered.version == *configured) {
            tracing::info!(api_version = %configured, "the salesforce org serves the configured api version");
            *check = Some(VersionCheck::Offered);
            *refusal = None;
            return Ok(());
        }
        let newest = offered
            .iter()
            .map(|offered| offered.version.as_str())
            .max_by(|left, right| version_order(left).cmp(&version_order(right)))
            .unwrap_or("(no version)")
            .to_owned();
        let error = SalesforceError::ApiVersionNotOffered {
            configured: configured.clone(),
            newest: newest.clone(),
        };
        tracing::error!(%error, "salesforce work stops until the api version is fixed");
        *refusal = Some(error.to_string());
        *check = Some(VersionCheck::NotOffered {
            newest,
            checked: Instant::now(),
        });
        Err(error)
    }

    /// `/services/data/v62.0`
    fn data_path(&self) -> String {
        format!("/services/data/v{}", self.inner.api_version)
    }

    fn lock_api_usage(&self) -> std::sync::MutexGuard<'_, Option<ApiUsage>> {
        self.inner
            .api_usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`SalesforceClient::send`] for callers that need only the body.
    async fn execute(
        &self,
        called: Endpoint,
        endpoint: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<Bytes, SalesforceError> {
        let (_status, body) = self.send(called, endpoint, build).await?;
        Ok(body)
    }

    /// Sends the request `build` makes for the current `instance_url`,
    /// renewing the token and replaying once on `401`, and returns the
    /// status and body of a 2xx answer or the classified error. `called`
    /// names the endpoint in logs and metrics; `endpoint` is the request
    /// line errors quote.
    async fn send(
        &self,
        called: Endpoint,
        endpoint: &str,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(http::StatusCode, Bytes), SalesforceError> {
        let mut session = self.inner.auth.session().await?;
        self.ensure_api_version(&session.instance_url).await?;
        let mut replayed = false;
        loop {
            let started = Instant::now();
            let response = build(&session.instance_url)
                .bearer_auth(session.access_token.expose_secret())
                .send()
                .await
                .map_err(|error| {
                    let metrics = &self.inner.metrics;
                    metrics.api_request(called, None, started.elapsed());
                    transport(endpoint, error)
                })?;
            let status = response.status();
            let metrics = &self.inner.metrics;
            metrics.api_request(called, Some(status.as_u16()), started.elapsed());
            if let Some(usage) = response
                .headers()
                .get(LIMIT_INFO_HEADER)
                .and_then(|value| value.to_str().ok())
                .and_then(ApiUsage::from_limit_info)
            {
                *self.lock_api_usage() = Some(usage);
                metrics.salesforce_usage(usage);
            }
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let body = response
                .bytes()
                .await
                .map_err(|error| transport(endpoint, error))?;
            tracing::debug!(
                operation = called.label(),
                endpoint,
                status = status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "salesforce call"
            );
            if status.is_success() {
                return Ok((status, body));
            }
            if status == http::StatusCode::UNAUTHORIZED && !replayed {
                tracing::info!(
                    endpoint,
                    "salesforce session expired or revoked; renewing the token and replaying once"
                );
                session = self.inner.auth.renew(Some(&session)).await?;
                replayed = true;
                continue;
            }
            let error = classify(endpoint, status, location.as_deref(), &body);
            if let SalesforceError::RequestLimitExceeded { .. } = error {
                self.inner.limit_refusals.fetch_add(1, Ordering::Relaxed);
            }
            return Err(error);
        }
    }
}

/// `62.0` as `(62, 0)`, so `100.0` sorts after `99.0`.
fn version_order(version: &str) -> (u32, u32) {
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    (major.parse().unwrap_or(0), minor.parse().unwrap_or(0))
}

/// A Salesforce endpoint we call, named for logs and the `endpoint`
/// metric label: the path holds query locators and record Ids, so it never
/// is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /services/oauth2/token` on the login host.
    Token,
    /// `GET /services/data/`, the versions the org serves.
    Versions,
    /// The first page of `query` or `queryAll`.
    Query,
    /// A `nextRecordsUrl` page.
    QueryMore,
    Describe,
    /// `PATCH /composite/sobjects`.
    Composite,
    /// `PATCH /sobjects/{sobject}/{id}`, the writer's single-record fallback.
    Record,
    Limits,
}

impl ApiEndpoint for Endpoint {
    const API: Api = Api::Salesforce;

    fn label(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            // Asked once per process; it counts among the calls that are
            // not part of the sync (`other` in the metric list).
            Endpoint::Versions => "other",
            Endpoint::Query => "query",
            Endpoint::QueryMore => "query_more",
            Endpoint::Describe => "describe",
            Endpoint::Composite => "composite",
            Endpoint::Record => "record",
            Endpoint::Limits => "limits",
        }
    }
}
