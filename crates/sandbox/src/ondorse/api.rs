//! The HTTP face of the sandbox: `/api/portals`, `/api/applications/{id}`.
//!
//! A guard in front of every route applies the fault switches (latency,
//! injected 5xx, 429) and then the API key check, in that order, as a
//! gateway in front of the real service would.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::Shared;
use super::connection::ConnectionHandle;
use super::state::PortalOutcome;
use crate::latency::Endpoint;

/// Header carrying the client's idempotency key.
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Marks an answer replayed from an earlier request with the same key.
const REPLAYED_HEADER: &str = "idempotent-replayed";

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/portals", post(create_portal))
        .route("/api/applications/{id}", get(get_application))
        .fallback(|| async { detail(StatusCode::NOT_FOUND, "Not Found") })
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

fn detail(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "detail": message }))).into_response()
}

/// 422 in FastAPI's shape: `{"detail":[{"loc":[...],"msg":...,"type":...}]}`.
fn unprocessable(problems: Vec<Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({ "detail": problems })),
    )
        .into_response()
}

fn problem(location: &[&str], message: &str, kind: &str) -> Value {
    json!({ "loc": location, "msg": message, "type": kind })
}

async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let counters = &shared.counters;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let _request = shared.request_started();
    let is_portal_post =
        request.method() == http::Method::POST && request.uri().path() == "/api/portals";
    // Counted from arrival to answer, latency included, so overlapping
    // retries of one key show.
    let _in_flight = is_portal_post.then(|| {
        let key = request
            .headers()
            .get(IDEMPOTENCY_KEY_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        shared.portal_post_started(key)
    });
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if shared.faults.down.load(Ordering::Acquire) {
        counters.failed_requests.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if is_portal_post && let Some(retry_after) = shared.faults.portal_throttle() {
        counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        return rate_limited(Some(retry_after));
    }
    if let Some(status) = shared.faults.take_failure() {
        counters.failed_requests.fetch_add(1, Ordering::Relaxed);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // The application answers 500 in JSON; gateways (502/503/504)
        // answer with an empty body.
        return if status == StatusCode::INTERNAL_SERVER_ERROR {
            detail(status, "Internal server error")
        } else {
            status.into_response()
        };
    }
    if let Some(retry_after) = shared.faults.take_rate_limit() {
        counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        return rate_limited(retry_after);
    }
    let presented = request
        .headers()
        .get(shared.options.auth_header.as_str())
        .and_then(|value| value.to_str().ok());
    if presented != Some(shared.expected_auth.as_str()) {
        counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        return detail(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    next.run(request).await
}

/// 429, with `Retry-After` in whole seconds when given.
fn rate_limited(retry_after: Option<std::time::Duration>) -> Response {
    let mut response = detail(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    if let Some(retry_after) = retry_after {
        // Retry-After counts whole seconds; round up so the client never
        // comes back early.
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

async fn create_portal(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<ConnectionHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.latency.wait(Endpoint::OndorsePortalPost, 0).await;
    shared.counters.portal_posts.fetch_add(1, Ordering::Relaxed);
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(body)) => body,
        Ok(_) => {
            return unprocessable(vec![problem(
                &["body"],
                "Input should be a valid dictionary",
                "dict_type",
            )]);
        }
        Err(error) => {
            return unprocessable(vec![problem(
                &["body"],
                &format!("JSON decode error: {error}"),
                "json_invalid",
            )]);
        }
    };
    let mut problems = validate_portal(&body);
    if let Some(field) = shared.faults.refused_portal_value(&body) {
        problems.push(problem(
            &["body", "default_custom_fields", &field],
            "Value is not accepted",
            "value_error",
        ));
    }
    if !problems.is_empty() {
        return unprocessable(problems);
    }
    let key = if shared.options.honour_idempotency_key {
        headers
            .get(IDEMPOTENCY_KEY_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    } else {
        None
    };
    let outcome = shared.create_portal(body, key.clone());
    if shared.faults.take_dropped_portal_response() {
        shared
            .counters
            .dropped_responses
            .fetch_add(1, Ordering::Relaxed);
        connection.kill();
    }
    match outcome {
        PortalOutcome::Created(portal) => (
            StatusCode::CREATED,
            axum::Json(shared.faults.portal_answer(portal)),
        )
            .into_response(),
        PortalOutcome::Replayed(portal) => {
            let mut response = (
                StatusCode::CREATED,
                axum::Json(shared.faults.portal_answer(portal)),
            )
                .into_response();
            response
                .headers_mut()
                .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
            response
        }
        PortalOutcome::Conflict => unprocessable(vec![problem(
            &["header", "Idempotency-Key"],
            &format!(
                "Idempotency-Key {:?} was already used with a different request body; use a new key for a different portal",
                key.unwrap_or_default()
            ),
            "idempotency_key_reused",
        )]),
    }
}

/// Checks the keys the contract knows; every other key passes through.
fn validate_portal(body: &Map<String, Value>) -> Vec<Value> {
    let mut problems = Vec::new();
    match body.get("redirect_url") {
        None | Some(Value::Null) => {}
        Some(Value::String(url))
            if reqwest::Url::parse(url)
                .is_ok_and(|url| matches!(url.scheme(), "http" | "https")) => {}
        Some(_) => problems.push(problem(
            &["body", "redirect_url"],
            "Input should be a valid URL",
            "url_parsing",
        )),
    }
    match body.get("default_custom_fields") {
        None | Some(Value::Null) => {}
        Some(Value::Object(fields)) => {
            for (key, value) in fields {
                if matches!(value, Value::Array(_) | Value::Object(_)) {
                    problems.push(problem(
                        &["body", "default_custom_fields", key],
                        "Input should be a valid string, number or boolean",
                        "scalar_type",
                    ));
                }
            }
        }
        Some(_) => problems.push(problem(
            &["body", "default_custom_fields"],
            "Input should be a valid dictionary",
            "dict_type",
        )),
    }
    match body.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if kind == "business" || kind == "person" => {}
        Some(_) => problems.push(problem(
            &["body", "type"],
            "Input should be 'business' or 'person'",
            "enum",
        )),
    }
    problems
}

async fn get_application(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    shared
        .latency
        .wait(Endpoint::OndorseApplicationGet, 0)
        .await;
    // Read before it is counted: whoever sees the count knows what a slow
    // answer (below) will show.
    let application = shared.application(&id);
    shared
        .counters
        .application_gets
        .fetch_add(1, Ordering::Relaxed);
    if let Some(status) = shared.faults.refused_application(&id) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        return detail(status, "You are not allowed to read this application");
    }
    if let Some(delay) = shared.faults.slow_application(&id) {
        tokio::time::sleep(delay).await;
    }
    match application {
        Some(application) => axum::Json(application).into_response(),
        None => detail(StatusCode::NOT_FOUND, "Not found"),
    }
}
