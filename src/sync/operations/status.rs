//! `status`: a snapshot of the ledger, and of the daemon when it runs.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::OperationError;
use crate::salesforce::Id;
use crate::store::{InboxKind, InboxQueue, Link, LinkState, Store};
use crate::sync::budget::BudgetState;
use crate::sync::{Engine, Schedules, now};

/// Everything `status` shows, as JSON (`status --json`, `GET /admin/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub generated_at: DateTime<Utc>,
    /// `None` when read from the store with the daemon stopped.
    pub daemon: Option<DaemonStatus>,
    pub mappings: Vec<MappingStatus>,
    pub queues: Queues,
    pub dead_letters: usize,
    /// Items that keep failing, each with its reason and retry time: the
    /// first [`PARKED_LISTED`] parked inbox items (`queues` counts them
    /// all), then the parked intents.
    #[serde(default)]
    pub parked: Vec<ParkedStatus>,
    /// Links closed because their Account is gone from Salesforce.
    #[serde(default)]
    pub closed: Vec<ClosedStatus>,
}

/// A link closed because its Account was deleted or merged away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedStatus {
    pub mapping: String,
    pub account_id: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// One parked item: an inbox item or an intent that failed, waiting for
/// its retry time (or, refused for good, for an operator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedStatus {
    /// `webhooks`, `hints` or `intents`.
    pub queue: String,
    /// What it is about: an application, a push hint, an intent's mapping.
    pub subject: String,
    pub account_id: Option<String>,
    pub reason: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The next attempt; `None` when only an operator can move it on.
    pub retry_at: Option<DateTime<Utc>>,
}

/// Parked inbox items `status` lists at most: a store whose inbox keeps
/// failing (Ondorse refusing every read) may park many thousands, and a
/// status that decodes and sends them all is slow when it is needed most.
pub const PARKED_LISTED: usize = 100;

/// Up to `limit` parked inbox items, oldest first, then `intents`.
pub(super) fn parked_items(
    store: &Store,
    limit: usize,
    intents: Vec<ParkedStatus>,
) -> Result<Vec<ParkedStatus>, OperationError> {
    let mut parked = Vec::new();
    for item in store.parked_inbox_items(limit)? {
        let Some(state) = item.parked else { continue };
        let (queue, subject) = match &item.kind {
            InboxKind::Webhook(envelope) => (
                "webhooks",
                match &envelope.application_id {
                    Some(id) => format!("{} about application {id}", envelope.event_type),
                    None => envelope.event_type.clone(),
                },
            ),
            InboxKind::SalesforceHint { ids } => (
                "hints",
                format!(
                    "push hint for {}",
                    ids.iter().map(Id::as_str).collect::<Vec<_>>().join(", ")
                ),
            ),
        };
        parked.push(ParkedStatus {
            queue: queue.to_owned(),
            subject,
            account_id: state.account_id,
            reason: state.reason,
            attempts: state.attempts,
            retry_at: Some(state.retry_at),
        });
    }
    parked.extend(intents);
    Ok(parked)
}

/// A parked portal intent, as `status` and `explain` show it.
pub(super) fn parked_intent(link: &Link) -> ParkedStatus {
    ParkedStatus {
        queue: "intents".to_owned(),
        subject: format!("portal intent of mapping `{}`", link.mapping),
        account_id: Some(link.account_id.clone()),
        reason: link.last_error.clone().unwrap_or_default(),
        attempts: link.portal_attempts,
        retry_at: link.retry_at,
    }
}

/// Work waiting, across mappings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queues {
    /// Webhooks and push hints not yet processed.
    pub inbox: u64,
    /// Accounts with fields waiting to be written to Salesforce.
    pub pending_writes: usize,
    /// Accounts whose portal is not created yet.
    pub pending_portals: u64,
    /// Webhooks and push hints that keep failing, all of them (from the
    /// store's queue counters; `parked` lists the first ones).
    #[serde(default)]
    pub parked_webhooks: u64,
    #[serde(default)]
    pub parked_hints: u64,
}

impl Status {
    /// Every parked item: the inbox's (counted) and the intents (listed).
    pub fn parked_total(&self) -> u64 {
        let intents = self
            .parked
            .iter()
            .filter(|item| item.queue == "intents")
            .count() as u64;
        self.queues.parked_webhooks + self.queues.parked_hints + intents
    }
}

/// One mapping's intake and links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappingStatus {
    pub name: String,
    pub cursor: Option<CursorStatus>,
    /// Accounts this mapping picked up.
    pub accounts: u64,
    pub portals: u64,
    pub applications: u64,
    pub final_decisions: u64,
    /// Accounts whose portal creation failed and waits for a retry.
    pub failing_portals: u64,
    /// The last error of this mapping: the last poll's, else a portal's.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CursorStatus {
    pub system_modstamp: DateTime<Utc>,
    pub id: String,
    /// How far the cursor is behind the clock.
    pub lag_seconds: i64,
}

/// What only a running daemon knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Every schedule fires on time.
    pub schedules_alive: bool,
    pub schedules: Vec<ScheduleStatus>,
    pub salesforce: SalesforceStatus,
    /// The last mapping reload; its problems when it was refused.
    #[serde(default)]
    pub mapping_reload: crate::sync::ReloadStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    pub name: String,
    pub expression: String,
    /// The slot that should have fired and did not (a stalled scheduler).
    pub missed_slot: Option<DateTime<Utc>>,
    pub last_fired: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
    /// The last run that finished without error.
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SalesforceStatus {
    /// From the last `Sforce-Limit-Info`; `None` before the first call.
    pub api_used: Option<u64>,
    pub api_max: Option<u64>,
    pub api_used_percent: Option<f64>,
    /// `[salesforce] api_budget_percent`.
    pub api_budget_percent: u8,
    /// The API budget governor: whether (and why, until when) Salesforce
    /// work is paused.
    pub budget: BudgetState,
    /// `held` once a token was obtained, `not yet requested` before.
    pub token: String,
    pub instance_url: Option<String>,
    /// What stops every Salesforce call: a refused login, or an
    /// `api_version` the org does not serve.
    #[serde(default)]
    pub problem: Option<String>,
}

/// The running parts [`status`] reports on when the daemon runs.
pub struct RunningDaemon<'a> {
    pub engine: &'a Engine,
    pub schedules: &'a Schedules,
}

/// A snapshot of the ledger (and of the daemon, when given).
pub fn status(
    store: &Store,
    running: Option<&RunningDaemon<'_>>,
) -> Result<Status, OperationError> {
    let at = now();
    // Counters the store keeps with every link write, and the few links
    // still waiting for a portal, streamed: never every link.
    let counts = store.link_counts()?;
    let mut intents = Vec::new();
    let mut portal_errors: BTreeMap<String, String> = BTreeMap::new();
    for link in store.links_in(LinkState::PendingPortal) {
        let link = link?;
        if let Some(error) = &link.last_error {
            portal_errors
                .entry(link.mapping.clone())
                .or_insert_with(|| error.clone());
        }
        if link.is_parked(at) {
            intents.push(parked_intent(&link));
        }
    }
    let mut names: BTreeSet<String> = store.cursors()?.into_iter().map(|(name, _)| name).collect();
    names.extend(counts.keys().cloned());
    if let Some(running) = running {
        names.extend(running.engine.mappings().names().map(str::to_owned));
    }
    // Every failing mapping's own last poll error, not the first found.
    let poll_failures = running
        .map(|running| running.schedules.poll_failures.failing())
        .unwrap_or_default();
    let mut mappings = Vec::new();
    for name in names {
        let own = counts.get(&name).copied().unwrap_or_default();
        let cursor = store.cursor(&name)?.map(|cursor| CursorStatus {
            lag_seconds: (at - cursor.system_modstamp).num_seconds(),
            system_modstamp: cursor.system_modstamp,
            id: cursor.id,
        });
        // A mapping paused by schema drift says so first: nothing else moves
        // until it is fixed.
        let paused = running.and_then(|running| {
            running
                .engine
                .mapping_health()
                .paused()
                .remove(&name)
                .map(|pause| pause.reason)
        });
        let last_error = paused
            .or_else(|| {
                poll_failures
                    .get(&name)
                    .map(|failure| failure.last_error.clone())
            })
            .or_else(|| portal_errors.remove(&name));
        mappings.push(MappingStatus {
            cursor,
            accounts: own.accounts,
            portals: own.portals,
            applications: own.applications,
            final_decisions: own.final_decisions,
            failing_portals: own.failing_portals,
            last_error,
            name,
        });
    }
    let daemon = running.map(|running| {
        let schedules = [&running.schedules.poll, &running.schedules.reconcile]
            .into_iter()
            .map(|health| {
                let state = health.state();
                ScheduleStatus {
                    name: health.name.to_owned(),
                    expression: health.expression.clone(),
                    missed_slot: health.missed_slot(at),
                    last_fired: state.last_fired,
                    last_finished: state.last_finished,
                    last_success: state.last_finished.filter(|_| state.last_error.is_none()),
                    last_error: state.last_error,
                }
            })
            .collect();
        let budget = running.engine.budget_state();
        let usage = budget.usage;
        let used_percent = usage.map(|usage| usage.ratio() * 100.0);
        let salesforce = running.engine.salesforce();
        let instance_url = salesforce.instance_url();
        DaemonStatus {
            mapping_reload: running.engine.mapping_health().reload_status(),
            schedules_alive: running.schedules.alive(at),
            schedules,
            salesforce: SalesforceStatus {
                api_used: usage.map(|usage| usage.used),
                api_max: usage.map(|usage| usage.max),
                api_used_percent: used_percent,
                api_budget_percent: budget.budget_percent,
                budget,
                token: if instance_url.is_some() {
                    "held"
                } else {
                    "not yet requested"
                }
                .to_owned(),
                instance_url,
                problem: salesforce
                    .login_problem()
                    .map(|refusal| format!("the login is refused: {}", refusal.message))
                    .or_else(|| salesforce.api_version_problem()),
            },
        }
    });
    Ok(Status {
        generated_at: at,
        daemon,
        mappings,
        queues: Queues {
            inbox: store.inbox_depth(),
            pending_writes: store.pending_write_count(),
            pending_portals: counts.values().map(|counts| counts.pending_portals).sum(),
            parked_webhooks: store.parked_inbox_count(InboxQueue::Webhooks) as u64,
            parked_hints: store.parked_inbox_count(InboxQueue::Hints) as u64,
        },
        dead_letters: store.dead_letter_count(),
        parked: parked_items(store, PARKED_LISTED, intents)?,
        closed: closed_links(store)?,
    })
}

/// The closed links, streamed from the store's index of closed links.
fn closed_links(store: &Store) -> Result<Vec<ClosedStatus>, OperationError> {
    let mut closed = Vec::new();
    for link in store.links_in(LinkState::Closed) {
        let link = link?;
        if let Some(closure) = link.closed {
            closed.push(ClosedStatus {
                mapping: link.mapping,
                account_id: link.account_id,
                reason: closure.reason,
                at: closure.at,
            });
        }
    }
    Ok(closed)
}
