//! Portal creation: one `POST /api/portals` per intent, with the intent's
//! `Idempotency-Key`, retried on transient failures; the link and the
//! `on_portal_created` write-back recorded on success.

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use super::plan;
use super::{Engine, SyncError, now};
use crate::mapping::{Mapping, Moment, WritebackContext};
use crate::ondorse::Portal;
use crate::store::{Fields, Link, PortalRecord};
use crate::telemetry::{self, PortalResult, WritebackResult};

/// Attempts of one portal POST within a step; later steps (reconcile) try
/// again, with the same key, while the intent stays pending.
const PORTAL_ATTEMPTS: usize = 3;

/// What a batch of portal creations did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PortalsReport {
    pub created: usize,
    pub failed: usize,
}

impl Engine {
    /// Creates the portals of pending intents, a bounded number at a time.
    pub(super) async fn create_portals(
        &self,
        mapping: &Mapping,
        intents: Vec<Link>,
    ) -> Result<PortalsReport, SyncError> {
        let mut report = PortalsReport::default();
        let mut outcomes = futures::stream::iter(intents)
            .map(|link| self.create_portal(mapping, link).boxed())
            .buffer_unordered(self.settings.portal_concurrency.max(1));
        while let Some(outcome) = outcomes.next().await {
            match outcome? {
                true => report.created += 1,
                false => report.failed += 1,
            }
        }
        if report.created > 0 {
            self.store.flush().await?;
            self.writes_queued.notify_one();
        }
        Ok(report)
    }

    /// One intent: `Ok(true)` when its portal exists now, `Ok(false)` when
    /// it stays pending (recorded in the link and the journal).
    async fn create_portal(&self, mapping: &Mapping, mut link: Link) -> Result<bool, SyncError> {
        let account_id = link.account_id.clone();
        let body = match mapping.portal_body(&link.account) {
            Ok(body) => body,
            Err(error) => {
                // Only a mapping change can fix this: no call is made.
                self.portal_failed(&mut link, error.to_string())?;
                return Ok(false);
            }
        };
        let answer = self.post_portal(&body, &link.idempotency_key).await;
        let portal = match answer {
            Ok(portal) => portal,
            Err(error) => {
                tracing::warn!(account_id = %account_id, mapping = %mapping.name, %error, "portal creation failed; the intent stays pending");
                self.portal_failed(&mut link, error.to_string())?;
                return Ok(false);
            }
        };
        let record = self.portal_record(&portal);
        telemetry::metrics().portal(&mapping.name, PortalResult::Created);
        tracing::info!(account_id = %account_id, mapping = %mapping.name, portal_id = %record.id, "portal created");
        self.journal(
            &account_id,
            Some(&mapping.name),
            "portal_created",
            format!(
                "portal {} created: {}",
                record.id,
                record.url.as_deref().unwrap_or("(no url)")
            ),
            json!({ "request": body, "answer": record.answer }),
        )?;
        link.portal = Some(record);
        link.last_error = None;
        let planned = self
            .plan_moment(
                mapping,
                &link,
                Moment::PortalCreated,
                None,
                None,
                &Fields::new(),
            )
            .await?;
        self.commit_link(&link, Moment::PortalCreated, planned)?;
        Ok(true)
    }

    /// The POST, retried on transient failures with the same key (a lost
    /// answer then returns the portal created the first time).
    async fn post_portal(
        &self,
        body: &serde_json::Map<String, Value>,
        idempotency_key: &str,
    ) -> Result<Portal, crate::ondorse::OndorseError> {
        let mut delays = ExponentialBuilder::default()
            .with_max_times(PORTAL_ATTEMPTS - 1)
            .build();
        loop {
            let error = match self.ondorse.create_portal(body, idempotency_key).await {
                Err(error) if error.is_retriable() => error,
                other => return other,
            };
            let Some(delay) = delays.next() else {
                return Err(error);
            };
            tokio::time::sleep(error.retry_after().unwrap_or(delay)).await;
        }
    }

    fn portal_failed(&self, link: &mut Link, error: String) -> Result<(), SyncError> {
        telemetry::metrics().portal(&link.mapping, PortalResult::Failed);
        link.portal_attempts += 1;
        link.last_error = Some(error.clone());
        self.store.put_link(link)?;
        self.journal(
            &link.account_id,
            Some(&link.mapping),
            "portal_failed",
            format!(
                "portal creation failed (attempt {}): {error}",
                link.portal_attempts
            ),
            Value::Null,
        )?;
        Ok(())
    }

    /// The portal as stored and as templates see it: `url` resolved from
    /// `link` when Ondorse answered none.
    fn portal_record(&self, portal: &Portal) -> PortalRecord {
        let url = portal.resolved_url(&self.portal_base_url);
        let mut answer = serde_json::to_value(portal).unwrap_or(Value::Null);
        if let (Some(url), Some(object)) = (&url, answer.as_object_mut()) {
            object.insert("url".to_owned(), Value::String(url.clone()));
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
        let planned = match plan::plan_writeback(mapping, moment, &context, &describe, &known) {
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
        telemetry::metrics().writeback([mapping], WritebackResult::Refused);
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
        self.store.put_link_and_queue(link, Some(&fields), now())?;
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
