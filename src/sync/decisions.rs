//! Decisions: inbox items (webhooks, push hints) are worked off by
//! re-fetching the application and applying `on_application` (and
//! `on_collect_opened`). A webhook is only a hint: duplicates and
//! out-of-order deliveries all converge on the application's current state.

use std::collections::BTreeMap;

use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use super::{Engine, SyncError, now};
use crate::mapping::Moment;
use crate::ondorse::webhook::EventType;
use crate::ondorse::{Application, OndorseError};
use crate::store::{Fields, InboxKind, Link};

/// Inbox items taken per pass.
const INBOX_BATCH: usize = 500;

/// What one inbox pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxReport {
    pub items: usize,
    pub applications_fetched: usize,
    /// Applications that belong to no Account we created a portal for.
    pub unmatched: usize,
    pub ignored: usize,
    /// Items left for a later pass (Ondorse or Salesforce unreachable).
    pub deferred: usize,
}

/// What refreshing one application found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refreshed {
    /// Write-backs planned for the linked Account.
    Applied,
    /// No Account of ours: nothing to write.
    Unmatched,
    /// Ondorse says the application does not exist.
    Missing,
}

impl Engine {
    /// Works off the inbox until it is empty or only deferred items remain.
    pub async fn process_inbox(&self) -> Result<InboxReport, SyncError> {
        let mut report = InboxReport::default();
        let items = self.store.inbox_pending(INBOX_BATCH)?;
        if items.is_empty() {
            return Ok(report);
        }
        report.items = items.len();
        // One fetch per application, whatever the number of events about it;
        // the latest event type decides whether a collect was opened.
        let mut applications: BTreeMap<String, (Vec<u64>, bool)> = BTreeMap::new();
        let mut hinted_ids = Vec::new();
        let mut hint_sequences = Vec::new();
        for item in &items {
            match &item.kind {
                InboxKind::Webhook(envelope) => {
                    let kind = envelope.kind();
                    match (&envelope.application_id, kind.is_ignorable()) {
                        (Some(application_id), false) => {
                            let entry = applications.entry(application_id.clone()).or_default();
                            entry.0.push(item.sequence);
                            entry.1 |= kind == EventType::CollectOpened;
                        }
                        _ => {
                            tracing::debug!(event_id = %envelope.event_id, event_type = %envelope.event_type, "webhook ignored");
                            report.ignored += 1;
                            self.store.complete_inbox_item(item.sequence)?;
                        }
                    }
                }
                InboxKind::SalesforceHint { ids } => {
                    hinted_ids.extend(ids.iter().cloned());
                    hint_sequences.push(item.sequence);
                }
            }
        }
        let mut fetches = futures::stream::iter(applications)
            .map(|(application_id, (sequences, collect_opened))| {
                async move {
                    let outcome = self
                        .refresh_application(&application_id, collect_opened)
                        .await;
                    (application_id, sequences, outcome)
                }
                .boxed()
            })
            .buffer_unordered(self.settings.fetch_concurrency.max(1));
        while let Some((application_id, sequences, outcome)) = fetches.next().await {
            match outcome {
                Ok(refreshed) => {
                    report.applications_fetched += 1;
                    if refreshed != Refreshed::Applied {
                        report.unmatched += 1;
                    }
                    for sequence in sequences {
                        self.store.complete_inbox_item(sequence)?;
                    }
                }
                // The governor logged the pause once when it began.
                Err(SyncError::Paused(_)) => report.deferred += sequences.len(),
                Err(error) if error.is_retriable() => {
                    tracing::warn!(application_id = %application_id, %error, "application refresh deferred");
                    report.deferred += sequences.len();
                }
                Err(error) => return Err(error),
            }
        }
        if !hinted_ids.is_empty() {
            match self.intake_accounts(&hinted_ids).await {
                Ok(_) => {
                    for sequence in hint_sequences {
                        self.store.complete_inbox_item(sequence)?;
                    }
                }
                Err(SyncError::Paused(_)) => report.deferred += hint_sequences.len(),
                Err(error) if error.is_retriable() => {
                    tracing::warn!(%error, "push hint deferred");
                    report.deferred += hint_sequences.len();
                }
                Err(error) => return Err(error),
            }
        }
        self.store.flush().await?;
        self.writes_queued.notify_one();
        Ok(report)
    }

    /// Fetches an application and plans the write-backs of its Account.
    pub(super) async fn refresh_application(
        &self,
        application_id: &str,
        collect_opened: bool,
    ) -> Result<Refreshed, SyncError> {
        let application = match self.ondorse.get_application(application_id).await {
            Ok(application) => application,
            Err(OndorseError::NotFound { .. }) => {
                tracing::warn!(
                    application_id,
                    "ondorse does not know this application; nothing to write"
                );
                return Ok(Refreshed::Missing);
            }
            Err(error) => {
                // The Account's journal tells the failed call, when the
                // application is already linked to one.
                if let Some(link) = self.store.link_by_application(application_id)? {
                    self.journal(
                        &link.account_id,
                        Some(&link.mapping),
                        "application_fetch_failed",
                        format!("fetching application {application_id} failed: {error}"),
                        json!({ "http_status": error.http_status() }),
                    )?;
                }
                return Err(error.into());
            }
        };
        let Some(mut link) = self.link_of(&application)? else {
            tracing::warn!(
                application_id,
                "the application matches no Account we created a portal for (its custom fields carry no known Account Id)"
            );
            return Ok(Refreshed::Unmatched);
        };
        let Some(mapping) = self.mappings().get(&link.mapping).cloned() else {
            // Reconcile picks it up again once the mapping is back.
            self.journal(
                &link.account_id,
                Some(&link.mapping),
                "mapping_missing",
                format!("application {application_id} changed, but mapping `{}` is not loaded; kept for later", link.mapping),
                Value::Null,
            )?;
            return Ok(Refreshed::Applied);
        };
        let template_value = application.template_value();
        self.journal(
            &link.account_id,
            Some(&link.mapping),
            "application_fetched",
            format!(
                "application {} is {} (risk level {}, score {})",
                application.id,
                application
                    .status_review
                    .as_deref()
                    .unwrap_or("not decided"),
                template_value.get("risk_level").unwrap_or(&Value::Null),
                template_value.get("risk_score").unwrap_or(&Value::Null),
            ),
            json!({
                "status_review": application.status_review,
                "status_execution": application.status_execution,
                "risk_level": template_value.get("risk_level"),
                "risk_score": template_value.get("risk_score"),
            }),
        )?;
        link.application_id = Some(application.id.clone());
        link.decision_final = application.is_final();
        let mut fields = self
            .plan_moment(
                &mapping,
                &link,
                Moment::Application,
                Some(&template_value),
                None,
                &Fields::new(),
            )
            .await?;
        // A late `collect.opened` must not overwrite a final decision.
        if collect_opened && !application.is_final() {
            let collect = self.collect_of(&template_value);
            let collect_fields = self
                .plan_moment(
                    &mapping,
                    &link,
                    Moment::CollectOpened,
                    Some(&template_value),
                    collect.as_ref(),
                    &fields,
                )
                .await?;
            fields.extend(collect_fields);
        }
        // The link (decision final or not) and its fields land together.
        self.commit_link(&link, Moment::Application, fields)?;
        tracing::info!(account_id = %link.account_id, mapping = %link.mapping, application_id, decision = ?application.status_review, "application refreshed");
        Ok(Refreshed::Applied)
    }

    /// The link of an application: our index first (authoritative), then
    /// the Account Id each mapping put into `default_custom_fields`.
    fn link_of(&self, application: &Application) -> Result<Option<Link>, SyncError> {
        if let Some(link) = self.store.link_by_application(&application.id)? {
            return Ok(Some(link));
        }
        for mapping in self.mappings().iter() {
            let Some(key) = mapping.account_id_custom_field() else {
                continue;
            };
            let Some(account_id) = application.custom_fields.get(key).and_then(Value::as_str)
            else {
                continue;
            };
            if let Some(link) = self.store.link(&mapping.name, account_id)?
                && link
                    .application_id
                    .as_deref()
                    .is_none_or(|known| known == application.id)
            {
                return Ok(Some(link));
            }
        }
        Ok(None)
    }

    /// `collect.*` for templates: the open collect portal's link and URL.
    fn collect_of(&self, application: &Value) -> Option<Value> {
        let link = application.get("portals")?.get("link")?.as_str()?;
        Some(json!({
            "link": link,
            "url": format!("{}/portals/{link}", self.portal_base_url),
            "at": now().to_rfc3339(),
        }))
    }
}
