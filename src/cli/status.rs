//! `ondorse-bridge status [--json]`: where each mapping stands, the queues,
//! dead letters, schedules, Salesforce API usage and token.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::cli::access::{Access, operation_failure};
use crate::cli::{Failure, print_json};
use crate::config::Config;
use crate::sync::operations::{self, PARKED_LISTED, ParkedStatus, Status};

pub async fn status(config: &Config, json: bool) -> Result<(), Failure> {
    let status = match Access::open(config).await? {
        Access::Daemon(client) => client.get::<Status>("status").await?,
        Access::Store(store) => operations::status(&store, None).map_err(operation_failure)?,
    };
    if json {
        print_json(&status)?;
    } else {
        print!(
            "{}",
            render(&status, &config.store.path.display().to_string())
        );
    }
    Ok(())
}

fn instant(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn duration(seconds: i64) -> String {
    match seconds {
        seconds if seconds < 120 => format!("{seconds} s"),
        seconds if seconds < 2 * 3600 => format!("{} min", seconds / 60),
        seconds if seconds < 2 * 86_400 => format!("{} h", seconds / 3600),
        seconds => format!("{} days", seconds / 86_400),
    }
}

/// The status for people. `store_path` names where it was read offline.
pub fn render(status: &Status, store_path: &str) -> String {
    let mut text = String::new();
    let source = match &status.daemon {
        Some(_) => "from the running daemon".to_owned(),
        None => format!("from the store at {store_path}; the daemon is not running"),
    };
    let _ = writeln!(
        text,
        "ondorse-bridge status at {} ({source})",
        instant(status.generated_at)
    );
    let _ = writeln!(text, "\nMappings");
    if status.mappings.is_empty() {
        let _ = writeln!(text, "  none has run yet");
    }
    for mapping in &status.mappings {
        let _ = writeln!(text, "  {}", mapping.name);
        let cursor = match &mapping.cursor {
            Some(cursor) => format!(
                "{} (Account {}), {} behind",
                instant(cursor.system_modstamp),
                cursor.id,
                duration(cursor.lag_seconds)
            ),
            None => "no poll has finished a page yet".to_owned(),
        };
        let _ = writeln!(text, "    cursor        {cursor}");
        let _ = writeln!(
            text,
            "    accounts      {} (portals {}, applications {}, final decisions {})",
            mapping.accounts, mapping.portals, mapping.applications, mapping.final_decisions
        );
        if mapping.failing_portals > 0 {
            let _ = writeln!(
                text,
                "    failing       {} portal(s) wait for a retry",
                mapping.failing_portals
            );
        }
        let _ = writeln!(
            text,
            "    last error    {}",
            mapping.last_error.as_deref().unwrap_or("none")
        );
    }
    let _ = writeln!(text, "\nQueues");
    let _ = writeln!(
        text,
        "  inbox         {} webhook(s) and hint(s) to process",
        status.queues.inbox
    );
    let _ = writeln!(
        text,
        "  write-backs   {} Account(s) waiting for Salesforce",
        status.queues.pending_writes
    );
    let _ = writeln!(
        text,
        "  portals       {} Account(s) waiting for a portal",
        status.queues.pending_portals
    );
    let hint = if status.dead_letters > 0 {
        " (see `ondorse-bridge dead-letters list`)"
    } else {
        ""
    };
    let _ = writeln!(text, "  dead letters  {}{hint}", status.dead_letters);
    let parked = status.parked_total();
    if parked > 0 {
        let _ = writeln!(
            text,
            "  parked        {parked} item(s) keep failing and wait for a retry:"
        );
        for item in status.parked.iter().take(PARKED_SHOWN) {
            let _ = writeln!(text, "    {}", parked_line(item));
        }
        if parked > PARKED_SHOWN as u64 {
            let _ = writeln!(
                text,
                "    ... (`status --json` lists the first {PARKED_LISTED} of the inbox and every intent)"
            );
        }
    }
    if !status.closed.is_empty() {
        let _ = writeln!(
            text,
            "  closed        {} link(s) whose Account is gone from Salesforce:",
            status.closed.len()
        );
        for closed in status.closed.iter().take(PARKED_SHOWN) {
            let _ = writeln!(
                text,
                "    [{}] Account {}: {} (since {})",
                closed.mapping,
                closed.account_id,
                closed.reason,
                instant(closed.at)
            );
        }
        if status.closed.len() > PARKED_SHOWN {
            let _ = writeln!(text, "    ... (`status --json` lists them all)");
        }
    }
    match &status.daemon {
        None => {
            let _ = writeln!(
                text,
                "\nSchedules, API usage and token are known only while the daemon runs."
            );
        }
        Some(daemon) => {
            let health = if daemon.schedules_alive {
                "every schedule fires on time"
            } else {
                "STALLED"
            };
            let reload = &daemon.mapping_reload;
            if !reload.problems.is_empty() {
                let when = reload
                    .at
                    .map_or_else(String::new, |at| format!(" at {}", instant(at)));
                let _ = writeln!(
                    text,
                    "\nMapping reload REFUSED{when}; the previous mappings keep running"
                );
                for problem in &reload.problems {
                    let _ = writeln!(text, "  {problem}");
                }
            }
            let _ = writeln!(text, "\nSchedules ({health})");
            for schedule in &daemon.schedules {
                let state = match schedule.missed_slot {
                    Some(slot) => format!("MISSED the slot at {}", instant(slot)),
                    None => "on time".to_owned(),
                };
                let last_success = schedule
                    .last_success
                    .map_or("never yet".to_owned(), instant);
                let _ = writeln!(
                    text,
                    "  {:<10} {:<18} {state}; last success {last_success}",
                    schedule.name, schedule.expression
                );
                if let Some(error) = &schedule.last_error {
                    let _ = writeln!(text, "  {:<10} last error: {error}", "");
                }
            }
            let salesforce = &daemon.salesforce;
            let _ = writeln!(text, "\nSalesforce");
            let usage = match (
                salesforce.api_used,
                salesforce.api_max,
                salesforce.api_used_percent,
            ) {
                (Some(used), Some(max), Some(percent)) => format!(
                    "{used} of {max} daily calls ({percent:.1}%), budget {}%",
                    salesforce.api_budget_percent
                ),
                _ => format!(
                    "not known yet (no call made), budget {}%",
                    salesforce.api_budget_percent
                ),
            };
            let _ = writeln!(text, "  API usage     {usage}");
            let budget = &salesforce.budget;
            let state = match (&budget.message, budget.until) {
                (Some(message), Some(until)) => {
                    format!("PAUSED: {message} (looks again at {})", instant(until))
                }
                (Some(message), None) => format!("PAUSED: {message}"),
                (None, _) => "running".to_owned(),
            };
            let _ = writeln!(text, "  work          {state}");
            let instance = salesforce
                .instance_url
                .as_deref()
                .map_or(String::new(), |url| format!(" for {url}"));
            let _ = writeln!(text, "  token         {}{instance}", salesforce.token);
            if let Some(problem) = &salesforce.problem {
                let _ = writeln!(text, "  STOPPED       {problem}");
            }
        }
    }
    text
}

/// Parked items (and closed links) shown in the text form; `--json` has
/// more.
const PARKED_SHOWN: usize = 10;

/// One parked item on one line: what, whose, why, and what happens next.
pub(super) fn parked_line(item: &ParkedStatus) -> String {
    let account = item
        .account_id
        .as_deref()
        .map_or(String::new(), |id| format!(" (Account {id})"));
    let next = match item.retry_at {
        Some(at) => format!("next try {}", instant(at)),
        None => "waits for an operator".to_owned(),
    };
    format!(
        "[{}] {}{account}: {} (failed {} time(s); {next})",
        item.queue, item.subject, item.reason, item.attempts
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::salesforce::model::ApiUsage;
    use crate::sync::operations::{
        ClosedStatus, CursorStatus, DaemonStatus, MappingStatus, Queues, SalesforceStatus,
        ScheduleStatus,
    };
    use crate::sync::{BudgetState, PauseReason};

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, hour, minute, 0).unwrap()
    }

    #[test]
    fn a_running_daemon_over_budget_with_a_stalled_reconcile() {
        let status = Status {
            generated_at: at(10, 0),
            daemon: Some(DaemonStatus {
                mapping_reload: Default::default(),
                schedules_alive: false,
                schedules: vec![
                    ScheduleStatus {
                        name: "poll".to_owned(),
                        expression: "*/30 * * * * *".to_owned(),
                        missed_slot: None,
                        last_fired: Some(at(9, 59)),
                        last_finished: Some(at(9, 59)),
                        last_success: Some(at(9, 59)),
                        last_error: None,
                    },
                    ScheduleStatus {
                        name: "reconcile".to_owned(),
                        expression: "0 */10 * * * *".to_owned(),
                        missed_slot: Some(at(9, 50)),
                        last_fired: Some(at(9, 40)),
                        last_finished: Some(at(9, 41)),
                        last_success: None,
                        last_error: Some("ondorse: timed out".to_owned()),
                    },
                ],
                salesforce: SalesforceStatus {
                    api_used: Some(9_000),
                    api_max: Some(15_000),
                    api_used_percent: Some(60.0),
                    api_budget_percent: 50,
                    budget: BudgetState {
                        paused: true,
                        reason: Some(PauseReason::OverBudget),
                        message: Some("api usage 60.0% is above the budget of 50%".to_owned()),
                        usage: Some(ApiUsage {
                            used: 9_000,
                            max: 15_000,
                        }),
                        budget_percent: 50,
                        since: Some(at(9, 30)),
                        until: Some(at(10, 5)),
                        deferred_steps: 12,
                    },
                    token: "held".to_owned(),
                    instance_url: Some("https://acme.my.salesforce.com".to_owned()),
                    problem: None,
                },
            }),
            mappings: vec![MappingStatus {
                name: "business-onboarding".to_owned(),
                cursor: Some(CursorStatus {
                    system_modstamp: at(9, 55),
                    id: "001Sb0000000001IAA".to_owned(),
                    lag_seconds: 300,
                }),
                accounts: 40,
                portals: 39,
                applications: 12,
                final_decisions: 5,
                failing_portals: 1,
                last_error: Some("ondorse answered 400".to_owned()),
            }],
            queues: Queues {
                inbox: 2,
                pending_writes: 3,
                pending_portals: 1,
                parked_webhooks: 250,
                parked_hints: 0,
            },
            dead_letters: 0,
            // The first of the 250 (status lists a bounded number).
            parked: vec![ParkedStatus {
                queue: "webhooks".to_owned(),
                subject: "application.review_updated about application app_1".to_owned(),
                account_id: Some("001Sb0000000004IAA".to_owned()),
                reason: "ondorse answered 503".to_owned(),
                attempts: 4,
                retry_at: Some(at(10, 10)),
            }],
            closed: vec![ClosedStatus {
                mapping: "business-onboarding".to_owned(),
                account_id: "001Sb0000000002IAA".to_owned(),
                reason: "merged into 001Sb0000000003IAA, which has its own portal".to_owned(),
                at: at(9, 45),
            }],
        };
        let expected = "\
ondorse-bridge status at 2026-11-25 10:00:00 UTC (from the running daemon)

Mappings
  business-onboarding
    cursor        2026-11-25 09:55:00 UTC (Account 001Sb0000000001IAA), 5 min behind
    accounts      40 (portals 39, applications 12, final decisions 5)
    failing       1 portal(s) wait for a retry
    last error    ondorse answered 400

Queues
  inbox         2 webhook(s) and hint(s) to process
  write-backs   3 Account(s) waiting for Salesforce
  portals       1 Account(s) waiting for a portal
  dead letters  0
  parked        250 item(s) keep failing and wait for a retry:
    [webhooks] application.review_updated about application app_1 (Account 001Sb0000000004IAA): ondorse answered 503 (failed 4 time(s); next try 2026-11-25 10:10:00 UTC)
    ... (`status --json` lists the first 100 of the inbox and every intent)
  closed        1 link(s) whose Account is gone from Salesforce:
    [business-onboarding] Account 001Sb0000000002IAA: merged into 001Sb0000000003IAA, which has its own portal (since 2026-11-25 09:45:00 UTC)

Schedules (STALLED)
  poll       */30 * * * * *     on time; last success 2026-11-25 09:59:00 UTC
  reconcile  0 */10 * * * *     MISSED the slot at 2026-11-25 09:50:00 UTC; last success never yet
             last error: ondorse: timed out

Salesforce
  API usage     9000 of 15000 daily calls (60.0%), budget 50%
  work          PAUSED: api usage 60.0% is above the budget of 50% (looks again at 2026-11-25 10:05:00 UTC)
  token         held for https://acme.my.salesforce.com
";
        assert_eq!(render(&status, "/var/lib/ondorse-bridge"), expected);
    }
}
