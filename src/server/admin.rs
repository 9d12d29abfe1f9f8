//! The admin listener: `/healthz`, `/readyz` and `/metrics` for machines,
//! and under `/admin/` (bearer token) what operators ask the running
//! daemon: status, resync, explain, dead letters.
//!
//! It listens on loopback by default. There, a peer that is not loopback
//! (an odd proxy or a mapped socket) is refused outright; an operator who
//! binds it elsewhere chose to expose it (the daemon warns at start and in
//! `check`) and the token is what guards it: then `/readyz` and `/metrics`
//! need it too, only `/healthz` stays open. Refusals say nothing about the
//! daemon's state.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::task::TaskTracker;

use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::sync::online_check;
use crate::sync::operations::{
    self, OperationError, ResyncGate, ResyncRequest, RetrySelection, RunningDaemon,
};
use crate::sync::{Engine, Schedules};
use crate::telemetry;

/// What the admin handlers reach.
pub struct AdminState {
    pub store: Store,
    pub engine: Arc<Engine>,
    pub schedules: Arc<Schedules>,
    pub token: SecretString,
    /// The configured listen address: decides whether remote peers are refused.
    pub listen: SocketAddr,
    /// One resync at a time.
    pub resync_gate: ResyncGate,
    /// The daemon's stop: once it begins, `/readyz` answers 503 at once.
    pub shutdown: Shutdown,
    /// The daemon's tasks: a resync runs on it, so a stop waits for it
    /// within the grace period.
    pub tasks: TaskTracker,
    /// Where `check --online` reads the mapping files, and the version it
    /// expects the org to serve.
    pub mappings_dir: std::path::PathBuf,
    pub api_version: String,
    /// `[admin] failure_grace_seconds`.
    pub failure_grace: std::time::Duration,
}

impl AdminState {
    /// `None` when ready, else why not: stopping, a stalled schedule, an API
    /// version the org does not serve, or logins, a mapping's polls or the
    /// writer (paused by failed calls) failing for longer than
    /// `failure_grace`. The systemd watchdog looks at the schedules only: an
    /// outage on the other side must not make systemd restart the daemon.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.shutdown.is_stopping() {
            return Some("the daemon is stopping".to_owned());
        }
        let at = chrono::Utc::now();
        let stalled = [&self.schedules.poll, &self.schedules.reconcile]
            .into_iter()
            .find_map(|health| {
                health.missed_slot(at).map(|slot| {
                    format!(
                        "the {} schedule ({}) did not fire at {}",
                        health.name,
                        health.expression,
                        slot.to_rfc3339()
                    )
                })
            });
        let salesforce = self.engine.salesforce();
        let grace = chrono::Duration::from_std(self.failure_grace).unwrap_or_default();
        let failing: Vec<String> = self
            .schedules
            .poll_failures
            .failing()
            .into_iter()
            .filter(|(_, failure)| at - failure.since >= grace)
            .map(|(mapping, failure)| {
                format!(
                    "the polls of mapping {mapping} have failed since {}: {}",
                    failure.since.to_rfc3339(),
                    failure.last_error
                )
            })
            .collect();
        let writer = self.engine.writer_state();
        let writer_paused = writer
            .since
            .filter(|since| writer.open && at - *since >= grace)
            .map(|since| {
                format!(
                    "the writer is paused by failed calls since {}: {}",
                    since.to_rfc3339(),
                    writer.last_error.as_deref().unwrap_or("no answer")
                )
            });
        stalled
            .or_else(|| {
                salesforce
                    .login_problem()
                    .filter(|refusal| at - refusal.since >= grace)
                    .map(|refusal| {
                        format!(
                            "salesforce has refused the login since {}: {}",
                            refusal.since.to_rfc3339(),
                            refusal.message
                        )
                    })
            })
            .or_else(|| salesforce.api_version_problem())
            .or(writer_paused)
            .or_else(|| (!failing.is_empty()).then(|| failing.join("; ")))
    }

    fn running(&self) -> RunningDaemon<'_> {
        RunningDaemon {
            engine: &self.engine,
            schedules: &self.schedules,
        }
    }
}

/// The routes, for [`serve`] and tests.
pub fn router(state: Arc<AdminState>) -> Router {
    let admin = Router::new()
        .route("/status", get(status))
        .route("/resync", post(resync))
        .route("/explain/{account_id}", get(explain))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/retry", post(retry_dead_letters))
        .route("/check-online", post(check_online))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "no such admin endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    let mut machines = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if !is_loopback(state.listen.ip()) {
        machines = machines.layer(middleware::from_fn_with_state(state.clone(), authorize));
    }
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(machines)
        .nest("/admin", admin)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_remote_peers,
        ))
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` is stopping.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: Shutdown,
) -> io::Result<()> {
    super::serve_with_peers(
        listener,
        router(state),
        shutdown,
        super::ListenerLimits::default(),
    )
    .await
}

/// Whether `address` is loopback, IPv4-mapped IPv6 included.
pub fn is_loopback(address: std::net::IpAddr) -> bool {
    match address {
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
    }
}

/// Whether a peer may talk to a listener bound on `listen`.
pub fn peer_allowed(listen: SocketAddr, peer: SocketAddr) -> bool {
    !is_loopback(listen.ip()) || is_loopback(peer.ip())
}

/// Whether `presented` is the token, in time independent of where they
/// differ: both are hashed first, so even their lengths do not leak.
pub fn token_matches(presented: &str, token: &SecretString) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(token.expose_secret().as_bytes());
    presented.ct_eq(&expected).into()
}

fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn refuse_remote_peers(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !peer_allowed(state.listen, peer) {
        tracing::warn!(%peer, "admin request from a remote address refused");
        return error_response(
            StatusCode::FORBIDDEN,
            "the admin API answers only local clients",
        );
    }
    next.run(request).await
}

async fn authorize(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(presented) if token_matches(presented.trim(), &state.token) => next.run(request).await,
        _ => {
            tracing::warn!(path = %request.uri().path(), "admin request without a valid token refused");
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                "a valid admin token is required: Authorization: Bearer <the token in [admin] token_file>",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    match state.not_ready_reason() {
        None => axum::Json(json!({ "status": "ready" })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not ready", "reason": reason })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, telemetry::METRICS_CONTENT_TYPE)],
        state.engine.metrics().render(),
    )
        .into_response()
}

fn operation_failed(failure: OperationError) -> Response {
    let status = match &failure {
        OperationError::NothingRecorded { .. }
        | OperationError::UnknownAccounts { .. }
        | OperationError::UnknownDeadLetters { .. } => StatusCode::NOT_FOUND,
        OperationError::ResyncRunning { .. } => StatusCode::CONFLICT,
        failure if failure.is_bad_request() => StatusCode::BAD_REQUEST,
        _ => {
            tracing::error!(error = %failure, "admin operation failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error_response(status, failure.to_string())
}

fn answer<T: serde::Serialize>(outcome: Result<T, OperationError>) -> Response {
    match outcome {
        Ok(value) => axum::Json(value).into_response(),
        Err(failure) => operation_failed(failure),
    }
}

fn bad_body(rejection: JsonRejection) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        format!("unreadable request body: {}", rejection.body_text()),
    )
}

async fn status(State(state): State<Arc<AdminState>>) -> Response {
    answer(operations::status(&state.store, Some(&state.running())))
}

async fn explain(State(state): State<Arc<AdminState>>, Path(account_id): Path<String>) -> Response {
    answer(operations::explain(&state.store, &account_id))
}

async fn dead_letters(State(state): State<Arc<AdminState>>) -> Response {
    answer(state.store.dead_letters().map_err(OperationError::from))
}

async fn retry_dead_letters(
    State(state): State<Arc<AdminState>>,
    body: Result<axum::Json<RetrySelection>, JsonRejection>,
) -> Response {
    match body {
        Ok(axum::Json(selection)) => answer(state.engine.retry_dead_letters(&selection).await),
        Err(rejection) => bad_body(rejection),
    }
}

/// `check --online` with the daemon's own Salesforce session.
async fn check_online(State(state): State<Arc<AdminState>>) -> Response {
    let salesforce = state.engine.salesforce();
    match online_check::check_online(
        &salesforce.checker(),
        salesforce.check_api_version(),
        &state.api_version,
        &state.mappings_dir,
    )
    .await
    {
        Ok(report) => axum::Json(report).into_response(),
        Err(error) if error.is_bad_input() => {
            error_response(StatusCode::BAD_REQUEST, error.to_string())
        }
        Err(error) => error_response(StatusCode::BAD_GATEWAY, error.to_string()),
    }
}

async fn resync(
    State(state): State<Arc<AdminState>>,
    body: Result<axum::Json<ResyncRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(axum::Json(request)) => request,
        Err(rejection) => return bad_body(rejection),
    };
    tracing::info!(request = %serde_json::to_string(&request).unwrap_or_default(), "resync asked through the admin API");
    // A task of its own, on the daemon's tracker: a client that hangs up
    // does not cut a resync short halfway through its Accounts, and a stop
    // waits for it within the grace period (past it, the journal says which
    // Accounts were resynced).
    let work = state.shutdown.spawn(&state.tasks, {
        let state = state.clone();
        async move {
            let ticket = state.resync_gate.enter()?;
            let progress = |progress: operations::ResyncProgress| {
                tracing::info!(done = progress.done, total = progress.total, item = %progress.item, "resync progress");
            };
            state.engine.resync(&ticket, &request, &progress).await
        }
    });
    match work.await {
        Ok(Some(outcome)) => answer(outcome),
        Ok(None) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon stopped before the resync ended; each Account's journal says whether it was resynced",
        ),
        Err(error) => {
            tracing::error!(%error, "the resync task failed");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the resync stopped unexpectedly; see the daemon's log",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_peers_are_refused_only_on_a_loopback_listener() {
        let address = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert!(peer_allowed(
            address("127.0.0.1:8701"),
            address("127.0.0.1:50000")
        ));
        assert!(peer_allowed(
            address("[::1]:8701"),
            address("[::ffff:127.0.0.1]:50000")
        ));
        assert!(!peer_allowed(
            address("127.0.0.1:8701"),
            address("10.0.0.7:50000")
        ));
        assert!(!peer_allowed(
            address("[::1]:8701"),
            address("[2001:db8::1]:50000")
        ));
        assert!(peer_allowed(
            address("0.0.0.0:8701"),
            address("10.0.0.7:50000")
        ));
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = SecretString::from("s3cret-token");
        assert!(token_matches("s3cret-token", &token));
        for wrong in [
            "",
            "s3cret",
            "s3cret-token ",
            "S3CRET-TOKEN",
            "s3cret-tokenx",
        ] {
            assert!(!token_matches(wrong, &token), "{wrong:?}");
        }
    }
}
