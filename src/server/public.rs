//! The public webhook listener (README's "HTTP endpoints" lists its answers).
//!
//! `POST /webhooks/ondorse/{secret}` and `POST /webhooks/salesforce/{secret}`.
//! Checks run cheapest and least revealing first: size (413), path secret
//! (404, identical to an unknown route), source address (403), signature
//! (401), body shape (400). Only then is the request stored, and it is
//! answered 200 once the store has flushed it to disk; a store failure is a
//! 503 so that the sender retries.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::config::WebhooksConfig;
use crate::ondorse::webhook::{
    DEFAULT_SIGNATURE_TOLERANCE, SIGNATURE_HEADER, WebhookEnvelope, parse_envelope,
    verify_signature,
};
use crate::salesforce::Id;
use crate::shutdown::Shutdown;
use crate::store::{Accepted, Store, StoreError};
use crate::telemetry::{Metrics, WebhookSource};

/// Largest body accepted; a larger one is refused with 413. Ondorse events
/// are a few KiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most Account ids in one Salesforce hint: a Flow batch is at most 200
/// records, and this bounds the work one request can queue.
pub const MAX_HINT_IDS: usize = 200;

/// What the handlers share.
#[derive(Clone)]
pub struct PublicState {
    pub store: Store,
    pub config: Arc<WebhooksConfig>,
    /// Woken after each stored item, so the sync engine starts at once.
    pub inbox_wake: Arc<Notify>,
    /// The daemon's registry: deliveries stored and refused.
    pub metrics: Metrics,
}

/// The public routes. Serve with connection info (see [`serve`]): the
/// handlers need the peer address.
pub fn router(state: PublicState) -> Router {
    Router::new()
        .route("/webhooks/ondorse/{secret}", post(ondorse_webhook))
        .route("/webhooks/salesforce/{secret}", post(salesforce_hint))
        .fallback(not_found)
        // A wrong method must not tell a prober that a path exists.
        .method_not_allowed_fallback(not_found)
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` is stopping, then waits for
/// the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: PublicState,
    shutdown: Shutdown,
) -> io::Result<()> {
    let limits = state.config.limits.clone();
    super::serve_with_peers(listener, router(state), shutdown, limits).await
}

async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

/// Which endpoint a request came to, for logs.
#[derive(Clone, Copy)]
enum Endpoint {
    Ondorse,
    Salesforce,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Ondorse => "ondorse",
            Endpoint::Salesforce => "salesforce",
        }
    }

    fn source(self) -> WebhookSource {
        match self {
            Endpoint::Ondorse => WebhookSource::Ondorse,
            Endpoint::Salesforce => WebhookSource::Salesforce,
        }
    }
}

/// A request turned away: the status, a reason safe to show the sender,
/// and for our logs only, the internal cause.
struct Refusal {
    status: StatusCode,
    reason: String,
    cause: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            cause: None,
        }
    }

    /// The `reason` label of `ondorse_bridge_webhooks_rejected_total`: each
    /// check answers with its own status.
    fn label(&self) -> &'static str {
        match self.status {
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::NOT_FOUND => "wrong_secret",
            StatusCode::FORBIDDEN => "forbidden_source",
            StatusCode::UNAUTHORIZED => "bad_signature",
            StatusCode::BAD_REQUEST => "malformed",
            StatusCode::REQUEST_TIMEOUT => "timeout",
            StatusCode::SERVICE_UNAVAILABLE => "store_unavailable",
            _ => "other",
        }
    }

    fn into_response(
        self,
        endpoint: Endpoint,
        source: Option<IpAddr>,
        metrics: &Metrics,
    ) -> Response {
        metrics.webhook_rejected(endpoint.source(), self.label());
        let source = source.map(|address| address.to_string());
        if self.status.is_server_error() {
            tracing::error!(
                endpoint = endpoint.as_str(),
                status = self.status.as_u16(),
                source = source.as_deref(),
                reason = %self.reason,
                cause = self.cause.as_deref(),
                "webhook not stored"
            );
        } else {
            tracing::warn!(
                endpoint = endpoint.as_str(),
                status = self.status.as_u16(),
                source = source.as_deref(),
                reason = %self.reason,
                "webhook refused"
            );
        }
        if self.status == StatusCode::NOT_FOUND {
            // Exactly what an unknown route answers.
            return StatusCode::NOT_FOUND.into_response();
        }
        (self.status, axum::Json(json!({ "error": self.reason }))).into_response()
    }
}

async fn ondorse_webhook(
    State(state): State<PublicState>,
    Path(secret): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let source = client_address(peer.ip(), &headers, &state.config.trusted_proxies);
    match receive_ondorse_event(&state, &secret, source, &headers, body).await {
        Ok((envelope, accepted)) => {
            let kind = envelope.kind();
            state.metrics.webhook(
                WebhookSource::Ondorse,
                Some(&kind),
                accepted == Accepted::Duplicate,
            );
            let (outcome, sequence) = match accepted {
                Accepted::Stored { sequence } => ("stored", Some(sequence)),
                Accepted::Duplicate => ("duplicate", None),
            };
            tracing::info!(
                endpoint = Endpoint::Ondorse.as_str(),
                status = 200,
                source = source.map(|address| address.to_string()),
                event_id = %envelope.event_id,
                event_type = %kind,
                ignorable = kind.is_ignorable(),
                application_id = envelope.application_id.as_deref(),
                sequence,
                outcome,
                "webhook received"
            );
            axum::Json(json!({ "status": outcome })).into_response()
        }
        Err(refusal) => refusal.into_response(Endpoint::Ondorse, source, &state.metrics),
    }
}

/// Admits, authenticates, parses and durably stores one Ondorse event.
async fn receive_ondorse_event(
    state: &PublicState,
    secret: &str,
    source: Option<IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(WebhookEnvelope, Accepted), Refusal> {
    let body = admit(state, secret, source, headers, body).await?;
    if let Some(signing_secret) = &state.config.signing_secret {
        let header = headers
            .get(SIGNATURE_HEADER)
            .map(|value| value.to_str().unwrap_or_default());
        verify_signature(
            &[signing_secret.expose_secret().as_bytes()],
            header,
            &body,
            Utc::now().timestamp(),
            DEFAULT_SIGNATURE_TOLERANCE,
        )
        .map_err(|error| Refusal::new(StatusCode::UNAUTHORIZED, error.to_string()))?;
    }
    let envelope = parse_envelope(&body)
        .map_err(|error| Refusal::new(StatusCode::BAD_REQUEST, error.to_string()))?;
    let recorded = state
        .store
        .record_webhook(&envelope, Utc::now())
        .map_err(store_unavailable)?;
    // The worker reads the application while the fsync runs; the sender
    // is answered only once the event is on disk.
    if matches!(recorded.outcome(), Accepted::Stored { .. }) {
        state.inbox_wake.notify_one();
    }
    let accepted = recorded.durable().await.map_err(store_unavailable)?;
    Ok((envelope, accepted))
}

/// The body of a Salesforce push hint.
#[derive(Deserialize)]
struct HintBody {
    ids: Vec<String>,
}

async fn salesforce_hint(
    State(state): State<PublicState>,
    Path(secret): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let source = client_address(peer.ip(), &headers, &state.config.trusted_proxies);
    match receive_salesforce_hint(&state, &secret, source, &headers, body).await {
        Ok((sequence, count)) => {
            state
                .metrics
                .webhook(WebhookSource::Salesforce, None, false);
            tracing::info!(
                endpoint = Endpoint::Salesforce.as_str(),
                status = 200,
                source = source.map(|address| address.to_string()),
                ids = count,
                sequence,
                outcome = "stored",
                "salesforce hint received"
            );
            axum::Json(json!({ "status": "stored", "ids": count })).into_response()
        }
        Err(refusal) => refusal.into_response(Endpoint::Salesforce, source, &state.metrics),
    }
}

/// Admits, validates and durably stores one hint; returns its sequence and
/// how many distinct ids it holds.
async fn receive_salesforce_hint(
    state: &PublicState,
    secret: &str,
    source: Option<IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(u64, usize), Refusal> {
    let body = admit(state, secret, source, headers, body).await?;
    let hint: HintBody = serde_json::from_slice(&body).map_err(|error| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not {{\"ids\": [\"<Account Id>\", ...]}}: {error}"),
        )
    })?;
    let ids = validate_hint_ids(hint.ids)
        .map_err(|reason| Refusal::new(StatusCode::BAD_REQUEST, reason))?;
    let count = ids.len();
    let recorded = state
        .store
        .record_salesforce_hint(ids, Utc::now())
        .map_err(store_unavailable)?;
    // As for a webhook: read while the fsync runs, answered once on disk.
    state.inbox_wake.notify_one();
    let sequence = recorded.durable().await.map_err(store_unavailable)?;
    Ok((sequence, count))
}

/// The checks both endpoints share, in order: size, path secret, source
/// address (`None`: unreadable); then the body, read within the size and
/// time limits.
async fn admit(
    state: &PublicState,
    secret: &str,
    source: Option<IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    if !secrets_match(secret, state.config.path_secret.expose_secret()) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "the path secret does not match",
        ));
    }
    let allowed = &state.config.allowed_ips;
    match source {
        Some(address) if allowed.is_empty() || allowed.iter().any(|net| net.contains(&address)) => {
        }
        Some(address) => {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("the source address {address} is not in webhooks.allowed_ips"),
            ));
        }
        None => {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "the X-Forwarded-For header from a trusted proxy is not a list of addresses",
            ));
        }
    }
    // The connection gives every body a deadline from its head on
    // (`webhooks.body_timeout_seconds`), so a slow sender fails here.
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| {
            let error = error.into_inner();
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
            while let Some(current) = cause {
                if let Some(timed_out) = current.downcast_ref::<super::BodyTimedOut>() {
                    return Refusal::new(StatusCode::REQUEST_TIMEOUT, timed_out.to_string());
                }
                cause = current.source();
            }
            // Over the limit, or a sender that hung up: the declared length
            // was fine, so it is most likely the limit, and a dropped sender
            // never sees the answer anyway.
            too_large()
        })
}

/// Compares the path secret in constant time, lengths included: both sides
/// are hashed first, so timing reveals neither content nor length.
fn secrets_match(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given.ct_eq(&expected).into()
}

/// The address of the client that sent the request.
///
/// When the peer is a trusted proxy, `X-Forwarded-For` is read from the right
/// (the hop our proxy appended) and the first address that is not itself a
/// trusted proxy is the client; what lies left of it could be forged. When
/// the peer is not trusted, the header is ignored. `None` when a trusted
/// proxy sent a header that does not parse.
fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted_proxies: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let is_trusted = |address: &IpAddr| trusted_proxies.iter().any(|net| net.contains(address));
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        for hop in value.to_str().ok()?.split(',') {
            hops.push(hop.trim().parse::<IpAddr>().ok()?.to_canonical());
        }
    }
    let Some(leftmost) = hops.first().copied() else {
        // A trusted proxy that forwarded nothing: the proxy is the client.
        return Some(peer);
    };
    Some(
        hops.into_iter()
            .rev()
            .find(|hop| !is_trusted(hop))
            .unwrap_or(leftmost),
    )
}

/// Deduplicated ids in their 18-character form, in order, or a reason
/// naming the first bad one.
fn validate_hint_ids(ids: Vec<String>) -> Result<Vec<Id>, String> {
    if ids.is_empty() {
        return Err("ids is empty; send at least one Account Id".to_owned());
    }
    if ids.len() > MAX_HINT_IDS {
        return Err(format!(
            "{} ids in one hint; send at most {MAX_HINT_IDS}",
            ids.len()
        ));
    }
    let mut unique = Vec::with_capacity(ids.len());
    for id in ids {
        let id = Id::parse_account(&id).map_err(|error| error.to_string())?;
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    Ok(unique)
}

/// A 503, so that the sender retries; the store's error stays in our logs.
fn store_unavailable(error: StoreError) -> Refusal {
    Refusal {
        cause: Some(error.to_string()),
        ..Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the inbox is unavailable; retry later",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|net| net.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let address = client_address(
            ip("203.0.113.9"),
            &headers(&["198.51.100.1"]),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(address, Some(ip("203.0.113.9")));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        let forwarded = headers(&["6.6.6.6, 198.51.100.1", "10.0.0.2"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &forwarded, &trusted),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers(&["10.0.0.3"]), &trusted),
            Some(ip("10.0.0.3"))
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers(&[]), &trusted),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers(&["nonsense"]), &trusted),
            None
        );
        assert_eq!(
            client_address(ip("::ffff:10.0.0.1"), &headers(&["198.51.100.1"]), &trusted),
            Some(ip("198.51.100.1"))
        );
    }

    #[test]
    fn hint_ids_are_checked_and_deduplicated() {
        let ids = |list: &[&str]| list.iter().map(|id| id.to_string()).collect::<Vec<_>>();
        // Both forms of one Id are one Account, kept in its 18-character form.
        let parsed = |list: &[&str]| list.iter().map(|id| Id::parse(id).unwrap()).collect();
        assert_eq!(
            validate_hint_ids(ids(&[
                "001xx000003DGb2AAG",
                "001xx000003DGb2",
                "001A0000006Vm9r",
                "001xx000003DGb2AAG",
                "001A0000006Vm9rIAC",
            ])),
            Ok(parsed(&["001xx000003DGb2AAG", "001A0000006Vm9rIAC"]))
        );
        let refusal = validate_hint_ids(ids(&["001xx000003DGb2AAG", "001'; DROP"])).unwrap_err();
        assert!(refusal.contains("\"001'; DROP\""), "{refusal}");
        assert!(validate_hint_ids(vec![]).is_err());
        assert!(validate_hint_ids(vec!["001xx000003DGb2".to_owned(); MAX_HINT_IDS + 1]).is_err());
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(secrets_match("s3cret", "s3cret"));
        assert!(!secrets_match("s3cre", "s3cret"));
        assert!(!secrets_match("", "s3cret"));
    }
}
