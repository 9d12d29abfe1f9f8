//! Decisions: inbox items (webhooks, push hints) are worked off by
//! re-fetching the application and applying `on_application` (and
//! `on_collect_opened`). A webhook is only a hint: duplicates and
//! out-of-order deliveries all converge on the application's current state.

use std::collections::BTreeMap;

use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use super::locks::link_key;
use super::plan;
use super::{Engine, SyncError, now};
use crate::mapping::Moment;
use crate::ondorse::webhook::EventType;
use crate::ondorse::{Application, OndorseError};
use crate::store::{Fields, InboxKind, InboxQueue, Link};

/// The inbox items about one application, fetched once per pass.
#[derive(Default)]
struct Pending {
    sequences: Vec<u64>,
    collect_opened: bool,
    /// The first webhook's `data.object`, to find the Account if it fails.
    object: Value,
}

/// Inbox items taken per pass and queue.
const INBOX_BATCH: usize = 500;

/// What one inbox pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxReport {
    pub items: usize,
    pub applications_fetched: usize,
    /// Applications that belong to no Account we created a portal for.
    pub unmatched: usize,
    pub ignored: usize,
    /// Items left for a later pass without counting as a failure (the API
    /// budget governor or an open breaker turned the call away).
    pub deferred: usize,
    /// Items that failed and were parked with a growing retry delay.
    pub parked: usize,
}

impl InboxReport {
    fn add(&mut self, other: InboxReport) {
        self.items += other.items;
        self.applications_fetched += other.applications_fetched;
        self.unmatched += other.unmatched;
        self.ignored += other.ignored;
        self.deferred += other.deferred;
        self.parked += other.parked;
    }
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
    /// Works off the due items of both inbox queues once, side by side.
    pub async fn process_inbox(&self) -> Result<InboxReport, SyncError> {
        let (webhooks, hints) = tokio::join!(
            self.process_queue(InboxQueue::Webhooks),
            self.process_queue(InboxQueue::Hints)
        );
        let mut report = webhooks?;
        report.add(hints?);
        Ok(report)
    }

    /// Works off the due items of one queue. An item that fails is parked
    /// with its reason and a growing delay; the items behind it go on.
    pub(super) async fn process_queue(&self, queue: InboxQueue) -> Result<InboxReport, SyncError> {
        let mut report = InboxReport::default();
        let items = self.store.due_inbox_items(queue, now(), INBOX_BATCH)?;
        if items.is_empty() {
            return Ok(report);
        }
        report.items = items.len();
        // One fetch per application, whatever the number of events about it;
        // the latest event type decides whether a collect was opened.
        let mut applications: BTreeMap<String, Pending> = BTreeMap::new();
        let mut hinted_ids = Vec::new();
        let mut hint_sequences = Vec::new();
        for item in &items {
            match &item.kind {
                InboxKind::Webhook(envelope) => {
                    let kind = envelope.kind();
                    match (&envelope.application_id, kind.is_ignorable()) {
                        (Some(application_id), false) => {
                            let entry = applications.entry(application_id.clone()).or_default();
                            entry.sequences.push(item.sequence);
                            entry.collect_opened |= kind == EventType::CollectOpened;
                            if entry.object.is_null() {
                                entry.object = envelope.object.clone();
                            }
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
            .map(|(application_id, pending)| {
                async move {
                    let outcome = self
                        .refresh_application(&application_id, pending.collect_opened)
                        .await;
                    (application_id, pending, outcome)
                }
                .boxed()
            })
            .buffer_unordered(self.settings.ondorse_concurrency.max(1));
        while let Some((application_id, pending, outcome)) = fetches.next().await {
            match outcome {
                Ok(refreshed) => {
                    report.applications_fetched += 1;
                    if refreshed == Refreshed::Applied {
                        // The decision goes to the writer now, not when the
                        // pass's slowest fetch is back (a crash before the
                        // pass's flush fetches it again: same fields).
                        self.writes_queued.notify_one();
                    } else {
                        report.unmatched += 1;
                    }
                    for sequence in pending.sequences {
                        self.store.complete_inbox_item(sequence)?;
                    }
                }
                // The governor logged the pause once when it began; the
                // breaker logged the backoff.
                Err(SyncError::Paused(_) | SyncError::Backoff(_)) => {
                    report.deferred += pending.sequences.len()
                }
                Err(error) if error.is_store() => return Err(error),
                Err(error) => {
                    let account_id = self.account_of(&application_id, &pending.object)?;
                    let subject = format!("application {application_id}");
                    report.parked += self.park_items(
                        &pending.sequences,
                        &subject,
                        account_id.as_deref(),
                        &error,
                    )?;
                }
            }
        }
        if !hinted_ids.is_empty() {
            match self.intake_accounts(&hinted_ids).await {
                Ok(_) => {
                    for sequence in hint_sequences {
                        self.store.complete_inbox_item(sequence)?;
                    }
                }
                Err(SyncError::Paused(_) | SyncError::Backoff(_)) => {
                    report.deferred += hint_sequences.len()
                }
                Err(error) if error.is_store() => return Err(error),
                Err(error) => {
                    report.parked += self.park_items(&hint_sequences, "push hint", None, &error)?;
                }
            }
        }
        self.store.flush().await?;
        self.writes_queued.notify_one();
        Ok(report)
    }

    /// Parks inbox items after `error`, each with a delay growing with its
    /// own failures; journals it on the Account when known. Returns how
    /// many were parked.
    fn park_items(
        &self,
        sequences: &[u64],
        subject: &str,
        account_id: Option<&str>,
        error: &SyncError,
    ) -> Result<usize, SyncError> {
        let reason = format!("{subject}: {error}");
        let mut parked = 0;
        for sequence in sequences {
            let attempts =
                self.store
                    .park_inbox_item(*sequence, &reason, account_id, |attempts| {
                        self.retry_at(attempts, error.retry_after())
                    })?;
            if attempts == 0 {
                continue;
            }
            parked += 1;
            tracing::warn!(account_id, sequence, attempts, %reason, "inbox item parked");
        }
        if let Some(account_id) = account_id {
            self.journal(
                account_id,
                None,
                "inbox_parked",
                format!("{reason}; parked, retried later with a growing delay"),
                Value::Null,
            )?;
        }
        Ok(parked)
    }

    /// `GET /api/applications/{id}` in a call slot, through the endpoint's
    /// breaker: the one way the engine reads an application.
    pub(super) async fn fetch_application(&self, id: &str) -> Result<Application, SyncError> {
        self.ondorse.get_application(id).await
    }

    /// Fetches an application and plans the write-backs of its Account.
    pub(super) async fn refresh_application(
        &self,
        application_id: &str,
        collect_opened: bool,
    ) -> Result<Refreshed, SyncError> {
        let application = match self.fetch_application(application_id).await {
            Ok(application) => application,
            Err(SyncError::Ondorse(OndorseError::NotFound { .. })) => {
                tracing::warn!(
                    application_id,
                    "ondorse does not know this application; nothing to write"
                );
                return Ok(Refreshed::Missing);
            }
            Err(error) => {
                // The Account's journal tells the failed call, when the
                // application is already linked to one.
                if let SyncError::Ondorse(failed) = &error
                    && let Some(link) = self.store.link_by_application(application_id)?
                {
                    self.journal(
                        &link.account_id,
                        Some(&link.mapping),
                        "application_fetch_failed",
                        format!("fetching application {application_id} failed: {failed}"),
                        json!({ "http_status": failed.http_status() }),
                    )?;
                }
                return Err(error);
            }
        };
        let unmatched = || {
            tracing::warn!(
                application_id,
                "the application matches no Account we created a portal for (its custom fields carry no known Account Id)"
            );
            Ok(Refreshed::Unmatched)
        };
        let Some(found) = self.link_of(&application.id, &application.custom_fields)? else {
            return unmatched();
        };
        // Read again under the link's lock: what we write back is based on
        // the link as it is now, not as it was before the fetch.
        let _link_lock = self
            .link_locks
            .lock(&link_key(&found.mapping, &found.account_id))
            .await;
        let Some(mut link) = self.store.link(&found.mapping, &found.account_id)? else {
            return unmatched();
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
        link.collect_opened |= collect_opened;
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
        if collect_opened && plan::collect_writes(application.is_final()) {
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

    /// The Account an application is about, for a parked item: the
    /// webhook's `data.object` carries its custom fields.
    fn account_of(
        &self,
        application_id: &str,
        object: &Value,
    ) -> Result<Option<String>, SyncError> {
        let empty = serde_json::Map::new();
        let custom_fields = object
            .get("custom_fields")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        Ok(self
            .link_of(application_id, custom_fields)?
            .map(|link| link.account_id))
    }

    /// The link of an application: our index first (authoritative), then
    /// the Account Id each mapping put into `default_custom_fields`.
    fn link_of(
        &self,
        application_id: &str,
        custom_fields: &serde_json::Map<String, Value>,
    ) -> Result<Option<Link>, SyncError> {
        if let Some(link) = self.store.link_by_application(application_id)? {
            return Ok(Some(link));
        }
        for mapping in self.mappings().iter() {
            let Some(key) = mapping.account_id_custom_field() else {
                continue;
            };
            let Some(account_id) = custom_fields.get(key).and_then(Value::as_str) else {
                continue;
            };
            if let Some(link) = self.store.link(&mapping.name, account_id)?
                && link
                    .application_id
                    .as_deref()
                    .is_none_or(|known| known == application_id)
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
