//! Helpers for the Ondorse side: the sandbox, a client for it, a webhook
//! receiver that records what it gets, and a canned server for answers the
//! sandbox would never give.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use ondorse_bridge::config::OndorseConfig;
use ondorse_bridge::ondorse::OndorseClient;
use ondorse_bridge::telemetry::Metrics;
use ondorse_sandbox::ondorse::{OndorseSandbox, OndorseSandboxOptions};
use secrecy::SecretString;
use serde_json::Value;
use tokio::task::JoinHandle;

/// Longest any test waits for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub async fn start_ondorse(options: OndorseSandboxOptions) -> OndorseSandbox {
    OndorseSandbox::start(options)
        .await
        .expect("sandbox ondorse starts")
}

/// The `[ondorse]` configuration that reaches `sandbox` with its own key.
pub fn ondorse_config(sandbox: &OndorseSandbox) -> OndorseConfig {
    let options = sandbox.options();
    OndorseConfig {
        base_url: sandbox.base_url(),
        api_key: SecretString::from(options.api_key.clone()),
        auth_header: options.auth_header.clone(),
        auth_scheme: options.auth_scheme.clone(),
        portal_base_url: options.portal_base_url.clone(),
        max_concurrent_requests: ondorse_bridge::config::DEFAULT_ONDORSE_MAX_CONCURRENT_REQUESTS,
        max_concurrent_reads: ondorse_bridge::config::DEFAULT_ONDORSE_MAX_CONCURRENT_READS,
    }
}

pub fn client_for(sandbox: &OndorseSandbox) -> OndorseClient {
    OndorseClient::new(&ondorse_config(sandbox), Metrics::new()).expect("client for the sandbox")
}

/// One webhook as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub signature: Option<String>,
    pub body: Bytes,
    /// The receiver's answer to it.
    pub status: StatusCode,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is json")
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Requests still to answer 500.
    failures_left: AtomicUsize,
    /// Requests still to leave unanswered until `hang`.
    hangs_left: AtomicUsize,
    hang: Mutex<Duration>,
}

/// A tiny webhook endpoint that records every request.
pub struct WebhookReceiver {
    pub url: String,
    state: Arc<ReceiverState>,
    server: JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let state = Arc::new(ReceiverState::default());
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("receiver binds");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        WebhookReceiver { url, state, server }
    }

    /// The next `count` deliveries are answered 500.
    pub fn fail_next(&self, count: usize) {
        self.state.failures_left.store(count, Ordering::SeqCst);
    }

    /// The next `count` deliveries get no answer for `hang`.
    pub fn hang_next(&self, count: usize, hang: Duration) {
        *self.state.hang.lock().expect("hang") = hang;
        self.state.hangs_left.store(count, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("received").clone()
    }

    /// Bodies answered 2xx, in arrival order.
    pub fn accepted(&self) -> Vec<Value> {
        self.received()
            .iter()
            .filter(|received| received.status.is_success())
            .map(Received::json)
            .collect()
    }

    /// `type` of every accepted event, in arrival order.
    pub fn accepted_types(&self) -> Vec<String> {
        self.accepted()
            .iter()
            .map(|event| event["type"].as_str().expect("type").to_owned())
            .collect()
    }
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get("ondorse-signature")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if take(&state.hangs_left) {
        let hang = *state.hang.lock().expect("hang");
        let record = Received {
            signature,
            body,
            status: StatusCode::REQUEST_TIMEOUT,
        };
        state.received.lock().expect("received").push(record);
        tokio::time::sleep(hang).await;
        return StatusCode::OK;
    }
    let status = if take(&state.failures_left) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    state.received.lock().expect("received").push(Received {
        signature,
        body,
        status,
    });
    status
}

/// A server that answers every request with the same status, headers and
/// body: for shapes the sandbox never produces. Returns its base URL.
pub struct CannedServer {
    pub base_url: String,
    server: JoinHandle<()>,
}

impl Drop for CannedServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub async fn serve_canned(status: u16, content_type: &'static str, body: &str) -> CannedServer {
    let status = StatusCode::from_u16(status).expect("status");
    let body = body.to_owned();
    let app = Router::new().fallback(any(move || {
        let body = body.clone();
        async move { (status, [("content-type", content_type)], body).into_response() }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("canned server binds");
    let base_url = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("canned server serves");
    });
    CannedServer { base_url, server }
}

/// A client for `base_url` with the given key, header and scheme.
pub fn client_with(base_url: &str, key: &str, header: &str, scheme: &str) -> OndorseClient {
    OndorseClient::new(
        &OndorseConfig {
            base_url: base_url.to_owned(),
            api_key: SecretString::from(key.to_owned()),
            auth_header: header.to_owned(),
            auth_scheme: scheme.to_owned(),
            portal_base_url: "https://collect.ondorse.co".to_owned(),
            max_concurrent_requests:
                ondorse_bridge::config::DEFAULT_ONDORSE_MAX_CONCURRENT_REQUESTS,
            max_concurrent_reads: ondorse_bridge::config::DEFAULT_ONDORSE_MAX_CONCURRENT_READS,
        },
        Metrics::new(),
    )
    .expect("client builds")
}
