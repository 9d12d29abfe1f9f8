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

pub mod budget;
mod decisions;
mod intake;
pub mod online_check;
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
pub use run::{PollFailure, PollFailures, RunningEngine, ScheduleHealth, ScheduleState, Schedules};
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
            // With the cap above, about an hour of trying.
            max_write_attempts: 20,
            inbox_interval: Duration::from_secs(1),
            budget: BudgetSettings::default(),
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
}

impl SyncError {
    /// True when the same step may succeed later without anyone acting.
    pub fn is_retriable(&self) -> bool {
        match self {
            SyncError::Store(error) => error.is_retriable(),
            SyncError::Salesforce(error) => error.is_retriable(),
            SyncError::Ondorse(error) => error.is_retriable(),
            SyncError::UnknownMapping(_) | SyncError::MappingPaused(_) => false,
            SyncError::Paused(_) => true,
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
    /// One intake at a time (scheduled poll, hint, resync), so a cursor is
    /// never moved by two runs at once.
    intake_lock: tokio::sync::Mutex<()>,
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
            salesforce,
            ondorse,
            store,
            mappings: RwLock::new(Arc::new(mappings)),
            describe: tokio::sync::RwLock::new(None),
            portal_base_url,
            settings,
            writes_queued: Notify::new(),
            inbox_wake,
            intake_lock: tokio::sync::Mutex::new(()),
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
            &JournalEntry {
                at: now(),
                mapping: mapping.map(str::to_owned),
                step: step.to_owned(),
                summary,
                detail,
            },
        )
    }
}

/// The wall clock, in one place.
fn now() -> DateTime<Utc> {
    Utc::now()
}
