//! The whole pipeline against both sandboxes, with the real daemon as a
//! child process (so its memory is measured alone):
//!
//! 1. backfill: N matching Accounts → N portals → N links written back;
//! 2. decisions: N − 2L applications submitted and reviewed → webhooks →
//!    decisions written back, as fast as they come;
//! 3. latency: L reviews at a steady rate (default 200/s), each timed from
//!    the review to the decision being visible in Salesforce;
//!    then, once Ondorse has nothing left to deliver, the daemon idles for a
//!    minute and its resident memory and the store's size on disk are read;
//! 4. the per-record baseline: the daemon stopped, L more reviews at the
//!    same rate handled as a per-record integration (a Zapier-style recipe)
//!    does: each webhook answered at once, then one `GET` of the application
//!    and one single-record update, timed the same way.
//!
//! It prints one summary table (Markdown, for README) with the bound or the
//! baseline beside each figure; `--json` prints one JSON line instead.
//! Progress goes to stderr.
//!
//! ```text
//! cargo bench --bench sync_pipeline                          # loopback, 10,000 Accounts
//! cargo bench --bench sync_pipeline -- --accounts 100000     # loopback at 100,000
//! cargo bench --bench sync_pipeline -- --latency realistic   # each endpoint's real latency
//! cargo bench --bench sync_pipeline -- --accounts 2000 --latency-samples 400 --rate 200 --json
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::extract::State;
use axum::http::StatusCode;
use ondorse_bridge::demo::{API_KEY, SandboxWorld, SandboxWorldOptions, webhook_url};
use ondorse_bridge::sync::EngineSettings;
use ondorse_bridge::telemetry::LOG_FORMAT_ENV;
use ondorse_sandbox::latency::{Endpoint, LatencyProfile};
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use ondorse_sandbox::salesforce::{
    DEFAULT_API_VERSION, SalesforceSandbox, SalesforceSandboxOptions,
};
use serde_json::{Value, json};

const DEFAULT_ACCOUNTS: usize = 10_000;
const DEFAULT_LATENCY_SAMPLES: usize = 1_000;
const DEFAULT_RATE: f64 = 200.0;
/// Webhook deliveries the sandbox Ondorse keeps in flight: more than the
/// rate ever needs, so deliveries never queue in the sandbox.
const WEBHOOK_DELIVERIES_IN_FLIGHT: usize = 256;
/// Any phase slower than this is reported as a failure, not waited for.
const PHASE_DEADLINE: Duration = Duration::from_secs(600);
/// sObject Collections and query page sizes: what the minimum is made of.
const COMPOSITE_BATCH: usize = 200;
const QUERY_PAGE: usize = 2_000;
/// How often the latency phases look for decisions in Salesforce: often
/// enough for the figures, rarely enough to leave the machine to the daemon
/// while hundreds of decisions are in flight.
const VISIBILITY_CHECK: Duration = Duration::from_millis(5);
/// Issue 13's targets, printed beside the figures.
const TARGET_SHARE_OF_BOUND: f64 = 0.9;
const TARGET_PEAK_RSS_MIB: f64 = 100.0;
const TARGET_IDLE_RSS_MIB: f64 = 48.0;
/// How long after the last write the idle memory is read.
const IDLE_AFTER: Duration = Duration::from_secs(60);

struct Settings {
    accounts: usize,
    latency_samples: usize,
    rate: f64,
    latency: LatencyProfile,
    json: bool,
}

impl Settings {
    fn from_arguments() -> anyhow::Result<Settings> {
        let mut settings = Settings {
            accounts: DEFAULT_ACCOUNTS,
            latency_samples: DEFAULT_LATENCY_SAMPLES,
            rate: DEFAULT_RATE,
            latency: LatencyProfile::Loopback,
            json: false,
        };
        let mut arguments = std::env::args().skip(1);
        while let Some(argument) = arguments.next() {
            let mut value = || {
                arguments
                    .next()
                    .with_context(|| format!("{argument} needs a value"))
            };
            match argument.as_str() {
                "--accounts" => settings.accounts = value()?.parse().context("--accounts")?,
                "--latency-samples" => {
                    settings.latency_samples = value()?.parse().context("--latency-samples")?
                }
                "--rate" => settings.rate = value()?.parse().context("--rate")?,
                "--latency" => settings.latency = value()?.parse().context("--latency")?,
                "--json" => settings.json = true,
                // cargo bench passes --bench; other harness flags are not ours.
                "--bench" => {}
                other => bail!(
                    "unknown argument {other:?} (expected --accounts, --latency-samples, --rate, --latency, --json)"
                ),
            }
        }
        ensure!(
            settings.latency_samples > 0 && 2 * settings.latency_samples < settings.accounts,
            "--latency-samples must be above 0 and below half of --accounts (the bridge and the per-record baseline each take that many)"
        );
        ensure!(
            settings.rate > 0.0,
            "--rate must be a positive number of webhooks per second"
        );
        Ok(settings)
    }
}

/// The daemon as a child process; killed if still running when dropped.
struct ChildDaemon(Child);

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildDaemon {
    /// Peak resident memory of the daemon (`VmHWM`), in MiB.
    fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        self.memory_mib("VmHWM")
    }

    /// Resident memory of the daemon now (`VmRSS`), in MiB.
    fn rss_mib(&self) -> anyhow::Result<f64> {
        self.memory_mib("VmRSS")
    }

    /// A `kB` field of `/proc/<pid>/status`, in MiB.
    fn memory_mib(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in /proc/<pid>/status"))?;
        Ok(kib / 1024.0)
    }
}

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_arguments()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(settings))
}

/// Decision latencies, review → visible in Salesforce.
struct Percentiles {
    p50: Duration,
    p99: Duration,
}

impl Percentiles {
    fn of(mut latencies: Vec<Duration>) -> Percentiles {
        latencies.sort();
        let at = |share: f64| {
            latencies[((latencies.len() as f64 * share) as usize).min(latencies.len() - 1)]
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let latency = settings.latency;
    let engine = EngineSettings::default();
    let world = SandboxWorld::start(SandboxWorldOptions {
        // One intake pass for the backfill; reconcile out of the way.
        schedule: Some(("0 0 * * * *".to_owned(), "0 0 * * * *".to_owned())),
        // The daemon binds a free port itself and logs it (no port is
        // bound here, dropped and bound again by the child).
        webhooks_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ondorse: OndorseSandboxOptions {
            latency,
            // Ondorse does not hold back one webhook while others are on
            // their way: the sandbox's default cap (16 in flight) would
            // queue deliveries behind the daemon's durable answers, a wait
            // the per-record baseline (which answers at once) never pays.
            delivery_concurrency: WEBHOOK_DELIVERIES_IN_FLIGHT,
            ..OndorseSandboxOptions::default()
        },
        salesforce: SalesforceSandboxOptions {
            latency,
            ..SalesforceSandboxOptions::default()
        },
        ..SandboxWorldOptions::default()
    })
    .await?;
    let accounts: Vec<_> = SalesforceSandbox::generate_accounts(settings.accounts, 7)
        .into_iter()
        .map(|mut account| {
            account.insert("Type".to_owned(), json!("Customer"));
            account
        })
        .collect();
    let ids = world.salesforce.insert_accounts(accounts);
    eprintln!(
        "sync pipeline benchmark: {} Accounts, {latency} latency, the daemon as a child process",
        ids.len()
    );
    for endpoint in Endpoint::ALL {
        if let Some(parameters) = latency.endpoint(endpoint) {
            eprintln!("  {:<34}  {parameters}", endpoint.label());
        }
    }

    // Phase 1: backfill.
    let started = Instant::now();
    let (daemon, address) = spawn_daemon(&world)?;
    world.ondorse.set_webhook_url(Some(webhook_url(address)));
    wait_for("the backfill", || {
        world.salesforce.stats().records_updated >= ids.len() as u64
    })
    .await?;
    let backfill = ids.len() as f64 / started.elapsed().as_secs_f64();
    let salesforce = world.salesforce.stats();
    let calls_minimum = ids.len().div_ceil(QUERY_PAGE) + ids.len().div_ceil(COMPOSITE_BATCH);
    let calls = salesforce.api_requests as usize;
    eprintln!("backfill done: {backfill:.1} Accounts/s, {calls} Salesforce API calls");

    // Phase 2: decisions as fast as Ondorse sends them.
    let portal_ids: Vec<String> = world
        .ondorse
        .portals()
        .iter()
        .filter_map(|portal| portal["id"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        portal_ids.len() == ids.len(),
        "expected one portal per Account, got {} portals for {} Accounts",
        portal_ids.len(),
        ids.len()
    );
    let (bulk, timed) = portal_ids.split_at(portal_ids.len() - 2 * settings.latency_samples);
    let gets_before = world.ondorse.stats().application_gets;
    let started = Instant::now();
    let mut bulk_accounts = Vec::with_capacity(bulk.len());
    for (index, portal_id) in bulk.iter().enumerate() {
        let application = world
            .ondorse
            .submit_portal(portal_id)
            .context("submit a portal")?;
        review(&world, &application, index);
        bulk_accounts.push(account_of(&world, &application)?);
    }
    wait_for("the decisions", || {
        bulk_accounts.iter().all(|id| decided(&world, id))
    })
    .await?;
    let decisions = bulk.len() as f64 / started.elapsed().as_secs_f64();
    let gets_per_decision =
        (world.ondorse.stats().application_gets - gets_before) as f64 / bulk.len().max(1) as f64;
    eprintln!(
        "decisions done: {decisions:.1} decisions/s, {gets_per_decision:.2} application GETs each"
    );

    // Phase 3: the bridge's latency at a steady rate; the baseline's
    // applications are submitted now too, so both start "In review".
    let mut submitted = Vec::with_capacity(timed.len());
    for portal_id in timed {
        let application = world
            .ondorse
            .submit_portal(portal_id)
            .context("submit a portal")?;
        submitted.push((application.clone(), account_of(&world, &application)?));
    }
    wait_for("the submissions", || {
        submitted.iter().all(|(_, account)| {
            world
                .salesforce
                .account(account)
                .is_some_and(|fields| fields.get("KYC_Status__c") == Some(&json!("In review")))
        })
    })
    .await?;
    let (bridge_samples, baseline_samples) = submitted.split_at(settings.latency_samples);
    // The bridge's failures show in Salesforce, not here: none to count.
    let none = AtomicU64::new(0);
    let bridge =
        Percentiles::of(timed_reviews(&world, bridge_samples, settings.rate, &none).await?);
    let peak_rss = daemon.peak_rss_mib()?;
    eprintln!(
        "bridge latency done: p50 {:.0} ms, p99 {:.0} ms",
        milliseconds(bridge.p50),
        milliseconds(bridge.p99)
    );

    // Phase 4: the per-record baseline, with the daemon stopped.
    ensure!(
        world.ondorse.wait_deliveries_idle(PHASE_DEADLINE).await,
        "webhook deliveries to the daemon did not finish in {PHASE_DEADLINE:?}"
    );
    eprintln!("idling {IDLE_AFTER:?} after the last write");
    tokio::time::sleep(IDLE_AFTER).await;
    let idle_rss = daemon.rss_mib()?;
    let store_bytes = disk_usage(&world.config.store.path)?;
    // The file-backed part is mostly the binary's code, the same at any size.
    eprintln!(
        "idle: {idle_rss:.1} MiB resident ({:.1} MiB heap and stacks, {:.1} MiB mapped files), store {:.1} MiB on disk",
        daemon.memory_mib("RssAnon")?,
        daemon.memory_mib("RssFile")?,
        store_bytes as f64 / MIB
    );
    drop(daemon);
    let recipe = PerRecordRecipe::start(&world).await?;
    world.ondorse.set_webhook_url(Some(recipe.url.clone()));
    let baseline = Percentiles::of(
        timed_reviews(&world, baseline_samples, settings.rate, &recipe.failures)
            .await
            .context("the per-record baseline")?,
    );
    eprintln!(
        "per-record baseline done: p50 {:.0} ms, p99 {:.0} ms",
        milliseconds(baseline.p50),
        milliseconds(baseline.p99)
    );

    let figures = Figures {
        accounts: ids.len(),
        bulk_decisions: bulk.len(),
        latency_samples: settings.latency_samples,
        rate: settings.rate,
        latency,
        backfill,
        backfill_bound: concurrency_bound(
            engine.ondorse_concurrency,
            latency.mean(Endpoint::OndorsePortalPost, 0),
        ),
        portal_concurrency: engine.ondorse_concurrency,
        calls,
        tokens: salesforce.token_requests,
        calls_minimum,
        decisions,
        gets_per_decision,
        decisions_bound: concurrency_bound(
            engine.ondorse_reads,
            latency.mean(Endpoint::OndorseApplicationGet, 0),
        )
        .map(|gets| gets / gets_per_decision.max(1.0)),
        fetch_concurrency: engine.ondorse_reads,
        bridge,
        baseline,
        peak_rss,
        idle_rss,
        store_bytes,
    };
    if settings.json {
        println!("{}", figures.json());
    } else {
        figures.print_table();
    }
    Ok(())
}

/// Requests per second `concurrency` requests in flight allow when each
/// takes `mean`; `None` on loopback (no latency sets a bound).
fn concurrency_bound(concurrency: usize, mean: Duration) -> Option<f64> {
    (!mean.is_zero()).then(|| concurrency as f64 / mean.as_secs_f64())
}

/// Polls `done` until it holds, or fails after [`PHASE_DEADLINE`].
async fn wait_for(phase: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE_DEADLINE;
    while !done() {
        ensure!(
            Instant::now() < deadline,
            "{phase} did not finish in {PHASE_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Reviews `applications` at `rate` per second; each latency runs from its
/// review to its decision being visible in Salesforce, looked at every
/// [`VISIBILITY_CHECK`].
async fn timed_reviews(
    world: &SandboxWorld,
    applications: &[(String, String)],
    rate: f64,
    failures: &AtomicU64,
) -> anyhow::Result<Vec<Duration>> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut reviewed_at: HashMap<&str, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(applications.len());
    let mut next = Instant::now();
    let mut checked = Instant::now();
    let mut pending: Vec<&str> = Vec::new();
    let mut queue = applications.iter().enumerate();
    let deadline = Instant::now() + PHASE_DEADLINE;
    loop {
        while Instant::now() >= next
            && let Some((index, (application, account))) = queue.next()
        {
            review(world, application, index);
            reviewed_at.insert(account, Instant::now());
            pending.push(account);
            next += interval;
        }
        if checked.elapsed() >= VISIBILITY_CHECK {
            checked = Instant::now();
            pending.retain(|account| {
                if decided(world, account) {
                    latencies.push(reviewed_at[account].elapsed());
                    false
                } else {
                    true
                }
            });
        }
        if latencies.len() == applications.len() {
            return Ok(latencies);
        }
        ensure!(
            failures.load(Ordering::Relaxed) == 0,
            "{} decisions failed (see above)",
            failures.load(Ordering::Relaxed)
        );
        ensure!(
            Instant::now() < deadline,
            "the latency phase did not finish in {PHASE_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What a per-record integration does with each decision: it answers the
/// webhook at once (as a Zapier catch hook does), then reads the
/// application and writes the Account with one single-record update,
/// writing the fields the shipped mapping writes.
struct PerRecordRecipe {
    url: String,
    failures: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Recipe {
    http: reqwest::Client,
    ondorse: String,
    salesforce: String,
    token: String,
    failures: Arc<AtomicU64>,
}

impl PerRecordRecipe {
    async fn start(world: &SandboxWorld) -> anyhow::Result<PerRecordRecipe> {
        let http = reqwest::Client::new();
        let options = world.salesforce.options();
        let session: Value = http
            .post(format!(
                "{}/services/oauth2/token",
                world.salesforce.instance_url()
            ))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", options.client_id.as_str()),
                ("client_secret", options.client_secret.as_str()),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let failures = Arc::new(AtomicU64::new(0));
        let recipe = Recipe {
            http,
            ondorse: world.ondorse.base_url(),
            salesforce: format!(
                "{}/services/data/v{DEFAULT_API_VERSION}",
                world.salesforce.instance_url()
            ),
            token: session["access_token"]
                .as_str()
                .context("no access_token in the token answer")?
                .to_owned(),
            failures: failures.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(catch_hook))
            .with_state(recipe);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(PerRecordRecipe { url, failures })
    }
}

async fn catch_hook(State(recipe): State<Recipe>, body: axum::body::Bytes) -> StatusCode {
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if event["type"] == "application.review_updated"
        && let Some(application) = event["data"]["object"]["id"].as_str()
    {
        let application = application.to_owned();
        tokio::spawn(async move {
            if let Err(error) = recipe.write_decision(&application).await {
                eprintln!("per-record baseline: application {application}: {error:#}");
                recipe.failures.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    StatusCode::OK
}

impl Recipe {
    async fn write_decision(&self, application: &str) -> anyhow::Result<()> {
        let application: Value = self
            .http
            .get(format!("{}/api/applications/{application}", self.ondorse))
            .bearer_auth(API_KEY)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let account = application["custom_fields"]["salesforce_account_id"]
            .as_str()
            .context("an application without its Account Id")?;
        let status = match application["status_review"].as_str() {
            Some("approved") => "Approved",
            Some("rejected") => "Rejected",
            _ => "In review",
        };
        let risk_level = match application["risk_level"].as_i64() {
            Some(0) => json!("Low"),
            Some(1) => json!("Medium"),
            Some(2) => json!("High"),
            Some(3) => json!("Forbidden"),
            _ => Value::Null,
        };
        self.http
            .patch(format!("{}/sobjects/Account/{account}", self.salesforce))
            .bearer_auth(&self.token)
            .json(&json!({
                "Ondorse_Application_Id__c": application["id"],
                "KYC_Status__c": status,
                "KYC_Risk_Level__c": risk_level,
                "KYC_Risk_Score__c": application["risk_score"],
            }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

/// Everything the run measured, and what it is compared with.
struct Figures {
    accounts: usize,
    bulk_decisions: usize,
    latency_samples: usize,
    rate: f64,
    latency: LatencyProfile,
    backfill: f64,
    /// Portal POSTs in flight ÷ the mean POST latency (realistic only).
    backfill_bound: Option<f64>,
    portal_concurrency: usize,
    calls: usize,
    tokens: u64,
    calls_minimum: usize,
    decisions: f64,
    gets_per_decision: f64,
    /// Application GETs in flight ÷ the mean GET latency ÷ the GETs each
    /// decision took (realistic only).
    decisions_bound: Option<f64>,
    fetch_concurrency: usize,
    bridge: Percentiles,
    baseline: Percentiles,
    peak_rss: f64,
    /// Resident memory [`IDLE_AFTER`] after the last write.
    idle_rss: f64,
    /// The store directory's blocks on disk after the run.
    store_bytes: u64,
}

impl Figures {
    fn realistic(&self) -> bool {
        self.latency == LatencyProfile::Realistic
    }

    fn print_table(&self) {
        let share = |measured: f64, bound: Option<f64>| {
            bound.map_or_else(
                || "none on loopback".to_owned(),
                |bound| {
                    format!(
                        "{:.0} % of the concurrency bound {bound:.1}/s",
                        measured / bound * 100.0
                    )
                },
            )
        };
        let portal_mean = milliseconds(self.latency.mean(Endpoint::OndorsePortalPost, 0));
        let get_mean = milliseconds(self.latency.mean(Endpoint::OndorseApplicationGet, 0));
        let rows = [
            [
                format!(
                    "backfill of {} Accounts (portal + link written back)",
                    self.accounts
                ),
                format!("{:.1} Accounts/s", self.backfill),
                if self.realistic() {
                    format!(
                        "{} ({} POSTs in flight ÷ {portal_mean:.0} ms mean)",
                        share(self.backfill, self.backfill_bound),
                        self.portal_concurrency
                    )
                } else {
                    share(self.backfill, None)
                },
                if self.realistic() {
                    format!(
                        "≥ {:.0} % of the bound, ≥ 80 Accounts/s",
                        TARGET_SHARE_OF_BOUND * 100.0
                    )
                } else {
                    "≥ 1,000 Accounts/s".to_owned()
                },
            ],
            [
                "Salesforce API calls for that backfill".to_owned(),
                format!("{} (+{} token)", self.calls, self.tokens),
                format!(
                    "{:.3}× the minimum {} ({} query page(s) + {} composite call(s))",
                    self.calls as f64 / self.calls_minimum as f64,
                    self.calls_minimum,
                    self.accounts.div_ceil(QUERY_PAGE),
                    self.accounts.div_ceil(COMPOSITE_BATCH)
                ),
                if self.realistic() {
                    "≤ 2×"
                } else {
                    "≤ 1.1×"
                }
                .to_owned(),
            ],
            [
                format!(
                    "{} decisions through webhooks (3 events each) to write-back",
                    self.bulk_decisions
                ),
                format!(
                    "{:.1} decisions/s ({:.2} application GETs each)",
                    self.decisions, self.gets_per_decision
                ),
                if self.realistic() {
                    format!(
                        "{} ({} GETs in flight ÷ {get_mean:.0} ms mean ÷ GETs each)",
                        share(self.decisions, self.decisions_bound),
                        self.fetch_concurrency
                    )
                } else {
                    share(self.decisions, None)
                },
                String::new(),
            ],
            [
                format!(
                    "decision latency at {:.0} webhooks/s, review → visible in Salesforce ({} samples each)",
                    self.rate, self.latency_samples
                ),
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms",
                    milliseconds(self.bridge.p50),
                    milliseconds(self.bridge.p99)
                ),
                format!(
                    "per-record baseline (one GET + one single-record update each): p50 {:.0} ms, p99 {:.0} ms",
                    milliseconds(self.baseline.p50),
                    milliseconds(self.baseline.p99)
                ),
                if self.realistic() {
                    "p50 ≤ baseline p50 + 50 ms, p99 ≤ baseline p99"
                } else {
                    "p99 ≤ 100 ms"
                }
                .to_owned(),
            ],
            [
                "daemon peak RSS over the whole run".to_owned(),
                format!("{:.1} MiB", self.peak_rss),
                String::new(),
                format!("< {TARGET_PEAK_RSS_MIB:.0} MiB"),
            ],
            [
                format!(
                    "daemon RSS idle, {} s after the last write",
                    IDLE_AFTER.as_secs()
                ),
                format!("{:.1} MiB", self.idle_rss),
                String::new(),
                format!("< {TARGET_IDLE_RSS_MIB:.0} MiB"),
            ],
            [
                "store size on disk after the run".to_owned(),
                format!("{:.1} MiB", self.store_bytes as f64 / MIB),
                format!(
                    "{:.1} KiB per Account",
                    self.store_bytes as f64 / 1024.0 / self.accounts.max(1) as f64
                ),
                String::new(),
            ],
        ];
        println!(
            "sync_pipeline, {} latency, {}, {} cores",
            self.latency,
            chrono::Utc::now().format("%Y-%m-%d"),
            cores()
        );
        println!();
        println!("| figure | measured | bound or baseline | target (issue 13) |");
        println!("| --- | --- | --- | --- |");
        for [figure, measured, bound, target] in rows {
            println!("| {figure} | {measured} | {bound} | {target} |");
        }
    }

    fn json(&self) -> Value {
        let percentiles = |percentiles: &Percentiles| {
            json!({
                "p50": milliseconds(percentiles.p50).round(),
                "p99": milliseconds(percentiles.p99).round(),
            })
        };
        json!({
            "benchmark": "sync_pipeline",
            "date": chrono::Utc::now().to_rfc3339(),
            "cores": cores(),
            "latency": self.latency.to_string(),
            "accounts": self.accounts,
            "backfill_accounts_per_second": self.backfill,
            "backfill_concurrency_bound_per_second": self.backfill_bound,
            "portal_concurrency": self.portal_concurrency,
            "salesforce_calls": self.calls,
            "salesforce_token_requests": self.tokens,
            "salesforce_calls_minimum": self.calls_minimum,
            "decisions": self.bulk_decisions,
            "decisions_per_second": self.decisions,
            "application_gets_per_decision": self.gets_per_decision,
            "decisions_concurrency_bound_per_second": self.decisions_bound,
            "fetch_concurrency": self.fetch_concurrency,
            "rate_per_second": self.rate,
            "latency_samples": self.latency_samples,
            "decision_latency_ms": percentiles(&self.bridge),
            "baseline_decision_latency_ms": percentiles(&self.baseline),
            "peak_rss_mib": self.peak_rss,
            "idle_rss_mib": self.idle_rss,
            "store_bytes": self.store_bytes,
        })
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// The bytes the files under `directory` take on disk (allocated blocks).
fn disk_usage(directory: &std::path::Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(directory)
        .with_context(|| format!("cannot list {}", directory.display()))?
    {
        let path = entry?.path();
        let metadata = std::fs::metadata(&path)?;
        total += if metadata.is_dir() {
            disk_usage(&path)?
        } else {
            metadata.blocks() * 512
        };
    }
    Ok(total)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Starts `ondorse-bridge run` on the world's configuration (webhooks on
/// port 0) and answers the address its webhook listener bound, read from
/// its JSON log line "listening for webhooks".
fn spawn_daemon(world: &SandboxWorld) -> anyhow::Result<(ChildDaemon, SocketAddr)> {
    let log_path = world.scratch().join("daemon.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(env!("CARGO_BIN_EXE_ondorse-bridge"))
        .args(["run", "--config"])
        .arg(&world.config_path)
        .env("RUST_LOG", "warn,ondorse_bridge::daemon=info")
        .env(LOG_FORMAT_ENV, "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start the daemon")?;
    let mut daemon = ChildDaemon(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(address) = logged_webhook_address(&std::fs::read_to_string(&log_path)?) {
            return Ok((daemon, address));
        }
        if let Some(status) = daemon.0.try_wait()? {
            bail!(
                "the daemon exited with {status}; see {}",
                log_path.display()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the daemon did not say where it listens for webhooks; see {}",
            log_path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `address` of the daemon's "listening for webhooks" JSON log line.
fn logged_webhook_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == json!("listening for webhooks"))
        .and_then(|line| line["address"].as_str()?.parse().ok())
}

/// Reviews an application: four in five approved, risk levels and scores spread.
fn review(world: &SandboxWorld, application: &str, index: usize) {
    let decision = if index % 5 == 4 {
        "rejected"
    } else {
        "approved"
    };
    world.ondorse.review(
        application,
        decision,
        (index % 4) as i64,
        Some((index % 100) as f64 + 0.5),
    );
}

fn account_of(world: &SandboxWorld, application: &str) -> anyhow::Result<String> {
    world
        .ondorse
        .application(application)
        .and_then(|application| {
            application["custom_fields"]["salesforce_account_id"]
                .as_str()
                .map(str::to_owned)
        })
        .context("an application without its Account Id")
}

fn decided(world: &SandboxWorld, account: &str) -> bool {
    world.salesforce.account(account).is_some_and(|fields| {
        matches!(
            fields.get("KYC_Status__c").and_then(Value::as_str),
            Some("Approved" | "Rejected")
        )
    })
}
