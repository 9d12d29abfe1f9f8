//! The sync engine: intake, portals, write-back, decisions, reconcile.
//!
//! Every step is a method on [`Engine`] that tests, `resync` and the
//! scheduler call alike; [`Engine::run`] only wires them to timers and
//! wake-ups. The decisions themselves are pure functions in [`plan`].
//!
//! Durability follows one rule: nothing irreversible (a portal POST, a
//! cursor move, an inbox item marked done) happens before the store has
//! flushed the record that makes it recoverable.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::mapping::MappingSet;
use crate::ondorse::OndorseClient;
use crate::salesforce::SalesforceClient;
use crate::salesforce::model::SObjectDescribe;
use crate::store::{JournalEntry, Store, StoreError};

mod breaker;
pub mod budget;
mod decisions;
mod intake;
mod locks;
pub mod operations;
pub mod plan;
mod portals;
mod reconcile;
pub mod reload;
mod run;
mod writeback;

pub use budget::{BudgetSettings, BudgetState, PauseReason, Paused};
pub use decisions::InboxReport;
pub use intake::IntakeReport;
pub use reconcile::ReconcileReport;
pub use reload::{MappingHealth, Pause, ReloadOutcome, ReloadStatus};
pub use run::{RunningEngine, ScheduleHealth, ScheduleState, Schedules};
pub use writeback::WriteReport;

/// The Salesforce object every mapping reads and writes today.
pub const ACCOUNT: &str = "Account";

/// Tunables of the engine; defaults fit production, tests shorten delays.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How far behind its cursor each poll re-reads (late commits).
    pub overlap: Duration,
    /// Portal POSTs in flight at once: Ondorse publishes no rate limit, so
    /// stay gentle.
    pub portal_concurrency: usize,
    /// Application GETs in flight at once.
    pub fetch_concurrency: usize,
    /// A batch of fewer than 200 write-backs waits at most this long for
    /// company, so a backfill uses full sObject Collections calls.
    pub write_linger: Duration,
    /// First and longest delay between attempts of a retriable write-back.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Longest server-given `Retry-After` we honour; longer asks wait this.
    pub retry_after_cap: Duration,
    /// A retriable write-back failing this many times becomes a dead letter.
    pub max_write_attempts: u32,
    /// How often the inbox is looked at without a wake-up (a safety net).
    pub inbox_interval: Duration,
    /// The Salesforce API budget governor.
    pub budget: BudgetSettings,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            overlap: Duration::from_secs(crate::config::DEFAULT_OVERLAP_SECONDS),
            portal_concurrency: 16,
            fetch_concurrency: 16,
            write_linger: Duration::from_millis(500),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(5 * 60),
            retry_after_cap: Duration::from_secs(60),
            // With the cap above, about an hour of trying.
            max_write_attempts: 20,
            inbox_interval: Duration::from_secs(1),
            budget: BudgetSettings::default(),
        }
    }
}

impl EngineSettings {
    fn breaker(&self) -> breaker::BreakerSettings {
        breaker::BreakerSettings {
            base: self.retry_base,
            cap: self.retry_cap,
            retry_after_cap: self.retry_after_cap,
        }
    }
}

/// Why a sync step stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("salesforce: {0}")]
    Salesforce(#[from] crate::salesforce::SalesforceError),
    #[error("ondorse: {0}")]
    Ondorse(#[from] crate::ondorse::OndorseError),
    #[error("no mapping named `{0}` is loaded")]
    UnknownMapping(String),
    /// The mapping no longer matches the org (schema drift); see [`reload`].
    #[error("{0}")]
    MappingPaused(String),
    /// The API budget governor turned the step away; it runs again later.
    #[error(transparent)]
    Paused(#[from] Paused),
    /// The endpoint's breaker is open: no call was made.
    #[error("ondorse {endpoint} is backing off until {}", .until.to_rfc3339())]
    Deferred {
        endpoint: &'static str,
        until: DateTime<Utc>,
    },
}

impl SyncError {
    /// True when the same step may succeed later without anyone acting.
    pub fn is_retriable(&self) -> bool {
        match self {
            SyncError::Store(error) => error.is_retriable(),
            SyncError::Salesforce(error) => error.is_retriable(),
            SyncError::Ondorse(error) => error.is_retriable(),
            SyncError::UnknownMapping(_) | SyncError::MappingPaused(_) => false,
            SyncError::Paused(_) | SyncError::Deferred { .. } => true,
        }
    }

    /// True for a failure of our own store (not of the item being worked).
    pub fn is_store(&self) -> bool {
        matches!(self, SyncError::Store(_))
    }

    /// How long the server asked us to wait, when it said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncError::Ondorse(error) => error.retry_after(),
            _ => None,
        }
    }
}

/// The engine: clients, the ledger, the loaded mappings.
pub struct Engine {
    salesforce: SalesforceClient,
    ondorse: OndorseClient,
    store: Store,
    /// Consulted before every Salesforce step.
    budget: budget::Governor,
    /// Replaced whole on reload; steps take a snapshot (`mappings()`).
    mappings: RwLock<Arc<MappingSet>>,
    /// Account describe, fetched on first need: conversions need field types.
    describe: tokio::sync::RwLock<Option<Arc<SObjectDescribe>>>,
    /// Builds portal URLs from `link` when Ondorse answers no `url`.
    portal_base_url: String,
    settings: EngineSettings,
    /// Woken when write-backs are queued.
    writes_queued: Notify,
    /// Woken by the public listener when the inbox has something.
    inbox_wake: Arc<Notify>,
    /// One worker per (mapping, Account) link at a time: every path that
    /// reads, calls out for and rewrites a link holds its lock.
    link_locks: locks::KeyedLocks,
    /// One poll per mapping at a time, so a cursor is never moved by two.
    cursor_locks: locks::KeyedLocks,
    /// Portal creation backs off as a whole while Ondorse refuses it.
    portal_breaker: breaker::Breaker,
    /// Application fetches back off as a whole, apart from portals.
    application_breaker: breaker::Breaker,
    /// Woken when an intent was parked, so the deferred-intent loop looks
    /// at its retry time.
    intents_deferred: Notify,
    /// Refused reloads and mappings paused by schema drift, for `status`.
    health: reload::MappingHealth,
}

impl Engine {
    pub fn new(
        salesforce: SalesforceClient,
        ondorse: OndorseClient,
        store: Store,
        mappings: MappingSet,
        portal_base_url: String,
        settings: EngineSettings,
        inbox_wake: Arc<Notify>,
    ) -> Engine {
        Engine {
            budget: budget::Governor::new(salesforce.clone(), settings.budget.clone()),
            portal_breaker: breaker::Breaker::new("portal creation", settings.breaker()),
            application_breaker: breaker::Breaker::new("application fetch", settings.breaker()),
            salesforce,
            ondorse,
            store,
            mappings: RwLock::new(Arc::new(mappings)),
            describe: tokio::sync::RwLock::new(None),
            portal_base_url,
            settings,
            writes_queued: Notify::new(),
            inbox_wake,
            link_locks: locks::KeyedLocks::default(),
            cursor_locks: locks::KeyedLocks::default(),
            intents_deferred: Notify::new(),
            health: reload::MappingHealth::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn salesforce(&self) -> &SalesforceClient {
        &self.salesforce
    }

    /// What the API budget governor is doing (for `status`).
    pub fn budget_state(&self) -> BudgetState {
        self.budget.state()
    }

    /// The API budget governor, for callers that use
    /// [`Engine::salesforce`] directly and must ask it first.
    pub fn budget(&self) -> &budget::Governor {
        &self.budget
    }

    /// The mappings in force now.
    pub fn mappings(&self) -> Arc<MappingSet> {
        self.mappings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts a new, validated set of mappings in force for the next steps.
    pub fn replace_mappings(&self, mappings: MappingSet) {
        *self
            .mappings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(mappings);
    }

    /// The Account describe, fetched once (and again after [`Engine::forget_describe`]).
    pub async fn describe(&self) -> Result<Arc<SObjectDescribe>, SyncError> {
        if let Some(describe) = self.describe.read().await.as_ref() {
            return Ok(describe.clone());
        }
        let mut slot = self.describe.write().await;
        if let Some(describe) = slot.as_ref() {
            return Ok(describe.clone());
        }
        self.budget.admit(budget::Work::Lookup).await?;
        let describe = Arc::new(self.salesforce.describe(ACCOUNT).await?);
        *slot = Some(describe.clone());
        Ok(describe)
    }

    /// Drops the cached describe (a field vanished, a reload).
    pub async fn forget_describe(&self) {
        *self.describe.write().await = None;
    }

    /// How long an item (intent, inbox item) waits after its `attempts`-th
    /// failure: doubling from `retry_base` up to `retry_cap`.
    fn park_delay(&self, attempts: u32) -> chrono::Duration {
        let doubled = self
            .settings
            .retry_base
            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)));
        chrono::Duration::from_std(doubled.min(self.settings.retry_cap)).unwrap_or_default()
    }

    /// The delay after the `attempts`-th failure of an item: its growing
    /// backoff, or the server's `Retry-After` when longer, capped at
    /// `retry_after_cap`.
    fn retry_delay(&self, attempts: u32, retry_after: Option<Duration>) -> chrono::Duration {
        let backoff = self.park_delay(attempts);
        let asked = retry_after
            .map(|asked| asked.min(self.settings.retry_after_cap))
            .and_then(|asked| chrono::Duration::from_std(asked).ok())
            .unwrap_or_default();
        backoff.max(asked)
    }

    /// Appends to an Account's journal.
    fn journal(
        &self,
        account_id: &str,
        mapping: Option<&str>,
        step: &str,
        summary: String,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.store.journal(
            account_id,
            &JournalEntry::new(now(), mapping.map(str::to_owned), step, summary, detail),
        )
    }
}

/// The wall clock, in one place.
fn now() -> DateTime<Utc> {
    Utc::now()
}
