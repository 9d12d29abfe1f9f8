//! Write-back as a sink: a batcher, a request builder and a retrying
//! service (vector's shape).
//!
//! - The batcher takes the due pending writes, already coalesced per Account
//!   by the store, at most [`BATCH_SIZE`] a call, lingering a little for
//!   company so a backfill sends full calls.
//! - The request builder turns them into one sObject Collections update
//!   (`PATCH /composite/sobjects`, `allOrNone: false`).
//! - The service sends it through the governed client. A failure of the call
//!   itself (a refused login, a 401 after the token replay, a 403
//!   `API_DISABLED_FOR_ORG`, an HTML 503, an answer that cannot be read)
//!   opens the write breaker: the writer pauses with growing backoff and
//!   every record stays queued, however long it lasts. An answer that
//!   cannot be read is an unknown outcome: the Accounts' fields are read
//!   again to find out what landed before anything is decided.
//! - When collection answers keep breaking the contract (a 2xx with no
//!   body, fewer results than records, results about other records), the
//!   service falls back to one `PATCH /sobjects/Account/{id}` per record,
//!   with a warning, and tries a batch again every `collection_probe` until
//!   one is answered as the contract says ([`CollectionHealth`]).
//!
//! Each record's outcome is then settled on its own: written; retried with
//! backoff when Salesforce says so (`UNABLE_TO_LOCK_ROW`), never written off
//! after some number of attempts; or, when a human must act (a validation
//! rule, a restricted picklist), a dead letter recording the value
//! Salesforce kept, which planning does not send again until the inputs
//! change.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;

use super::budget::Work;
use super::retry::Endpoint;
use super::{ACCOUNT, Engine, SyncError, now, plan};
use crate::mapping::Moment;
use crate::salesforce::{Disposition, RecordError, RecordUpdate, SalesforceError};
use crate::store::{Fields, PendingWrite, WriteSettlement};
use crate::telemetry::{self, WritebackResult};

/// sObject Collections takes at most 200 records a call.
pub const BATCH_SIZE: usize = 200;
/// Unreadable collection answers in a row before the writer sends one
/// update per record: one can be a proxy's hiccup, two in a row is a habit.
const UNREADABLE_BEFORE_FALLBACK: u32 = 2;
/// How often a writer that fell back to single-record updates tries a batch
/// again: rarely enough that a broken endpoint costs little, often enough
/// that a recovered one is back to 200 records a call within minutes.
pub const DEFAULT_COLLECTION_PROBE: Duration = Duration::from_secs(300);

/// Whether sObject Collections answers can be read, or the writer sends
/// one update per record until a probe batch is answered properly.
#[derive(Debug, Default)]
pub(super) struct CollectionHealth {
    state: Mutex<CollectionState>,
}

#[derive(Debug, Default)]
struct CollectionState {
    /// Unreadable answers in a row.
    unreadable: u32,
    /// Set while falling back: when to try a batch again.
    probe_at: Option<Instant>,
}

impl CollectionHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, CollectionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the next batch goes as one collection update.
    fn use_collection(&self) -> bool {
        self.state()
            .probe_at
            .is_none_or(|probe_at| Instant::now() >= probe_at)
    }

    /// Whether the writer sends one update per record now.
    fn falling_back(&self) -> bool {
        self.state().probe_at.is_some()
    }

    /// A collection answer broke the contract.
    fn unreadable(&self, probe: Duration, error: &SalesforceError) {
        let mut state = self.state();
        state.unreadable += 1;
        if state.unreadable < UNREADABLE_BEFORE_FALLBACK {
            return;
        }
        if state.probe_at.is_none() {
            tracing::warn!(
                %error,
                unreadable = state.unreadable,
                probe_seconds = probe.as_secs(),
                "salesforce keeps answering sObject Collections updates in a way the contract does not allow; writing one record per call (PATCH /sobjects/Account/{{id}}) and trying a batch again later"
            );
        }
        state.probe_at = Some(Instant::now() + probe);
    }

    /// A collection answer was read as the contract says.
    fn readable(&self) {
        let mut state = self.state();
        state.unreadable = 0;
        if state.probe_at.take().is_some() {
            tracing::info!(
                "sObject Collections answers are readable again; the writer is back to batches"
            );
        }
    }
}

/// What one write pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub calls: usize,
    pub written: usize,
    pub retried: usize,
    pub dead_lettered: usize,
    /// Records whose Account is gone (merged or deleted): their links moved
    /// or closed, nothing dead-lettered.
    pub gone: usize,
    /// The pass stopped with work queued: the write breaker is open or the
    /// budget governor holds write-backs.
    pub paused: bool,
}

impl Engine {
    /// Sends every due write-back now, in full batches and one last partial.
    pub async fn flush_writes(&self) -> Result<WriteReport, SyncError> {
        self.write_pass(true).await
    }

    /// The writer's breaker: open while call-level failures pause it (for
    /// `status` and `/readyz`).
    pub fn writer_state(&self) -> super::BreakerState {
        self.breakers.get(Endpoint::SalesforceWrites).state()
    }

    /// Whether the writer sends one update per record because sObject
    /// Collections answers were unreadable.
    pub fn writer_falls_back(&self) -> bool {
        self.collection.falling_back()
    }

    /// One pass of the writer. Without `force`, a partial batch is sent only
    /// once its oldest entry has waited `write_linger`.
    pub(super) async fn write_pass(&self, force: bool) -> Result<WriteReport, SyncError> {
        let mut report = WriteReport::default();
        loop {
            let Some(batch) = self.next_batch(force)? else {
                break;
            };
            let full = batch.len() == BATCH_SIZE;
            if !self.write_batch(batch, &mut report).await? {
                report.paused = true;
                break;
            }
            if !full {
                break;
            }
        }
        Ok(report)
    }

    /// The batcher: up to [`BATCH_SIZE`] due writes, one per Account, or
    /// `None` when nothing is due or a partial batch should linger.
    fn next_batch(&self, force: bool) -> Result<Option<Vec<PendingWrite>>, SyncError> {
        let due = self.store.due_writes(now(), BATCH_SIZE)?;
        if due.is_empty() {
            return Ok(None);
        }
        let linger = chrono::Duration::from_std(self.settings.write_linger).unwrap_or_default();
        let oldest = due
            .iter()
            .map(|pending| pending.queued_at)
            .min()
            .unwrap_or_else(now);
        if due.len() < BATCH_SIZE && !force && now() - oldest < linger {
            return Ok(None);
        }
        Ok(Some(due))
    }

    /// Sends one batch and settles it; false when the writer must pause
    /// (nothing of the batch was settled unless Salesforce was re-read).
    async fn write_batch(
        &self,
        batch: Vec<PendingWrite>,
        report: &mut WriteReport,
    ) -> Result<bool, SyncError> {
        if !self.collection.use_collection() {
            return self.write_singly(&batch, report).await;
        }
        let updates = build_request(&batch);
        let outcomes = match self.salesforce.update_records(ACCOUNT, &updates).await {
            Ok(outcomes) => outcomes,
            // Turned away before any call: the batch waits untouched.
            Err(SyncError::Paused(_) | SyncError::Backoff(_)) => return Ok(false),
            Err(SyncError::Salesforce(error)) => {
                report.calls += 1;
                tracing::warn!(records = batch.len(), %error, "write-back call failed; the writer pauses and keeps every record queued");
                if let SalesforceError::UnexpectedAnswer { .. } = error {
                    self.collection
                        .unreadable(self.settings.collection_probe, &error);
                }
                if unknown_outcome(&error) {
                    self.settle_unknown(&batch, &error, report).await?;
                } else {
                    self.journal_call_failed(&batch, &error)?;
                }
                self.store.flush().await?;
                return Ok(false);
            }
            Err(other) => return Err(other),
        };
        report.calls += 1;
        self.collection.readable();
        for (pending, outcome) in batch.iter().zip(outcomes) {
            self.settle_outcome(pending, outcome.result, report).await?;
        }
        self.store.flush().await?;
        Ok(true)
    }

    /// Tells each Account of the batch that its write call failed, with the
    /// HTTP status Salesforce answered (`explain` shows it); the records
    /// stay queued. A repeat of the same failure counts on the same entry.
    /// (A call whose outcome is unknown is told by `settle_unknown`.)
    fn journal_call_failed(
        &self,
        batch: &[PendingWrite],
        error: &SalesforceError,
    ) -> Result<(), SyncError> {
        for pending in batch {
            self.journal(
                &pending.account_id,
                None,
                "write_call_failed",
                format!("the write-back call failed: {error}; kept queued while the writer pauses"),
                json!({ "fields": pending.fields, "http_status": error.http_status() }),
            )?;
        }
        Ok(())
    }

    /// The fallback service: one `PATCH /sobjects/Account/{id}` per record,
    /// each settled as its collection result would be. False when the
    /// writer must pause (the records not yet sent stay queued).
    async fn write_singly(
        &self,
        batch: &[PendingWrite],
        report: &mut WriteReport,
    ) -> Result<bool, SyncError> {
        let mut going = true;
        for (pending, update) in batch.iter().zip(build_request(batch)) {
            match self.salesforce.update_record(ACCOUNT, &update).await {
                Ok(outcome) => {
                    report.calls += 1;
                    self.settle_outcome(pending, outcome.result, report).await?;
                }
                Err(SyncError::Paused(_) | SyncError::Backoff(_)) => {
                    going = false;
                    break;
                }
                Err(SyncError::Salesforce(error)) => {
                    report.calls += 1;
                    tracing::warn!(account_id = %pending.account_id, %error, "single-record write-back failed; the writer pauses and keeps the record queued");
                    if unknown_outcome(&error) {
                        self.settle_unknown(std::slice::from_ref(pending), &error, report)
                            .await?;
                    } else {
                        self.journal_call_failed(std::slice::from_ref(pending), &error)?;
                    }
                    going = false;
                    break;
                }
                Err(other) => return Err(other),
            }
        }
        self.store.flush().await?;
        Ok(going)
    }

    /// Settles one record by what Salesforce answered for it.
    async fn settle_outcome(
        &self,
        pending: &PendingWrite,
        result: Result<(), Vec<RecordError>>,
        report: &mut WriteReport,
    ) -> Result<(), SyncError> {
        match result {
            Ok(()) => self.settle_written(pending, report),
            Err(errors)
                if errors
                    .iter()
                    .any(|error| error.disposition() == Disposition::Gone) =>
            {
                let code = errors
                    .iter()
                    .find(|error| error.disposition() == Disposition::Gone)
                    .map_or("ENTITY_IS_DELETED", |error| error.status_code.as_str());
                self.settle_gone(pending, code, &describe(&errors), report)
                    .await
            }
            Err(errors) => {
                let mappings: Vec<String> = pending.mappings.iter().cloned().collect();
                self.pause_on_write_drift(&mappings, &errors).await;
                self.record_failed(pending, &errors, report)
            }
        }
    }

    /// The call may have landed (its answer was lost or unreadable): read
    /// the Accounts' fields again and settle as written every record whose
    /// values Salesforce now holds; the others stay queued.
    async fn settle_unknown(
        &self,
        batch: &[PendingWrite],
        error: &SalesforceError,
        report: &mut WriteReport,
    ) -> Result<(), SyncError> {
        for pending in batch {
            self.journal(
                &pending.account_id,
                None,
                "write_unknown",
                format!("the write-back's outcome is unknown ({error}); reading the Account back to see what landed"),
                json!({ "fields": pending.fields, "http_status": error.http_status() }),
            )?;
        }
        let fields: BTreeSet<&str> = batch
            .iter()
            .flat_map(|pending| pending.fields.keys().map(String::as_str))
            .collect();
        let ids: Vec<String> = batch
            .iter()
            .map(|pending| pending.account_id.clone())
            .collect();
        let mut held = std::collections::BTreeMap::new();
        for soql in plan::fields_queries(ACCOUNT, fields.iter().copied(), &ids) {
            let mut pages = self.salesforce.query(Work::WriteBack, soql);
            loop {
                match pages.next_page().await {
                    Ok(Some(records)) => {
                        for record in records {
                            let fields = plan::record_fields(&record);
                            if let Some(id) = fields.get("Id").and_then(|id| id.as_str()) {
                                held.insert(id.to_owned(), fields.clone());
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(reread) => {
                        tracing::warn!(%error, %reread, "cannot read back an unknown write-back outcome; the records stay queued");
                        return Ok(());
                    }
                }
            }
        }
        for pending in batch {
            let Some(fields) = held.get(&pending.account_id) else {
                // Query no longer sees it: deleted or merged away.
                self.settle_gone(
                    pending,
                    "NOT_FOUND",
                    "the Account did not come back when read again",
                    report,
                )
                .await?;
                continue;
            };
            self.store.remember_fields(&pending.account_id, fields)?;
            if landed(&pending.fields, fields) {
                self.settle_written(pending, report)?;
            }
        }
        self.store.flush().await?;
        Ok(())
    }

    fn settle_written(
        &self,
        pending: &PendingWrite,
        report: &mut WriteReport,
    ) -> Result<(), SyncError> {
        self.store
            .settle_write(pending, &WriteSettlement::Written)?;
        self.journal(
            &pending.account_id,
            None,
            "written",
            format!("Salesforce accepted {} field(s)", pending.fields.len()),
            json!({ "fields": pending.fields }),
        )?;
        report.written += 1;
        telemetry::metrics().writeback(
            pending.mappings.iter().map(String::as_str),
            WritebackResult::Written,
        );
        Ok(())
    }

    fn record_failed(
        &self,
        pending: &PendingWrite,
        errors: &[RecordError],
        report: &mut WriteReport,
    ) -> Result<(), SyncError> {
        let retriable = !errors.is_empty()
            && errors
                .iter()
                .all(|error| error.disposition() == Disposition::Retry);
        let code = errors
            .first()
            .map_or("UNKNOWN", |error| error.status_code.as_str());
        let message = describe(errors);
        if retriable {
            self.retry_later(pending, &message, code, report)
        } else {
            self.dead_letter(pending, code, &message, report)
        }
    }

    /// The Account is gone (`ENTITY_IS_DELETED`..., or a read-back no longer
    /// sees it): never a dead letter.
    /// Its links move to the master it was merged into, or close; while
    /// the lookup cannot be made, the record waits its backoff.
    async fn settle_gone(
        &self,
        pending: &PendingWrite,
        code: &str,
        answer: &str,
        report: &mut WriteReport,
    ) -> Result<(), SyncError> {
        match self.account_gone(&pending.account_id, answer).await {
            Ok(super::gone::Fate::Alive) => self.retry_later(
                pending,
                &format!("{answer}, but queryAll shows the Account is there"),
                code,
                report,
            ),
            Ok(_) => {
                report.gone += 1;
                Ok(())
            }
            Err(SyncError::Store(error)) => Err(error.into()),
            Err(error) => self.retry_later(
                pending,
                &format!("{answer}; looking the Account up failed: {error}"),
                code,
                report,
            ),
        }
    }

    /// A record Salesforce asks to send again (a row lock): it waits its
    /// backoff and is never written off, however many attempts it takes.
    fn retry_later(
        &self,
        pending: &PendingWrite,
        message: &str,
        code: &str,
        report: &mut WriteReport,
    ) -> Result<(), SyncError> {
        let attempt = pending.attempts + 1;
        let not_before = self.breakers.policy().retry_at(attempt, None);
        self.store.settle_write(
            pending,
            &WriteSettlement::Retry {
                not_before,
                error: message.to_owned(),
            },
        )?;
        self.journal(
            &pending.account_id,
            None,
            "write_retry",
            format!(
                "Salesforce answered {message}; retrying at {}",
                not_before.to_rfc3339()
            ),
            json!({ "code": code, "attempt": attempt }),
        )?;
        tracing::info!(account_id = %pending.account_id, %code, attempt, "write-back will be retried");
        report.retried += 1;
        telemetry::metrics().writeback(
            pending.mappings.iter().map(String::as_str),
            WritebackResult::Retried,
        );
        Ok(())
    }

    fn dead_letter(
        &self,
        pending: &PendingWrite,
        code: &str,
        message: &str,
        report: &mut WriteReport,
    ) -> Result<(), SyncError> {
        let id = self
            .store
            .dead_letter_write(pending, code, message, now())?;
        self.journal(
            &pending.account_id,
            None,
            "dead_lettered",
            format!("Salesforce refused the write ({code}): {message} (dead letter {id})"),
            json!({ "code": code, "fields": pending.fields }),
        )?;
        tracing::warn!(account_id = %pending.account_id, %code, %message, dead_letter = id, "write-back dead-lettered");
        report.dead_lettered += 1;
        telemetry::metrics().writeback(
            pending.mappings.iter().map(String::as_str),
            WritebackResult::DeadLettered,
        );
        Ok(())
    }
}

/// Salesforce's per-record errors as one line.
fn describe(errors: &[RecordError]) -> String {
    errors
        .iter()
        .map(|error| format!("{}: {}", error.status_code, error.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The request builder: one update per Account, its pending fields.
fn build_request(batch: &[PendingWrite]) -> Vec<RecordUpdate> {
    batch
        .iter()
        .map(|pending| RecordUpdate {
            id: pending.account_id.clone(),
            fields: pending.fields.clone(),
        })
        .collect()
}

/// Whether the call may have been carried out although we cannot tell: the
/// answer could not be read, or it never came.
fn unknown_outcome(error: &SalesforceError) -> bool {
    matches!(
        error,
        SalesforceError::Decode { .. }
            | SalesforceError::UnexpectedAnswer { .. }
            | SalesforceError::Transport { .. }
    )
}

/// Whether Salesforce holds every value of `sent`.
fn landed(sent: &Fields, held: &Fields) -> bool {
    sent.iter().all(|(name, value)| {
        held.iter()
            .any(|(field, held)| field.eq_ignore_ascii_case(name) && held == value)
    })
}

impl Engine {
    /// Plans again, from the current link and the application's current
    /// state, every Account whose dead letters were retried (`dead-letters
    /// retry`, online or offline), so a retried letter never puts an old
    /// value back. Returns how many Accounts were planned.
    pub async fn replan_marked(&self) -> Result<usize, SyncError> {
        let replans = self.store.replans()?;
        if replans.is_empty() {
            return Ok(0);
        }
        for replan in &replans {
            let account_id = &replan.account_id;
            for mapping in self.mappings().iter() {
                let Some(link) = self.store.link(&mapping.name, account_id)? else {
                    continue;
                };
                if link.portal.is_some() {
                    let mut fields = self
                        .plan_moment(
                            mapping,
                            &link,
                            Moment::PortalCreated,
                            None,
                            None,
                            &Fields::new(),
                        )
                        .await?;
                    if link.application_id.is_some() {
                        // The application's fields come from its current
                        // state below.
                        plan::leave_to_later_moments(mapping, Moment::PortalCreated, &mut fields);
                    }
                    self.commit_link(&link, Moment::PortalCreated, fields)?;
                }
                if let Some(application_id) = &link.application_id {
                    self.refresh_application(application_id, false).await?;
                }
            }
            self.journal(
                account_id,
                None,
                "replanned",
                "dead letters retried: planned again from the current state".to_owned(),
                json!({ "mappings": replan.mappings }),
            )?;
            self.store.replanned(account_id)?;
        }
        self.store.flush().await?;
        self.writes_queued.notify_one();
        Ok(replans.len())
    }
}
