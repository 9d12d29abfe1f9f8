//! What operators and compliance staff ask of the bridge: a status
//! snapshot, the story of one Account, dead-letter retries and manual
//! resyncs. The admin API (daemon running) and the CLI (daemon stopped, the
//! store opened directly) both call these functions, so the logic exists once.
//!
//! Snapshots, explanations and dead-letter retries need only the [`Store`];
//! a resync needs the [`Engine`] (it reads Salesforce and Ondorse) and a
//! [`ResyncGate`], which lets one resync run at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::budget::{BudgetState, Work};
use super::locks::link_key;
use super::plan::{self, record_fields};
use super::{Engine, Schedules, SyncError, now};
use crate::mapping::{Mapping, Moment, WritebackContext};
use crate::ondorse::OndorseError;
use crate::salesforce::model::Record;
use crate::salesforce::soql;
use crate::store::{
    DeadLetter, Fields, InboxKind, JournalEntry, Link, PendingWrite, PortalRequest, Store,
    StoreError,
};

/// Ids per `Id IN (...)` query: far below SOQL's 100,000-character limit.
const IDS_PER_QUERY: usize = 500;

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    #[error(
        "{id:?} is not a Salesforce Id: an Id has 15 or 18 letters and digits, e.g. 001000000000001AAA"
    )]
    MalformedId { id: String },
    #[error("{id} is not an Account Id: {reason}")]
    NotAnAccount { id: String, reason: String },
    #[error(
        "no Account with Id {} exists in Salesforce (or the integration user cannot see it); nothing was changed",
        .ids.join(", ")
    )]
    UnknownAccounts { ids: Vec<String> },
    #[error(
        "nothing is recorded about Account {id}: it never matched a mapping's select (check its fields, or run `resync --account {id}`)"
    )]
    NothingRecorded { id: String },
    #[error(
        "no dead letter with id {}; `dead-letters list` shows the ids; nothing was retried",
        .ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    )]
    UnknownDeadLetters { ids: Vec<u64> },
    #[error("no mapping named `{name}` is loaded (loaded: {})", .loaded.join(", "))]
    UnknownMapping { name: String, loaded: Vec<String> },
    #[error("a resync is already running since {}; wait for it to finish and try again", .since.to_rfc3339())]
    ResyncRunning { since: DateTime<Utc> },
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl OperationError {
    /// True when the request itself is wrong (bad usage: exit 2, HTTP 4xx).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            OperationError::MalformedId { .. }
                | OperationError::NotAnAccount { .. }
                | OperationError::UnknownAccounts { .. }
                | OperationError::NothingRecorded { .. }
                | OperationError::UnknownDeadLetters { .. }
                | OperationError::UnknownMapping { .. }
                | OperationError::InvalidRequest(_)
        )
    }

    /// True when the same request may succeed later without anyone acting.
    pub fn is_retriable(&self) -> bool {
        match self {
            OperationError::ResyncRunning { .. } => true,
            OperationError::Store(error) => error.is_retriable(),
            OperationError::Sync(error) => error.is_retriable(),
            _ => false,
        }
    }
}

// ---------------------------------------------------------------- status

/// Everything `status` shows, as JSON (`status --json`, `GET /admin/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub generated_at: DateTime<Utc>,
    /// `None` when read from the store with the daemon stopped.
    pub daemon: Option<DaemonStatus>,
    pub mappings: Vec<MappingStatus>,
    pub queues: Queues,
    pub dead_letters: usize,
    /// Items that keep failing, each with its reason and retry time.
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

/// Every parked item, inbox items first, oldest first.
fn parked_items(store: &Store, links: &[Link]) -> Result<Vec<ParkedStatus>, OperationError> {
    let at = now();
    let mut parked = Vec::new();
    for item in store.parked_inbox_items()? {
        let Some(state) = item.parked else { continue };
        let (queue, subject) = match &item.kind {
            InboxKind::Webhook(envelope) => (
                "webhooks",
                match &envelope.application_id {
                    Some(id) => format!("{} about application {id}", envelope.event_type),
                    None => envelope.event_type.clone(),
                },
            ),
            InboxKind::SalesforceHint { ids } => {
                ("hints", format!("push hint for {}", ids.join(", ")))
            }
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
    for link in links.iter().filter(|link| link.is_parked(at)) {
        parked.push(ParkedStatus {
            queue: "intents".to_owned(),
            subject: format!("portal intent of mapping `{}`", link.mapping),
            account_id: Some(link.account_id.clone()),
            reason: link.last_error.clone().unwrap_or_default(),
            attempts: link.portal_attempts,
            retry_at: link.retry_at,
        });
    }
    Ok(parked)
}

/// Work waiting, across mappings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queues {
    /// Webhooks and push hints not yet processed.
    pub inbox: u64,
    /// Accounts with fields waiting to be written to Salesforce.
    pub pending_writes: usize,
    /// Accounts whose portal is not created yet.
    pub pending_portals: usize,
}

/// One mapping's intake and links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MappingStatus {
    pub name: String,
    pub cursor: Option<CursorStatus>,
    /// Accounts this mapping picked up.
    pub accounts: usize,
    pub portals: usize,
    pub applications: usize,
    pub final_decisions: usize,
    /// Accounts whose portal creation failed and waits for a retry.
    pub failing_portals: usize,
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
    pub mapping_reload: super::ReloadStatus,
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
    let links = store.links_where(|_| true)?;
    let mut names: BTreeSet<String> = store.cursors()?.into_iter().map(|(name, _)| name).collect();
    names.extend(links.iter().map(|link| link.mapping.clone()));
    if let Some(running) = running {
        names.extend(running.engine.mappings().names().map(str::to_owned));
    }
    // Every failing mapping's own last poll error, not the first found.
    let poll_failures = running
        .map(|running| running.schedules.poll_failures.failing())
        .unwrap_or_default();
    let mut mappings = Vec::new();
    for name in names {
        let own: Vec<&Link> = links.iter().filter(|link| link.mapping == name).collect();
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
            .or_else(|| {
                own.iter()
                    .filter(|link| link.portal.is_none())
                    .find_map(|link| link.last_error.clone())
            });
        mappings.push(MappingStatus {
            cursor,
            accounts: own.len(),
            portals: own.iter().filter(|link| link.portal.is_some()).count(),
            applications: own
                .iter()
                .filter(|link| link.application_id.is_some())
                .count(),
            final_decisions: own.iter().filter(|link| link.decision_final).count(),
            failing_portals: own
                .iter()
                .filter(|link| link.portal.is_none() && link.last_error.is_some())
                .count(),
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
            inbox: store.inbox_depth()?,
            pending_writes: store.pending_write_count(),
            pending_portals: links
                .iter()
                .filter(|link| link.portal.is_none() && link.is_open())
                .count(),
        },
        dead_letters: store.dead_letter_count(),
        parked: parked_items(store, &links)?,
        closed: links
            .iter()
            .filter_map(|link| {
                let closed = link.closed.as_ref()?;
                Some(ClosedStatus {
                    mapping: link.mapping.clone(),
                    account_id: link.account_id.clone(),
                    reason: closed.reason.clone(),
                    at: closed.at,
                })
            })
            .collect(),
    })
}

// ---------------------------------------------------------------- explain

/// One Account's story (`explain`, `GET /admin/explain/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub account_id: String,
    pub links: Vec<LinkSummary>,
    pub pending_write: Option<PendingWrite>,
    pub dead_letters: Vec<DeadLetter>,
    /// Its items that keep failing, with their reasons and retry times.
    #[serde(default)]
    pub parked: Vec<ParkedStatus>,
    /// Oldest first.
    pub journal: Vec<JournalEntry>,
}

/// Where one Account stands in one mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    pub mapping: String,
    pub intent_at: DateTime<Utc>,
    pub portal_id: Option<String>,
    pub portal_url: Option<String>,
    pub application_id: Option<String>,
    pub decision_final: bool,
    pub portal_attempts: u32,
    pub last_error: Option<String>,
    /// Why the link is closed (its Account was deleted or merged away).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
}

/// Key prefixes (an Id's first three characters name its object) people
/// paste by mistake where an Account Id belongs.
const OTHER_OBJECT_PREFIXES: &[(&str, &str)] = &[
    ("003", "Contact"),
    ("00Q", "Lead"),
    ("005", "User"),
    ("006", "Opportunity"),
    ("500", "Case"),
];

/// Account Ids start with this key prefix (Person Accounts too).
const ACCOUNT_PREFIX: &str = "001";

/// [`canonical_id`] of an Id that must be an Account's: a Contact's or a
/// Lead's is refused with the reason.
pub fn account_id(id: &str) -> Result<String, OperationError> {
    let id = canonical_id(id)?;
    let prefix = &id[..ACCOUNT_PREFIX.len()];
    if prefix == ACCOUNT_PREFIX {
        return Ok(id);
    }
    let reason = match OTHER_OBJECT_PREFIXES
        .iter()
        .find(|(known, _)| *known == prefix)
    {
        Some((_, object)) => format!(
            "it starts with {prefix}, so it is a {object} Id; give the Id of the Account (it starts with {ACCOUNT_PREFIX})"
        ),
        None => format!("it starts with {prefix}, and Account Ids start with {ACCOUNT_PREFIX}"),
    };
    Err(OperationError::NotAnAccount { id, reason })
}

/// Checks the shape of a Salesforce Id and answers its 18-character form,
/// the one the API returns and the store keys on (people often copy the
/// 15-character form from a Salesforce Classic URL).
pub fn canonical_id(id: &str) -> Result<String, OperationError> {
    if !soql::is_valid_id(id) {
        return Err(OperationError::MalformedId { id: id.to_owned() });
    }
    if id.len() == 18 {
        return Ok(id.to_owned());
    }
    // The suffix encodes, five characters at a time, which are upper case.
    const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut full = id.to_owned();
    for chunk in id.as_bytes().chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, byte)| byte.is_ascii_uppercase())
            .fold(0usize, |bits, (position, _)| bits | 1 << position);
        full.push(char::from(SUFFIX_ALPHABET[bits]));
    }
    Ok(full)
}

/// Everything recorded about one Account.
pub fn explain(store: &Store, account_id: &str) -> Result<Explanation, OperationError> {
    let account_id = self::account_id(account_id)?;
    let account_id = account_id.as_str();
    let links = store.links_of_account(account_id)?;
    let journal = store.journal_of(account_id)?;
    if links.is_empty() && journal.is_empty() {
        return Err(OperationError::NothingRecorded {
            id: account_id.to_owned(),
        });
    }
    let parked = parked_items(store, &links)?
        .into_iter()
        .filter(|item| item.account_id.as_deref() == Some(account_id))
        .collect();
    Ok(Explanation {
        account_id: account_id.to_owned(),
        parked,
        links: links
            .into_iter()
            .map(|link| LinkSummary {
                portal_id: link.portal.as_ref().map(|portal| portal.id.clone()),
                portal_url: link.portal.as_ref().and_then(|portal| portal.url.clone()),
                mapping: link.mapping,
                intent_at: link.intent_at,
                application_id: link.application_id,
                decision_final: link.decision_final,
                portal_attempts: link.portal_attempts,
                last_error: link.last_error,
                closed: link.closed.map(|closed| closed.reason),
            })
            .collect(),
        pending_write: store.pending_write(account_id)?,
        dead_letters: store
            .dead_letters()?
            .into_iter()
            .filter(|letter| letter.account_id == account_id)
            .collect(),
        journal,
    })
}

// ---------------------------------------------------------------- dead letters

/// Which dead letters to retry (`{"ids":[..]}` or `{"all":true}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySelection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// What a retry did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryReport {
    /// The letters put back in the write queue.
    pub retried: Vec<DeadLetter>,
}

/// Retries the selected dead letters: the letters go, their refusals are
/// forgotten, and their Accounts are marked to be planned again from their
/// current link and application (the running engine does it at once, or at
/// its next reconcile when this runs offline): a letter's old values are
/// never replayed. Unknown ids refuse the whole request before anything
/// changes. Durable when it returns.
pub async fn retry_dead_letters(
    store: &Store,
    selection: &RetrySelection,
) -> Result<RetryReport, OperationError> {
    let letters = store.dead_letters()?;
    let chosen: Vec<DeadLetter> = match (selection.all, selection.ids.is_empty()) {
        (true, true) => letters,
        (false, false) => {
            let unknown: Vec<u64> = selection
                .ids
                .iter()
                .filter(|id| !letters.iter().any(|letter| letter.id == **id))
                .copied()
                .collect();
            if !unknown.is_empty() {
                return Err(OperationError::UnknownDeadLetters { ids: unknown });
            }
            letters
                .into_iter()
                .filter(|letter| selection.ids.contains(&letter.id))
                .collect()
        }
        _ => {
            return Err(OperationError::InvalidRequest(
                "name the dead letters to retry (ids) or all of them (all), not both and not neither".to_owned(),
            ));
        }
    };
    store.retry_dead_letters(&chosen)?;
    let at = now();
    for letter in &chosen {
        store.journal(
            &letter.account_id,
            &JournalEntry::new(
                at,
                letter.mappings.first().cloned(),
                "dead_letter_retried",
                format!(
                    "dead letter {} ({}) retried: the Account is planned again from its current state",
                    letter.id, letter.code,
                ),
                json!({ "refused": letter.fields, "kept": letter.kept }),
            ),
        )?;
        tracing::info!(account_id = %letter.account_id, dead_letter = letter.id, code = %letter.code, "dead letter retried; the account will be planned again");
    }
    store.flush().await?;
    Ok(RetryReport { retried: chosen })
}

// ---------------------------------------------------------------- resync

/// A resync as asked: `{"accounts":[..]}`, `{"since":"RFC 3339"}` or
/// `{"all":true}`, with an optional `mapping` and `dry_run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// With `accounts`: abandon each pending intent (one Ondorse refused,
    /// say) and start a fresh one from the Account as it is now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_intent: bool,
}

/// What a resync covers, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResyncScope {
    Accounts(Vec<String>),
    Since(DateTime<Utc>),
}

/// The forms `--since` accepts, for messages.
pub const SINCE_FORMS: &str = "RFC 3339 (2026-11-25T08:00:00Z, 2026-11-25T09:00:00+01:00), a UTC date-time (2026-11-25T08:00:00) or a UTC date (2026-11-25)";

/// Reads a `--since` value: RFC 3339, or a date-time or date taken as UTC.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, OperationError> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").map(|at| at.and_utc())
        })
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|date| date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| {
            OperationError::InvalidRequest(format!(
                "cannot read the time {text:?}; accepted forms: {SINCE_FORMS}"
            ))
        })
}

impl ResyncRequest {
    /// The scope, once exactly one of `accounts`, `since` and `all` is given
    /// and its values are well-formed.
    pub fn scope(&self) -> Result<ResyncScope, OperationError> {
        let given = usize::from(!self.accounts.is_empty())
            + usize::from(self.since.is_some())
            + usize::from(self.all);
        if given != 1 {
            return Err(OperationError::InvalidRequest(
                "say what to resync: some accounts, a since time, or all (exactly one)".to_owned(),
            ));
        }
        if self.new_intent && self.accounts.is_empty() {
            return Err(OperationError::InvalidRequest(
                "--new-intent applies to chosen accounts only: name them with --account".to_owned(),
            ));
        }
        if let Some(since) = &self.since {
            return Ok(ResyncScope::Since(parse_since(since)?));
        }
        if self.all {
            return Ok(ResyncScope::Since(DateTime::<Utc>::UNIX_EPOCH));
        }
        let mut ids = self
            .accounts
            .iter()
            .map(|id| account_id(id))
            .collect::<Result<Vec<String>, OperationError>>()?;
        ids.sort();
        ids.dedup();
        Ok(ResyncScope::Accounts(ids))
    }
}

/// One field a resync writes (or, in a dry run, would write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub account_id: String,
    pub mapping: String,
    pub field: String,
    /// What Salesforce holds now (as far as we know).
    pub from: Value,
    pub to: Value,
}

/// What a resync did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResyncReport {
    pub dry_run: bool,
    /// Matching Accounts read from Salesforce.
    pub accounts_read: usize,
    /// Accounts that had no portal and get (would get) one.
    pub new_portals: Vec<NewPortal>,
    /// Portals created during this resync.
    pub portals_created: usize,
    /// Portal creations that failed and wait for a retry.
    pub portals_failed: usize,
    /// Pending intents abandoned for a fresh one (`new_intent`).
    #[serde(default)]
    pub intents_renewed: usize,
    /// Fields queued for Salesforce (would be, in a dry run).
    pub changes: Vec<FieldChange>,
    /// Fields that cannot be written (dead letters, unless a dry run).
    pub refused: Vec<FieldChange>,
    pub applications_fetched: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewPortal {
    pub account_id: String,
    pub mapping: String,
}

/// Progress of a running resync, for a bar or a log line.
#[derive(Debug, Clone, PartialEq)]
pub struct ResyncProgress {
    pub done: u64,
    pub total: u64,
    /// What was just finished (an Account Id, a mapping name).
    pub item: String,
}

/// Lets one resync run at a time: two would fight over the same links and
/// queue the same writes twice.
#[derive(Debug, Default)]
pub struct ResyncGate {
    running_since: Mutex<Option<DateTime<Utc>>>,
}

/// Held while a resync runs; opens the gate when dropped.
pub struct ResyncTicket<'a> {
    gate: &'a ResyncGate,
}

impl ResyncGate {
    /// Enters, or says since when another resync runs.
    pub fn enter(&self) -> Result<ResyncTicket<'_>, OperationError> {
        let mut running = self
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(since) = *running {
            return Err(OperationError::ResyncRunning { since });
        }
        *running = Some(now());
        Ok(ResyncTicket { gate: self })
    }
}

impl Drop for ResyncTicket<'_> {
    fn drop(&mut self) {
        *self
            .gate
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl Engine {
    /// Runs a resync (the `resync` command and `POST /admin/resync`):
    ///
    /// - `accounts`: re-reads each Account (whatever the mapping's `select`
    ///   says now), re-fetches its application, and rewrites every mapped
    ///   field that differs from what Salesforce holds now; an Account
    ///   without a portal goes through intake like a push hint.
    /// - `since`/`all`: re-runs intake from that time in each mapping,
    ///   without moving cursors backwards; an Account that has a portal gets
    ///   no second one.
    ///
    /// A dry run reads the same data, runs the same planner and writes
    /// nothing anywhere.
    pub async fn resync(
        &self,
        _ticket: &ResyncTicket<'_>,
        request: &ResyncRequest,
        progress: &(dyn Fn(ResyncProgress) + Send + Sync),
    ) -> Result<ResyncReport, OperationError> {
        let scope = request.scope()?;
        let mappings: Vec<std::sync::Arc<Mapping>> = match &request.mapping {
            Some(name) => vec![
                self.mapping(name)
                    .map_err(|_| OperationError::UnknownMapping {
                        name: name.clone(),
                        loaded: self.mappings().names().map(str::to_owned).collect(),
                    })?,
            ],
            None => self.mappings().iter().cloned().collect(),
        };
        let mut report = ResyncReport {
            dry_run: request.dry_run,
            ..ResyncReport::default()
        };
        match scope {
            ResyncScope::Accounts(ids) => {
                self.resync_accounts(&mappings, &ids, request, &mut report, progress)
                    .await?
            }
            ResyncScope::Since(since) => {
                self.resync_since(&mappings, since, request.dry_run, &mut report, progress)
                    .await?
            }
        }
        if !request.dry_run {
            self.store.flush().await?;
            self.writes_queued.notify_one();
        }
        tracing::info!(
            dry_run = request.dry_run,
            accounts_read = report.accounts_read,
            new_portals = report.new_portals.len(),
            changes = report.changes.len(),
            refused = report.refused.len(),
            "resync finished"
        );
        Ok(report)
    }

    async fn resync_since(
        &self,
        mappings: &[std::sync::Arc<Mapping>],
        since: DateTime<Utc>,
        dry_run: bool,
        report: &mut ResyncReport,
        progress: &(dyn Fn(ResyncProgress) + Send + Sync),
    ) -> Result<(), OperationError> {
        let total = mappings.len() as u64;
        for (index, mapping) in mappings.iter().enumerate() {
            if dry_run {
                let mut pages = self
                    .salesforce
                    .query(Work::Intake, plan::intake_query(mapping, since));
                while let Some(records) = pages.next_page().await? {
                    report.accounts_read += records.len();
                    for record in records {
                        let Some(account_id) = record_id(&record) else {
                            continue;
                        };
                        if self.store.link(&mapping.name, &account_id)?.is_none() {
                            report.new_portals.push(NewPortal {
                                account_id,
                                mapping: mapping.name.clone(),
                            });
                        }
                    }
                }
            } else {
                let intake = self.intake_since(&mapping.name, since, false).await?;
                report.accounts_read += intake.accounts_seen;
                report.portals_created += intake.portals_created;
                report.portals_failed += intake.portals_failed;
            }
            progress(ResyncProgress {
                done: index as u64 + 1,
                total,
                item: mapping.name.clone(),
            });
        }
        Ok(())
    }

    async fn resync_accounts(
        &self,
        mappings: &[std::sync::Arc<Mapping>],
        ids: &[String],
        request: &ResyncRequest,
        report: &mut ResyncReport,
        progress: &(dyn Fn(ResyncProgress) + Send + Sync),
    ) -> Result<(), OperationError> {
        let (dry_run, new_intent) = (request.dry_run, request.new_intent);
        // Read everything first: an unknown Id refuses the whole request
        // before anything changes.
        let mut records: BTreeMap<String, Vec<(std::sync::Arc<Mapping>, Record)>> = BTreeMap::new();
        for mapping in mappings {
            for chunk in ids.chunks(IDS_PER_QUERY) {
                let mut pages = self
                    .salesforce
                    .query(Work::Intake, by_id_query(mapping, chunk));
                while let Some(page) = pages.next_page().await? {
                    for record in page {
                        if let Some(id) = record_id(&record) {
                            records
                                .entry(id)
                                .or_default()
                                .push((mapping.clone(), record));
                        }
                    }
                }
            }
        }
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| !records.contains_key(*id))
            .cloned()
            .collect();
        if !unknown.is_empty() && !mappings.is_empty() {
            return Err(OperationError::UnknownAccounts { ids: unknown });
        }
        let describe = self.describe().await?;
        let mut without_portal = Vec::new();
        let total = records.len() as u64;
        for (index, (account_id, found)) in records.into_iter().enumerate() {
            report.accounts_read += 1;
            for (mapping, record) in found {
                let Some(unlocked) = self.store.link(&mapping.name, &account_id)? else {
                    without_portal.push((mapping.name.clone(), account_id.clone()));
                    continue;
                };
                // Fetched before taking the link's lock: no lock is held
                // across a call to Ondorse.
                let application = match &unlocked.application_id {
                    Some(application_id) => match self.fetch_application(application_id).await {
                        Ok(application) => Some(application),
                        Err(SyncError::Ondorse(OndorseError::NotFound { .. })) => {
                            tracing::warn!(account_id = %account_id, application_id = %application_id, "ondorse does not know this application any more");
                            None
                        }
                        Err(error) => return Err(error.into()),
                    },
                    None => None,
                };
                let link_lock = self
                    .link_locks
                    .lock(&link_key(&mapping.name, &account_id))
                    .await;
                let Some(mut link) = self.store.link(&mapping.name, &account_id)? else {
                    without_portal.push((mapping.name.clone(), account_id.clone()));
                    continue;
                };
                if new_intent && link.portal.is_none() && !dry_run {
                    self.renew_intent(&mapping, &mut link, &record)?;
                    report.intents_renewed += 1;
                }
                let held = record_fields(&record);
                let known = self.store.planning_baseline(&account_id, &held)?;
                link.account = record;
                let application_value = application
                    .as_ref()
                    .map(|application| application.template_value());
                if application.is_some() {
                    report.applications_fetched += 1;
                }
                let context = WritebackContext {
                    account: &link.account,
                    portal: link.portal.as_ref().map(|portal| &portal.answer),
                    application: application_value.as_ref(),
                    collect: None,
                    now: now(),
                };
                // Later moments win: a decision overrides "portal sent".
                let mut moments = Vec::new();
                if link.portal.is_some() {
                    moments.push(Moment::PortalCreated);
                }
                if application.is_some() {
                    moments.push(Moment::Application);
                }
                let mut changed = Fields::new();
                let mut refused = Vec::new();
                for moment in moments {
                    if !mapping.writes_at(moment) {
                        continue;
                    }
                    let planned = match plan::plan_writeback(
                        &mapping, moment, &context, &describe, &known,
                    ) {
                        Ok(planned) => planned,
                        Err(error) => {
                            return Err(OperationError::InvalidRequest(format!(
                                "mapping `{}` cannot render {moment} for Account {account_id}: {error}",
                                mapping.name
                            )));
                        }
                    };
                    for field in &planned.unchanged {
                        changed.remove(field);
                    }
                    changed.extend(planned.changed);
                    refused.extend(planned.refused);
                }
                for (field, to) in &changed {
                    report.changes.push(FieldChange {
                        account_id: account_id.clone(),
                        mapping: mapping.name.clone(),
                        field: field.clone(),
                        from: held.get(field).cloned().unwrap_or(Value::Null),
                        to: to.clone(),
                    });
                }
                for field in &refused {
                    report.refused.push(FieldChange {
                        account_id: account_id.clone(),
                        mapping: mapping.name.clone(),
                        field: field.field.clone(),
                        from: held.get(&field.field).cloned().unwrap_or(Value::Null),
                        to: field.value.clone(),
                    });
                }
                let intent_pending = link.portal.is_none();
                if dry_run {
                    if intent_pending {
                        report.new_portals.push(NewPortal {
                            account_id: account_id.clone(),
                            mapping: mapping.name.clone(),
                        });
                    }
                    continue;
                }
                self.store.remember_fields(&account_id, &held)?;
                // Read under the link's lock: nobody changed it meanwhile.
                let mut current = link.clone();
                // Asked by hand: a parked intent is tried now (one refused
                // for good needs `--new-intent`).
                current.retry_at = None;
                if let Some(application) = &application {
                    current.application_id = Some(application.id.clone());
                    current.decision_final = application.is_final();
                }
                for field in &refused {
                    self.dead_letter_refused(&account_id, &mapping.name, field)?;
                }
                // The link and its fields land together, as in the daemon.
                self.store
                    .put_link_and_queue(&current, Some(&changed), now())?;
                self.journal(
                    &account_id,
                    Some(&mapping.name),
                    "resynced",
                    format!(
                        "manual resync: Account re-read{}; {} field(s) to write",
                        match &application {
                            Some(application) => format!(
                                ", application {} is {}",
                                application.id,
                                application
                                    .status_review
                                    .as_deref()
                                    .unwrap_or("not decided")
                            ),
                            None => String::new(),
                        },
                        changed.len()
                    ),
                    json!({ "read": held, "fields": changed }),
                )?;
                drop(link_lock);
                if intent_pending {
                    // Its portal creation failed before: try now (same
                    // intent, same request and key) rather than at reconcile.
                    self.store.flush().await?;
                    let created = self
                        .create_portals(&mapping, vec![account_id.clone()])
                        .await?;
                    report.new_portals.push(NewPortal {
                        account_id: account_id.clone(),
                        mapping: mapping.name.clone(),
                    });
                    report.portals_created += created.created;
                    report.portals_failed += created.failed;
                }
            }
            progress(ResyncProgress {
                done: index as u64 + 1,
                total,
                item: account_id.clone(),
            });
        }
        if without_portal.is_empty() {
            return Ok(());
        }
        // Accounts without a portal go through intake, which applies each
        // mapping's `select` and records durable intents.
        if dry_run {
            let hinted: Vec<String> = without_portal.iter().map(|(_, id)| id.clone()).collect();
            for mapping in mappings {
                let mut pages = self
                    .salesforce
                    .query(Work::Intake, plan::accounts_query(mapping, &hinted));
                while let Some(page) = pages.next_page().await? {
                    for record in page {
                        if let Some(account_id) = record_id(&record)
                            && without_portal
                                .iter()
                                .any(|(name, id)| *name == mapping.name && *id == account_id)
                        {
                            report.new_portals.push(NewPortal {
                                account_id,
                                mapping: mapping.name.clone(),
                            });
                        }
                    }
                }
            }
        } else {
            let hinted: Vec<String> = without_portal.into_iter().map(|(_, id)| id).collect();
            let intake = self.intake_accounts(&hinted).await?;
            report.portals_created += intake.portals_created;
            report.portals_failed += intake.portals_failed;
        }
        Ok(())
    }

    /// Abandons a pending intent for a fresh one: a new key and a request
    /// rendered from the Account as read now (the caller holds the link's
    /// lock). The old key may have created nothing (Ondorse refused it), so
    /// no second portal can come of it.
    fn renew_intent(
        &self,
        mapping: &Mapping,
        link: &mut Link,
        record: &Record,
    ) -> Result<(), OperationError> {
        let abandoned = link.idempotency_key.clone();
        let intent_at = now();
        link.idempotency_key = plan::idempotency_key(&mapping.name, &link.account_id, intent_at);
        link.intent_at = intent_at;
        link.request = mapping
            .portal_body(record)
            .ok()
            .map(|body| PortalRequest::freeze(&body));
        link.refused = false;
        link.retry_at = None;
        link.portal_attempts = 0;
        link.last_error = None;
        self.store.put_link(link)?;
        self.journal(
            &link.account_id,
            Some(&mapping.name),
            "intent_renewed",
            format!(
                "intent {abandoned} abandoned by hand; a fresh intent {} will create the portal",
                link.idempotency_key
            ),
            json!({ "abandoned_key": abandoned, "idempotency_key": link.idempotency_key }),
        )?;
        tracing::info!(account_id = %link.account_id, mapping = %mapping.name, "intent renewed by hand");
        Ok(())
    }

    /// Retries the selected dead letters and plans their Accounts again now.
    pub async fn retry_dead_letters(
        &self,
        selection: &RetrySelection,
    ) -> Result<RetryReport, OperationError> {
        let report = retry_dead_letters(&self.store, selection).await?;
        self.replan_marked().await?;
        Ok(report)
    }
}

/// Reads chosen Accounts with every field a mapping reads and writes,
/// whatever its `select` says (a resynced Account may no longer match it).
fn by_id_query(mapping: &Mapping, ids: &[String]) -> String {
    let fields = plan::query_fields(mapping);
    plan::fields_query(&mapping.object, fields.iter().map(String::as_str), ids)
}

fn record_id(record: &Record) -> Option<String> {
    record.get("Id").and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_the_documented_forms_and_names_them_otherwise() {
        let expected = DateTime::parse_from_rfc3339("2026-11-25T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for text in [
            "2026-11-25T08:00:00Z",
            "2026-11-25T09:00:00+01:00",
            "2026-11-25T08:00:00",
        ] {
            assert_eq!(parse_since(text).unwrap(), expected, "{text}");
        }
        assert_eq!(
            parse_since("2026-11-25").unwrap(),
            expected - chrono::Duration::hours(8)
        );
        let error = parse_since("yesterday").unwrap_err().to_string();
        assert!(
            error.contains("\"yesterday\"") && error.contains("RFC 3339"),
            "{error}"
        );
    }

    #[test]
    fn a_resync_request_names_exactly_one_scope() {
        let request = |json: Value| {
            serde_json::from_value::<ResyncRequest>(json)
                .unwrap()
                .scope()
        };
        assert!(request(json!({})).is_err());
        assert!(request(json!({"all": true, "since": "2026-01-01"})).is_err());
        assert_eq!(
            request(json!({"all": true})).unwrap(),
            ResyncScope::Since(DateTime::<Utc>::UNIX_EPOCH)
        );
        assert!(matches!(
            request(json!({"accounts": ["001-bad"]})),
            Err(OperationError::MalformedId { .. })
        ));
        assert_eq!(
            request(json!({"accounts": ["001000000000001AAA"]})).unwrap(),
            ResyncScope::Accounts(vec!["001000000000001AAA".to_owned()])
        );
        assert!(serde_json::from_value::<ResyncRequest>(json!({"everything": true})).is_err());
    }

    #[test]
    fn a_contact_or_lead_id_is_refused_where_an_account_id_belongs() {
        let refused = |id: &str| account_id(id).unwrap_err().to_string();
        assert_eq!(
            refused("003A0000006Vm9r"),
            "003A0000006Vm9rIAC is not an Account Id: it starts with 003, so it is a Contact Id; give the Id of the Account (it starts with 001)"
        );
        assert!(
            refused("00QA0000006Vm9rIAC").contains("so it is a Lead Id"),
            "{}",
            refused("00QA0000006Vm9rIAC")
        );
        assert!(refused("a01A0000006Vm9rIAC").contains("Account Ids start with 001"));
        assert_eq!(account_id("001A0000006Vm9r").unwrap(), "001A0000006Vm9rIAC");
    }

    #[test]
    fn fifteen_character_ids_get_their_checksum_suffix() {
        assert_eq!(
            canonical_id("001A0000006Vm9r").unwrap(),
            "001A0000006Vm9rIAC"
        );
        assert_eq!(
            canonical_id("001A0000006Vm9rIAC").unwrap(),
            "001A0000006Vm9rIAC"
        );
        assert_eq!(
            canonical_id("001000000000000").unwrap(),
            "001000000000000AAA"
        );
        assert!(matches!(
            canonical_id("001A0000006Vm9"),
            Err(OperationError::MalformedId { .. })
        ));
    }

    #[test]
    fn a_second_resync_is_refused_while_the_first_runs() {
        let gate = ResyncGate::default();
        let ticket = gate.enter().expect("the first enters");
        let refused = gate.enter().err().expect("the second is refused");
        assert!(refused.to_string().contains("already running"), "{refused}");
        drop(ticket);
        gate.enter().expect("the gate opens once the first is done");
    }
}
