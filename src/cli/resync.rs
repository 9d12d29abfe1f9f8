//! `ondorse-bridge resync (--account ID... | --since TIME | --all)
//! [--mapping NAME] [--dry-run] [--new-intent]`: bring Salesforce back in line by hand.
//!
//! With the daemon running the admin API does the work (one resync at a
//! time); otherwise this process opens the store, builds the clients and
//! runs the same operation, then sends what it queued.

use std::fmt::Write;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Notify;

use crate::cli::access::{Access, operation_failure};
use crate::cli::{Failure, print_json};
use crate::config::Config;
use crate::store::Store;
use crate::sync::operations::{ResyncGate, ResyncProgress, ResyncReport, ResyncRequest};
use crate::sync::{Engine, EngineParts, EngineSettings};

/// How often the spinner turns while the daemon works.
const SPINNER_TICK: Duration = Duration::from_millis(120);

pub async fn resync(config: &Config, request: ResyncRequest, json: bool) -> Result<(), Failure> {
    // Bad input is refused before anything is opened or sent.
    request.scope().map_err(operation_failure)?;
    let terminal = std::io::stderr().is_terminal();
    let (report, sent) = match Access::open(config).await? {
        Access::Daemon(client) => {
            let spinner = terminal.then(|| {
                let spinner = ProgressBar::new_spinner().with_message("the daemon is resyncing…");
                spinner.enable_steady_tick(SPINNER_TICK);
                spinner
            });
            if spinner.is_none() {
                eprintln!("resync: asked the running daemon");
            }
            let report = client
                .post::<_, ResyncReport>("resync", &request, None)
                .await;
            if let Some(spinner) = spinner {
                spinner.finish_and_clear();
            }
            (report?, None)
        }
        Access::Store(store) => run_here(config, store, &request, terminal).await?,
    };
    if json {
        let mut answer = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
        if let (Some(answer), Some(sent)) = (answer.as_object_mut(), sent) {
            answer.insert(
                "sent".to_owned(),
                serde_json::json!({
                    "written": sent.written,
                    "retried": sent.retried,
                    "dead_lettered": sent.dead_lettered,
                }),
            );
        }
        return print_json(&answer);
    }
    print!("{}", render(&report, sent));
    Ok(())
}

/// The resync in this process (the daemon is stopped); returns the report
/// and, unless a dry run, what the write pass sent.
async fn run_here(
    config: &Config,
    store: Store,
    request: &ResyncRequest,
    terminal: bool,
) -> Result<(ResyncReport, Option<crate::sync::WriteReport>), Failure> {
    let engine = Engine::from_config(
        config,
        EngineParts {
            store,
            settings: EngineSettings::default(),
            inbox_wake: Arc::new(Notify::new()),
        },
    )?;
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    });
    let progress = |progress: ResyncProgress| match &bar {
        Some(bar) => {
            bar.set_length(progress.total);
            bar.set_position(progress.done);
            bar.set_message(progress.item);
        }
        None => eprintln!(
            "resync: {}/{} {}",
            progress.done, progress.total, progress.item
        ),
    };
    let gate = ResyncGate::default();
    let ticket = gate.enter().map_err(operation_failure)?;
    let outcome = engine.resync(&ticket, request, &progress).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = outcome.map_err(operation_failure)?;
    if report.dry_run {
        return Ok((report, None));
    }
    let sent = engine.flush_writes().await.map_err(anyhow::Error::from)?;
    engine.store().flush().await.map_err(anyhow::Error::from)?;
    Ok((report, Some(sent)))
}

/// The report for people.
pub fn render(report: &ResyncReport, sent: Option<crate::sync::WriteReport>) -> String {
    let mut text = String::new();
    let (verb, new) = if report.dry_run {
        ("would write", "would get a portal")
    } else {
        ("queued", "get a portal")
    };
    if report.dry_run {
        let _ = writeln!(
            text,
            "dry run: nothing was written to Salesforce, Ondorse or the store"
        );
    }
    let _ = writeln!(
        text,
        "{} Account(s) read from Salesforce, {} application(s) fetched from Ondorse",
        report.accounts_read, report.applications_fetched
    );
    if report.intents_renewed > 0 {
        let _ = writeln!(
            text,
            "{} pending intent(s) abandoned for a fresh one",
            report.intents_renewed
        );
    }
    let _ = writeln!(text, "{} field(s) {verb}", report.changes.len());
    for change in &report.changes {
        let _ = writeln!(
            text,
            "  {} [{}] {}: {} -> {}",
            change.account_id, change.mapping, change.field, change.from, change.to
        );
    }
    if !report.new_portals.is_empty() {
        let _ = writeln!(text, "{} Account(s) {new}", report.new_portals.len());
        for portal in &report.new_portals {
            let _ = writeln!(text, "  {} [{}]", portal.account_id, portal.mapping);
        }
    }
    if report.portals_created > 0 || report.portals_failed > 0 {
        let _ = writeln!(
            text,
            "{} portal(s) created, {} failed (retried by reconcile)",
            report.portals_created, report.portals_failed
        );
    }
    if !report.refused.is_empty() {
        let verb = if report.dry_run {
            "would be refused"
        } else {
            "refused (now dead letters)"
        };
        let _ = writeln!(text, "{} field(s) {verb}", report.refused.len());
        for change in &report.refused {
            let _ = writeln!(
                text,
                "  {} [{}] {}: {}",
                change.account_id, change.mapping, change.field, change.to
            );
        }
    }
    if let Some(sent) = sent {
        let _ = writeln!(
            text,
            "sent to Salesforce: {} Account(s) written, {} to retry, {} dead-lettered",
            sent.written, sent.retried, sent.dead_lettered
        );
    }
    text
}
