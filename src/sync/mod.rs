//! The sync engine: intake, portals, write-back, decisions, reconcile.
//!
//! Every step is a method on [`Engine`] that tests, `resync` and the
//! scheduler call alike; [`Engine::start`] only wires them to timers and
//! wake-ups. The decisions themselves are pure functions in [`plan`].
//!
//! Durability follows one rule: nothing irreversible (a portal POST, a
//! cursor move, an inbox item marked done) happens before the store has
//! flushed the record that makes it recoverable.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::config::Config;
use crate::mapping::{self, MappingSet};
use crate::ondorse::{OndorseClient, OndorseError};
use crate::salesforce::SalesforceClient;
use crate::salesforce::model::SObjectDescribe;
use crate::store::{JournalEntry, Retention, Store, StoreError};
use crate::telemetry::Metrics;

pub mod budget;
pub mod clock;
mod decisions;
mod gone;
pub mod governed;
mod governed_ondorse;
mod inbox;
mod intake;
mod locks;
pub mod online_check;
pub mod operations;
pub mod plan;
mod portals;
mod reconcile;
pub mod reload;
pub mod retry;
mod run;
mod schedules;
mod writeback;

pub use budget::{BudgetSettings, BudgetState, PauseReason, Paused};
pub use decisions::InboxReport;
pub use intake::IntakeReport;
pub use reconcile::ReconcileReport;
pub use reload::{MappingHealth, Pause, ReloadOutcome, ReloadStatus};
pub use retry::{BreakerOpen, BreakerState, Endpoint, RetryPolicy, RetrySettings};
pub use run::RunningEngine;
pub use schedules::{PollFailure, PollFailures, ScheduleHealth, ScheduleState, Schedules};
pub use writeback::WriteReport;

/// The Salesforce object every mapping reads and writes today.
pub const ACCOUNT: &str = "Account";

/// Tunables of the engine; defaults fit production, tests shorten delays.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How far behind its cursor each poll re-reads (late commits).
    pub overlap: Duration,
    /// Portal POSTs in flight at once (`[ondorse] max_concurrent_requests`;
    /// set from the configuration).
    pub ondorse_concurrency: usize,
    /// Application reads in flight at once (`[ondorse]
    /// max_concurrent_reads`; set from the configuration).
    pub ondorse_reads: usize,
    /// Write-back calls the writer keeps in flight (`[salesforce]
    /// max_concurrent_requests`; set from the configuration).
    pub write_calls: usize,
    /// How long portal links alone wait to fill a write-back call
    /// (`[salesforce] link_batch_wait_seconds`; set from the configuration).
    pub link_batch_wait: Duration,
    /// How often the inbox is looked at without a wake-up (a safety net).
    pub inbox_interval: Duration,
    /// While the writer sends one update per record because sObject
    /// Collections answers were unreadable, how often it tries a batch again.
    pub collection_probe: Duration,
    /// The Salesforce API budget governor.
    pub budget: BudgetSettings,
    /// How long the journal keeps evidence (`[store] retention_days`);
    /// reconcile prunes it.
    pub retention: Retention,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            overlap: Duration::from_secs(crate::config::DEFAULT_OVERLAP_SECONDS),
            ondorse_concurrency: crate::config::DEFAULT_ONDORSE_MAX_CONCURRENT_REQUESTS,
            ondorse_reads: crate::config::DEFAULT_ONDORSE_MAX_CONCURRENT_READS,
            write_calls: crate::config::DEFAULT_SALESFORCE_MAX_CONCURRENT_REQUESTS,
            link_batch_wait: Duration::from_secs(crate::config::DEFAULT_LINK_BATCH_WAIT_SECONDS),
            inbox_interval: Duration::from_secs(1),
            collection_probe: writeback::DEFAULT_COLLECTION_PROBE,
            budget: BudgetSettings::default(),
            retention: Retention::default(),
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
    /// The endpoint's breaker is open: work on it waits as a whole.
    #[error(transparent)]
    Backoff(#[from] BreakerOpen),
}

impl SyncError {
    /// True when the same step may succeed later without anyone acting.
    pub fn is_retriable(&self) -> bool {
        match self {
            SyncError::Store(error) => error.is_retriable(),
            SyncError::Salesforce(error) => error.is_retriable(),
            SyncError::Ondorse(error) => error.is_retriable(),
            SyncError::UnknownMapping(_) | SyncError::MappingPaused(_) => false,
            SyncError::Paused(_) | SyncError::Backoff(_) => true,
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
    /// The only way to Salesforce: every call asks the budget governor.
    salesforce: governed::GovernedSalesforce,
    /// The only way to Ondorse: a call slot, then the breaker, every call.
    ondorse: governed_ondorse::GovernedOndorse,
    store: Store,
    /// The retry policy and a breaker per endpoint: work on a failing
    /// endpoint waits as a whole.
    breakers: Arc<retry::Breakers>,
    /// Replaced whole on reload; steps take a snapshot (`mappings()`).
    mappings: RwLock<Arc<MappingSet>>,
    /// Account describe, fetched on first need: conversions need field types.
    describe: tokio::sync::RwLock<Option<Arc<SObjectDescribe>>>,
    /// Builds portal URLs from `link` when Ondorse answers no `url`.
    portal_base_url: String,
    settings: EngineSettings,
    /// Woken when write-backs are queued.
    writes_queued: Notify,
    /// Woken when portal links are queued: the writer looks again only once
    /// enough are pending to fill a call (links may wait).
    links_queued: Notify,
    /// Woken when an intake run ends: links lingering for company go now,
    /// since no more are coming from it.
    intake_finished: Notify,
    /// Woken by the public listener when the inbox has something.
    inbox_wake: Arc<Notify>,
    /// One worker per (mapping, Account) link at a time: every path that
    /// reads, calls out for and rewrites a link holds its lock.
    link_locks: locks::KeyedLocks,
    /// One poll per mapping at a time, so a cursor is never moved by two.
    cursor_locks: locks::KeyedLocks,
    /// Woken when an intent was parked, so the deferred-intent loop looks
    /// at its retry time.
    intents_deferred: Notify,
    /// Refused reloads and mappings paused by schema drift, for `status`.
    health: reload::MappingHealth,
    /// Whether sObject Collections answers are readable, or the writer
    /// falls back to one update per record.
    collection: writeback::CollectionHealth,
    /// The daemon's registry, shared with both clients and the listeners.
    metrics: Metrics,
}

/// Why an engine could not be built from the configuration: the
/// operator must fix it. Every problem found, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// What the configuration gives an engine, checked before the store is
/// opened or a socket bound: the store path, the mappings and both
/// clients. `check` builds the same as `run`, so it refuses whatever `run`
/// would refuse as configuration.
pub struct Prepared {
    pub mappings: MappingSet,
    pub salesforce: SalesforceClient,
    pub ondorse: OndorseClient,
    /// The registry both clients count in, and the engine after them: one
    /// per composition, so each daemon's `/metrics` shows its own work.
    pub metrics: Metrics,
}

impl Prepared {
    /// The store path, the mappings and both clients (with a new metrics
    /// registry); every problem at once.
    pub fn new(config: &Config) -> Result<Prepared, BuildError> {
        let metrics = Metrics::new();
        let mut problems = Vec::new();
        if let Err(problem) = config.check_store_path() {
            problems.push(problem);
        }
        let mappings = mapping::load_dir(&config.mappings.dir)
            .map_err(|diagnostics| problems.push(diagnostics.to_string()))
            .ok();
        let source = config.source.display();
        let salesforce = SalesforceClient::new(&config.salesforce, metrics.clone())
            .map_err(|error| problems.push(format!("{source}: {error}")))
            .ok();
        let ondorse = OndorseClient::new(&config.ondorse, metrics.clone())
            .map_err(|error| {
                // Pointed at the key the client names (`ondorse.api_key_file`).
                let at = match &error {
                    OndorseError::InvalidConfig { key, .. } => key
                        .split_once('.')
                        .map(|(section, key)| config.origins.of(section, key)),
                    _ => None,
                };
                let at = at.unwrap_or_else(|| source.to_string());
                problems.push(format!("{at}: {error}"));
            })
            .ok();
        match (mappings, salesforce, ondorse) {
            (Some(mappings), Some(salesforce), Some(ondorse)) if problems.is_empty() => {
                Ok(Prepared {
                    mappings,
                    salesforce,
                    ondorse,
                    metrics,
                })
            }
            _ => Err(BuildError(problems.join("\n"))),
        }
    }
}

/// What [`Engine::from_config`] takes besides the configuration.
pub struct EngineParts {
    /// The ledger, opened by the caller (the daemon shares it with its
    /// listeners; offline commands get it from `cli::access`).
    pub store: Store,
    /// Tunables the configuration does not carry (tests shorten them).
    pub settings: EngineSettings,
    /// Woken by the public listener when the inbox has something.
    pub inbox_wake: Arc<Notify>,
}

impl Engine {
    /// An engine from the configuration alone: [`Prepared::new`], then
    /// [`Engine::from_prepared`]. The offline commands and the tests come
    /// through here.
    pub fn from_config(config: &Config, parts: EngineParts) -> Result<Engine, BuildError> {
        Ok(Engine::from_prepared(config, Prepared::new(config)?, parts))
    }

    /// The one way to build an engine: `run`, the offline commands, `demo`,
    /// the tests and the benches all come through here, so every engine
    /// honours the same configuration (`overlap_seconds`,
    /// `api_budget_percent`, `[retry]`). `run` prepares before it opens the
    /// store, so a configuration mistake is said before anything starts.
    pub fn from_prepared(config: &Config, prepared: Prepared, parts: EngineParts) -> Engine {
        let Prepared {
            mappings,
            salesforce,
            ondorse,
            metrics,
        } = prepared;
        // Rotated refresh tokens outlive the process, in the engine's store.
        salesforce.keep_refresh_tokens_in(Arc::new(parts.store.clone()));
        let settings = EngineSettings {
            overlap: config.schedule.overlap,
            ondorse_concurrency: config.ondorse.max_concurrent_requests,
            ondorse_reads: config.ondorse.max_concurrent_reads,
            write_calls: config.salesforce.max_concurrent_requests,
            link_batch_wait: config.salesforce.link_batch_wait,
            retention: config.store.retention,
            budget: BudgetSettings {
                budget_percent: config.salesforce.api_budget_percent,
                ..parts.settings.budget
            },
            ..parts.settings
        };
        let breakers = Arc::new(retry::Breakers::new(
            RetryPolicy::new(config.retry),
            clock::Clock::system(),
        ));
        Engine {
            salesforce: governed::GovernedSalesforce::new(
                salesforce,
                settings.budget.clone(),
                breakers.clone(),
                metrics.clone(),
                config.salesforce.max_concurrent_requests,
            ),
            ondorse: governed_ondorse::GovernedOndorse::new(
                ondorse,
                breakers.clone(),
                config.ondorse.max_concurrent_requests,
                config.ondorse.max_concurrent_reads,
            ),
            breakers,
            store: parts.store,
            mappings: RwLock::new(Arc::new(mappings)),
            describe: tokio::sync::RwLock::new(None),
            portal_base_url: config.ondorse.portal_base_url.clone(),
            settings,
            writes_queued: Notify::new(),
            links_queued: Notify::new(),
            intake_finished: Notify::new(),
            inbox_wake: parts.inbox_wake,
            link_locks: locks::KeyedLocks::default(),
            cursor_locks: locks::KeyedLocks::default(),
            intents_deferred: Notify::new(),
            health: reload::MappingHealth::default(),
            collection: writeback::CollectionHealth::default(),
            metrics,
        }
    }

    /// The registry this engine and its clients count in (`GET /metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Salesforce as the engine reaches it: through the budget governor.
    pub fn salesforce(&self) -> &governed::GovernedSalesforce {
        &self.salesforce
    }

    /// What the API budget governor is doing (for `status`).
    pub fn budget_state(&self) -> BudgetState {
        self.salesforce.budget_state()
    }

    /// The retry policy and the breaker of each endpoint.
    pub fn breakers(&self) -> &retry::Breakers {
        &self.breakers
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
        let describe = Arc::new(
            self.salesforce
                .describe(budget::Work::Lookup, ACCOUNT)
                .await?,
        );
        *slot = Some(describe.clone());
        Ok(describe)
    }

    /// Whether the describe is cached (using it calls out to no one).
    async fn describe_cached(&self) -> bool {
        self.describe.read().await.is_some()
    }

    /// Drops the cached describe (a field vanished, a reload).
    pub async fn forget_describe(&self) {
        *self.describe.write().await = None;
    }

    /// When an item (intent, inbox item) that failed `attempts` times in a
    /// row is tried again: the retry policy's growing delay, or the
    /// server's `Retry-After` (capped).
    fn retry_at(&self, attempts: u32, retry_after: Option<Duration>) -> DateTime<Utc> {
        self.breakers.policy().retry_at(attempts, retry_after)
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
