//! Reconcile: the safety net behind webhooks. Due intents get their portal,
//! portals whose write-back was not planned yet get it, undecided
//! applications are re-fetched and written back if they changed, old
//! webhook ids are forgotten.

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use serde_json::Value;

use super::budget::Work;
use super::decisions::Refreshed;
use super::locks::link_key;
use super::{Engine, SyncError, now};
use crate::store::{LinkState, StoreError};

/// What one reconcile pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub intents_retried: usize,
    pub portals_created: usize,
    pub applications_checked: usize,
    pub applications_failed: usize,
}

/// What one look at the pending intents did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct IntentsReport {
    /// Due intents attempted.
    pub attempted: usize,
    pub created: usize,
    /// Intents parked now (refused ones included).
    pub parked: usize,
    /// The earliest retry time among intents still parked (refused ones
    /// wait for an operator and have none).
    pub next_retry: Option<DateTime<Utc>>,
}

impl Engine {
    pub async fn reconcile(&self) -> Result<ReconcileReport, SyncError> {
        self.salesforce.may_run(Work::Reconcile).await?;
        // Deleted Accounts restored from the recycle bin get their links
        // back; Salesforce failing here must not stop the Ondorse side.
        if let Err(error) = self.reopen_restored().await {
            tracing::warn!(%error, "could not look for restored Accounts; the next reconcile looks again");
        }
        // Dead letters retried while the daemon was stopped.
        self.replan_marked().await?;
        let intents = self.retry_intents().await?;
        let mut report = ReconcileReport {
            intents_retried: intents.attempted,
            portals_created: intents.created,
            ..ReconcileReport::default()
        };
        self.plan_due_portal_writebacks().await?;
        // Streamed from the store's index of undecided links: only those
        // links are read, a few at a time.
        let undecided = self
            .store
            .links_in(LinkState::Undecided)
            .filter_map(|link| match link {
                Ok(link) => Some(Ok((link.application_id?, link.account_id))),
                Err(error) => Some(Err(error)),
            });
        let mut checks = futures::stream::iter(undecided)
            .map(|entry| {
                async move {
                    let (application_id, account_id) = entry?;
                    let outcome = self.refresh_application(&application_id, None).await;
                    Ok::<_, StoreError>((outcome, application_id, account_id))
                }
                .boxed()
            })
            // Half the read slots: webhooks arriving meanwhile keep the
            // other half, so a decision never waits behind a reconcile.
            .buffer_unordered((self.settings.ondorse_reads / 2).max(1));
        while let Some(checked) = checks.next().await {
            let (outcome, application_id, account_id) = checked?;
            match outcome {
                Ok(Refreshed::Applied | Refreshed::Unmatched | Refreshed::Missing) => {
                    report.applications_checked += 1
                }
                Err(error) if error.is_store() => return Err(error),
                // The endpoint backs off as a whole (its breaker logged it):
                // nothing to say about this Account.
                Err(SyncError::Backoff(_) | SyncError::Paused(_)) => {
                    report.applications_failed += 1
                }
                Err(error) => {
                    tracing::warn!(application_id = %application_id, %error, "reconcile could not refresh an application");
                    report.applications_failed += 1;
                    // The same failure pass after pass is one journal entry
                    // with a count.
                    self.journal(
                        &account_id,
                        None,
                        "application_refresh_failed",
                        format!("application {application_id} could not be re-fetched: {error}"),
                        Value::Null,
                    )?;
                }
            }
        }
        self.store.prune_seen_events(now())?;
        self.store.prune_journal(now(), self.settings.retention)?;
        self.store.flush().await?;
        self.writes_queued.notify_one();
        tracing::info!(
            intents_retried = report.intents_retried,
            portals_created = report.portals_created,
            applications_checked = report.applications_checked,
            applications_failed = report.applications_failed,
            "reconcile finished"
        );
        Ok(report)
    }

    /// Attempts every pending intent that is due (not parked), mapping by
    /// mapping. Intents in flight elsewhere are skipped.
    pub(super) async fn retry_intents(&self) -> Result<IntentsReport, SyncError> {
        let at = now();
        let mut report = IntentsReport::default();
        for mapping in self.mappings().iter() {
            let mut due = Vec::new();
            for link in self.store.links_in(LinkState::PendingPortal) {
                let link = link?;
                if link.mapping != mapping.name {
                    continue;
                }
                if link.is_parked(at) {
                    report.parked += 1;
                    if let Some(retry) = link.retry_at.filter(|_| !link.refused) {
                        report.next_retry =
                            Some(report.next_retry.map_or(retry, |next| next.min(retry)));
                    }
                } else {
                    due.push(link.account_id);
                }
            }
            report.attempted += due.len();
            let created = self.create_portals(mapping, due).await?;
            report.created += created.created;
            if let Some(until) = created.deferred_until {
                report.next_retry = Some(report.next_retry.map_or(until, |next| next.min(until)));
            }
        }
        self.metrics.parked("intents", report.parked);
        Ok(report)
    }

    /// Plans the `on_portal_created` write-back of portals recorded while
    /// planning failed (the describe was unreachable, say).
    async fn plan_due_portal_writebacks(&self) -> Result<(), SyncError> {
        for found in self.store.links_in(LinkState::PortalWritebackDue) {
            let found = found?;
            let Some(mapping) = self.mappings().get(&found.mapping).cloned() else {
                continue;
            };
            let _link_lock = self
                .link_locks
                .lock(&link_key(&found.mapping, &found.account_id))
                .await;
            let Some(mut link) = self.store.link(&found.mapping, &found.account_id)? else {
                continue;
            };
            if link.portal_writeback_due
                && let Err(error) = self.plan_portal_writeback(&mapping, &mut link).await
            {
                if error.is_store() {
                    return Err(error);
                }
                tracing::warn!(account_id = %link.account_id, mapping = %link.mapping, %error, "portal write-back still not planned");
            }
        }
        Ok(())
    }
}
