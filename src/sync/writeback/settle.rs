//! Settling each record of a write by what Salesforce answered: written,
//! retried with backoff, gone (merged or deleted), or a dead letter; and
//! reading Accounts back when a call's outcome is unknown.

use std::collections::BTreeSet;

use serde_json::json;

use super::WriteReport;
use crate::salesforce::{Disposition, RecordError, SalesforceError};
use crate::store::{Fields, PendingWrite, WriteSettlement};
use crate::sync::budget::Work;
use crate::sync::gone::Fate;
use crate::sync::{ACCOUNT, Engine, SyncError, now, plan};
use crate::telemetry::WritebackResult;

impl Engine {
    /// Settles one record by what Salesforce answered for it.
    pub(super) async fn settle_outcome(
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
    pub(super) async fn settle_unknown(
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
        self.metrics.writeback(
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
            Ok(Fate::Alive) => self.retry_later(
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
        // No attempt number nor retry time in the entry: the same answer
        // again is one entry with a count (the pending write holds when).
        self.journal(
            &pending.account_id,
            None,
            "write_retry",
            format!("Salesforce answered {message}; retried with a growing delay"),
            json!({ "code": code }),
        )?;
        tracing::info!(account_id = %pending.account_id, %code, attempt, "write-back will be retried");
        report.retried += 1;
        self.metrics.writeback(
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
        self.metrics.writeback(
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

/// Whether Salesforce holds every value of `sent`.
fn landed(sent: &Fields, held: &Fields) -> bool {
    sent.iter().all(|(name, value)| {
        held.iter()
            .any(|(field, held)| field.eq_ignore_ascii_case(name) && held == value)
    })
}
