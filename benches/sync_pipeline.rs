//! The whole pipeline against both sandboxes, with the real daemon as a
//! child process (so its memory is measured alone):
//!
//! 1. backfill: N matching Accounts → N portals → N links written back;
//! 2. decisions: N − L applications submitted and reviewed → webhooks →
//!    decisions written back, as fast as they come;
//! 3. latency: L reviews at a steady rate (default 200/s), each timed from
//!    the review to the decision being visible in Salesforce.
//!
//! ```text
//! cargo bench --bench sync_pipeline
//! cargo bench --bench sync_pipeline -- --accounts 2000 --latency-samples 400 --rate 200
//! ```

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use ondorse_bridge::sandbox::ondorse::OndorseSandboxOptions;
use ondorse_bridge::sandbox::salesforce::SalesforceSandbox;
use ondorse_bridge::sandbox::world::{SandboxWorld, SandboxWorldOptions, webhook_url};
use serde_json::{Value, json};

const DEFAULT_ACCOUNTS: usize = 10_000;
const DEFAULT_LATENCY_SAMPLES: usize = 1_000;
const DEFAULT_RATE: f64 = 200.0;
/// Any phase slower than this is reported as a failure, not waited for.
const PHASE_DEADLINE: Duration = Duration::from_secs(600);
/// sObject Collections and query page sizes: what the minimum is made of.
const COMPOSITE_BATCH: usize = 200;
const QUERY_PAGE: usize = 2_000;

struct Settings {
    accounts: usize,
    latency_samples: usize,
    rate: f64,
}

impl Settings {
    fn from_arguments() -> anyhow::Result<Settings> {
        let mut settings = Settings {
            accounts: DEFAULT_ACCOUNTS,
            latency_samples: DEFAULT_LATENCY_SAMPLES,
            rate: DEFAULT_RATE,
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
                // cargo bench passes --bench; other harness flags are not ours.
                "--bench" => {}
                other => bail!(
                    "unknown argument {other:?} (expected --accounts, --latency-samples, --rate)"
                ),
            }
        }
        ensure!(
            settings.latency_samples < settings.accounts,
            "--latency-samples must be below --accounts"
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/<pid>/status")?;
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

async fn run(settings: Settings) -> anyhow::Result<()> {
    let address = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let world = SandboxWorld::start(SandboxWorldOptions {
        // One intake pass for the backfill; reconcile out of the way.
        schedule: Some(("0 0 * * * *".to_owned(), "0 0 * * * *".to_owned())),
        webhooks_listen: Some(address),
        ondorse: OndorseSandboxOptions::default(),
        ..SandboxWorldOptions::default()
    })
    .await?;
    world.ondorse.set_webhook_url(Some(webhook_url(address)));
    let accounts: Vec<_> = SalesforceSandbox::generate_accounts(settings.accounts, 7)
        .into_iter()
        .map(|mut account| {
            account.insert("Type".to_owned(), json!("Customer"));
            account
        })
        .collect();
    let ids = world.salesforce.insert_accounts(accounts);
    println!(
        "sync pipeline benchmark: {} Accounts, release daemon as a child process",
        ids.len()
    );

    // Phase 1: backfill.
    let started = Instant::now();
    let daemon = spawn_daemon(&world, address)?;
    let backfill_deadline = Instant::now() + PHASE_DEADLINE;
    while world.salesforce.stats().records_updated < ids.len() as u64 {
        ensure!(
            Instant::now() < backfill_deadline,
            "the backfill did not finish in {PHASE_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let backfill = started.elapsed();
    let salesforce = world.salesforce.stats();
    let portals = world.ondorse.stats().portals_created;
    let minimum = ids.len().div_ceil(QUERY_PAGE) + ids.len().div_ceil(COMPOSITE_BATCH);
    // One describe and the second mapping's (empty) query come on top.
    let used = salesforce.api_requests as usize;
    println!();
    println!("backfill");
    println!("  portals created              {portals}");
    println!(
        "  accounts/s                   {:.0}",
        ids.len() as f64 / backfill.as_secs_f64()
    );
    println!(
        "  Salesforce API calls         {used} (+{} token) vs minimum {minimum} (+1 token): {:.3}x",
        salesforce.token_requests,
        used as f64 / minimum as f64
    );

    // Phase 2: decisions as fast as Ondorse sends them.
    let portal_ids: Vec<String> = world
        .ondorse
        .portals()
        .iter()
        .filter_map(|portal| portal["id"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        portal_ids.len() == ids.len(),
        "expected one portal per Account"
    );
    let (bulk, timed) = portal_ids.split_at(portal_ids.len() - settings.latency_samples);
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
    let decisions_deadline = Instant::now() + PHASE_DEADLINE;
    while !bulk_accounts.iter().all(|id| decided(&world, id)) {
        ensure!(
            Instant::now() < decisions_deadline,
            "decisions did not finish in {PHASE_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let decisions = started.elapsed();
    println!();
    println!("decisions (webhooks → re-fetch → write-back)");
    println!("  decisions written            {}", bulk.len());
    println!(
        "  decisions/s                  {:.0}",
        bulk.len() as f64 / decisions.as_secs_f64()
    );

    // Phase 3: latency at a steady rate.
    let mut timed_applications = Vec::with_capacity(timed.len());
    for portal_id in timed {
        let application = world
            .ondorse
            .submit_portal(portal_id)
            .context("submit a portal")?;
        timed_applications.push((application.clone(), account_of(&world, &application)?));
    }
    let settle_deadline = Instant::now() + PHASE_DEADLINE;
    while !timed_applications.iter().all(|(_, account)| {
        world
            .salesforce
            .account(account)
            .is_some_and(|fields| fields.get("KYC_Status__c") == Some(&json!("In review")))
    }) {
        ensure!(
            Instant::now() < settle_deadline,
            "submissions did not settle in {PHASE_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let interval = Duration::from_secs_f64(1.0 / settings.rate);
    let mut reviewed_at: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(timed_applications.len());
    let mut next = Instant::now();
    let mut pending: Vec<&String> = Vec::new();
    let mut queue = timed_applications.iter().enumerate();
    let latency_deadline = Instant::now() + PHASE_DEADLINE;
    loop {
        if Instant::now() >= next
            && let Some((index, (application, account))) = queue.next()
        {
            review(&world, application, index);
            reviewed_at.insert(account.clone(), Instant::now());
            pending.push(account);
            next += interval;
        }
        pending.retain(|account| {
            if decided(&world, account) {
                latencies.push(reviewed_at[*account].elapsed());
                false
            } else {
                true
            }
        });
        if pending.is_empty() && latencies.len() == timed_applications.len() {
            break;
        }
        ensure!(
            Instant::now() < latency_deadline,
            "latency phase did not finish in {PHASE_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    latencies.sort();
    let percentile = |share: f64| {
        latencies[((latencies.len() as f64 * share) as usize).min(latencies.len() - 1)]
    };
    println!();
    println!(
        "decision latency at {:.0} webhooks/s (review → visible in Salesforce, {} samples)",
        settings.rate,
        latencies.len()
    );
    println!(
        "  p50                          {:.0} ms",
        percentile(0.50).as_secs_f64() * 1000.0
    );
    println!(
        "  p99                          {:.0} ms",
        percentile(0.99).as_secs_f64() * 1000.0
    );
    println!();
    println!(
        "daemon peak RSS                {:.1} MiB",
        daemon.peak_rss_mib()?
    );
    Ok(())
}

/// Starts `ondorse-bridge run` on the world's configuration and waits for
/// its webhook port.
fn spawn_daemon(world: &SandboxWorld, address: SocketAddr) -> anyhow::Result<ChildDaemon> {
    let log = std::fs::File::create(world.scratch().join("daemon.log"))?;
    let child = Command::new(env!("CARGO_BIN_EXE_ondorse-bridge"))
        .args(["run", "--config"])
        .arg(&world.config_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start the daemon")?;
    let mut daemon = ChildDaemon(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&address, Duration::from_millis(50)).is_err() {
        if let Some(status) = daemon.0.try_wait()? {
            bail!(
                "the daemon exited with {status}; see {}",
                world.scratch().join("daemon.log").display()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the daemon did not listen on {address}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(daemon)
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
