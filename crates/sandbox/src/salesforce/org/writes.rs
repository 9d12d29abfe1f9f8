//! The org's side of the REST writes: single-record and collection updates,
//! each record checked against the schema and staged, then committed.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Org, touch};
use crate::salesforce::data::{self, ACCOUNT_PREFIX, RecordError, Row};

impl Org {
    /// `PATCH .../sobjects/Account/{id}`.
    pub(crate) fn update_account(
        &mut self,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<(), RecordError> {
        let mut staged = HashMap::new();
        self.stage_update(id, fields, &mut staged)?;
        self.commit(staged, 1);
        Ok(())
    }

    /// `PATCH .../composite/sobjects`: one outcome per record, in order.
    /// With `all_or_none`, one failure rolls every record back and the
    /// others report `ALL_OR_NONE_OPERATION_ROLLED_BACK`.
    pub(crate) fn update_accounts(
        &mut self,
        records: &[Value],
        all_or_none: bool,
    ) -> Vec<Result<String, RecordError>> {
        let mut staged = HashMap::new();
        let outcomes: Vec<Result<String, RecordError>> = records
            .iter()
            .map(|record| {
                let fields = record.as_object().ok_or_else(|| {
                    RecordError::new(
                        "JSON_PARSER_ERROR",
                        "each record must be a JSON object",
                        &[],
                    )
                })?;
                check_record_type(fields)?;
                match fields.get("id").or_else(|| fields.get("Id")) {
                    Some(Value::String(id)) => self.stage_update(id, fields, &mut staged),
                    _ => Err(RecordError::new(
                        "MISSING_ARGUMENT",
                        "Id not specified in an update call",
                        &[],
                    )),
                }
            })
            .collect();
        let succeeded = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
        if !all_or_none || succeeded == outcomes.len() {
            self.commit(staged, succeeded);
            return outcomes;
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.and_then(|_| {
                    Err(RecordError::new(
                        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "Record rolled back because not all records were valid and the request was using AllOrNone header",
                        &[],
                    ))
                })
            })
            .collect()
    }

    /// Checks and stages one update of one Account; `staged` holds rows
    /// changed earlier in the same request, which later records see.
    fn stage_update(
        &mut self,
        raw_id: &str,
        fields: &Map<String, Value>,
        staged: &mut HashMap<String, Row>,
    ) -> Result<String, RecordError> {
        let id = data::normalize_id(raw_id)
            .filter(|id| id.starts_with(ACCOUNT_PREFIX))
            .ok_or_else(|| {
                RecordError::new(
                    "MALFORMED_ID",
                    format!("Account ID: id value of incorrect type: {raw_id}"),
                    &["Id"],
                )
            })?;
        let current = staged
            .get(&id)
            .or_else(|| self.accounts.get(&id).map(|row| &**row))
            .ok_or_else(|| {
                RecordError::new(
                    "NOT_FOUND",
                    format!("The requested resource does not exist: Account {id}"),
                    &[],
                )
            })?;
        if current.get("IsDeleted") == Some(&Value::Bool(true)) {
            return Err(RecordError::new(
                "ENTITY_IS_DELETED",
                "entity is deleted",
                &[],
            ));
        }
        let mut updated = Row::clone(current);
        for (name, value) in fields {
            if name == "attributes" {
                continue;
            }
            if name.eq_ignore_ascii_case("Id") {
                // The record's own Id may travel in the body; another one may not.
                if value.as_str().and_then(data::normalize_id).as_deref() == Some(id.as_str()) {
                    continue;
                }
                return Err(RecordError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    "Unable to create/update fields: Id. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    &["Id"],
                ));
            }
            let field = self.account_schema.field(name).ok_or_else(|| {
                RecordError::new(
                    "INVALID_FIELD",
                    format!("No such column '{name}' on sobject of type Account"),
                    &[name.as_str()],
                )
            })?;
            if !field.updateable || field.calculated {
                return Err(RecordError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!(
                        "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                        field.name
                    ),
                    &[field.name.as_str()],
                ));
            }
            let stored = data::coerce_write(field, value)?;
            if field.field_type == data::FieldType::Reference
                && let Some(target) = stored.as_str()
                && !self.users.contains_key(target)
            {
                return Err(RecordError::new(
                    "INVALID_CROSS_REFERENCE_KEY",
                    format!("invalid cross reference id: {target}"),
                    &[field.name.as_str()],
                ));
            }
            updated.insert(field.name.clone(), stored);
        }
        if let Some(error) = self.faults.write_fault(&id) {
            return Err(error);
        }
        touch(&mut updated);
        staged.insert(id.clone(), updated);
        Ok(id)
    }

    /// Makes staged rows the stored ones; `writes` record writes succeeded.
    fn commit(&mut self, staged: HashMap<String, Row>, writes: usize) {
        self.stats.records_updated += writes as u64;
        self.accounts
            .extend(staged.into_iter().map(|(id, row)| (id, Arc::new(row))));
    }
}

/// A collection record's `attributes.type` must name Account.
fn check_record_type(fields: &Map<String, Value>) -> Result<(), RecordError> {
    match fields
        .get("attributes")
        .and_then(|attributes| attributes.get("type"))
        .and_then(Value::as_str)
    {
        Some(kind) if kind.eq_ignore_ascii_case("Account") => Ok(()),
        Some(kind) => Err(RecordError::new(
            "INVALID_TYPE",
            format!("sObject type '{kind}' is not supported by the sandbox; it writes Accounts"),
            &[],
        )),
        None => Err(RecordError::new(
            "INVALID_TYPE",
            "Must send a concrete entity type: attributes.type is missing",
            &[],
        )),
    }
}
