//! Write-back: pending fields go to Salesforce through sObject Collections
//! (`PATCH /composite/sobjects`, 200 records a call, `allOrNone: false`).
//! Each record's outcome is settled on its own: written, retried with
//! backoff, or dead-lettered with Salesforce's code and message.

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::budget::Work;
use super::{ACCOUNT, Engine, SyncError, now};
use crate::salesforce::{Disposition, RecordError, RecordUpdate, SalesforceError};
use crate::store::{PendingWrite, WriteSettlement};
use crate::telemetry::{self, WritebackResult};

/// sObject Collections takes at most 200 records a call.
pub const BATCH_SIZE: usize = 200;

/// What one write pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub calls: usize,
    pub written: usize,
    pub retried: usize,
    pub dead_lettered: usize,
}

impl Engine {
    /// Sends every due write-back now, in full batches and one last partial.
    pub async fn flush_writes(&self) -> Result<WriteReport, SyncError> {
        self.write_pass(true).await
    }

    /// One pass of the writer. Without `force`, a partial batch is sent only
    /// once its oldest entry has waited `write_linger`.
    pub(super) async fn write_pass(&self, force: bool) -> Result<WriteReport, SyncError> {
        let mut report = WriteReport::default();
        loop {
            if self.budget.admit(Work::WriteBack).await.is_err() {
                break;
            }
            let due = self.store.due_writes(now(), BATCH_SIZE)?;
            if due.is_empty() {
                break;
            }
            let full = due.len() == BATCH_SIZE;
            let linger = chrono::Duration::from_std(self.settings.write_linger).unwrap_or_default();
            let oldest = due
                .iter()
                .map(|pending| pending.queued_at)
                .min()
                .unwrap_or_else(now);
            if !full && !force && now() - oldest < linger {
                break;
            }
            self.write_batch(due, &mut report).await?;
            if !full {
                break;
            }
        }
        Ok(report)
    }

    async fn write_batch(
        &self,
        batch: Vec<PendingWrite>,
        report: &mut WriteReport,
    ) -> Result<(), SyncError> {
        let updates: Vec<RecordUpdate> = batch
            .iter()
            .map(|pending| RecordUpdate {
                id: pending.account_id.clone(),
                fields: pending.fields.clone(),
            })
            .collect();
        report.calls += 1;
        match self.salesforce.update_records(ACCOUNT, &updates).await {
            Ok(outcomes) => {
                for (pending, outcome) in batch.iter().zip(outcomes) {
                    match outcome.result {
                        Ok(()) => {
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
                        }
                        Err(errors) => {
                            let mappings: Vec<String> = pending.mappings.iter().cloned().collect();
                            self.pause_on_write_drift(&mappings, &errors).await;
                            self.record_failed(pending, &errors, report)?
                        }
                    }
                }
            }
            // The governor stops every call now; the batch waits untouched,
            // its attempts not spent.
            Err(SalesforceError::RequestLimitExceeded { .. }) => return Ok(()),
            Err(error) if error.is_retriable() => {
                tracing::warn!(records = batch.len(), %error, "write-back call failed; retrying later");
                for pending in &batch {
                    self.retry_or_give_up(
                        pending,
                        &error.to_string(),
                        error.error_code().unwrap_or("CALL_FAILED"),
                        error.http_status(),
                        report,
                    )?;
                }
            }
            Err(error) => {
                tracing::error!(records = batch.len(), %error, "write-back call refused");
                let code = error.error_code().unwrap_or("CALL_REFUSED").to_owned();
                for pending in &batch {
                    self.dead_letter(
                        pending,
                        &code,
                        &error.to_string(),
                        error.http_status(),
                        report,
                    )?;
                }
            }
        }
        self.store.flush().await?;
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
        let message = errors
            .iter()
            .map(|error| format!("{}: {}", error.status_code, error.message))
            .collect::<Vec<_>>()
            .join("; ");
        if retriable {
            // The call itself succeeded: the refusal is per record.
            self.retry_or_give_up(pending, &message, code, None, report)
        } else {
            self.dead_letter(pending, code, &message, None, report)
        }
    }

    fn retry_or_give_up(
        &self,
        pending: &PendingWrite,
        message: &str,
        code: &str,
        http_status: Option<u16>,
        report: &mut WriteReport,
    ) -> Result<(), SyncError> {
        if pending.attempts + 1 >= self.settings.max_write_attempts {
            let message = format!(
                "still failing after {} attempts: {message}",
                pending.attempts + 1
            );
            return self.dead_letter(pending, code, &message, http_status, report);
        }
        let not_before = self.retry_at(pending.attempts);
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
            json!({ "code": code, "attempt": pending.attempts + 1, "http_status": http_status }),
        )?;
        tracing::info!(account_id = %pending.account_id, %code, attempt = pending.attempts + 1, "write-back will be retried");
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
        http_status: Option<u16>,
        report: &mut WriteReport,
    ) -> Result<(), SyncError> {
        let id = self.store.add_dead_letter(
            &pending.account_id,
            pending.mappings.iter().cloned().collect(),
            pending.fields.clone(),
            code,
            message,
            now(),
        )?;
        self.store
            .settle_write(pending, &WriteSettlement::Abandoned)?;
        self.journal(
            &pending.account_id,
            None,
            "dead_lettered",
            format!("Salesforce refused the write ({code}): {message} (dead letter {id})"),
            json!({ "code": code, "fields": pending.fields, "http_status": http_status }),
        )?;
        tracing::warn!(account_id = %pending.account_id, %code, %message, dead_letter = id, "write-back dead-lettered");
        report.dead_lettered += 1;
        telemetry::metrics().writeback(
            pending.mappings.iter().map(String::as_str),
            WritebackResult::DeadLettered,
        );
        Ok(())
    }

    /// When attempt `attempts + 1` may run: exponential from `retry_base`,
    /// capped at `retry_cap`, with jitter so locked rows do not retry in step.
    fn retry_at(&self, attempts: u32) -> DateTime<Utc> {
        let delay = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(self.settings.retry_cap)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts as usize)
            .unwrap_or(self.settings.retry_cap);
        now() + chrono::Duration::from_std(delay).unwrap_or_default()
    }
}
