//! `resync`: Accounts read again from Salesforce and planned again, or
//! intake re-run from a time, one resync at a time.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{OperationError, ResyncRequest, ResyncScope};
use crate::mapping::{Mapping, WritebackContext};
use crate::ondorse::OndorseError;
use crate::salesforce::Id;
use crate::salesforce::model::Record;
use crate::store::{Link, PortalRequest};
use crate::sync::budget::Work;
use crate::sync::locks::link_key;
use crate::sync::plan::{self, record_fields};
use crate::sync::{Engine, SyncError, now};

/// One field a resync writes (or, in a dry run, would write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub account_id: String,
    pub mapping: String,
    pub field: String,
    /// What Salesforce holds now (as far as we know).
    pub from: Value,
    pub to: Value,
}

/// What a resync did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResyncReport {
    pub dry_run: bool,
    /// Matching Accounts read from Salesforce.
    pub accounts_read: usize,
    /// Accounts that had no portal and get (would get) one.
    pub new_portals: Vec<NewPortal>,
    /// Portals created during this resync.
    pub portals_created: usize,
    /// Portal creations that failed and wait for a retry.
    pub portals_failed: usize,
    /// Pending intents abandoned for a fresh one (`new_intent`).
    #[serde(default)]
    pub intents_renewed: usize,
    /// Fields queued for Salesforce (would be, in a dry run).
    pub changes: Vec<FieldChange>,
    /// Fields that cannot be written (dead letters, unless a dry run).
    pub refused: Vec<FieldChange>,
    pub applications_fetched: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewPortal {
    pub account_id: String,
    pub mapping: String,
}

/// Progress of a running resync, for a bar or a log line.
#[derive(Debug, Clone, PartialEq)]
pub struct ResyncProgress {
    pub done: u64,
    pub total: u64,
    /// What was just finished (an Account Id, a mapping name).
    pub item: String,
}

/// Lets one resync run at a time: two would fight over the same links and
/// queue the same writes twice.
#[derive(Debug, Default)]
pub struct ResyncGate {
    running_since: Mutex<Option<DateTime<Utc>>>,
}

/// Held while a resync runs; opens the gate when dropped.
pub struct ResyncTicket<'a> {
    gate: &'a ResyncGate,
}

impl ResyncGate {
    /// Enters, or says since when another resync runs.
    pub fn enter(&self) -> Result<ResyncTicket<'_>, OperationError> {
        let mut running = self
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(since) = *running {
            return Err(OperationError::ResyncRunning { since });
        }
        *running = Some(now());
        Ok(ResyncTicket { gate: self })
    }
}

impl Drop for ResyncTicket<'_> {
    fn drop(&mut self) {
        *self
            .gate
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl Engine {
    /// Runs a resync (the `resync` command and `POST /admin/resync`):
    ///
    /// - `accounts`: re-reads each Account (whatever the mapping's `select`
    ///   says now), re-fetches its application, and rewrites every mapped
    ///   field that differs from what Salesforce holds now; an Account
    ///   without a portal goes through intake like a push hint.
    /// - `since`/`all`: re-runs intake from that time in each mapping,
    ///   without moving cursors backwards; an Account that has a portal gets
    ///   no second one.
    ///
    /// A dry run reads the same data, runs the same planner and writes
    /// nothing anywhere.
    pub async fn resync(
        &self,
        _ticket: &ResyncTicket<'_>,
        request: &ResyncRequest,
        progress: &(dyn Fn(ResyncProgress) + Send + Sync),
    ) -> Result<ResyncReport, OperationError> {
        let scope = request.scope()?;
        let mappings: Vec<std::sync::Arc<Mapping>> = match &request.mapping {
            Some(name) => vec![
                self.mapping(name)
                    .map_err(|_| OperationError::UnknownMapping {
                        name: name.clone(),
                        loaded: self.mappings().names().map(str::to_owned).collect(),
                    })?,
            ],
            None => self.mappings().iter().cloned().collect(),
        };
        let mut report = ResyncReport {
            dry_run: request.dry_run,
            ..ResyncReport::default()
        };
        match scope {
            ResyncScope::Accounts(ids) => {
                self.resync_accounts(&mappings, &ids, request, &mut report, progress)
                    .await?
            }
            ResyncScope::Since(since) => {
                self.resync_since(&mappings, since, request.dry_run, &mut report, progress)
                    .await?
            }
        }
        if !request.dry_run {
            self.store.flush().await?;
            self.writes_queued.notify_one();
        }
        tracing::info!(
            dry_run = request.dry_run,
            accounts_read = report.accounts_read,
            new_portals = report.new_portals.len(),
            changes = report.changes.len(),
            refused = report.refused.len(),
            "resync finished"
        );
        Ok(report)
    }

    async fn resync_since(
        &self,
        mappings: &[std::sync::Arc<Mapping>],
        since: DateTime<Utc>,
        dry_run: bool,
        report: &mut ResyncReport,
        progress: &(dyn Fn(ResyncProgress) + Send + Sync),
    ) -> Result<(), OperationError> {
        let total = mappings.len() as u64;
        for (index, mapping) in mappings.iter().enumerate() {
            if dry_run {
                let mut pages = self
                    .salesforce
                    .query(Work::Intake, plan::intake_query(mapping, since));
                while let Some(records) = pages.next_page().await? {
                    report.accounts_read += records.len();
                    for record in records {
                        let Some(account_id) = record_id(&record) else {
                            continue;
                        };
                        if self.store.link(&mapping.name, &account_id)?.is_none() {
                            report.new_portals.push(NewPortal {
                                account_id,
                                mapping: mapping.name.clone(),
                            });
                        }
                    }
                }
            } else {
                let intake = self.intake_since(&mapping.name, since, false).await?;
                report.accounts_read += intake.accounts_seen;
                report.portals_created += intake.portals_created;
                report.portals_failed += intake.portals_failed;
            }
            progress(ResyncProgress {
                done: index as u64 + 1,
                total,
                item: mapping.name.clone(),
            });
        }
        Ok(())
    }

    async fn resync_accounts(
        &self,
        mappings: &[std::sync::Arc<Mapping>],
        ids: &[Id],
        request: &ResyncRequest,
        report: &mut ResyncReport,
        progress: &(dyn Fn(ResyncProgress) + Send + Sync),
    ) -> Result<(), OperationError> {
        let (dry_run, new_intent) = (request.dry_run, request.new_intent);
        // Read everything first: an unknown Id refuses the whole request
        // before anything changes.
        let mut records: BTreeMap<String, Vec<(std::sync::Arc<Mapping>, Record)>> = BTreeMap::new();
        for mapping in mappings {
            for soql in plan::by_id_queries(mapping, ids) {
                let mut pages = self.salesforce.query(Work::Intake, soql);
                while let Some(page) = pages.next_page().await? {
                    for record in page {
                        if let Some(id) = record_id(&record) {
                            records
                                .entry(id)
                                .or_default()
                                .push((mapping.clone(), record));
                        }
                    }
                }
            }
        }
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| !records.contains_key(id.as_str()))
            .map(Id::to_string)
            .collect();
        if !unknown.is_empty() && !mappings.is_empty() {
            return Err(OperationError::UnknownAccounts { ids: unknown });
        }
        let describe = self.describe().await?;
        let mut without_portal = Vec::new();
        let total = records.len() as u64;
        for (index, (account_id, found)) in records.into_iter().enumerate() {
            report.accounts_read += 1;
            for (mapping, record) in found {
                let Some(unlocked) = self.store.link(&mapping.name, &account_id)? else {
                    without_portal.push((mapping.name.clone(), account_id.clone()));
                    continue;
                };
                // Fetched before taking the link's lock: no lock is held
                // across a call to Ondorse.
                let application = match &unlocked.application_id {
                    Some(application_id) => match self.fetch_application(application_id).await {
                        Ok(application) => Some(application),
                        Err(SyncError::Ondorse(OndorseError::NotFound { .. })) => {
                            tracing::warn!(account_id = %account_id, application_id = %application_id, "ondorse does not know this application any more");
                            None
                        }
                        Err(error) => return Err(error.into()),
                    },
                    None => None,
                };
                let link_lock = self
                    .link_locks
                    .lock(&link_key(&mapping.name, &account_id))
                    .await;
                let Some(mut link) = self.store.link(&mapping.name, &account_id)? else {
                    without_portal.push((mapping.name.clone(), account_id.clone()));
                    continue;
                };
                if new_intent && link.portal.is_none() && !dry_run {
                    self.renew_intent(&mapping, &mut link, &record)?;
                    report.intents_renewed += 1;
                }
                let held = record_fields(&record);
                let known = self.store.planning_baseline(&account_id, &held)?;
                link.account = record;
                let application_value = application
                    .as_ref()
                    .map(|application| application.template_value());
                if application.is_some() {
                    report.applications_fetched += 1;
                }
                let context = WritebackContext {
                    account: &link.account,
                    portal: link.portal.as_ref().map(|portal| &portal.answer),
                    application: application_value.as_ref(),
                    collect: None,
                    now: now(),
                };
                let moments = plan::moments_reached(link.portal.is_some(), application.is_some());
                let planned = plan::plan_moments(
                    &mapping,
                    &moments,
                    plan::reached(&link),
                    &context,
                    &describe,
                    &known,
                )
                .map_err(|(moment, error)| {
                    OperationError::InvalidRequest(format!(
                        "mapping `{}` cannot render {moment} for Account {account_id}: {error}",
                        mapping.name
                    ))
                })?;
                let (changed, refused) = (planned.changed, planned.refused);
                for (field, to) in &changed {
                    report.changes.push(FieldChange {
                        account_id: account_id.clone(),
                        mapping: mapping.name.clone(),
                        field: field.clone(),
                        from: held.get(field).cloned().unwrap_or(Value::Null),
                        to: to.clone(),
                    });
                }
                for field in &refused {
                    report.refused.push(FieldChange {
                        account_id: account_id.clone(),
                        mapping: mapping.name.clone(),
                        field: field.field.clone(),
                        from: held.get(&field.field).cloned().unwrap_or(Value::Null),
                        to: field.value.clone(),
                    });
                }
                let intent_pending = link.portal.is_none();
                if dry_run {
                    if intent_pending {
                        report.new_portals.push(NewPortal {
                            account_id: account_id.clone(),
                            mapping: mapping.name.clone(),
                        });
                    }
                    continue;
                }
                self.store.remember_fields(&account_id, &held)?;
                // Read under the link's lock: nobody changed it meanwhile.
                let mut current = link.clone();
                // Asked by hand: a parked intent is tried now (one refused
                // for good needs `--new-intent`).
                current.retry_at = None;
                if let Some(application) = &application {
                    current.application_id = Some(application.id.clone());
                    current.decision_final = application.is_final();
                }
                for field in &refused {
                    self.dead_letter_refused(&account_id, &mapping.name, field)?;
                }
                // The link and its fields land together, as in the daemon.
                self.store.put_link_and_queue(
                    &current,
                    Some(&changed),
                    crate::store::Urgency::Now,
                    now(),
                )?;
                self.journal(
                    &account_id,
                    Some(&mapping.name),
                    "resynced",
                    format!(
                        "manual resync: Account re-read{}; {} field(s) to write",
                        match &application {
                            Some(application) => format!(
                                ", application {} is {}",
                                application.id,
                                application
                                    .status_review
                                    .as_deref()
                                    .unwrap_or("not decided")
                            ),
                            None => String::new(),
                        },
                        changed.len()
                    ),
                    json!({ "read": held, "fields": changed }),
                )?;
                drop(link_lock);
                if intent_pending {
                    // Its portal creation failed before: try now (same
                    // intent, same request and key) rather than at reconcile.
                    self.store.flush().await?;
                    let created = self
                        .create_portals(&mapping, vec![account_id.clone()])
                        .await?;
                    report.new_portals.push(NewPortal {
                        account_id: account_id.clone(),
                        mapping: mapping.name.clone(),
                    });
                    report.portals_created += created.created;
                    report.portals_failed += created.failed;
                }
            }
            progress(ResyncProgress {
                done: index as u64 + 1,
                total,
                item: account_id.clone(),
            });
        }
        if without_portal.is_empty() {
            return Ok(());
        }
        // Accounts without a portal go through intake, which applies each
        // mapping's `select` and records durable intents.
        if dry_run {
            let hinted: Vec<String> = without_portal.iter().map(|(_, id)| id.clone()).collect();
            for soql in mappings.iter().flat_map(|mapping| {
                plan::accounts_queries(mapping, &hinted)
                    .into_iter()
                    .map(move |soql| (mapping, soql))
            }) {
                let (mapping, soql) = soql;
                let mut pages = self.salesforce.query(Work::Intake, soql);
                while let Some(page) = pages.next_page().await? {
                    for record in page {
                        if let Some(account_id) = record_id(&record)
                            && without_portal
                                .iter()
                                .any(|(name, id)| *name == mapping.name && *id == account_id)
                        {
                            report.new_portals.push(NewPortal {
                                account_id,
                                mapping: mapping.name.clone(),
                            });
                        }
                    }
                }
            }
        } else {
            // Query rows carry their Id in the 18-character form.
            let hinted: Vec<Id> = without_portal
                .iter()
                .filter_map(|(_, id)| Id::parse(id).ok())
                .collect();
            let intake = self.intake_accounts(&hinted).await?;
            report.portals_created += intake.portals_created;
            report.portals_failed += intake.portals_failed;
        }
        Ok(())
    }

    /// Abandons a pending intent for a fresh one: a new key and a request
    /// rendered from the Account as read now (the caller holds the link's
    /// lock). The old key may have created nothing (Ondorse refused it), so
    /// no second portal can come of it.
    fn renew_intent(
        &self,
        mapping: &Mapping,
        link: &mut Link,
        record: &Record,
    ) -> Result<(), OperationError> {
        let abandoned = link.idempotency_key.clone();
        let intent_at = now();
        link.idempotency_key = plan::idempotency_key(&mapping.name, &link.account_id, intent_at);
        link.intent_at = intent_at;
        link.request = mapping
            .portal_body(record)
            .ok()
            .map(|body| PortalRequest::freeze(&body));
        link.refused = false;
        link.retry_at = None;
        link.portal_attempts = 0;
        link.last_error = None;
        self.store.put_link(link)?;
        self.journal(
            &link.account_id,
            Some(&mapping.name),
            "intent_renewed",
            format!(
                "intent {abandoned} abandoned by hand; a fresh intent {} will create the portal",
                link.idempotency_key
            ),
            json!({ "abandoned_key": abandoned, "idempotency_key": link.idempotency_key }),
        )?;
        tracing::info!(account_id = %link.account_id, mapping = %mapping.name, "intent renewed by hand");
        Ok(())
    }
}

fn record_id(record: &Record) -> Option<String> {
    record.get("Id").and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_resync_is_refused_while_the_first_runs() {
        let gate = ResyncGate::default();
        let ticket = gate.enter().expect("the first enters");
        let refused = gate.enter().err().expect("the second is refused");
        assert!(refused.to_string().contains("already running"), "{refused}");
        drop(ticket);
        gate.enter().expect("the gate opens once the first is done");
    }
}
