//! Values to Salesforce field types, from describe metadata.
//!
//! A template yields JSON; Salesforce wants each field in its own type. The
//! conversion refuses what would be silently damaged (a text too long, a
//! picklist value the org does not have) and says what would fit.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Number, Value};

use crate::salesforce::Id;
use crate::salesforce::model::FieldDescribe;

/// Salesforce's own datetime form, as it returns it: `2026-11-25T20:49:32.000+0000`.
const SALESFORCE_DATETIME: &str = "%Y-%m-%dT%H:%M:%S%.f%z";
/// Separator of multi-select picklist values on the wire.
const MULTIPICKLIST_SEPARATOR: char = ';';

/// A value that does not fit its Salesforce field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field `{field}` ({field_type}) cannot take {value}: {reason}")]
pub struct ConversionError {
    pub field: String,
    pub field_type: String,
    /// The refused value, as JSON text.
    pub value: String,
    /// What is wrong and what would fit.
    pub reason: String,
}

/// Converts `value` to the type of `field`. Null clears the field (when it
/// may be empty); so does empty text for non-text fields, since a text
/// template renders a missing value as nothing.
pub fn convert_value(value: &Value, field: &FieldDescribe) -> Result<Value, ConversionError> {
    let fail = |reason: String| ConversionError {
        field: field.name.clone(),
        field_type: field.field_type.clone(),
        value: value.to_string(),
        reason,
    };
    let is_text_type = matches!(
        field.field_type.as_str(),
        "string" | "textarea" | "email" | "phone" | "url" | "encryptedstring" | "combobox"
    );
    let blank = matches!(value, Value::String(text) if text.trim().is_empty());
    if value.is_null() || (blank && !is_text_type) {
        return if field.nillable {
            Ok(Value::Null)
        } else {
            Err(fail(
                "the field is required and cannot be cleared; give it a value or a `default`"
                    .to_owned(),
            ))
        };
    }
    match field.field_type.as_str() {
        "string" | "textarea" | "email" | "phone" | "url" | "encryptedstring" | "combobox" => {
            let text = scalar_text(value)
                .ok_or_else(|| fail("expected a text, number or true/false".to_owned()))?;
            check_length(&text, field).map_err(fail)?;
            Ok(Value::String(text))
        }
        "picklist" => {
            let text =
                scalar_text(value).ok_or_else(|| fail("expected one picklist value".to_owned()))?;
            check_picklist(&text, field).map_err(fail)?;
            Ok(Value::String(text))
        }
        "multipicklist" => {
            let values: Vec<String> = match value {
                Value::Array(items) => items
                    .iter()
                    .map(scalar_text)
                    .collect::<Option<_>>()
                    .ok_or_else(|| fail("expected picklist values as texts".to_owned()))?,
                other => scalar_text(other)
                    .ok_or_else(|| fail("expected picklist values separated by `;`".to_owned()))?
                    .split(MULTIPICKLIST_SEPARATOR)
                    .map(|item| item.trim().to_owned())
                    .filter(|item| !item.is_empty())
                    .collect(),
            };
            for item in &values {
                check_picklist(item, field).map_err(fail)?;
            }
            Ok(Value::String(
                values.join(&MULTIPICKLIST_SEPARATOR.to_string()),
            ))
        }
        "boolean" => match value {
            Value::Bool(flag) => Ok(Value::Bool(*flag)),
            Value::String(text) if text.trim().eq_ignore_ascii_case("true") => {
                Ok(Value::Bool(true))
            }
            Value::String(text) if text.trim().eq_ignore_ascii_case("false") => {
                Ok(Value::Bool(false))
            }
            _ => Err(fail("expected true or false".to_owned())),
        },
        "int" => {
            let number = number(value).ok_or_else(|| fail("expected a whole number".to_owned()))?;
            if number.fract() != 0.0 {
                return Err(fail("expected a whole number".to_owned()));
            }
            check_digits(number, field).map_err(fail)?;
            Ok(Value::from(number as i64))
        }
        "double" | "currency" | "percent" => {
            let number = number(value).ok_or_else(|| fail("expected a number".to_owned()))?;
            // Salesforce rounds extra decimals to the field's scale; do it
            // here so the value we compare and journal is the stored one.
            let number = match field.scale {
                Some(scale) => {
                    let factor = 10f64.powi(scale as i32);
                    (number * factor).round() / factor
                }
                None => number,
            };
            check_digits(number, field).map_err(fail)?;
            Number::from_f64(number)
                .map(Value::Number)
                .ok_or_else(|| fail("expected a finite number".to_owned()))
        }
        "date" => {
            let text = value
                .as_str()
                .ok_or_else(|| fail("expected a date such as 2026-11-25".to_owned()))?;
            parse_date(text.trim())
                .map(|date| Value::String(date.format("%Y-%m-%d").to_string()))
                .ok_or_else(|| {
                    fail("expected a date such as 2026-11-25 (or a datetime)".to_owned())
                })
        }
        "datetime" => {
            let text = value.as_str().ok_or_else(|| {
                fail("expected a datetime such as 2026-11-25T20:49:32Z".to_owned())
            })?;
            parse_datetime(text.trim())
                .map(|moment| Value::String(moment.to_rfc3339_opts(SecondsFormat::Millis, true)))
                .ok_or_else(|| {
                    fail("expected a datetime such as 2026-11-25T20:49:32Z (RFC 3339)".to_owned())
                })
        }
        "reference" | "id" => {
            let text = value
                .as_str()
                .map(str::trim)
                .ok_or_else(|| fail("expected a record Id".to_owned()))?;
            // The 18-character form is what Salesforce answers, so an
            // unchanged reference compares equal and is not sent again.
            Id::parse(text)
                .map(|id| Value::String(id.into()))
                .map_err(|_| fail("expected a record Id of 15 or 18 letters and digits".to_owned()))
        }
        // Types the mapping has no opinion on (time, base64, ...): sent as
        // they are, Salesforce has the last word.
        _ => Ok(value.clone()),
    }
}

/// Text of a scalar: numbers as JSON writes them, booleans as `true`/`false`.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite()),
        _ => None,
    }
}

fn check_length(text: &str, field: &FieldDescribe) -> Result<(), String> {
    let length = text.chars().count();
    if field.length > 0 && length > field.length as usize {
        return Err(format!(
            "{length} characters, over the field's {} (shorten the value or widen the field; nothing is truncated)",
            field.length
        ));
    }
    Ok(())
}

fn check_picklist(text: &str, field: &FieldDescribe) -> Result<(), String> {
    if !field.restricted_picklist || field.active_picklist_values().any(|active| active == text) {
        return Ok(());
    }
    let active: Vec<&str> = field.active_picklist_values().collect();
    let case_mismatch = active
        .iter()
        .find(|active| active.eq_ignore_ascii_case(text));
    let hint = case_mismatch
        .map(|near| format!(" (did you mean `{near}`?)"))
        .unwrap_or_default();
    Err(format!(
        "not an active value of this restricted picklist{hint}; active values: {}",
        active.join(", ")
    ))
}

/// Digits before the decimal point may not exceed `precision - scale`.
fn check_digits(number: f64, field: &FieldDescribe) -> Result<(), String> {
    let Some(precision) = field.precision.filter(|precision| *precision > 0) else {
        return Ok(());
    };
    let integer_digits = precision.saturating_sub(field.scale.unwrap_or(0));
    let limit = 10f64.powi(integer_digits as i32);
    if number.abs().trunc() >= limit {
        return Err(format!(
            "more than {integer_digits} digits before the decimal point (precision {precision}, scale {})",
            field.scale.unwrap_or(0)
        ));
    }
    Ok(())
}

/// A date, or the date part of a datetime as written (no time zone shift:
/// the day the source meant).
fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|moment| moment.date_naive())
        })
        .or_else(|| {
            DateTime::parse_from_str(text, SALESFORCE_DATETIME)
                .ok()
                .map(|moment| moment.date_naive())
        })
}

/// RFC 3339, Salesforce's `+0000` form, a naive datetime (taken as UTC), or a
/// bare date (midnight UTC).
fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, SALESFORCE_DATETIME))
        .map(|moment| moment.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|naive| naive.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|date| date.and_hms_opt(0, 0, 0))
                .map(|naive| naive.and_utc())
        })
}
