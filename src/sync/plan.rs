//! The pure half of the engine: a record, a mapping and what the store
//! knows in; what to send out. `preview` and `resync --dry-run` run exactly
//! this, and most sync unit tests exercise it without any I/O.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::mapping::{Mapping, Moment, RenderError, WritebackContext, convert_value};
use crate::salesforce::model::{Record, SObjectDescribe};
use crate::store::Fields;

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
pub fn plan_writeback(
    mapping: &Mapping,
    moment: Moment,
    context: &WritebackContext,
    describe: &SObjectDescribe,
    known: &Fields,
) -> Result<WritePlan, RenderError> {
    let rendered = mapping.writeback(moment, context)?;
    let mut plan = WritePlan::default();
    for (name, value) in rendered {
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

/// The SOQL of one intake poll: the mapping's fields (read by templates,
/// and written, so changes are detected against Salesforce's own values),
/// its `select`, from `since`, in cursor order.
pub fn intake_query(mapping: &Mapping, since: DateTime<Utc>) -> String {
    format!(
        "SELECT {} FROM {} WHERE ({}) AND SystemModstamp >= {} ORDER BY SystemModstamp, Id",
        query_fields(mapping).join(", "),
        mapping.object,
        mapping.select,
        crate::salesforce::soql::datetime_literal(since),
    )
}

/// The SOQL reading chosen Accounts of a mapping (push hints, resync).
pub fn accounts_query(mapping: &Mapping, ids: &[String]) -> String {
    format!(
        "SELECT {} FROM {} WHERE ({}) AND Id IN ({}) ORDER BY SystemModstamp, Id",
        query_fields(mapping).join(", "),
        mapping.object,
        mapping.select,
        id_list(ids),
    )
}

/// The SOQL reading `fields` of chosen records, whatever any `select` says
/// (the writer reading back what landed).
pub fn fields_query<'a>(
    object: &str,
    fields: impl IntoIterator<Item = &'a str>,
    ids: &[String],
) -> String {
    let mut names = vec!["Id"];
    names.extend(
        fields
            .into_iter()
            .filter(|field| !field.eq_ignore_ascii_case("Id")),
    );
    format!(
        "SELECT {} FROM {object} WHERE Id IN ({}) ORDER BY Id",
        names.join(", "),
        id_list(ids),
    )
}

/// `'001…', '001…'`: Ids as SOQL literals for `Id IN (...)`.
pub fn id_list(ids: &[String]) -> String {
    ids.iter()
        .map(|id| crate::salesforce::soql::quote(id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fields to query: what templates read plus what the mapping writes.
pub fn query_fields(mapping: &Mapping) -> Vec<String> {
    let mut fields = mapping.query_fields();
    for written in mapping.written_fields() {
        if !fields
            .iter()
            .any(|field| field.eq_ignore_ascii_case(&written.field))
        {
            fields.push(written.field);
        }
    }
    fields
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
