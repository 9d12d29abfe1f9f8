//! The per-field rules a write must pass, and the per-record error it
//! gets when it does not.

use serde_json::Value;

use super::times::truncate_to_second;
use super::{FieldDef, FieldType, format_datetime, normalize_id, parse_date, parse_datetime};

/// Why one field of one record was refused: a per-record error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) fields: Vec<String>,
}

impl RecordError {
    pub(crate) fn new(
        code: &'static str,
        message: impl Into<String>,
        fields: &[&str],
    ) -> RecordError {
        RecordError {
            code,
            message: message.into(),
            fields: fields.iter().map(|field| (*field).to_owned()).collect(),
        }
    }
}

/// The stored value for `value` written to `field`, or the error the API gives.
pub(crate) fn coerce_write(field: &FieldDef, value: &Value) -> Result<Value, RecordError> {
    let name = field.name.as_str();
    if value.is_null() {
        return if field.nillable {
            Ok(Value::Null)
        } else {
            Err(RecordError::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{name}]"),
                &[name],
            ))
        };
    }
    let wrong_type = || {
        RecordError::new(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            format!(
                "{}: value not of required type: {}",
                field.label,
                compact(value)
            ),
            &[name],
        )
    };
    let stored = match field.field_type {
        FieldType::Id | FieldType::Reference => {
            let text = value.as_str().ok_or_else(wrong_type)?;
            let id = normalize_id(text).ok_or_else(|| {
                RecordError::new(
                    "MALFORMED_ID",
                    format!("{}: id value of incorrect type: {text}", field.label),
                    &[name],
                )
            })?;
            Value::String(id)
        }
        FieldType::Boolean => match value {
            Value::Bool(flag) => Value::Bool(*flag),
            Value::String(text) if text.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::String(text) if text.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return Err(wrong_type()),
        },
        FieldType::Int | FieldType::Double | FieldType::Currency => {
            let number = match value {
                Value::Number(number) => number.as_f64().ok_or_else(wrong_type)?,
                Value::String(text) => text.trim().parse::<f64>().map_err(|_| wrong_type())?,
                _ => return Err(wrong_type()),
            };
            if !number.is_finite() {
                return Err(wrong_type());
            }
            coerce_number(field, number)?
        }
        FieldType::Date => {
            let text = value.as_str().ok_or_else(wrong_type)?;
            let date = parse_date(text)
                .or_else(|| parse_datetime(text).map(|instant| instant.date_naive()))
                .ok_or_else(wrong_type)?;
            Value::String(date.format("%Y-%m-%d").to_string())
        }
        FieldType::DateTime => {
            let text = value.as_str().ok_or_else(wrong_type)?;
            let instant = parse_datetime(text).ok_or_else(wrong_type)?;
            Value::String(format_datetime(truncate_to_second(instant)))
        }
        FieldType::String
        | FieldType::Textarea
        | FieldType::Picklist
        | FieldType::Email
        | FieldType::Phone
        | FieldType::Url => {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                _ => return Err(wrong_type()),
            };
            coerce_text(field, text)?
        }
    };
    Ok(stored)
}

fn coerce_number(field: &FieldDef, number: f64) -> Result<Value, RecordError> {
    let name = field.name.as_str();
    let out_of_range =
        |value: f64| value.abs() >= 10f64.powi(field.precision.saturating_sub(field.scale) as i32);
    let outside_range = || {
        RecordError::new(
            "NUMBER_OUTSIDE_VALID_RANGE",
            format!(
                "{}: value outside of valid range on numeric field: {number}",
                field.label
            ),
            &[name],
        )
    };
    if field.field_type == FieldType::Int {
        if number.fract() != 0.0 {
            return Err(RecordError::new(
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                format!("{}: value not of required type: {number}", field.label),
                &[name],
            ));
        }
        if out_of_range(number) {
            return Err(outside_range());
        }
        return Ok(Value::from(number as i64));
    }
    let factor = 10f64.powi(field.scale as i32);
    let rounded = (number * factor).round() / factor;
    if out_of_range(rounded) {
        return Err(outside_range());
    }
    Ok(serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number))
}

fn coerce_text(field: &FieldDef, text: String) -> Result<Value, RecordError> {
    let name = field.name.as_str();
    let characters = text.chars().count();
    if characters > field.length as usize {
        return Err(RecordError::new(
            "STRING_TOO_LONG",
            format!(
                "{}: data value too large: {} (max length={})",
                field.label,
                truncate_for_message(&text),
                field.length
            ),
            &[name],
        ));
    }
    if field.field_type == FieldType::Picklist
        && field.restricted_picklist
        && !field
            .picklist
            .iter()
            .any(|entry| entry.active && entry.value == text)
    {
        return Err(RecordError::new(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            format!(
                "{}: bad value for restricted picklist field: {text}",
                field.label
            ),
            &[name],
        ));
    }
    if field.field_type == FieldType::Email && !looks_like_email(&text) {
        return Err(RecordError::new(
            "INVALID_EMAIL_ADDRESS",
            format!("{}: invalid email address: {text}", field.label),
            &[name],
        ));
    }
    Ok(Value::String(text))
}

/// The check Salesforce's email fields apply, roughly: `local@domain.tld`.
fn looks_like_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Long values are cut in messages, like Salesforce does.
fn truncate_for_message(text: &str) -> String {
    /// Characters of an offending value quoted in a message.
    const QUOTED_CHARACTERS: usize = 40;
    if text.chars().count() <= QUOTED_CHARACTERS {
        text.to_owned()
    } else {
        let head: String = text.chars().take(QUOTED_CHARACTERS).collect();
        format!("{head}...")
    }
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(text) => truncate_for_message(text),
        other => truncate_for_message(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::salesforce::data::account_schema;

    #[test]
    fn writes_follow_the_field_rules() {
        let schema = account_schema();
        let score = schema.field("KYC_Risk_Score__c").unwrap();
        assert_eq!(coerce_write(score, &json!(12.345)), Ok(json!(12.35)));
        assert_eq!(coerce_write(score, &json!("7.5")), Ok(json!(7.5)));
        assert_eq!(
            coerce_write(score, &json!(1000)).unwrap_err().code,
            "NUMBER_OUTSIDE_VALID_RANGE"
        );
        let employees = schema.field("NumberOfEmployees").unwrap();
        assert_eq!(coerce_write(employees, &json!("120")), Ok(json!(120)));
        assert_eq!(
            coerce_write(employees, &json!(100_000_000))
                .unwrap_err()
                .code,
            "NUMBER_OUTSIDE_VALID_RANGE"
        );
        assert_eq!(
            coerce_write(employees, &json!(1.5)).unwrap_err().code,
            "INVALID_TYPE_ON_FIELD_IN_RECORD"
        );
        assert_eq!(
            coerce_write(score, &json!("high")).unwrap_err().code,
            "INVALID_TYPE_ON_FIELD_IN_RECORD"
        );
        let status = schema.field("KYC_Status__c").unwrap();
        assert_eq!(
            coerce_write(status, &json!("Legacy")).unwrap_err().code,
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        );
        let code = schema.field("BillingCountryCode").unwrap();
        assert_eq!(
            coerce_write(code, &json!("FRA")).unwrap_err().code,
            "STRING_TOO_LONG"
        );
        let name = schema.field("name").unwrap();
        assert_eq!(
            coerce_write(name, &Value::Null).unwrap_err().code,
            "REQUIRED_FIELD_MISSING"
        );
        let decided = schema.field("KYC_Decision_Date__c").unwrap();
        assert_eq!(
            coerce_write(decided, &json!("2026-11-25T21:49:32+01:00")),
            Ok(json!("2026-11-25T20:49:32.000+0000"))
        );
    }
}
