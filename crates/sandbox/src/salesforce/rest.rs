//! The REST API routes under `/services/data/vXX.X/`, and the gate every
//! call passes: faults, session, daily allowance, `Sforce-Limit-Info`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::Shared;
use super::data::RecordError;
use super::faults::Faults;
use super::org::{Org, QueryFailure};
use crate::latency::Endpoint;

/// sObject Collections take at most this many records per request.
const MAX_COLLECTION_RECORDS: usize = 200;
/// Bounds of the `Sforce-Query-Options: batchSize` hint.
const MIN_BATCH_SIZE: usize = 200;
const MAX_BATCH_SIZE: usize = 2000;
/// What an overloaded Salesforce pod answers: an HTML page, not JSON.
const UNAVAILABLE_PAGE: &str = "<html><head><title>Service Unavailable</title></head>\
<body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your request. \
Please try again later.</p></body></html>";

/// A REST error answer: `[{"message", "errorCode", "fields"?}]`.
fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!([{"message": message, "errorCode": code}])),
    )
        .into_response()
}

fn record_error_response(status: StatusCode, error: &RecordError) -> Response {
    (
        status,
        Json(json!([{"message": error.message, "errorCode": error.code, "fields": error.fields}])),
    )
        .into_response()
}

/// Runs before every REST call: latency, injected 5xx, session, allowance
/// and version; then stamps `Sforce-Limit-Info` on the answer.
pub(crate) async fn gate(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let _in_flight = InFlight::start(&shared);
    shared.delay().await;
    let admitted = {
        let mut org = shared.lock();
        *org.stats
            .received
            .entry(endpoint_name(request.uri().path()).to_owned())
            .or_default() += 1;
        admit(&mut org, &request)
    };
    match admitted {
        Ok(usage) => usage.stamp(next.run(request).await),
        Err(refusal) => {
            tracing::debug!(path = %request.uri().path(), ?refusal, "sandbox salesforce refused a request");
            refusal.into_response()
        }
    }
}

/// A REST request in flight, counted from arrival to answer.
struct InFlight(Shared);

impl InFlight {
    fn start(shared: &Shared) -> InFlight {
        let mut org = shared.lock();
        org.stats.in_flight += 1;
        org.stats.most_in_flight = org.stats.most_in_flight.max(org.stats.in_flight);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut org = self.0.lock();
        org.stats.in_flight = org.stats.in_flight.saturating_sub(1);
    }
}

/// The endpoint a REST path calls, as the per-endpoint counters name it.
fn endpoint_name(path: &str) -> &'static str {
    // `/services/data/{version}/{resource}/...`
    let segments: Vec<&str> = path.split('/').skip(4).collect();
    match segments.as_slice() {
        ["query" | "queryAll"] => "query",
        ["query" | "queryAll", _] => "query_more",
        ["sobjects", _, "describe"] => "describe",
        ["sobjects", _, _] => "update_one",
        ["composite", "sobjects"] => "composite",
        ["limits"] => "limits",
        _ => "other",
    }
}

/// The day's API usage as `Sforce-Limit-Info` reports it.
#[derive(Debug, Clone, Copy)]
struct Usage {
    used: u64,
    max: u64,
}

impl Usage {
    fn of(org: &Org) -> Usage {
        Usage {
            used: org.api_usage,
            max: org.options.daily_api_limit,
        }
    }

    fn stamp(self, mut response: Response) -> Response {
        let value = HeaderValue::from_str(&format!("api-usage={}/{}", self.used, self.max))
            .expect("digits and a slash make a valid header value");
        response.headers_mut().insert("Sforce-Limit-Info", value);
        response
    }
}

/// Why the gate answers in a request's place.
#[derive(Debug)]
enum Refusal {
    /// An injected 5xx: the pod never reached the API, so no JSON, no
    /// usage and no header.
    Unavailable,
    /// The org's REST API is switched off (edition or permission).
    ApiDisabled,
    InvalidSession(Usage),
    LimitExceeded(Usage),
    /// Too many long-running requests in flight for the org: refused before
    /// it counts against the daily allowance.
    TooManyLongRequests(Usage),
    UnknownVersion {
        usage: Usage,
        expected: String,
        requested: String,
    },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
                UNAVAILABLE_PAGE,
            )
                .into_response(),
            Refusal::ApiDisabled => api_error(
                StatusCode::FORBIDDEN,
                "API_DISABLED_FOR_ORG",
                "The REST API is not enabled for this Organization.",
            ),
            Refusal::InvalidSession(usage) => usage.stamp(api_error(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
            )),
            Refusal::LimitExceeded(usage) => usage.stamp(api_error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            )),
            Refusal::TooManyLongRequests(usage) => usage.stamp(api_error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentPerOrgLongTxn Limit exceeded.",
            )),
            Refusal::UnknownVersion {
                usage,
                expected,
                requested,
            } => usage.stamp(api_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!(
                    "The requested resource does not exist: this org serves API versions {expected}, not {requested:?}"
                ),
            )),
        }
    }
}

/// Lets a request through (counting it against the allowance), or says why not.
fn admit(org: &mut Org, request: &Request) -> Result<Usage, Refusal> {
    if org.faults.take_failing_request() {
        return Err(Refusal::Unavailable);
    }
    if request.uri().path().ends_with("/composite/sobjects")
        && Faults::take(&mut org.faults.failing_collection_updates)
    {
        return Err(Refusal::Unavailable);
    }
    if Faults::take(&mut org.faults.api_disabled_requests) {
        return Err(Refusal::ApiDisabled);
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("OAuth "))
        })
        .map(str::trim);
    if !token.is_some_and(|token| org.session_is_valid(token)) {
        return Err(Refusal::InvalidSession(Usage::of(org)));
    }
    if Faults::take(&mut org.faults.long_request_refusals) {
        return Err(Refusal::TooManyLongRequests(Usage::of(org)));
    }
    if org.api_usage >= org.options.daily_api_limit {
        return Err(Refusal::LimitExceeded(Usage::of(org)));
    }
    org.api_usage += 1;
    org.stats.api_requests += 1;
    // `/services/data/{version}/...`
    let requested = request.uri().path().split('/').nth(3).unwrap_or_default();
    let served = served_versions(org);
    if !served
        .iter()
        .any(|version| requested.strip_prefix('v') == Some(version.as_str()))
    {
        return Err(Refusal::UnknownVersion {
            usage: Usage::of(org),
            expected: served.join(", "),
            requested: requested.to_owned(),
        });
    }
    Ok(Usage::of(org))
}

/// Every version the org serves, oldest first.
fn served_versions(org: &Org) -> Vec<String> {
    let mut versions = org.options.older_api_versions.clone();
    versions.push(org.options.api_version.clone());
    versions
}

/// The release name Salesforce gives a version: `62.0` is Winter '25, and
/// each release (Winter, Spring, Summer) adds one.
fn release_label(version: &str) -> String {
    const SEASONS: [&str; 3] = ["Winter", "Spring", "Summer"];
    let major: i64 = version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(62);
    let since = major - 62;
    format!(
        "{} '{:02}",
        SEASONS[since.rem_euclid(3) as usize],
        25 + since.div_euclid(3)
    )
}

/// `GET /services/data/`: the versions the org serves, without a session
/// and outside the daily allowance, as on Salesforce.
pub(crate) async fn versions(shared: Shared) -> Response {
    shared.delay().await;
    let org = shared.lock();
    let listed: Vec<Value> = served_versions(&org)
        .iter()
        .map(|version| {
            json!({
                "label": release_label(version),
                "url": format!("/services/data/v{version}"),
                "version": version,
            })
        })
        .collect();
    Json(listed).into_response()
}

/// Unknown paths under `/services/data`.
pub(crate) async fn not_found() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

/// The page size for this request: the server's, lowered by a `batchSize`
/// hint (which is clamped to 200..=2000 first).
fn page_size(headers: &HeaderMap, server_page_size: usize) -> usize {
    let hint = headers
        .get("Sforce-Query-Options")
        .and_then(|value| value.to_str().ok())
        .and_then(|options| {
            options.split(',').find_map(|option| {
                let (key, value) = option.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("batchSize")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            })
        });
    match hint {
        Some(hint) => hint
            .clamp(MIN_BATCH_SIZE, MAX_BATCH_SIZE)
            .min(server_page_size),
        None => server_page_size,
    }
    .max(1)
}

fn query_failure(failure: QueryFailure) -> Response {
    match failure {
        QueryFailure::Soql(error) => api_error(StatusCode::BAD_REQUEST, error.code, &error.message),
        QueryFailure::InvalidLocator(message) => {
            api_error(StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR", &message)
        }
    }
}

fn run_query(
    shared: &Shared,
    headers: &HeaderMap,
    parameters: &HashMap<String, String>,
    include_deleted: bool,
) -> Response {
    let Some(text) = parameters.get("q") else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "the query parameter q (the SOQL statement) is missing",
        );
    };
    let mut org = shared.lock();
    org.stats.query_requests += 1;
    let page_size = page_size(headers, org.options.page_size);
    match org.query(text, include_deleted, page_size) {
        Ok(body) => Json(body).into_response(),
        Err(failure) => query_failure(failure),
    }
}

pub(crate) async fn query(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(parameters): Query<HashMap<String, String>>,
) -> Response {
    shared.latency.wait(Endpoint::SalesforceQueryPage, 0).await;
    run_query(&shared, &headers, &parameters, false)
}

pub(crate) async fn query_all(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(parameters): Query<HashMap<String, String>>,
) -> Response {
    shared.latency.wait(Endpoint::SalesforceQueryPage, 0).await;
    run_query(&shared, &headers, &parameters, true)
}

pub(crate) async fn query_more(
    State(shared): State<Shared>,
    Path((_version, locator)): Path<(String, String)>,
) -> Response {
    shared.latency.wait(Endpoint::SalesforceQueryPage, 0).await;
    let mut org = shared.lock();
    org.stats.query_more_requests += 1;
    match org.query_more(&locator) {
        Ok(body) => Json(body).into_response(),
        Err(failure) => query_failure(failure),
    }
}

pub(crate) async fn describe(
    State(shared): State<Shared>,
    Path((_version, object)): Path<(String, String)>,
) -> Response {
    let mut org = shared.lock();
    org.stats.describe_requests += 1;
    let api_version = org.options.api_version.clone();
    let schema = if object.eq_ignore_ascii_case("Account") {
        &org.account_schema
    } else if object.eq_ignore_ascii_case("User") {
        &org.user_schema
    } else {
        return api_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!(
                "The requested resource does not exist: sObject type '{object}' is not supported"
            ),
        );
    };
    Json(schema.describe(&api_version)).into_response()
}

pub(crate) async fn limits(State(shared): State<Shared>) -> Response {
    let mut org = shared.lock();
    org.stats.limits_requests += 1;
    Json(org.limits()).into_response()
}

/// `PATCH .../sobjects/Account/{id}`: 204 with no body, or an error array.
pub(crate) async fn update_one(
    State(shared): State<Shared>,
    Path((_version, object, id)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    shared
        .latency
        .wait(Endpoint::SalesforceSingleUpdate, 0)
        .await;
    shared.lock().stats.single_updates += 1;
    if !object.eq_ignore_ascii_case("Account") {
        return api_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!(
                "The requested resource does not exist: the sandbox writes Accounts, not {object}"
            ),
        );
    }
    let fields: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(fields) => fields,
        Err(error) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                &format!("the body must be a JSON object of fields: {error}"),
            );
        }
    };
    let outcome = shared.lock().update_account(&id, &fields);
    match outcome {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => {
            let status = if error.code == "NOT_FOUND" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            record_error_response(status, &error)
        }
    }
}

/// `PATCH .../composite/sobjects`: one result per record, in order.
pub(crate) async fn update_collection(State(shared): State<Shared>, body: Bytes) -> Response {
    shared.lock().stats.composite_requests += 1;
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                &format!("the body is not valid JSON: {error}"),
            );
        }
    };
    let all_or_none = match request.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(other) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                &format!("allOrNone must be a boolean, got {other}"),
            );
        }
    };
    let Some(records) = request.get("records").and_then(Value::as_array) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "the body needs a \"records\" array",
        );
    };
    if records.len() > MAX_COLLECTION_RECORDS {
        return api_error(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            &format!(
                "record limit reached. cannot submit more than {MAX_COLLECTION_RECORDS} records into this call (got {})",
                records.len()
            ),
        );
    }
    if shared.lock().faults.ignored_collections {
        return StatusCode::NO_CONTENT.into_response();
    }
    shared
        .latency
        .wait(Endpoint::SalesforceCompositeUpdate, records.len())
        .await;
    let (mut outcomes, blank, short) = {
        let mut org = shared.lock();
        let outcomes = org.update_accounts(records, all_or_none);
        (
            outcomes,
            Faults::take(&mut org.faults.blank_collection_answers),
            Faults::take(&mut org.faults.short_collection_answers),
        )
    };
    if blank {
        return StatusCode::OK.into_response();
    }
    if short {
        outcomes.pop();
    }
    let results: Vec<Value> = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok(id) => json!({"id": id, "success": true, "errors": []}),
            Err(error) => json!({
                "success": false,
                "errors": [{"statusCode": error.code, "message": error.message, "fields": error.fields}],
            }),
        })
        .collect();
    Json(Value::Array(results)).into_response()
}
