//! Intake: Accounts that match a mapping's `select` become portal intents.
//!
//! Each poll reads `SystemModstamp >= cursor - overlap` in cursor order,
//! page by page. A page's new Accounts are recorded as durable intents (with
//! their portal request rendered once, frozen) and their portals attempted
//! before the cursor moves past the page, so a crash at any point re-reads
//! the page instead of skipping it. A mapping's polls take its cursor lock;
//! each Account's link is touched under the link's lock.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::json;

use super::budget::Work;
use super::locks::link_key;
use super::plan::{self, record_fields};
use super::portals::{Attempt, PortalsReport};
use super::{Engine, SyncError, now};
use crate::mapping::Mapping;
use crate::salesforce::model::Record;
use crate::salesforce::{Id, soql};
use crate::store::{Cursor, Link, PortalRequest};

/// What one intake run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntakeReport {
    /// Matching Accounts read (the overlap re-reads some each time).
    pub accounts_seen: usize,
    /// New intents recorded.
    pub intents: usize,
    /// Portals created (new intents and older pending ones).
    pub portals_created: usize,
    /// Portal creations that failed and wait for a retry.
    pub portals_failed: usize,
    pub pages: usize,
}

impl IntakeReport {
    fn add(&mut self, other: IntakeReport) {
        self.accounts_seen += other.accounts_seen;
        self.intents += other.intents;
        self.portals_created += other.portals_created;
        self.portals_failed += other.portals_failed;
        self.pages += other.pages;
    }
}

impl Engine {
    /// Polls every mapping once; a failing mapping does not stop the others.
    pub async fn poll_all(&self) -> Vec<(String, Result<IntakeReport, SyncError>)> {
        let mappings = self.mappings();
        // Paused: every mapping says why; the governor logged it once.
        if let Err(paused) = self.salesforce.may_run(Work::Intake).await {
            return mappings
                .iter()
                .map(|mapping| (mapping.name.clone(), Err(paused.clone().into())))
                .collect();
        }
        let mut results = Vec::new();
        for mapping in mappings.iter() {
            // A mapping paused by schema drift keeps its cursor until the
            // org matches it again (see `reload`).
            if let Some(reason) = self.drift_pause(mapping).await {
                results.push((mapping.name.clone(), Err(SyncError::MappingPaused(reason))));
                continue;
            }
            let result = self.poll(&mapping.name).await;
            if let Err(error) = &result
                && !self.pause_on_query_drift(mapping, error).await
            {
                tracing::warn!(mapping = %mapping.name, %error, "poll failed");
            }
            results.push((mapping.name.clone(), result));
        }
        results
    }

    /// One poll of one mapping, from its cursor (minus the overlap).
    pub async fn poll(&self, mapping_name: &str) -> Result<IntakeReport, SyncError> {
        let overlap = chrono::Duration::from_std(self.settings.overlap).unwrap_or_default();
        let since = self
            .store
            .cursor(mapping_name)?
            .map_or(DateTime::<Utc>::UNIX_EPOCH, |cursor| {
                cursor.system_modstamp - overlap
            });
        self.intake_since(mapping_name, since, true).await
    }

    /// Reads every matching Account modified since `since`. With
    /// `move_cursor`, the cursor follows the pages (never backwards).
    ///
    /// Pipelined: while the portals of one page are created, the next page
    /// is read and its intents recorded, and portal POSTs flow from one
    /// page into the next without waiting for a page's slowest call. A
    /// page's cursor moves once every portal of it, and of the pages
    /// before it, was attempted.
    pub async fn intake_since(
        &self,
        mapping_name: &str,
        since: DateTime<Utc>,
        move_cursor: bool,
    ) -> Result<IntakeReport, SyncError> {
        let mapping = self.mapping(mapping_name)?;
        let _cursor_lock = match move_cursor {
            true => Some(self.cursor_locks.lock(&mapping.name).await),
            false => None,
        };
        let mut pages = self
            .salesforce
            .query(Work::Intake, plan::intake_query(&mapping, since));
        // One page recorded ahead of the portals being created.
        let (ready, mut recorded) = tokio::sync::mpsc::channel::<RecordedPage>(1);
        let read = async {
            let mut report = IntakeReport::default();
            while let Some(records) = pages.next_page().await? {
                let last = records.last().and_then(cursor_of);
                let (page, intents) = self.record_page(&mapping, records).await?;
                report.add(page);
                if ready.send(RecordedPage { intents, last }).await.is_err() {
                    break;
                }
            }
            drop(ready);
            Ok::<_, SyncError>(report)
        };
        let create = async {
            let concurrency = self.settings.ondorse_concurrency.max(1);
            let mut portals = PortalsReport::default();
            let mut first_error = None;
            // Pages in order: the portals each still has to attempt, and
            // where the cursor goes once none are left.
            let mut waiting: VecDeque<(u64, usize, Option<Cursor>)> = VecDeque::new();
            let mut queue: VecDeque<(u64, String)> = VecDeque::new();
            let mut attempts = FuturesUnordered::new();
            let mut next_page = 0u64;
            let mut reading = true;
            loop {
                while attempts.len() < concurrency
                    && let Some((page, account_id)) = queue.pop_front()
                {
                    let mapping = &mapping;
                    attempts.push(
                        async move { (page, self.create_portal(mapping, &account_id).await) },
                    );
                }
                while let Some((page, 0, last)) = waiting.front().cloned() {
                    waiting.pop_front();
                    if move_cursor
                        && first_error.is_none()
                        && let Some(last) = last
                    {
                        // Its flush makes the portals recorded so far durable.
                        self.advance_cursor(&mapping.name, &last).await?;
                    }
                    tracing::trace!(page, "page's portals attempted");
                }
                if !reading && queue.is_empty() && attempts.is_empty() {
                    break;
                }
                tokio::select! {
                    page = recorded.recv(), if reading && queue.len() < concurrency => match page {
                        Some(RecordedPage { intents, last }) => {
                            waiting.push_back((next_page, intents.len(), last));
                            queue.extend(intents.into_iter().map(|id| (next_page, id)));
                            next_page += 1;
                        }
                        None => reading = false,
                    },
                    Some((page, outcome)) = attempts.next(), if !attempts.is_empty() => {
                        // Its link's write-back flows while portals are created.
                        if matches!(outcome, Ok(Attempt::Created)) {
                            self.links_queued.notify_one();
                        }
                        if let Err(error) = portals.count(&mapping, outcome) {
                            first_error.get_or_insert(error);
                        }
                        if let Some(entry) = waiting.iter_mut().find(|(at, _, _)| *at == page) {
                            entry.1 -= 1;
                        }
                    }
                }
            }
            self.portals_attempted(&portals).await?;
            match first_error {
                Some(error) => Err(error),
                None => Ok(portals),
            }
        };
        let (read, created) = tokio::join!(read, create);
        self.intake_finished.notify_one();
        let mut report = read?;
        let created = created?;
        report.portals_created = created.created;
        report.portals_failed = created.failed;
        if move_cursor {
            self.metrics.poll_succeeded(&mapping.name, now());
        }
        tracing::info!(
            mapping = %mapping.name,
            accounts_seen = report.accounts_seen,
            intents = report.intents,
            portals_created = report.portals_created,
            portals_failed = report.portals_failed,
            "intake finished"
        );
        Ok(report)
    }

    /// Moves a mapping's cursor to `last` unless it is already past it,
    /// durably (the flush also makes every portal recorded before it
    /// durable).
    async fn advance_cursor(&self, mapping: &str, last: &Cursor) -> Result<(), SyncError> {
        let current = self.store.cursor(mapping)?;
        if current.as_ref().is_none_or(|current| {
            (current.system_modstamp, &current.id) < (last.system_modstamp, &last.id)
        }) {
            self.store.set_cursor(mapping, last)?;
        }
        self.store.flush().await?;
        Ok(())
    }

    /// Reads chosen Accounts now (push hints, `resync --account`), in every
    /// mapping whose `select` they match; no cursor moves.
    pub async fn intake_accounts(&self, ids: &[Id]) -> Result<IntakeReport, SyncError> {
        let mut report = IntakeReport::default();
        if ids.is_empty() {
            return Ok(report);
        }
        for mapping in self.mappings().iter() {
            for soql in plan::accounts_queries(mapping, ids) {
                let mut pages = self.salesforce.query(Work::Intake, soql);
                while let Some(records) = pages.next_page().await? {
                    report.add(self.intake_records(mapping, records).await?);
                }
            }
        }
        Ok(report)
    }

    /// The work of one page: remember what Salesforce holds, record intents
    /// for new Accounts (flushed), then create their portals.
    async fn intake_records(
        &self,
        mapping: &Mapping,
        records: Vec<Record>,
    ) -> Result<IntakeReport, SyncError> {
        let (mut report, intents) = self.record_page(mapping, records).await?;
        let created = self.create_portals(mapping, intents).await?;
        report.portals_created = created.created;
        report.portals_failed = created.failed;
        Ok(report)
    }

    /// Remembers what Salesforce holds for a page's Accounts and records
    /// intents for the new ones, flushed: the Accounts whose portals are to
    /// be created.
    async fn record_page(
        &self,
        mapping: &Mapping,
        records: Vec<Record>,
    ) -> Result<(IntakeReport, Vec<String>), SyncError> {
        self.metrics.accounts_seen(&mapping.name, records.len());
        let mut report = IntakeReport {
            accounts_seen: records.len(),
            pages: 1,
            ..IntakeReport::default()
        };
        let mut intents = Vec::new();
        for record in records {
            let Some(account_id) = record
                .get("Id")
                .and_then(|id| id.as_str())
                .map(str::to_owned)
            else {
                tracing::warn!(mapping = %mapping.name, "a record without Id was skipped");
                continue;
            };
            if self.record_account(mapping, &account_id, record).await? {
                intents.push(account_id);
            }
        }
        report.intents = intents.len();
        // The intents must survive a crash before any POST goes out.
        self.store.flush().await?;
        Ok((report, intents))
    }

    /// Remembers what Salesforce holds for one Account and records its
    /// intent when it has no link yet (true then), under the link's lock. An
    /// existing link gets the fresh record for later templates; its frozen
    /// request never changes.
    async fn record_account(
        &self,
        mapping: &Mapping,
        account_id: &str,
        record: Record,
    ) -> Result<bool, SyncError> {
        let _link_lock = self
            .link_locks
            .lock(&link_key(&mapping.name, account_id))
            .await;
        self.store
            .remember_fields(account_id, &record_fields(&record))?;
        if let Some(mut link) = self.store.link(&mapping.name, account_id)? {
            link.account = record;
            // Seen again after a delete: restored from the recycle bin (the
            // next reconcile plans its fields again).
            if !self.reopen(&mut link)? {
                self.store.put_link(&link)?;
            }
            return Ok(false);
        }
        let intent_at = now();
        // Rendered once, here; a template that fails now is rendered again
        // at the first attempt (and the intent parked until it renders).
        let request = mapping
            .portal_body(&record)
            .ok()
            .map(|body| PortalRequest::freeze(&body));
        let link = Link {
            idempotency_key: plan::idempotency_key(&mapping.name, account_id, intent_at),
            mapping: mapping.name.clone(),
            account_id: account_id.to_owned(),
            intent_at,
            portal: None,
            application_id: None,
            decision_final: false,
            collect_opened: false,
            collect_changed_at: None,
            account: record,
            portal_attempts: 0,
            last_error: None,
            request,
            retry_at: None,
            refused: false,
            portal_writeback_due: false,
            closed: None,
        };
        self.store.put_link(&link)?;
        self.journal(
            account_id,
            Some(&mapping.name),
            "intent_recorded",
            format!("matched `{}`; a portal will be created", mapping.name),
            json!({ "idempotency_key": link.idempotency_key, "fields": record_fields(&link.account) }),
        )?;
        tracing::info!(account_id, mapping = %mapping.name, "portal intent recorded");
        Ok(true)
    }

    pub(super) fn mapping(&self, name: &str) -> Result<std::sync::Arc<Mapping>, SyncError> {
        self.mappings()
            .get(name)
            .cloned()
            .ok_or_else(|| SyncError::UnknownMapping(name.to_owned()))
    }
}

/// A page whose intents are recorded: the portals to create, and where
/// its cursor goes once they were attempted.
struct RecordedPage {
    intents: Vec<String>,
    last: Option<Cursor>,
}

/// The cursor position of a record: its `SystemModstamp` and `Id`.
fn cursor_of(record: &Record) -> Option<Cursor> {
    let id = record.get("Id")?.as_str()?;
    let stamp = record.get("SystemModstamp")?.as_str()?;
    Some(Cursor {
        system_modstamp: soql::parse_datetime(stamp).ok()?,
        id: id.to_owned(),
    })
}
