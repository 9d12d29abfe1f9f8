//! `ondorse-bridge demo`: the first thing a new user runs. A sandbox
//! Salesforce and a sandbox Ondorse on loopback, seeded Accounts, and the
//! real daemon between them, with the repository's demo configuration and
//! mapping files; it shows what happened.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use ondorse_sandbox::latency::{Endpoint, LatencyProfile};
use ondorse_sandbox::ondorse::{OndorseSandbox, OndorseSandboxOptions, OndorseSandboxStats};
use ondorse_sandbox::salesforce::{SalesforceSandbox, SalesforceSandboxOptions};

use crate::cli::Failure;
use crate::cli::run::StopSignals;
use crate::daemon::{Daemon, Listeners};
use crate::demo::{self, ADMIN_TOKEN, SandboxWorld, SandboxWorldOptions};
use crate::store::Link;
use crate::sync::EngineSettings;

/// Seed of the generated Accounts: the same demo every time.
const DEMO_SEED: u64 = 2026;
/// How long the simulated clients and reviewers take.
const SUBMIT_AFTER: Duration = Duration::from_millis(400);
const REVIEW_AFTER: Duration = Duration::from_millis(900);
/// A demo that has not settled by then reports what is stuck.
const DEMO_DEADLINE: Duration = Duration::from_secs(180);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// The line `demo --serve` prints once everything is up and the summary is
/// shown; what follows it is the list of commands to try.
pub const SERVING_LINE: &str = "Serving until Ctrl-C (SIGINT or SIGTERM).";

/// What `ondorse-bridge demo` was asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoSettings {
    /// How many Accounts to seed in the sandbox Salesforce.
    #[arg(long, default_value_t = 200)]
    pub accounts: usize,
    /// Keep the sandboxes and the daemon running after the summary, and
    /// print what to run against them (status, explain, preview, resync).
    #[arg(long)]
    pub serve: bool,
    /// Your own mapping files to try against the sandbox org, instead of
    /// the shipped examples; saving a change reloads them.
    #[arg(long, value_name = "DIR")]
    pub mappings: Option<PathBuf>,
    /// How fast the sandboxes answer: `loopback` (at once) or
    /// `realistic` (each endpoint's latency as a real service has it).
    #[arg(long, value_name = "PROFILE", default_value = "loopback")]
    pub latency: LatencyProfile,
}

pub async fn demo(settings: DemoSettings) -> Result<(), Failure> {
    let started = Instant::now();
    let accounts = settings.accounts;
    let mappings_dir = settings.mappings.as_deref().map(mappings_dir).transpose()?;
    let latency = settings.latency;
    println!(
        "ondorse-bridge demo: {accounts} Accounts, a sandbox Salesforce, a sandbox Ondorse and the real daemon, on loopback ({latency} latency)"
    );
    print_latency(latency);
    // Served, the configuration is handed to other commands: its admin
    // listener needs an address they can read from it, bound here and
    // handed to the daemon so no other process takes the port meanwhile.
    let admin_listener = if settings.serve {
        Some(
            TcpListener::bind("127.0.0.1:0")
                .context("cannot listen on a loopback port for the admin API")?,
        )
    } else {
        None
    };
    let admin_listen = admin_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .context("the admin listener has no address")?;
    // Listened for from the start, so a Ctrl-C while the demo settles still
    // stops the daemon and removes the scratch directory.
    let stop_signals = settings.serve.then(StopSignals::listen).transpose()?;
    let world = SandboxWorld::start(SandboxWorldOptions {
        ondorse: OndorseSandboxOptions {
            submit_after: Some(SUBMIT_AFTER),
            review_after: Some(REVIEW_AFTER),
            duplicate_ratio: 0.1,
            reorder: true,
            latency,
            ..OndorseSandboxOptions::default()
        },
        salesforce: SalesforceSandboxOptions {
            latency,
            ..SalesforceSandboxOptions::default()
        },
        admin_listen,
        mappings_dir: mappings_dir.clone(),
        ..SandboxWorldOptions::default()
    })
    .await?;
    world
        .salesforce
        .insert_accounts(SalesforceSandbox::generate_accounts(accounts, DEMO_SEED));
    println!(
        "  sandbox Salesforce  {}  ({accounts} Accounts seeded)",
        world.salesforce.instance_url()
    );
    println!("  sandbox Ondorse     {}", world.ondorse.base_url());
    let daemon = world
        .start_daemon(
            EngineSettings::default(),
            Listeners {
                admin: admin_listener,
                webhooks: None,
            },
        )
        .await?;
    let mappings_source = match &mappings_dir {
        Some(_) => "yours, from --mappings",
        None => "a copy of the shipped examples",
    };
    println!(
        "  mapping files       {}  ({mappings_source}; saving a change reloads it)",
        world.config.mappings.dir.display()
    );
    let configuration_use = if settings.serve {
        "use it with --config"
    } else {
        "removed at the end; --serve keeps it for other commands"
    };
    println!(
        "  configuration       {}  ({configuration_use})",
        world.config_path.display()
    );
    println!(
        "  admin URL           http://{}/admin/status",
        daemon.admin_address()
    );
    println!("  admin token         {ADMIN_TOKEN}");
    println!(
        "  webhook URL         {}",
        demo::webhook_url(daemon.webhook_address())
    );
    println!();

    let settled = watch_progress(&daemon, &world.salesforce).await;
    let elapsed = started.elapsed();
    let links = daemon
        .engine
        .store()
        .links()
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::from)?;
    let dead_letters = daemon
        .engine
        .store()
        .dead_letters()
        .map_err(anyhow::Error::from)?;
    summary(
        &links,
        dead_letters.len(),
        &world.salesforce,
        &world.ondorse,
        elapsed,
    );
    let decided = links.iter().find(|link| link.decision_final);
    if let Some(link) = decided {
        explain_one(&daemon, link)?;
    }
    if let Some(signals) = stop_signals {
        serve(&world, &links, signals).await;
    } else if !settled {
        daemon.stop().await?;
        return Err(anyhow::anyhow!(
            "the demo did not settle within {} s; the numbers above show where it stopped",
            DEMO_DEADLINE.as_secs()
        )
        .into());
    }
    daemon.stop().await?;
    Ok(())
}

/// Each endpoint's latency under a profile other than loopback.
fn print_latency(latency: LatencyProfile) {
    for endpoint in Endpoint::ALL {
        if let Some(parameters) = latency.endpoint(endpoint) {
            println!("  {:<34}  {parameters}", endpoint.label());
        }
    }
}

/// `--mappings DIR`, absolute, so the printed configuration works from
/// any directory.
fn mappings_dir(dir: &Path) -> Result<PathBuf, Failure> {
    std::fs::canonicalize(dir)
        .ok()
        .filter(|dir| dir.is_dir())
        .ok_or_else(|| {
            Failure::Invalid(format!(
                "--mappings {}: no such directory (give the directory holding your *.yaml mapping files)",
                dir.display()
            ))
        })
}

/// Prints what to try against the running world, then waits for Ctrl-C.
async fn serve(world: &SandboxWorld, links: &[Link], mut signals: StopSignals) {
    let config = world.config_path.display();
    let account = links
        .first()
        .map_or("001...", |link| link.account_id.as_str());
    let mapping = links
        .first()
        .map_or("business-onboarding", |link| link.mapping.as_str());
    println!();
    println!("{SERVING_LINE} Try, from another terminal:");
    println!("  ondorse-bridge status --config {config}");
    println!("  ondorse-bridge explain --account {account} --config {config}");
    println!("  ondorse-bridge preview --mapping {mapping} --account {account} --config {config}");
    println!("  ondorse-bridge resync --all --dry-run --config {config}");
    println!("  ondorse-bridge check --online --config {config}");
    println!(
        "Edit a file in {} and save: the daemon reloads it (a refused change shows in `status`).",
        world.config.mappings.dir.display()
    );
    let signal = signals.recv().await;
    println!("{signal}: stopping the daemon and the sandboxes");
}

/// Prints a progress line every second until every Account the mappings
/// matched has its decision written back (or the deadline passes); true
/// when settled. Nothing to do (no Account matched) settles after the
/// first poll.
async fn watch_progress(daemon: &Daemon, salesforce: &SalesforceSandbox) -> bool {
    let deadline = Instant::now() + DEMO_DEADLINE;
    let started = Instant::now();
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let store = daemon.engine.store();
        let counts = store.link_counts().unwrap_or_default();
        let matched: u64 = counts.values().map(|counts| counts.accounts).sum();
        let portals: u64 = counts.values().map(|counts| counts.portals).sum();
        let decided: u64 = counts.values().map(|counts| counts.final_decisions).sum();
        let pending = store.pending_write_count();
        let written = salesforce
            .accounts()
            .iter()
            .filter(|account| {
                matches!(
                    account.get("KYC_Status__c").and_then(Value::as_str),
                    Some("Approved" | "Rejected")
                )
            })
            .count();
        println!(
            "  {:>5.1} s  Accounts matched {:>5}  portals created {portals:>5}  decided in Ondorse {decided:>5}  decisions in Salesforce {written:>5}  Accounts with a write-back waiting {pending:>4}",
            started.elapsed().as_secs_f64(),
            matched
        );
        let first_poll_done = daemon.schedules().poll.state().last_finished.is_some();
        let inbox_empty = store.inbox_depth() == 0;
        if first_poll_done
            && decided == matched
            && written as u64 >= decided
            && pending == 0
            && inbox_empty
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

fn summary(
    links: &[Link],
    dead_letters: usize,
    salesforce: &SalesforceSandbox,
    ondorse: &OndorseSandbox,
    elapsed: Duration,
) {
    let accounts = salesforce.accounts();
    let field_is = |account: &serde_json::Map<String, Value>, field: &str, value: &str| {
        account.get(field).and_then(Value::as_str) == Some(value)
    };
    let with_link = accounts
        .iter()
        .filter(|account| {
            account
                .get("Ondorse_Portal_Url__c")
                .is_some_and(Value::is_string)
        })
        .count();
    let approved = accounts
        .iter()
        .filter(|account| field_is(account, "KYC_Status__c", "Approved"))
        .count();
    let rejected = accounts
        .iter()
        .filter(|account| field_is(account, "KYC_Status__c", "Rejected"))
        .count();
    let mut per_mapping = std::collections::BTreeMap::<&str, usize>::new();
    for link in links {
        *per_mapping.entry(link.mapping.as_str()).or_default() += 1;
    }
    let sf = salesforce.stats();
    let od = ondorse.stats();
    println!();
    println!("Done in {:.1} s.", elapsed.as_secs_f64());
    println!("  Accounts in Salesforce          {}", accounts.len());
    for (mapping, count) in &per_mapping {
        println!("  matched {mapping:<23} {count}");
    }
    println!(
        "  portals created in Ondorse      {}",
        ondorse.portals().len()
    );
    println!("  portal links in Salesforce      {with_link}");
    println!(
        "  decisions in Salesforce         {} ({approved} approved, {rejected} rejected)",
        approved + rejected
    );
    println!("  dead letters                    {dead_letters}");
    let named =
        sf.query_requests + sf.query_more_requests + sf.composite_requests + sf.describe_requests;
    println!(
        "  Salesforce API calls            {} (queries {} + next pages {}, composite updates {}, describe {}, other {}); token requests {}",
        sf.api_requests,
        sf.query_requests,
        sf.query_more_requests,
        sf.composite_requests,
        sf.describe_requests,
        // The budget governor's `GET /limits`.
        sf.api_requests.saturating_sub(named),
        sf.token_requests
    );
    println!(
        "  Ondorse API calls               {} (portal posts {}, application reads {})",
        od.requests, od.portal_posts, od.application_gets
    );
    println!("{}", portal_posts_explained(&od));
    println!(
        "  webhooks                        {} events, {} deliveries (duplicates and retries included)",
        od.events_emitted, od.deliveries_succeeded
    );
}

/// Why Ondorse saw more portal posts than portals, when it did: a post
/// whose answer is slow or lost is sent again with the same
/// Idempotency-Key (a retry, or reconcile re-sending the intent), and
/// Ondorse answers it with the portal it already created.
fn portal_posts_explained(od: &OndorseSandboxStats) -> String {
    let refused = od
        .portal_posts
        .saturating_sub(od.portals_created + od.idempotent_replays);
    format!(
        "  portal posts, explained         {} = {} portal(s) created + {} repeat(s) of a post whose answer was slow or lost, sent with the same Idempotency-Key and answered with the portal already created (never a second one) + {refused} refused by Ondorse",
        od.portal_posts, od.portals_created, od.idempotent_replays
    )
}

/// The journal of one decided Account, as `explain` shows it.
fn explain_one(daemon: &Daemon, link: &Link) -> Result<(), Failure> {
    let journal = daemon
        .engine
        .store()
        .journal_of(&link.account_id)
        .map_err(anyhow::Error::from)?;
    println!();
    println!(
        "What happened to Account {} ({}):",
        link.account_id, link.mapping
    );
    for entry in journal {
        println!(
            "  {}  {:<20} {}",
            entry.at.format("%H:%M:%S%.3f"),
            entry.step,
            entry.summary
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_portal_posts_are_explained() {
        let stats = OndorseSandboxStats {
            portal_posts: 205,
            portals_created: 200,
            idempotent_replays: 4,
            ..OndorseSandboxStats::default()
        };
        assert_eq!(
            portal_posts_explained(&stats),
            "  portal posts, explained         205 = 200 portal(s) created + 4 repeat(s) of a post whose answer was slow or lost, sent with the same Idempotency-Key and answered with the portal already created (never a second one) + 1 refused by Ondorse"
        );
    }
}
