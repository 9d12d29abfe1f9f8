//! What an operator sees: the metrics after a scenario through both
//! sandboxes, and the log format the daemon picks for where its stderr goes.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::{Value, json};

use crate::support::world::{E2E_DEADLINE, World, eventually};

/// The shipped business mapping, renamed: the label shows the name the
/// file gives, not the file's.
const MAPPING: &str = "telemetry-onboarding";

/// One sample of the exposition: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format as far as our metrics use it.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {line}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.strip_suffix('}').expect("closed labels")),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value,
            }
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `labels`.
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        })
        .map(|sample| sample.value)
        .sum()
}

fn exists(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> bool {
    samples.iter().any(|sample| {
        sample.name == name
            && labels
                .iter()
                .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
    })
}

/// Every value a bounded label may take (`mapping` and `le` aside).
fn allowed_values(label: &str) -> &'static [&'static str] {
    match label {
        "result" => &[
            "created",
            "failed",
            "written",
            "retried",
            "dead_lettered",
            "refused",
            "stored",
            "duplicate",
        ],
        "source" => &["ondorse", "salesforce"],
        "event_type" => &[
            "application.created",
            "application.updated",
            "application.submitted",
            "application.review_updated",
            "application.status_updated",
            "collect.opened",
            "collect.closed",
            "webhooks.test",
            "other",
            "hint",
        ],
        "reason" => &[
            "too_large",
            "wrong_secret",
            "forbidden_source",
            "bad_signature",
            "malformed",
            "timeout",
            "store_unavailable",
            "other",
            "over_budget",
            "near_limit",
            "limit_exceeded",
        ],
        "api" => &["salesforce", "ondorse"],
        "endpoint" => &[
            "token",
            "query",
            "query_more",
            "describe",
            "composite",
            "record",
            "limits",
            "portal",
            "application",
            "other",
        ],
        "status" => &["2xx", "3xx", "4xx", "5xx", "error"],
        "work" => &["intake", "reconcile", "writeback", "lookup", "check"],
        "queue" => &["inbox", "pending_writes", "webhooks", "hints", "intents"],
        "schedule" => &["poll", "reconcile"],
        other => panic!("unexpected label `{other}`"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_tell_what_happened_with_bounded_labels() {
    const ACCOUNTS: usize = 8;
    let world = World::start(OndorseSandboxOptions {
        // Long past the writer's linger: each portal link is written before
        // its decision comes (they would share one coalesced write).
        submit_after: Some(Duration::from_millis(500)),
        review_after: Some(Duration::from_millis(60)),
        duplicate_ratio: 0.5,
        ..OndorseSandboxOptions::default()
    })
    .await;
    let mapping_file = world.config.mappings.dir.join("business-onboarding.yaml");
    let text = std::fs::read_to_string(&mapping_file).expect("the shipped mapping");
    std::fs::write(
        &mapping_file,
        text.replacen("name: business-onboarding", &format!("name: {MAPPING}"), 1),
    )
    .expect("rename the mapping");
    let ids = world.seed(ACCOUNTS, "Customer", 21);
    let daemon = world.daemon().await;
    // The daemon's own registry: every count below is this daemon's alone,
    // whatever the other tests of this process do at the same time.
    let metrics = daemon.engine.metrics().clone();
    let scrape_url = format!("http://{}/metrics", daemon.admin_address());

    eventually(
        "every decision is written back and every webhook delivered",
        E2E_DEADLINE,
        || {
            let applications = world.ondorse.applications();
            world.ondorse.stats().deliveries_pending == 0
                && applications.len() == ACCOUNTS
                && applications.iter().all(|application| {
                    let account = application["custom_fields"]["salesforce_account_id"]
                        .as_str()
                        .unwrap_or_default();
                    !application["status_review"].is_null()
                        && [json!("Approved"), json!("Rejected")]
                            .contains(&world.field(account, "KYC_Status__c"))
                })
        },
    )
    .await;
    // Refused deliveries: a wrong path secret and a body that is not JSON.
    let http = reqwest::Client::new();
    let address = daemon.webhook_address();
    let wrong = http
        .post(format!("http://{address}/webhooks/ondorse/not-the-secret"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 404);
    let malformed = http
        .post(world.webhook_url(address))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    // The gauges of the store are refreshed every second.
    eventually(
        "the cursor lag gauge shows the mapping",
        E2E_DEADLINE,
        || {
            metrics.render().contains(&format!(
                "ondorse_bridge_cursor_lag_seconds{{mapping=\"{MAPPING}\"}}"
            ))
        },
    )
    .await;
    // What a scrape gets is that registry.
    let scraped = http.get(&scrape_url).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    let scraped = scraped.text().await.unwrap();
    assert!(
        scraped.contains(&format!(
            "ondorse_bridge_portals_total{{mapping=\"{MAPPING}\",result=\"created\"}} {ACCOUNTS}"
        )),
        "{scraped}"
    );
    daemon.stop().await.expect("clean stop");

    let text = metrics.render();
    let all = samples(&text);
    let mapping = [("mapping", MAPPING)];
    assert_eq!(
        total(
            &all,
            "ondorse_bridge_portals_total",
            &[("mapping", MAPPING), ("result", "created")]
        ),
        ACCOUNTS as f64,
        "{text}"
    );
    assert_eq!(
        total(
            &all,
            "ondorse_bridge_portals_total",
            &[("mapping", MAPPING), ("result", "failed")]
        ),
        0.0
    );
    // A lower bound by design: each poll re-reads its overlap window.
    assert!(
        total(&all, "ondorse_bridge_accounts_seen_total", &mapping) >= ACCOUNTS as f64,
        "{text}"
    );
    // A portal link, then at least one decision, per Account (a lower
    // bound by design: an application under review may be written too).
    let written = total(
        &all,
        "ondorse_bridge_writebacks_total",
        &[("mapping", MAPPING), ("result", "written")],
    );
    assert!(written >= 2.0 * ACCOUNTS as f64, "{written}\n{text}");

    // Every delivery this world's Ondorse made was counted once: stored
    // the first time, a duplicate after.
    let stats = world.ondorse.stats();
    let events = world.ondorse.events();
    let stored = |event_type: &str| {
        total(
            &all,
            "ondorse_bridge_webhooks_total",
            &[
                ("source", "ondorse"),
                ("event_type", event_type),
                ("result", "stored"),
            ],
        )
    };
    let emitted = |event_type: &str| {
        events
            .iter()
            .filter(|event| event["type"] == event_type)
            .count() as f64
    };
    assert_eq!(
        total(
            &all,
            "ondorse_bridge_webhooks_total",
            &[("source", "ondorse"), ("result", "stored")],
        ),
        stats.events_emitted as f64,
        "{stats:?}\n{text}"
    );
    for event_type in ["application.submitted", "application.review_updated"] {
        assert_eq!(
            stored(event_type),
            emitted(event_type),
            "{event_type}\n{text}"
        );
    }
    assert!(
        emitted("application.review_updated") >= ACCOUNTS as f64,
        "each application is reviewed: {events:?}"
    );
    let duplicates = stats
        .deliveries_succeeded
        .saturating_sub(stats.events_emitted);
    assert!(
        duplicates > 0,
        "the sandbox delivered duplicates: {stats:?}"
    );
    assert_eq!(
        total(
            &all,
            "ondorse_bridge_webhooks_total",
            &[("result", "duplicate")]
        ),
        duplicates as f64,
        "{text}"
    );
    for reason in ["wrong_secret", "malformed"] {
        assert_eq!(
            total(
                &all,
                "ondorse_bridge_webhooks_rejected_total",
                &[("reason", reason)]
            ),
            1.0,
            "{reason}\n{text}"
        );
    }
    assert_eq!(
        total(&all, "ondorse_bridge_webhooks_rejected_total", &[]),
        2.0,
        "{text}"
    );

    // Each request counted is one the sandboxes received, by endpoint.
    let requests = |api, endpoint| {
        total(
            &all,
            "ondorse_bridge_api_requests_total",
            &[("api", api), ("endpoint", endpoint)],
        )
    };
    assert_eq!(requests("ondorse", "portal"), ACCOUNTS as f64, "{text}");
    assert_eq!(
        requests("ondorse", "application"),
        stats.application_gets as f64,
        "{stats:?}\n{text}"
    );
    let salesforce = world.salesforce.stats();
    assert_eq!(
        requests("salesforce", "token"),
        salesforce.token_requests as f64,
        "{salesforce:?}\n{text}"
    );
    for endpoint in ["query", "query_more", "describe", "composite", "limits"] {
        let received = salesforce.received.get(endpoint).copied().unwrap_or(0);
        assert_eq!(
            requests("salesforce", endpoint),
            received as f64,
            "{endpoint}: {salesforce:?}\n{text}"
        );
    }
    for endpoint in ["token", "limits", "query", "describe", "composite"] {
        assert!(
            total(
                &all,
                "ondorse_bridge_api_requests_total",
                &[
                    ("api", "salesforce"),
                    ("endpoint", endpoint),
                    ("status", "2xx")
                ],
            ) >= 1.0,
            "{endpoint}\n{text}"
        );
    }
    assert!(exists(
        &all,
        "ondorse_bridge_api_request_duration_seconds_bucket",
        &[("api", "ondorse"), ("endpoint", "portal"), ("le", "+Inf")]
    ));
    let usage = total(&all, "ondorse_bridge_salesforce_api_usage_ratio", &[]);
    assert!((0.0..=1.0).contains(&usage), "{usage}");
    assert_eq!(
        total(&all, "ondorse_bridge_salesforce_api_budget_ratio", &[]),
        0.5
    );
    for reason in ["over_budget", "near_limit", "limit_exceeded"] {
        assert!(
            exists(
                &all,
                "ondorse_bridge_salesforce_paused",
                &[("reason", reason)]
            ),
            "{reason}"
        );
    }
    for queue in ["inbox", "pending_writes"] {
        assert!(
            exists(&all, "ondorse_bridge_queue_depth", &[("queue", queue)]),
            "{queue}"
        );
    }
    assert!(exists(&all, "ondorse_bridge_dead_letters", &[]));
    for schedule in ["poll", "reconcile"] {
        assert!(
            exists(
                &all,
                "ondorse_bridge_schedule_alive",
                &[("schedule", schedule)]
            ),
            "{schedule}"
        );
    }
    let lag = total(&all, "ondorse_bridge_cursor_lag_seconds", &mapping);
    assert!(
        (0.0..E2E_DEADLINE.as_secs_f64() * 2.0).contains(&lag),
        "{lag}"
    );
    let last_poll = total(&all, "ondorse_bridge_last_poll_timestamp_seconds", &mapping);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        last_poll <= now + 1.0 && last_poll > now - E2E_DEADLINE.as_secs_f64() * 2.0,
        "{last_poll}"
    );

    // Bounded cardinality: every label value is from a fixed set, and no
    // Id of an Account, application or event is anywhere in the text.
    for sample in &all {
        for (label, value) in &sample.labels {
            match label.as_str() {
                "mapping" => assert!(
                    value
                        .bytes()
                        .all(|byte| byte.is_ascii_lowercase() || byte == b'-'),
                    "mapping label {value:?} in {sample:?}"
                ),
                "le" => assert!(
                    value == "+Inf" || value.parse::<f64>().is_ok(),
                    "{sample:?}"
                ),
                other => assert!(
                    allowed_values(other).contains(&value.as_str()),
                    "{other}={value:?} in {sample:?}"
                ),
            }
        }
    }
    let application_ids: BTreeSet<String> = world
        .ondorse
        .applications()
        .iter()
        .filter_map(|application| application["id"].as_str().map(str::to_owned))
        .collect();
    let event_ids: Vec<String> = world
        .ondorse
        .events()
        .iter()
        .filter_map(|event| event["event_id"].as_str().map(str::to_owned))
        .collect();
    for id in ids.iter().chain(&application_ids).chain(&event_ids) {
        assert!(!text.contains(id.as_str()), "{id} appears in the metrics");
    }
}

/// Starts `ondorse-bridge run` on a copy of the world's configuration in
/// `dir`, with stderr into `dir/daemon.log` and `JOURNAL_STREAM` set to what
/// `journal_stream` says for that file; returns the child and the log path.
fn spawn_daemon(
    world: &World,
    dir: &std::path::Path,
    journal_stream: impl FnOnce(&std::fs::File) -> String,
) -> (std::process::Child, std::path::PathBuf) {
    // It listens on ports of its choosing, as the world's configuration says.
    let config = dir.join("config.toml");
    std::fs::copy(&world.config_path, &config).unwrap();
    // The secret files are named relative to the configuration.
    for entry in std::fs::read_dir(world.config_path.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.extension().is_none_or(|extension| extension != "toml") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let log = dir.join("daemon.log");
    let file = std::fs::File::create(&log).unwrap();
    let journal_stream = journal_stream(&file);
    let child = Command::new(env!("CARGO_BIN_EXE_ondorse-bridge"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", journal_stream)
        .env_remove("NO_COLOR")
        .env_remove("ONDORSE_BRIDGE_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn ondorse-bridge");
    (child, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_for_the_journal_and_plain_text_elsewhere() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    world.seed(2, "Customer", 22);

    // systemd names the journal stream by device and inode.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = spawn_daemon(&world, dir.path(), |file| {
        let metadata = file.metadata().unwrap();
        format!("{}:{}", metadata.dev(), metadata.ino())
    });
    eventually(
        "the daemon logs the business mapping's intake",
        E2E_DEADLINE,
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|line| {
                    line.contains("intake finished") && line.contains("business-onboarding")
                })
        },
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"))
        })
        .collect();
    let intake = events
        .iter()
        .find(|event| {
            event["message"] == "intake finished" && event["mapping"] == "business-onboarding"
        })
        .expect("the intake event");
    assert_eq!(intake["level"], "INFO");
    assert_eq!(intake["portals_created"], 2);
    assert!(intake["timestamp"].is_string());
    let portal = events
        .iter()
        .find(|event| event["message"] == "portal created")
        .expect("a portal event");
    assert!(
        portal["account_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("001")),
        "{portal}"
    );

    // A stream systemd did not name (an inherited variable): plain text,
    // and no colour codes since stderr is not a terminal.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = spawn_daemon(&world, dir.path(), |_| "1:1".to_owned());
    eventually("the daemon logs that it listens", E2E_DEADLINE, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening for webhooks")
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|line| line.contains("listening for webhooks"))
        .unwrap();
    assert!(
        line.contains(" INFO ") && line.contains("mappings=2"),
        "{line}"
    );
    assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI escapes in a file: {text}"
    );
}
