//! `ondorse-bridge demo`: the first thing a new user runs. A sandbox
//! Salesforce and a sandbox Ondorse on loopback, seeded Accounts, and the
//! real daemon between them, with the repository's demo configuration and
//! mapping files; it shows what happened.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::Failure;
use crate::daemon::Daemon;
use crate::sandbox::ondorse::{OndorseSandbox, OndorseSandboxOptions};
use crate::sandbox::salesforce::SalesforceSandbox;
use crate::sandbox::world::{SandboxWorld, SandboxWorldOptions};
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

pub async fn demo(accounts: usize) -> Result<(), Failure> {
    let started = Instant::now();
    println!(
        "ondorse-bridge demo: {accounts} Accounts, a sandbox Salesforce, a sandbox Ondorse and the real daemon, on loopback"
    );
    let world = SandboxWorld::start(SandboxWorldOptions {
        ondorse: OndorseSandboxOptions {
            submit_after: Some(SUBMIT_AFTER),
            review_after: Some(REVIEW_AFTER),
            duplicate_ratio: 0.1,
            reorder: true,
            ..OndorseSandboxOptions::default()
        },
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
    println!(
        "  configuration       {} (from config/demo.toml and mappings/)",
        world.config_path.display()
    );

    let daemon = world.start_daemon(EngineSettings::default()).await?;
    println!(
        "  daemon              webhooks on {}",
        daemon.webhook_address()
    );
    println!();

    let settled = watch_progress(&daemon, &world.salesforce).await;
    let elapsed = started.elapsed();
    let links = daemon
        .engine
        .store()
        .links_where(|_| true)
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
    if let Some(link) = links.iter().find(|link| link.decision_final) {
        explain_one(&daemon, link)?;
    }
    daemon.stop().await?;
    if !settled {
        return Err(anyhow::anyhow!(
            "the demo did not settle within {} s; the numbers above show where it stopped",
            DEMO_DEADLINE.as_secs()
        )
        .into());
    }
    Ok(())
}

/// Prints a progress line every second until every linked Account has its
/// decision written back (or the deadline passes); true when settled.
async fn watch_progress(daemon: &Daemon, salesforce: &SalesforceSandbox) -> bool {
    let deadline = Instant::now() + DEMO_DEADLINE;
    loop {
        tokio::time::sleep(PROGRESS_EVERY).await;
        let store = daemon.engine.store();
        let links = store.links_where(|_| true).unwrap_or_default();
        let portals = links.iter().filter(|link| link.portal.is_some()).count();
        let decided = links.iter().filter(|link| link.decision_final).count();
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
            "  portals {portals:>5}/{:<5}  decisions {decided:>5}  decisions in Salesforce {written:>5}  write-backs pending {pending:>4}",
            links.len()
        );
        let first_poll_done = daemon.schedules().poll.state().last_finished.is_some();
        let inbox_empty = store.inbox_depth().unwrap_or(1) == 0;
        if first_poll_done
            && !links.is_empty()
            && decided == links.len()
            && written >= decided
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
    println!(
        "  webhooks                        {} events, {} deliveries (duplicates and retries included)",
        od.events_emitted, od.deliveries_succeeded
    );
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
