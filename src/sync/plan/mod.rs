//! The pure half of the engine: a record, a mapping and what the store
//! knows in; what to send out. `preview` and `resync --dry-run` run exactly
//! this, and most sync unit tests exercise it without any I/O.
//!
//! - `queries`: every SOQL string the engine (and the online check) sends.
//! - `tests`: the table of (record, application, describe) in, fields out.

mod collect;
mod queries;
#[cfg(test)]
mod tests;

pub use collect::collect_change;
pub use queries::{
    IDS_PER_QUERY, accounts_queries, by_id_queries, fields_queries, intake_query, overlap_query,
    query_fields, select_check_query,
};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::mapping::{Mapping, Moment, RenderError, WritebackContext, convert_value};
use crate::salesforce::model::{Record, SObjectDescribe};
use crate::store::{Fields, Link};

/// Our code for a value that cannot become the field's type; Salesforce's
/// own codes are used for everything Salesforce refuses.
pub const CONVERSION_ERROR_CODE: &str = "VALUE_NOT_CONVERTIBLE";
/// Our code for a written field the org does not have (or no longer shows us).
pub const MISSING_FIELD_CODE: &str = "INVALID_FIELD";

/// What one write-back moment would do to one Account.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WritePlan {
    /// Fields whose converted value differs from what Salesforce holds:
    /// the only ones sent.
    pub changed: Fields,
    /// Fields that already hold the value: not sent.
    pub unchanged: Vec<String>,
    /// Fields that cannot be written, with why: dead letters, never retried.
    pub refused: Vec<RefusedField>,
}

/// A field value that cannot be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedField {
    pub field: String,
    pub value: Value,
    pub code: &'static str,
    pub message: String,
}

/// Renders one moment of `mapping`, converts every value to its field's
/// type, and keeps only what differs from `known` (what Salesforce holds,
/// as last read or written).
///
/// The moments are ordered (portal created, then application, then collect
/// opened), and `reached` is the latest one the link has reached: a moment
/// planned late (reconcile planning a portal's write-back after the
/// decision landed, a refresh after `collect.opened`) leaves alone every
/// field a later reached moment writes, so it never undoes that moment.
pub fn plan_writeback(
    mapping: &Mapping,
    moment: Moment,
    reached: Option<Moment>,
    context: &WritebackContext,
    describe: &SObjectDescribe,
    known: &Fields,
) -> Result<WritePlan, RenderError> {
    let later: Vec<String> = mapping
        .written_fields()
        .into_iter()
        .filter(|written| {
            written.moment > moment && reached.is_some_and(|reached| written.moment <= reached)
        })
        .map(|written| written.field)
        .collect();
    let rendered = mapping.writeback(moment, context)?;
    let mut plan = WritePlan::default();
    for (name, value) in rendered {
        if later.iter().any(|field| field.eq_ignore_ascii_case(&name)) {
            continue;
        }
        // A value refused before (a dead letter) waits for the inputs to change.
        if known.get(&name) == Some(&value) {
            plan.unchanged.push(name);
            continue;
        }
        let Some(field) = describe.field(&name) else {
            plan.refused.push(RefusedField {
                message: format!(
                    "mapping `{}` writes {name}, which Account does not have (or the integration user cannot see)",
                    mapping.name
                ),
                field: name,
                value,
                code: MISSING_FIELD_CODE,
            });
            continue;
        };
        match convert_value(&value, field) {
            Ok(converted) => {
                let current = known.get(&field.name).map(|current| {
                    convert_value(current, field).unwrap_or_else(|_| current.clone())
                });
                if current.as_ref() == Some(&converted) {
                    plan.unchanged.push(field.name.clone());
                } else {
                    plan.changed.insert(field.name.clone(), converted);
                }
            }
            Err(error) => plan.refused.push(RefusedField {
                message: error.to_string(),
                field: field.name.clone(),
                value,
                code: CONVERSION_ERROR_CODE,
            }),
        }
    }
    Ok(plan)
}

impl WritePlan {
    /// This plan with a later moment's over it: a field both write takes
    /// the later value (or stays unsent when Salesforce already holds it).
    fn then(mut self, later: WritePlan) -> WritePlan {
        for field in later.unchanged {
            self.changed.remove(&field);
            if !self.unchanged.contains(&field) {
                self.unchanged.push(field);
            }
        }
        for (field, value) in later.changed {
            self.unchanged.retain(|unchanged| *unchanged != field);
            self.changed.insert(field, value);
        }
        self.refused.extend(later.refused);
        self
    }
}

/// The write-back moments a link has reached, in order: "portal sent" once
/// its portal exists, then the application once one is linked. A collect
/// is an event, not a state a link keeps, so it is never planned again
/// (its fields are kept by [`reached`]).
pub fn moments_reached(has_portal: bool, has_application: bool) -> Vec<Moment> {
    let mut moments = Vec::new();
    if has_portal {
        moments.push(Moment::PortalCreated);
    }
    if has_application {
        moments.push(Moment::Application);
    }
    moments
}

/// The latest write-back moment `link` has reached, which every plan for
/// it is given ([`plan_writeback`]): the collect while documents are
/// requested (the latest collect event opened one) and the decision is not final (a final decision overrides
/// "documents requested"), else the application once one is linked, else
/// the portal once it exists.
pub fn reached(link: &Link) -> Option<Moment> {
    if link.collect_opened && !link.decision_final {
        Some(Moment::CollectOpened)
    } else if link.application_id.is_some() {
        Some(Moment::Application)
    } else if link.portal.is_some() {
        Some(Moment::PortalCreated)
    } else {
        None
    }
}

/// What a link that has reached `reached` writes at every moment of
/// `moments` (resync): each moment planned against the same `known`, a
/// later moment winning the fields it also writes, so a decision overrides
/// "portal sent". A moment the mapping writes nothing at adds nothing; the
/// error names the moment that failed.
pub fn plan_moments(
    mapping: &Mapping,
    moments: &[Moment],
    reached: Option<Moment>,
    context: &WritebackContext,
    describe: &SObjectDescribe,
    known: &Fields,
) -> Result<WritePlan, (Moment, RenderError)> {
    let mut plan = WritePlan::default();
    for &moment in moments {
        if !mapping.writes_at(moment) {
            continue;
        }
        let later = plan_writeback(mapping, moment, reached, context, describe, known)
            .map_err(|error| (moment, error))?;
        plan = plan.then(later);
    }
    Ok(plan)
}

/// Whether a `collect.opened` event writes its moment: not once the
/// decision is final, which a late collect must not overwrite.
pub fn collect_writes(decision_final: bool) -> bool {
    !decision_final
}

/// The top-level scalar fields of a record (what Salesforce holds), without
/// `attributes` and relationship objects.
pub fn record_fields(record: &Record) -> Fields {
    record
        .iter()
        .filter(|(name, value)| name.as_str() != "attributes" && !value.is_object())
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The Idempotency-Key of a portal intent: derived from the intent alone,
/// so every retry of the same intent, in any process, sends the same key.
pub fn idempotency_key(mapping: &str, account_id: &str, intent_at: DateTime<Utc>) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(mapping.as_bytes());
    hasher.update([0]);
    hasher.update(account_id.as_bytes());
    hasher.update([0]);
    hasher.update(intent_at.timestamp_micros().to_be_bytes());
    format!("ondorse-bridge-{}", hex::encode(&hasher.finalize()[..16]))
}
