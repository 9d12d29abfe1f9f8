//! Portal creation: one `POST /api/portals` per intent, sending the
//! request frozen with the intent and its `Idempotency-Key`.
//!
//! Each intent is worked under its link's lock ([`super::locks`]), re-read
//! once the lock is held: an intent already in flight elsewhere is skipped,
//! never POSTed twice at once. A created portal is recorded and flushed
//! before anything that can fail (planning its write-back needs the
//! describe); a failed attempt parks the intent with a growing delay, and a
//! refusal for good parks it until an operator starts a fresh intent.

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use super::locks::link_key;
use super::plan;
use super::{Engine, SyncError, now};
use crate::mapping::{Mapping, Moment, WritebackContext};
use crate::ondorse::{OndorseError, Portal};
use crate::store::{Fields, Link, PortalRecord, PortalRequest, Urgency};
use crate::telemetry::{PortalResult, WritebackResult};

/// What a batch of portal creations did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PortalsReport {
    pub created: usize,
    pub failed: usize,
    /// When portal creation's breaker lets calls out again, if it held
    /// some back.
    pub deferred_until: Option<DateTime<Utc>>,
}

impl PortalsReport {
    /// Counts one attempt's outcome; a store error is logged and handed
    /// back for the caller to return once every intent was tried.
    pub(super) fn count(
        &mut self,
        mapping: &Mapping,
        outcome: Result<Attempt, SyncError>,
    ) -> Result<(), SyncError> {
        match outcome {
            Ok(Attempt::Created) => self.created += 1,
            Ok(Attempt::Failed) => self.failed += 1,
            Ok(Attempt::Deferred(until)) => {
                self.deferred_until =
                    Some(self.deferred_until.map_or(until, |known| known.min(until)));
            }
            Ok(Attempt::Skipped) => {}
            Err(error) => {
                tracing::error!(mapping = %mapping.name, %error, "portal creation could not be recorded");
                return Err(error);
            }
        }
        Ok(())
    }
}

/// What became of one intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    Created,
    Failed,
    /// The endpoint's breaker held it back until then.
    Deferred(DateTime<Utc>),
    /// Nothing to do now: the portal exists, the intent is parked, or its
    /// work is in flight elsewhere.
    Skipped,
}

impl Engine {
    /// Creates the portals of pending intents, a bounded number at a time.
    /// One intent's failure never stops the others; the first store error
    /// is returned once every intent was tried.
    pub(super) async fn create_portals(
        &self,
        mapping: &Mapping,
        account_ids: Vec<String>,
    ) -> Result<PortalsReport, SyncError> {
        let mut report = PortalsReport::default();
        let mut first_error = None;
        let mut outcomes = futures::stream::iter(account_ids)
            .map(|account_id| async move { self.create_portal(mapping, &account_id).await }.boxed())
            .buffer_unordered(self.settings.ondorse_concurrency.max(1));
        while let Some(outcome) = outcomes.next().await {
            if let Err(error) = report.count(mapping, outcome) {
                first_error.get_or_insert(error);
            }
        }
        self.portals_attempted(&report).await?;
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// After a run of attempts: the portals created are made durable and
    /// the writer told; the deferred-intent loop looks at failures.
    pub(super) async fn portals_attempted(&self, report: &PortalsReport) -> Result<(), SyncError> {
        if report.created > 0 {
            self.store.flush().await?;
            self.links_queued.notify_one();
        }
        if report.failed > 0 || report.deferred_until.is_some() {
            self.intents_deferred.notify_one();
        }
        Ok(())
    }

    /// One intent, under its link's lock.
    pub(super) async fn create_portal(
        &self,
        mapping: &Mapping,
        account_id: &str,
    ) -> Result<Attempt, SyncError> {
        let Some(_link_lock) = self
            .link_locks
            .try_lock(&link_key(&mapping.name, account_id))
        else {
            return Ok(Attempt::Skipped);
        };
        let Some(mut link) = self.store.link(&mapping.name, account_id)? else {
            return Ok(Attempt::Skipped);
        };
        if link.portal.is_some() || link.is_parked(now()) {
            return Ok(Attempt::Skipped);
        }
        let request = match &link.request {
            Some(request) => request.clone(),
            // Stored before requests were frozen: freeze it now, once.
            None => match mapping.portal_body(&link.account) {
                Ok(body) => {
                    let request = PortalRequest::freeze(&body);
                    link.request = Some(request.clone());
                    self.store.put_link(&link)?;
                    self.store.flush().await?;
                    request
                }
                Err(error) => {
                    // Only a mapping change can fix this: no call is made.
                    let retry_at = self.retry_at(link.portal_attempts + 1, None);
                    self.portal_failed(&mut link, error.to_string(), Some(retry_at), None)?;
                    return Ok(Attempt::Failed);
                }
            },
        };
        let answer = self
            .ondorse
            .create_portal(request.bytes(), &link.idempotency_key)
            .await;
        let portal = match answer {
            Ok(portal) => portal,
            Err(SyncError::Backoff(open)) => return Ok(Attempt::Deferred(open.until)),
            Err(SyncError::Ondorse(error)) => {
                tracing::warn!(account_id, mapping = %mapping.name, %error, "portal creation failed");
                let retry_at = error
                    .is_retriable()
                    .then(|| self.retry_at(link.portal_attempts + 1, error.retry_after()));
                let reason = match &error {
                    OndorseError::IdempotencyConflict { .. } => format!(
                        "{error}; a portal may exist under key {}: check Ondorse before starting a new intent",
                        link.idempotency_key
                    ),
                    _ => error.to_string(),
                };
                self.portal_failed(&mut link, reason, retry_at, error.http_status())?;
                return Ok(Attempt::Failed);
            }
            Err(error) => return Err(error),
        };
        let record = self.portal_record(&portal);
        // Recorded before anything that can fail, and on disk before
        // anything that calls out: a portal that exists is never forgotten.
        // The request holds personal data: dropped now.
        link.portal = Some(record.clone());
        link.request = None;
        link.last_error = None;
        link.retry_at = None;
        link.portal_writeback_due = true;
        self.store.put_link(&link)?;
        self.journal(
            account_id,
            Some(&mapping.name),
            "portal_created",
            format!(
                "portal {} created: {}",
                record.id,
                record.url.as_deref().unwrap_or("(no url)")
            ),
            json!({ "request": request.json(), "answer": record.answer }),
        )?;
        // Planning calls Salesforce only for a describe not cached yet;
        // otherwise the batch's one flush (before any cursor moves) will do.
        if !self.describe_cached().await {
            self.store.flush().await?;
        }
        self.metrics.portal(&mapping.name, PortalResult::Created);
        tracing::info!(account_id, mapping = %mapping.name, portal_id = %record.id, "portal created");
        if let Err(error) = self.plan_portal_writeback(mapping, &mut link).await {
            // Reconcile plans it again: the link says it is still due.
            tracing::warn!(account_id, mapping = %mapping.name, %error, "portal write-back not planned yet");
        }
        Ok(Attempt::Created)
    }

    /// Plans and queues the `on_portal_created` write-back of a recorded
    /// portal (the caller holds the link's lock).
    pub(super) async fn plan_portal_writeback(
        &self,
        mapping: &Mapping,
        link: &mut Link,
    ) -> Result<(), SyncError> {
        let planned = self
            .plan_moment(
                mapping,
                link,
                Moment::PortalCreated,
                None,
                None,
                &Fields::new(),
            )
            .await?;
        link.portal_writeback_due = false;
        self.commit_link(link, Moment::PortalCreated, planned)
    }

    /// Parks a failed intent: until `retry_at`, or (`None`) until an
    /// operator starts a fresh intent. `http_status` is Ondorse's answer
    /// when the call got one (the journal shows it).
    fn portal_failed(
        &self,
        link: &mut Link,
        error: String,
        retry_at: Option<DateTime<Utc>>,
        http_status: Option<u16>,
    ) -> Result<(), SyncError> {
        self.metrics.portal(&link.mapping, PortalResult::Failed);
        link.portal_attempts += 1;
        link.last_error = Some(error.clone());
        link.refused = retry_at.is_none();
        link.retry_at = retry_at;
        let for_good = link.refused;
        let summary = if for_good {
            format!(
                "ondorse refused the portal for good: {error}; fix the data, then run `ondorse-bridge resync --account {} --new-intent`",
                link.account_id
            )
        } else {
            format!("portal creation failed; retried later: {error}")
        };
        self.store.put_link(link)?;
        self.journal(
            &link.account_id,
            Some(&link.mapping),
            if for_good {
                "portal_refused"
            } else {
                "portal_failed"
            },
            summary,
            json!({ "http_status": http_status }),
        )?;
        Ok(())
    }

    /// The portal as stored and as templates see it: `url` resolved from
    /// `link` when Ondorse answered none.
    fn portal_record(&self, portal: &Portal) -> PortalRecord {
        let url = portal.resolved_url(&self.portal_base_url);
        let mut answer = serde_json::to_value(portal).unwrap_or(Value::Null);
        if let Some(object) = answer.as_object_mut() {
            if let Some(url) = &url {
                object.insert("url".to_owned(), Value::String(url.clone()));
            }
            // What Ondorse did not give (absent, or null: a portal without
            // `url` nor `link`) is absent to templates, so it clears nothing.
            object.retain(|_, value| !value.is_null());
        }
        PortalRecord {
            id: portal.id.clone(),
            url,
            created_at: now(),
            answer,
        }
    }

    /// Plans one write-back moment for a link: the fields that differ from
    /// what Salesforce holds (with pending writes and `overlay` applied);
    /// refused fields become dead letters at once. Queues nothing: the caller
    /// commits the fields with the link ([`Engine::commit_link`]).
    pub(super) async fn plan_moment(
        &self,
        mapping: &Mapping,
        link: &Link,
        moment: Moment,
        application: Option<&Value>,
        collect: Option<&Value>,
        overlay: &Fields,
    ) -> Result<Fields, SyncError> {
        if !mapping.writes_at(moment) {
            return Ok(Fields::new());
        }
        let describe = self.describe().await?;
        // What Salesforce will hold once pending writes land.
        let mut known = self
            .store
            .planning_baseline(&link.account_id, &Fields::new())?;
        known.extend(overlay.clone());
        let context = WritebackContext {
            account: &link.account,
            portal: link.portal.as_ref().map(|portal| &portal.answer),
            application,
            collect,
            now: now(),
        };
        let reached = plan::reached(link);
        let planned = match plan::plan_writeback(
            mapping, moment, reached, &context, &describe, &known,
        ) {
            Ok(planned) => planned,
            Err(error) => {
                self.journal(
                    &link.account_id,
                    Some(&mapping.name),
                    "render_failed",
                    format!("{moment} could not be rendered: {error}"),
                    Value::Null,
                )?;
                tracing::warn!(account_id = %link.account_id, mapping = %mapping.name, %error, "write-back not rendered");
                return Ok(Fields::new());
            }
        };
        for refused in &planned.refused {
            self.dead_letter_refused(&link.account_id, &mapping.name, refused)?;
        }
        Ok(planned.changed)
    }

    /// Records a field value that cannot be sent as a dead letter, with its
    /// journal entry; returns the letter's id.
    pub(super) fn dead_letter_refused(
        &self,
        account_id: &str,
        mapping: &str,
        refused: &plan::RefusedField,
    ) -> Result<u64, SyncError> {
        let mut fields = Fields::new();
        fields.insert(refused.field.clone(), refused.value.clone());
        let id = self.store.add_dead_letter(
            account_id,
            vec![mapping.to_owned()],
            fields,
            refused.code,
            &refused.message,
            now(),
        )?;
        self.journal(
            account_id,
            Some(mapping),
            "dead_lettered",
            format!(
                "{} not written: {} (dead letter {id})",
                refused.field, refused.message
            ),
            json!({ "code": refused.code, "field": refused.field, "value": refused.value }),
        )?;
        self.metrics.writeback([mapping], WritebackResult::Refused);
        tracing::warn!(account_id, mapping, field = %refused.field, message = %refused.message, "field refused before sending");
        Ok(id)
    }

    /// Stores a link and the write-back planned for it in one transaction.
    pub(super) fn commit_link(
        &self,
        link: &Link,
        moment: Moment,
        fields: Fields,
    ) -> Result<(), SyncError> {
        // Only a portal link may wait to fill a call; a decision goes now.
        let urgency = match moment {
            Moment::PortalCreated => Urgency::MayWait,
            _ => Urgency::Now,
        };
        self.store
            .put_link_and_queue(link, Some(&fields), urgency, now())?;
        if !fields.is_empty() {
            self.journal(
                &link.account_id,
                Some(&link.mapping),
                "write_queued",
                format!("{moment}: {} field(s) to write", fields.len()),
                json!({ "fields": fields }),
            )?;
        }
        Ok(())
    }
}
