//! Webhook ingest throughput: how many events per second the public
//! listener stores durably (each answer waits for its flush), and how long
//! a sender waits for its 200.
//!
//! ```text
//! cargo bench --bench webhook_ingest
//! cargo bench --bench webhook_ingest -- --events 5000 --concurrency 32 --signed
//! cargo bench --bench webhook_ingest -- --json
//! ```
//!
//! It prints one summary table (Markdown, for README) with the target beside
//! each figure; `--json` prints one JSON line instead.
//!
//! The same settings can come from `WEBHOOK_INGEST_EVENTS`,
//! `WEBHOOK_INGEST_CONCURRENCY` and `WEBHOOK_INGEST_SIGNED=1`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use futures::StreamExt;
use ondorse_bridge::config::{ListenerLimits, WebhooksConfig};
use ondorse_bridge::ondorse::webhook::{SIGNATURE_HEADER, signature_header};
use ondorse_bridge::server::public::{self, PublicState};
use ondorse_bridge::shutdown::Shutdown;
use ondorse_bridge::store::Store;
use ondorse_bridge::telemetry::Metrics;
use secrecy::SecretString;
use tokio::sync::Notify;

/// Default number of events: enough for a steady state, a few seconds long.
const DEFAULT_EVENTS: usize = 20_000;
/// The durable ingest rate the product promises (issue 13).
const TARGET_EVENTS_PER_SECOND: f64 = 2_000.0;
/// Default senders in flight; Ondorse delivers in parallel, a few dozen at
/// most in a burst.
const DEFAULT_CONCURRENCY: usize = 64;
const PATH_SECRET: &str = "bench-path-secret-0123456789abcdef";
const SIGNING_SECRET: &str = "bench-signing-secret";

struct Settings {
    events: usize,
    concurrency: usize,
    signed: bool,
    json: bool,
}

impl Settings {
    fn from_environment_and_arguments() -> anyhow::Result<Settings> {
        let number = |name: &str, value: &str| {
            value
                .parse::<usize>()
                .ok()
                .filter(|number| *number > 0)
                .with_context(|| format!("{name} must be a positive whole number, not {value:?}"))
        };
        let mut settings = Settings {
            events: DEFAULT_EVENTS,
            concurrency: DEFAULT_CONCURRENCY,
            signed: false,
            json: false,
        };
        if let Ok(value) = std::env::var("WEBHOOK_INGEST_EVENTS") {
            settings.events = number("WEBHOOK_INGEST_EVENTS", &value)?;
        }
        if let Ok(value) = std::env::var("WEBHOOK_INGEST_CONCURRENCY") {
            settings.concurrency = number("WEBHOOK_INGEST_CONCURRENCY", &value)?;
        }
        settings.signed = std::env::var("WEBHOOK_INGEST_SIGNED").is_ok_and(|value| value == "1");
        let mut arguments = std::env::args().skip(1);
        while let Some(argument) = arguments.next() {
            match argument.as_str() {
                "--events" | "--concurrency" => {
                    let value = arguments
                        .next()
                        .with_context(|| format!("{argument} needs a value"))?;
                    let value = number(&argument, &value)?;
                    if argument == "--events" {
                        settings.events = value;
                    } else {
                        settings.concurrency = value;
                    }
                }
                "--signed" => settings.signed = true,
                "--json" => settings.json = true,
                // `cargo bench` passes `--bench`; a name filter may follow.
                "--bench" => {}
                other if !other.starts_with("--") => {}
                other => {
                    bail!(
                        "unknown argument {other:?} (use --events N, --concurrency N, --signed, --json)"
                    )
                }
            }
        }
        Ok(settings)
    }
}

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_environment_and_arguments()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(bench(settings))
}

async fn bench(settings: Settings) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("store")).await?;
    let config = WebhooksConfig {
        listen: "127.0.0.1:0".parse()?,
        path_secret: SecretString::from(PATH_SECRET),
        allowed_ips: Vec::new(),
        trusted_proxies: Vec::new(),
        signing_secret: settings.signed.then(|| SecretString::from(SIGNING_SECRET)),
        limits: ListenerLimits::default(),
    };
    let state = PublicState {
        store: store.clone(),
        config: Arc::new(config),
        inbox_wake: Arc::new(Notify::new()),
        metrics: Metrics::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!(
        "http://{}/webhooks/ondorse/{PATH_SECRET}",
        listener.local_addr()?
    );
    let shutdown = Shutdown::new();
    let server = tokio::spawn(public::serve(listener, state, shutdown.clone()));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.concurrency)
        .build()?;
    let started = Instant::now();
    let latencies: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..settings.events)
        .map(|index| {
            let client = &client;
            let url = &url;
            let signed = settings.signed;
            async move {
                let body = format!(
                    r#"{{"event_id":"evt_{index:08}","type":"application.review_updated","created_at":"2026-11-26T09:12:03.104000Z","data":{{"object":{{"id":"app_{index:08}","status_review":"approved","risk_level":1,"custom_fields":{{"salesforce_account_id":"001xx000003DGb2AAG"}}}}}}}}"#
                );
                let mut request = client.post(url);
                if signed {
                    let header = signature_header(
                        SIGNING_SECRET.as_bytes(),
                        Utc::now().timestamp(),
                        body.as_bytes(),
                    );
                    request = request.header(SIGNATURE_HEADER, header);
                }
                let sent = Instant::now();
                let response = request.body(body).send().await?;
                let status = response.status();
                let answer = response.text().await?;
                let latency = sent.elapsed();
                ensure!(
                    status == reqwest::StatusCode::OK && answer.contains("stored"),
                    "event {index} answered {status}: {answer}"
                );
                Ok(latency)
            }
        })
        .buffer_unordered(settings.concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut latencies = latencies.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    shutdown.stop();
    server.await??;
    let stored = store.inbox_depth()?;
    ensure!(
        stored == settings.events as u64,
        "{} events were answered but {stored} are in the inbox",
        settings.events
    );

    latencies.sort();
    let percentile = |share: f64| {
        let index = ((latencies.len() as f64 * share).ceil() as usize).clamp(1, latencies.len());
        latencies[index - 1]
    };
    let milliseconds = |duration: Duration| duration.as_secs_f64() * 1_000.0;
    let rate = settings.events as f64 / elapsed.as_secs_f64();
    let signing = if settings.signed {
        "signed"
    } else {
        "unsigned"
    };
    let (p50, p99) = (
        milliseconds(percentile(0.50)),
        milliseconds(percentile(0.99)),
    );
    let max = milliseconds(*latencies.last().expect("at least one event"));
    if settings.json {
        println!(
            "{}",
            serde_json::json!({
                "benchmark": "webhook_ingest",
                "date": Utc::now().to_rfc3339(),
                "cores": std::thread::available_parallelism().map_or(1, usize::from),
                "events": settings.events,
                "concurrency": settings.concurrency,
                "signed": settings.signed,
                "events_per_second": rate,
                "target_events_per_second": TARGET_EVENTS_PER_SECOND,
                "answer_latency_ms": { "p50": p50, "p99": p99, "max": max },
            })
        );
        return Ok(());
    }
    println!(
        "webhook_ingest, {}, {} cores",
        Utc::now().format("%Y-%m-%d"),
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    println!();
    println!("| figure | measured | target |");
    println!("| --- | --- | --- |");
    println!(
        "| webhook ingest, {} {signing} events, {} senders | {rate:.0} events/s, 200 after p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms | ≥ {TARGET_EVENTS_PER_SECOND:.0} events/s |",
        settings.events, settings.concurrency
    );
    Ok(())
}
