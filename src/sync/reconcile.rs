//! Reconcile: the safety net behind webhooks. Pending intents get their
//! portal, undecided applications are re-fetched and written back if they
//! changed, old webhook ids are forgotten.

use futures::{FutureExt, StreamExt};

use super::budget::Work;
use super::decisions::Refreshed;
use super::{Engine, SyncError, now};

/// What one reconcile pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub intents_retried: usize,
    pub portals_created: usize,
    pub applications_checked: usize,
    pub applications_failed: usize,
}

impl Engine {
    pub async fn reconcile(&self) -> Result<ReconcileReport, SyncError> {
        self.salesforce.may_run(Work::Reconcile).await?;
        // Dead letters retried while the daemon was stopped.
        self.replan_marked().await?;
        let mut report = ReconcileReport::default();
        for mapping in self.mappings().iter() {
            let intents = self
                .store
                .links_where(|link| link.mapping == mapping.name && link.portal.is_none())?;
            report.intents_retried += intents.len();
            report.portals_created += self.create_portals(mapping, intents).await?.created;
        }
        let undecided: Vec<String> = self
            .store
            .links_where(|link| !link.decision_final && link.application_id.is_some())?
            .into_iter()
            .filter_map(|link| link.application_id)
            .collect();
        let mut checks = futures::stream::iter(undecided)
            .map(|application_id| {
                async move {
                    (
                        self.refresh_application(&application_id, false).await,
                        application_id,
                    )
                }
                .boxed()
            })
            .buffer_unordered(self.settings.fetch_concurrency.max(1));
        while let Some((outcome, application_id)) = checks.next().await {
            match outcome {
                Ok(Refreshed::Applied | Refreshed::Unmatched | Refreshed::Missing) => {
                    report.applications_checked += 1
                }
                Err(error) => {
                    tracing::warn!(application_id = %application_id, %error, "reconcile could not refresh an application");
                    report.applications_failed += 1;
                }
            }
        }
        self.store.prune_seen_events(now())?;
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
}
