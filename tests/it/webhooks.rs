//! The public webhook listener over real HTTP: every refusal with its
//! status, deduplication under a storm, and durability across a SIGKILL of
//! the real daemon.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use ondorse_bridge::config::{ListenerLimits, WebhooksConfig};
use ondorse_bridge::ondorse::webhook::{
    DEFAULT_SIGNATURE_TOLERANCE, EventType, SIGNATURE_HEADER, signature_header,
};
use ondorse_bridge::server::public::{self, PublicState};
use ondorse_bridge::shutdown::Shutdown;
use ondorse_bridge::store::{InboxItem, InboxKind, Store};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::support::config::PATH_SECRET;
use crate::support::daemon::{Daemon, run_command, write_daemon_config};

const SIGNING_SECRET: &str = "whsec_current";

/// The receiver in-process on a loopback port, with its store in a temp dir.
struct Receiver {
    address: SocketAddr,
    store: Store,
    inbox_wake: Arc<Notify>,
    client: reqwest::Client,
    /// Stops the listener when the receiver is dropped.
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.stop();
    }
}

fn webhooks_config() -> WebhooksConfig {
    WebhooksConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        path_secret: SecretString::from(PATH_SECRET),
        allowed_ips: Vec::new(),
        trusted_proxies: Vec::new(),
        signing_secret: None,
        limits: ListenerLimits::default(),
    }
}

fn networks(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().map(|net| net.parse().unwrap()).collect()
}

impl Receiver {
    async fn start(config: WebhooksConfig) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).await.unwrap();
        let inbox_wake = Arc::new(Notify::new());
        let state = PublicState {
            store: store.clone(),
            config: Arc::new(config),
            inbox_wake: Arc::clone(&inbox_wake),
            metrics: ondorse_bridge::telemetry::Metrics::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(public::serve(listener, state, shutdown.clone()));
        Receiver {
            address,
            store,
            inbox_wake,
            client: reqwest::Client::new(),
            shutdown,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn ondorse_url(&self) -> String {
        self.url(&format!("/webhooks/ondorse/{PATH_SECRET}"))
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, String) {
        self.send(self.client.post(self.url(path)).body(body)).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, String) {
        let response = request.send().await.expect("the receiver answers");
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    async fn post_event(&self, body: &str) -> (StatusCode, String) {
        self.send(self.client.post(self.ondorse_url()).body(body.to_owned()))
            .await
    }

    fn pending(&self) -> Vec<InboxItem> {
        self.store.inbox_pending(usize::MAX).unwrap()
    }

    fn pending_event_ids(&self) -> Vec<String> {
        self.pending()
            .into_iter()
            .map(|item| match item.kind {
                InboxKind::Webhook(envelope) => envelope.event_id,
                other => panic!("expected a webhook, found {other:?}"),
            })
            .collect()
    }
}

fn event(event_id: &str, event_type: &str) -> String {
    json!({
        "event_id": event_id,
        "type": event_type,
        "created_at": "2026-11-26T09:12:03.104000Z",
        "data": {"object": {"id": "app_5d1e", "status_review": "approved",
                            "custom_fields": {"salesforce_account_id": "001xx000003DGb2AAG"}}}
    })
    .to_string()
}

fn status_field(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body: {body}"));
    value["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_event_is_stored_once_and_a_replay_is_a_duplicate() {
    let receiver = Receiver::start(webhooks_config()).await;
    let body = event("evt_1", "application.review_updated");

    let (status, answer) = receiver.post_event(&body).await;
    assert_eq!(
        (status, status_field(&answer).as_str()),
        (StatusCode::OK, "stored")
    );
    // The engine is woken: a permit is waiting for it (taken at once; the
    // deadline only bounds a failing run).
    tokio::time::timeout(
        crate::support::world::E2E_DEADLINE,
        receiver.inbox_wake.notified(),
    )
    .await
    .expect("the sync engine was woken");
    let (status, answer) = receiver.post_event(&body).await;
    assert_eq!(
        (status, status_field(&answer).as_str()),
        (StatusCode::OK, "duplicate")
    );

    let pending = receiver.pending();
    assert_eq!(pending.len(), 1);
    let InboxKind::Webhook(envelope) = &pending[0].kind else {
        panic!("expected a webhook: {pending:?}");
    };
    assert_eq!(envelope.event_id, "evt_1");
    assert_eq!(envelope.kind(), EventType::ApplicationReviewUpdated);
    assert_eq!(envelope.application_id.as_deref(), Some("app_5d1e"));
    assert_eq!(
        envelope.object["custom_fields"]["salesforce_account_id"],
        "001xx000003DGb2AAG"
    );
}

#[tokio::test]
async fn an_unknown_event_type_is_stored_as_ignorable() {
    let receiver = Receiver::start(webhooks_config()).await;
    let (status, answer) = receiver
        .post_event(&event("evt_new", "kyc.brand_new_thing"))
        .await;
    assert_eq!(
        (status, status_field(&answer).as_str()),
        (StatusCode::OK, "stored")
    );
    let pending = receiver.pending();
    let InboxKind::Webhook(envelope) = &pending[0].kind else {
        panic!("expected a webhook: {pending:?}");
    };
    assert_eq!(
        envelope.kind(),
        EventType::Other("kyc.brand_new_thing".to_owned())
    );
    assert!(envelope.kind().is_ignorable());
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_with_413() {
    let receiver = Receiver::start(webhooks_config()).await;
    let huge = format!(
        r#"{{"event_id":"evt_huge","type":"application.updated","padding":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let (status, _) = receiver.post_event(&huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Even with a wrong secret: size is checked before anything is revealed.
    let (status, _) = receiver.post("/webhooks/ondorse/wrong", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(receiver.pending().is_empty());
}

/// Everything a sender can see of an answer, except its date.
async fn observable(response: reqwest::Response) -> (StatusCode, Vec<(String, String)>, String) {
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    (response.status(), headers, response.text().await.unwrap())
}

#[tokio::test]
async fn a_wrong_secret_looks_exactly_like_an_unknown_route() {
    let receiver = Receiver::start(webhooks_config()).await;
    let body = event("evt_1", "application.updated");
    let post = |path: String| {
        receiver
            .client
            .post(receiver.url(&path))
            .body(body.clone())
            .send()
    };
    let unknown = observable(post("/no/such/route".to_owned()).await.unwrap()).await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);

    let wrong_secrets = [
        "/webhooks/ondorse/0123456789abcdef0123456789abcdee".to_owned(),
        "/webhooks/ondorse/short".to_owned(),
        format!("/webhooks/salesforce/{PATH_SECRET}x"),
    ];
    for path in wrong_secrets {
        let answer = observable(post(path.clone()).await.unwrap()).await;
        assert_eq!(answer, unknown, "{path}");
    }
    // Another method on the right path does not confirm the route either.
    let (status, _) = receiver
        .send(receiver.client.get(receiver.ondorse_url()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(receiver.pending().is_empty());
}

#[tokio::test]
async fn sources_outside_the_allow_list_are_refused_and_forwarded_for_is_believed_only_from_proxies()
 {
    let body = event("evt_1", "application.updated");

    // Loopback is not allowed, and a forged X-Forwarded-For does not help.
    let mut config = webhooks_config();
    config.allowed_ips = networks(&["203.0.113.0/24"]);
    let receiver = Receiver::start(config).await;
    let (status, answer) = receiver.post_event(&body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer.contains("127.0.0.1"),
        "the refusal names the source: {answer}"
    );
    let spoofed = receiver
        .client
        .post(receiver.ondorse_url())
        .header("x-forwarded-for", "203.0.113.7")
        .body(body.clone());
    assert_eq!(receiver.send(spoofed).await.0, StatusCode::FORBIDDEN);
    assert!(receiver.pending().is_empty());

    // Behind a trusted proxy (loopback here), the right-most untrusted hop counts.
    let mut config = webhooks_config();
    config.allowed_ips = networks(&["203.0.113.0/24"]);
    config.trusted_proxies = networks(&["127.0.0.1/32", "10.0.0.0/8"]);
    let receiver = Receiver::start(config).await;
    let cases = [
        ("203.0.113.7", StatusCode::OK),
        ("198.51.100.1, 203.0.113.7, 10.0.0.2", StatusCode::OK),
        ("203.0.113.7, 198.51.100.1", StatusCode::FORBIDDEN),
        ("not-an-address", StatusCode::FORBIDDEN),
    ];
    for (index, (forwarded, expected)) in cases.into_iter().enumerate() {
        let request = receiver
            .client
            .post(receiver.ondorse_url())
            .header("x-forwarded-for", forwarded)
            .body(event(&format!("evt_{index}"), "application.updated"));
        let (status, answer) = receiver.send(request).await;
        assert_eq!(status, expected, "X-Forwarded-For: {forwarded}: {answer}");
    }
    assert_eq!(receiver.pending_event_ids(), ["evt_0", "evt_1"]);
    // A trusted proxy that forwards nothing is itself the source: not allowed.
    assert_eq!(receiver.post_event(&body).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn signatures_are_required_when_configured() {
    let mut config = webhooks_config();
    config.signing_secret = Some(SecretString::from(SIGNING_SECRET));
    let receiver = Receiver::start(config).await;
    let body = event("evt_signed", "application.submitted");
    let now = Utc::now().timestamp();
    // A minute beyond the tolerance, so the seconds a loaded machine takes to
    // send the requests cannot carry a "future" timestamp back inside it (the
    // exact boundary is unit-tested in `ondorse::webhook`).
    let outside = DEFAULT_SIGNATURE_TOLERANCE.as_secs() as i64 + 60;
    let signed = |header: Option<String>| {
        let request = receiver
            .client
            .post(receiver.ondorse_url())
            .body(body.clone());
        match header {
            Some(header) => request.header(SIGNATURE_HEADER, header),
            None => request,
        }
    };
    let secret = SIGNING_SECRET.as_bytes();
    let refused = [
        ("missing", None),
        ("malformed", Some("garbage".to_owned())),
        (
            "wrong secret",
            Some(signature_header(b"whsec_other", now, body.as_bytes())),
        ),
        ("other body", Some(signature_header(secret, now, b"{}"))),
        (
            "stale",
            Some(signature_header(secret, now - outside, body.as_bytes())),
        ),
        (
            "future",
            Some(signature_header(secret, now + outside, body.as_bytes())),
        ),
    ];
    for (case, header) in refused {
        let (status, answer) = receiver.send(signed(header)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {answer}");
        let reason: Value = serde_json::from_str(&answer).unwrap();
        assert!(
            reason["error"].as_str().unwrap().contains(SIGNATURE_HEADER),
            "{case}: {answer}"
        );
    }
    assert!(receiver.pending().is_empty());

    // During a rotation Ondorse signs with both secrets; ours is the second v1.
    let old = signature_header(b"whsec_previous", now, body.as_bytes());
    let current = signature_header(secret, now, body.as_bytes());
    let rotated = format!("{old},v1={}", current.split_once(",v1=").unwrap().1);
    let (status, answer) = receiver.send(signed(Some(rotated))).await;
    assert_eq!(
        (status, status_field(&answer).as_str()),
        (StatusCode::OK, "stored")
    );
    assert_eq!(receiver.pending_event_ids(), ["evt_signed"]);
}

#[tokio::test]
async fn malformed_bodies_are_refused_with_a_reason() {
    let receiver = Receiver::start(webhooks_config()).await;
    let cases = [
        (
            r#"{"event_id":"evt_1","type":"application.upd"#,
            "not valid JSON",
        ),
        (r#"{"type":"application.updated","data":{}}"#, "event_id"),
        (r#"{"event_id":"evt_1","data":{}}"#, "type"),
        ("[1, 2]", "not an object"),
    ];
    for (body, reason) in cases {
        let (status, answer) = receiver.post_event(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = serde_json::from_str(&answer).expect("a JSON refusal");
        let error = answer["error"].as_str().expect("an error field");
        assert!(error.contains(reason), "{body}: {error}");
    }
    assert!(receiver.pending().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_with_duplicates_stores_each_event_exactly_once() {
    const EVENTS: usize = 5_000;
    const UNIQUE: usize = 3_500;
    const CONCURRENCY: usize = 32;
    let receiver = Arc::new(Receiver::start(webhooks_config()).await);
    // Every 10th posting from 3,500 on repeats an earlier event, some of
    // them while the original may still be in flight.
    let bodies: Vec<String> = (0..EVENTS)
        .map(|index| {
            let id = if index < UNIQUE {
                index
            } else {
                (index * 7_919) % UNIQUE
            };
            event(&format!("evt_{id:05}"), "application.updated")
        })
        .collect();
    let mut interleaved = Vec::with_capacity(EVENTS);
    let (originals, repeats) = bodies.split_at(UNIQUE);
    let mut repeats = repeats.iter();
    for (index, original) in originals.iter().enumerate() {
        interleaved.push(original.clone());
        if index % 7 == 6
            && let Some(repeat) = repeats.next()
        {
            interleaved.push(repeat.clone());
        }
    }
    interleaved.extend(repeats.cloned());
    assert_eq!(interleaved.len(), EVENTS);

    let answers: Vec<String> = futures::stream::iter(interleaved)
        .map(|body| {
            let receiver = Arc::clone(&receiver);
            async move {
                let (status, answer) = receiver.post_event(&body).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
                status_field(&answer)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let stored = answers.iter().filter(|answer| *answer == "stored").count();
    let duplicates = answers
        .iter()
        .filter(|answer| *answer == "duplicate")
        .count();
    assert_eq!((stored, duplicates), (UNIQUE, EVENTS - UNIQUE));

    let ids = receiver.pending_event_ids();
    assert_eq!(ids.len(), UNIQUE);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), UNIQUE);
    assert_eq!(receiver.store.inbox_depth(), UNIQUE as u64);
}

#[tokio::test]
async fn salesforce_hints_are_stored_and_bad_ids_refused() {
    let receiver = Receiver::start(webhooks_config()).await;
    let path = format!("/webhooks/salesforce/{PATH_SECRET}");
    // The 15-character form of an Id is the same Account as its
    // 18-character form: stored once, in the 18-character form.
    let hint = json!({"ids": ["001xx000003DGb2AAG", "001xx000003DGb3", "001xx000003DGb2AAG", "001xx000003DGb2"]});
    let (status, answer) = receiver.post(&path, hint.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer, json!({"status": "stored", "ids": 2}));
    let pending = receiver.pending();
    assert_eq!(pending.len(), 1);
    let InboxKind::SalesforceHint { ids } = &pending[0].kind else {
        panic!("a hint: {:?}", pending[0].kind);
    };
    let stored: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
    assert_eq!(stored, ["001xx000003DGb2AAG", "001xx000003DGb3AAG"]);

    let too_many: Vec<String> = (0..201).map(|index| format!("001xx{index:013}")).collect();
    let refused = [
        (
            json!({"ids": ["001xx000003DGb2AAG", "001'--"]}).to_string(),
            "\"001'--\"",
        ),
        (
            json!({"ids": ["001xx000003DGb2AA"]}).to_string(),
            "001xx000003DGb2AA",
        ),
        // A Contact's or a Lead's Id: the answer names it and says why.
        (
            json!({"ids": ["001xx000003DGb2AAG", "003xx000004TmiQ"]}).to_string(),
            "003xx000004TmiQAAS is not an Account Id: it starts with 003, so it is a Contact Id",
        ),
        (
            json!({"ids": ["00Qxx000001ABCDEA4"]}).to_string(),
            "00Qxx000001ABCDEA4 is not an Account Id: it starts with 00Q, so it is a Lead Id",
        ),
        // An 18-character Id whose checksum does not match its first fifteen
        // (a typo, or its letter case changed on the way).
        (
            json!({"ids": ["001xx000003DGb2AAA"]}).to_string(),
            "001xx000003DGb2AAA is not a Salesforce Id: its last three characters AAA do not match its first fifteen, which give AAG",
        ),
        (
            json!({"ids": ["001XX000003DGB2AAG"]}).to_string(),
            "001XX000003DGB2AAG is not a Salesforce Id: its last three characters AAG do not match",
        ),
        (json!({"ids": too_many}).to_string(), "at most 200"),
        (json!({"ids": []}).to_string(), "empty"),
        (
            json!({"accounts": ["001xx000003DGb2AAG"]}).to_string(),
            "ids",
        ),
        ("{\"ids\": [".to_owned(), "ids"),
    ];
    for (body, reason) in refused {
        let (status, answer) = receiver.post(&path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(reason), "{body}: {error}");
    }
    assert_eq!(receiver.pending().len(), 1);
}

/// The daemon answers 200 only once the event is on disk: SIGKILL right
/// after the answer loses nothing, and a restarted daemon knows the event.
#[tokio::test]
async fn an_acknowledged_event_survives_sigkill_and_stays_a_duplicate_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_daemon_config(dir.path());
    // No pooled connections: the first daemon's would be dead after the kill.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let body = event("evt_crash", "application.review_updated");
    let post = |daemon: &Daemon| {
        let url = format!(
            "http://{}/webhooks/ondorse/{PATH_SECRET}",
            daemon.webhook_address()
        );
        let request = client.post(url).body(body.clone());
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };

    let daemon = Daemon::start(&config).await;
    let (status, answer) = post(&daemon).await;
    assert_eq!(
        (status, status_field(&answer).as_str()),
        (StatusCode::OK, "stored")
    );
    daemon.kill();

    {
        let store = Store::open(&dir.path().join("store"))
            .await
            .expect("the killed daemon released the store");
        let pending = store.inbox_pending(10).unwrap();
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert!(
            matches!(&pending[0].kind, InboxKind::Webhook(envelope) if envelope.event_id == "evt_crash")
        );
    }

    let daemon = Daemon::start(&config).await;
    let (status, answer) = post(&daemon).await;
    assert_eq!(
        (status, status_field(&answer).as_str()),
        (StatusCode::OK, "duplicate"),
        "{}",
        daemon.log()
    );
    let (exit, log) = daemon.terminate().await;
    assert!(exit.success(), "SIGTERM should exit 0, got {exit}:\n{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_store_is_told_why_it_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_daemon_config(dir.path());
    let daemon = Daemon::start(&config).await;

    let output = tokio::process::Command::from(run_command(&config))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    let (exit, log) = daemon.terminate().await;
    assert!(exit.success(), "{log}");
}

/// Posts a new event and checks it was stored.
async fn post_and_expect_stored(receiver: &Receiver, event_id: &str) {
    let (status, answer) = receiver
        .post_event(&event(event_id, "application.review_updated"))
        .await;
    assert_eq!(
        (status, status_field(&answer).as_str()),
        (StatusCode::OK, "stored"),
        "{answer}"
    );
}

/// Limits short enough for a test: a second per head and per idle wait.
fn quick_limits(max_connections: usize) -> WebhooksConfig {
    limits_of(1, max_connections)
}

/// Every timeout `seconds` long.
fn limits_of(seconds: u64, max_connections: usize) -> WebhooksConfig {
    let timeout = std::time::Duration::from_secs(seconds);
    WebhooksConfig {
        limits: ListenerLimits {
            header_read_timeout: timeout,
            idle_timeout: timeout,
            body_timeout: timeout,
            max_connections,
        },
        ..webhooks_config()
    }
}

/// How long a connection the listener should close may stay open in a
/// test: its one-second limits, with room for a loaded machine.
const CLOSE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Reads until the listener closes `stream`, returning what it sent; panics
/// if it is still open after [`CLOSE_DEADLINE`].
async fn read_until_closed(stream: &mut tokio::net::TcpStream, what: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(CLOSE_DEADLINE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => received.extend_from_slice(&buffer[..count]),
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "{what}: still open after {CLOSE_DEADLINE:?}"
    );
    String::from_utf8_lossy(&received).into_owned()
}

async fn connect(receiver: &Receiver) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(receiver.address)
        .await
        .expect("connect to the receiver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_answered_while_200_idle_connections_are_open_and_they_are_closed() {
    use tokio::io::AsyncWriteExt;
    // Five seconds: the idle ones are still open while the webhook is sent.
    let receiver = Receiver::start(limits_of(5, ListenerLimits::default().max_connections)).await;
    let mut idle = Vec::new();
    for index in 0..200 {
        let mut stream = connect(&receiver).await;
        if index % 2 == 1 {
            // Half of them start a head and never finish it (slowloris).
            stream
                .write_all(b"POST /webhooks/ondorse/x HTTP/1.1\r\nHost: bridge\r\n")
                .await
                .unwrap();
        }
        idle.push(stream);
    }

    post_and_expect_stored(&receiver, "evt_busy").await;
    assert_eq!(receiver.pending_event_ids(), vec!["evt_busy".to_owned()]);

    for (index, stream) in idle.iter_mut().enumerate() {
        let sent = read_until_closed(stream, &format!("idle connection {index}")).await;
        assert!(!sent.contains("200 OK"), "{sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_is_closed_once_idle() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let receiver = Receiver::start(quick_limits(8)).await;
    let mut stream = connect(&receiver).await;
    let body = event("evt_keep", "application.review_updated");
    let request = format!(
        "POST /webhooks/ondorse/{PATH_SECRET} HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = [0u8; 1024];
    let count = stream.read(&mut buffer).await.unwrap();
    let answer = String::from_utf8_lossy(&buffer[..count]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The answer kept the connection open; nothing more comes, so it goes.
    read_until_closed(&mut stream, "the idle keep-alive connection").await;
    assert_eq!(receiver.pending_event_ids(), vec!["evt_keep".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_is_cut_off_whatever_the_path() {
    use tokio::io::AsyncWriteExt;
    let receiver = Receiver::start(quick_limits(8)).await;
    for path in [
        format!("/webhooks/ondorse/{PATH_SECRET}"),
        "/webhooks/ondorse/not-the-secret-at-all".to_owned(),
    ] {
        let mut stream = connect(&receiver).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"event_id\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream, &format!("a trickling body to {path}")).await;
        let status = answer.split(' ').nth(1).unwrap_or_default().to_owned();
        assert!(
            status == "408" || status == "404",
            "{path}: the sender is told, then the connection closes: {answer}"
        );
        if path.contains(PATH_SECRET) {
            assert_eq!(status, "408", "{answer}");
            assert!(answer.contains("did not arrive within 1 s"), "{answer}");
        }
    }
    assert!(receiver.pending().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_a_sender_is_answered_once_idle_ones_are_closed() {
    let receiver = Receiver::start(quick_limits(5)).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(connect(&receiver).await);
    }
    tokio::time::timeout(
        CLOSE_DEADLINE,
        post_and_expect_stored(&receiver, "evt_capped"),
    )
    .await
    .expect("the sender gets its turn once the idle connections are closed");
    for (index, stream) in idle.iter_mut().enumerate() {
        read_until_closed(stream, &format!("idle connection {index}")).await;
    }
}
