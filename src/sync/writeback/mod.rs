//! Write-back as a sink: a batcher, a request builder and a retrying
//! service (vector's shape).
//!
//! - The writer loop (`writer`) keeps up to `[salesforce]
//!   max_concurrent_requests` calls in flight, never two for one Account.
//!   Whenever it has a free call it asks the batcher for the due pending
//!   writes, already coalesced per Account by the store, at most
//!   [`BATCH_SIZE`] a call, those due first first. The batcher chooses from
//!   the store's in-memory view of when each write is due and reads only
//!   the chosen ones, so a free call costs no scan of the pending writes.
//!   A decision goes at once, decisions waiting together spread over the
//!   free calls (records pile up into one call
//!   only while every call is busy); portal links alone wait up to
//!   `[salesforce] link_batch_wait_seconds` for company, so a backfill
//!   sends full calls. There is no fixed wait.
//! - The request builder turns them into one sObject Collections update
//!   (`PATCH /composite/sobjects`, `allOrNone: false`), or for a lone
//!   record one `PATCH /sobjects/Account/{id}`: one call either way.
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

mod collection;
mod replan;
mod settle;
mod writer;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use super::retry::Endpoint;
use super::{ACCOUNT, Engine, SyncError, now};
use crate::salesforce::{RecordUpdate, SalesforceError};
use crate::store::{DueWrite, PendingWrite, Urgency};

pub(super) use collection::CollectionHealth;

/// sObject Collections takes at most 200 records a call.
pub const BATCH_SIZE: usize = 200;
/// How often a writer that fell back to single-record updates tries a batch
/// again: rarely enough that a broken endpoint costs little, often enough
/// that a recovered one is back to 200 records a call within minutes.
pub const DEFAULT_COLLECTION_PROBE: Duration = Duration::from_secs(300);

/// What the batcher found.
pub(super) enum Batch {
    /// Send these now, in one call.
    Send(Vec<PendingWrite>),
    /// Only links are due: they wait this long for company.
    Linger(Duration),
    /// Nothing is due.
    Idle,
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

    /// One pass of the writer over everything due, one call at a time:
    /// what [`Engine::flush_writes`] runs (the running engine's writer loop
    /// sends calls side by side, see `writer`).
    pub(super) async fn write_pass(&self, force: bool) -> Result<WriteReport, SyncError> {
        let mut report = WriteReport::default();
        loop {
            let Batch::Send(batch) = self.next_batch(force, &HashSet::new(), 1)? else {
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

    /// The batcher: up to [`BATCH_SIZE`] due writes, one per Account, none
    /// of `in_flight`. Writes that must go now (decisions) go at once, on
    /// their own, so a decision never waits for links nor pays for a long
    /// call; they are spread over the `free_calls` that can start now (each
    /// alone while there are calls enough), since a batched call takes
    /// longer and its latency spreads more than a single-record update's.
    /// Links alone go once a call is full or the oldest has waited
    /// `[salesforce] link_batch_wait_seconds`; with `force`, everything
    /// due goes.
    pub(super) fn next_batch(
        &self,
        force: bool,
        in_flight: &HashSet<String>,
        free_calls: usize,
    ) -> Result<Batch, SyncError> {
        let free = |account_id: &str| !in_flight.contains(account_id);
        let send = |chosen: &[DueWrite]| -> Result<Batch, SyncError> {
            let batch = self.store.pending_writes(chosen)?;
            Ok(if batch.is_empty() {
                Batch::Idle
            } else {
                Batch::Send(batch)
            })
        };
        if force {
            return send(&self.store.due_writes_where(now(), BATCH_SIZE, None, free));
        }
        let mut urgent = self
            .store
            .due_writes_where(now(), BATCH_SIZE, Some(Urgency::Now), free);
        if !urgent.is_empty() {
            urgent.truncate(urgent.len().div_ceil(free_calls.max(1)));
            return send(&urgent);
        }
        let links = self.store.due_writes_where(now(), BATCH_SIZE, None, free);
        let Some(oldest) = links.iter().map(|due| due.queued_at).min() else {
            return Ok(Batch::Idle);
        };
        let waited = (now() - oldest).to_std().unwrap_or_default();
        match self.settings.link_batch_wait.checked_sub(waited) {
            Some(left) if !left.is_zero() && links.len() < BATCH_SIZE => Ok(Batch::Linger(left)),
            _ => send(&links),
        }
    }

    /// Sends one batch and settles it; false when the writer must pause
    /// (nothing of the batch was settled unless Salesforce was re-read).
    pub(super) async fn write_batch(
        &self,
        batch: Vec<PendingWrite>,
        report: &mut WriteReport,
    ) -> Result<bool, SyncError> {
        // A lone record goes as one single-record update: one call either
        // way, and its latency spreads less than a collection call's.
        if batch.len() == 1 || !self.collection.use_collection() {
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
