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
use crate::ondorse::{Application, OndorseError};
use crate::salesforce::Id;
use crate::store::{CollectChange, Fields, InboxItem, InboxKind, InboxQueue, Link};

/// The inbox items about one application that one fetch covers: all were
/// stored before the fetch began, so its answer is at least as new as each.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) sequences: Vec<u64>,
    /// The latest thing these events say about the collect.
    collect: Option<CollectChange>,
    /// The first webhook's `data.object`, to find the Account if it fails.
    object: Value,
}

impl Pending {
    /// Adds the items of `other` (stored later) to this fetch.
    pub(super) fn merge(&mut self, other: Pending) {
        self.sequences.extend(other.sequences);
        self.collect = CollectChange::latest(self.collect, other.collect);
        if self.object.is_null() {
            self.object = other.object;
        }
    }
}

/// Inbox items sorted by what working them off takes.
#[derive(Default)]
pub(super) struct Sorted {
    /// One fetch per application, whatever the number of events about it;
    /// the latest of their collect events decides the collect.
    pub(super) applications: BTreeMap<String, Pending>,
    /// Events the bridge has no use for: completed as they are.
    pub(super) ignored: Vec<u64>,
    /// Push hints: their Accounts are read together.
    pub(super) hinted_ids: Vec<Id>,
    pub(super) hint_sequences: Vec<u64>,
}

impl Sorted {
    pub(super) fn of(items: Vec<InboxItem>) -> Sorted {
        let mut sorted = Sorted::default();
        for item in items {
            match item.kind {
                InboxKind::Webhook(envelope) => {
                    let kind = envelope.kind();
                    match (envelope.application_id, kind.is_ignorable()) {
                        (Some(application_id), false) => {
                            sorted
                                .applications
                                .entry(application_id)
                                .or_default()
                                .merge(Pending {
                                    sequences: vec![item.sequence],
                                    collect: plan::collect_change(
                                        &kind,
                                        envelope.created_at.as_deref(),
                                        item.received_at,
                                    ),
                                    object: envelope.object,
                                });
                        }
                        _ => {
                            tracing::debug!(event_id = %envelope.event_id, event_type = %envelope.event_type, "webhook ignored");
                            sorted.ignored.push(item.sequence);
                        }
                    }
                }
                InboxKind::SalesforceHint { ids } => {
                    sorted.hinted_ids.extend(ids);
                    sorted.hint_sequences.push(item.sequence);
                }
            }
        }
        // One read per Account, however many hints named it.
        sorted.hinted_ids.sort();
        sorted.hinted_ids.dedup();
        sorted
    }
}

/// Inbox items taken per pass and queue (and at most worked on at once by
/// the webhooks' streaming worker).
pub(super) const INBOX_BATCH: usize = 500;

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

    /// Whether some item left the queue or was parked: looking again at
    /// once may find more.
    pub(super) fn progressed(&self) -> bool {
        self.items > self.deferred + self.parked
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
    /// Works off the due items of both inbox queues once, side by side: the
    /// step the running engine's workers are built on, callable without
    /// them. Everything it did is on disk when it returns.
    pub async fn process_inbox(&self) -> Result<InboxReport, SyncError> {
        let (webhooks, hints) = tokio::join!(
            self.process_queue(InboxQueue::Webhooks),
            self.process_queue(InboxQueue::Hints)
        );
        let mut report = webhooks?;
        report.add(hints?);
        Ok(report)
    }

    /// Works off the due items of one queue once. An item that fails is
    /// parked with its reason and a growing delay; the items behind it go on.
    pub(super) async fn process_queue(&self, queue: InboxQueue) -> Result<InboxReport, SyncError> {
        let items = self.store.due_inbox_items(queue, now(), INBOX_BATCH)?;
        let mut report = InboxReport {
            items: items.len(),
            ..InboxReport::default()
        };
        if items.is_empty() {
            return Ok(report);
        }
        let sorted = Sorted::of(items);
        report.ignored = sorted.ignored.len();
        self.store.complete_inbox_items(&sorted.ignored).await?;
        let mut fetches = futures::stream::iter(sorted.applications)
            .map(|(application_id, pending)| {
                async move { self.work_off(&application_id, &pending).await }.boxed()
            })
            .buffer_unordered(self.settings.ondorse_reads.max(1));
        while let Some(worked) = fetches.next().await {
            let worked = worked?;
            report.add(InboxReport { items: 0, ..worked });
        }
        let hints = self
            .work_off_hints(&sorted.hinted_ids, &sorted.hint_sequences)
            .await?;
        report.add(InboxReport { items: 0, ..hints });
        // Parked items are on disk too.
        self.store.flush().await?;
        self.writes_queued.notify_one();
        Ok(report)
    }

    /// Reads the hinted Accounts together and settles the hints: completed
    /// once what intake did is on disk, parked when it failed, left in the
    /// queue when the governor or a breaker turned it away.
    pub(super) async fn work_off_hints(
        &self,
        ids: &[Id],
        sequences: &[u64],
    ) -> Result<InboxReport, SyncError> {
        let mut report = InboxReport {
            items: sequences.len(),
            ..InboxReport::default()
        };
        if sequences.is_empty() {
            return Ok(report);
        }
        let intake = match ids {
            [] => Ok(()),
            ids => self.intake_accounts(ids).await.map(drop),
        };
        match intake {
            Ok(()) => self.store.complete_inbox_items(sequences).await?,
            Err(SyncError::Paused(_) | SyncError::Backoff(_)) => report.deferred = sequences.len(),
            Err(error) if error.is_store() => return Err(error),
            Err(error) => report.parked = self.park_items(sequences, "push hint", None, &error)?,
        }
        Ok(report)
    }

    /// Fetches one application and settles the items it covers: completed
    /// once what the fetch caused is on disk (the write-back goes to the
    /// writer before that: a crash meanwhile fetches again, same fields),
    /// parked when it failed, left in the queue when the governor or a
    /// breaker turned it away.
    pub(super) async fn work_off(
        &self,
        application_id: &str,
        pending: &Pending,
    ) -> Result<InboxReport, SyncError> {
        let items = pending.sequences.len();
        let mut report = InboxReport {
            items,
            ..InboxReport::default()
        };
        match self
            .refresh_application(application_id, pending.collect)
            .await
        {
            Ok(refreshed) => {
                report.applications_fetched = 1;
                if refreshed == Refreshed::Applied {
                    self.writes_queued.notify_one();
                } else {
                    report.unmatched = 1;
                }
                self.store.complete_inbox_items(&pending.sequences).await?;
            }
            // The governor logged the pause once when it began; the
            // breaker logged the backoff.
            Err(SyncError::Paused(_) | SyncError::Backoff(_)) => report.deferred = items,
            Err(error) if error.is_store() => return Err(error),
            Err(error) => {
                let account_id = self.account_of(application_id, &pending.object)?;
                let subject = format!("application {application_id}");
                report.parked =
                    self.park_items(&pending.sequences, &subject, account_id.as_deref(), &error)?;
            }
        }
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
        collect: Option<CollectChange>,
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
        // A collect event raised before the one the link follows (delivered
        // late) changes nothing; a refresh without one keeps the collect.
        let collect_opened =
            collect.is_some_and(|change| link.apply_collect(change)) && link.collect_opened;
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
            // Put there by the mapping, or by hand in either form.
            let Some(Ok(account_id)) = custom_fields
                .get(key)
                .and_then(Value::as_str)
                .map(Id::parse)
            else {
                continue;
            };
            if let Some(link) = self.store.link(&mapping.name, account_id.as_str())?
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
