//! What Salesforce sends back: records and describe metadata.
//!
//! Records stay JSON maps: a mapping can read any field, relationship
//! fields arrive as nested objects (`Owner.Email`), and the client must not
//! lose what it does not know about.

use serde::{Deserialize, Serialize};

/// One SObject row as the REST API returns it, `attributes` included.
pub type Record = serde_json::Map<String, serde_json::Value>;

/// `GET .../sobjects/{name}/describe`, the parts we use; the rest is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SObjectDescribe {
    pub name: String,
    pub fields: Vec<FieldDescribe>,
}

impl SObjectDescribe {
    /// The field with this API name; Salesforce names are case-insensitive.
    pub fn field(&self, name: &str) -> Option<&FieldDescribe> {
        self.fields
            .iter()
            .find(|field| field.name.eq_ignore_ascii_case(name))
    }

    /// The reference field whose `relationshipName` is `relationship`
    /// (`Owner` → `OwnerId`), case-insensitively.
    pub fn relationship(&self, relationship: &str) -> Option<&FieldDescribe> {
        self.fields.iter().find(|field| {
            field
                .relationship_name
                .as_deref()
                .is_some_and(|name| name.eq_ignore_ascii_case(relationship))
        })
    }
}

/// One field of a describe answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDescribe {
    pub name: String,
    /// `id string textarea picklist multipicklist boolean int double currency
    /// percent date datetime email phone url reference`, and more: kept open.
    #[serde(rename = "type")]
    pub field_type: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub updateable: bool,
    #[serde(default)]
    pub nillable: bool,
    /// A formula field: never writable, whatever `updateable` says.
    #[serde(default)]
    pub calculated: bool,
    #[serde(default)]
    pub filterable: Option<bool>,
    /// Maximum length for text-like fields; 0 when it does not apply.
    #[serde(default)]
    pub length: u32,
    #[serde(default)]
    pub precision: Option<u32>,
    #[serde(default)]
    pub scale: Option<u32>,
    /// A restricted picklist refuses values outside `picklist_values`.
    #[serde(default)]
    pub restricted_picklist: bool,
    #[serde(default)]
    pub picklist_values: Vec<PicklistValue>,
    /// For `reference` fields: the SObjects it can point to.
    #[serde(default)]
    pub reference_to: Vec<String>,
    /// For `reference` fields: the name used in paths (`Owner` for `OwnerId`).
    #[serde(default)]
    pub relationship_name: Option<String>,
}

impl FieldDescribe {
    /// Whether the integration user may write this field.
    pub fn is_writable(&self) -> bool {
        self.updateable && !self.calculated
    }

    /// The active picklist values, in the org's order.
    pub fn active_picklist_values(&self) -> impl Iterator<Item = &str> {
        self.picklist_values
            .iter()
            .filter(|value| value.active)
            .map(|value| value.value.as_str())
    }
}

/// One picklist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicklistValue {
    pub value: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub active: bool,
}

/// One page of `GET .../query` or `.../query/{locator}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryAnswer {
    /// Rows matching the whole query, not just this page.
    pub total_size: u64,
    pub done: bool,
    /// A path on `instance_url` for the next page; present while `!done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_records_url: Option<String>,
    pub records: Vec<Record>,
}

/// Fields to set on one record in an sObject Collections update.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordUpdate {
    /// The record Id (15 or 18 characters).
    pub id: String,
    /// Field API name → value; `null` clears the field.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// What happened to one record of an update, in the order sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordOutcome {
    /// The Id we sent (Salesforce omits it on failures).
    pub id: String,
    pub result: Result<(), Vec<crate::salesforce::error::RecordError>>,
}

impl RecordOutcome {
    /// `None` on success; otherwise the strongest disposition among the
    /// errors: a gone record beats a permanent error, which beats a lock.
    pub fn disposition(&self) -> Option<crate::salesforce::error::Disposition> {
        use crate::salesforce::error::Disposition;
        let errors = self.result.as_ref().err()?;
        // A refusal without any error detail is still a refusal: permanent.
        Some(
            errors
                .iter()
                .map(|error| error.disposition())
                .max_by_key(|disposition| match disposition {
                    Disposition::Retry => 0,
                    Disposition::Permanent => 1,
                    Disposition::Gone => 2,
                })
                .unwrap_or(Disposition::Permanent),
        )
    }
}

/// The org's daily API usage, from `Sforce-Limit-Info` or `/limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiUsage {
    /// Calls made in the rolling 24 hours.
    pub used: u64,
    /// The org's allowance for those 24 hours.
    pub max: u64,
}

impl ApiUsage {
    /// `used / max`; an org with no allowance at all counts as full.
    pub fn ratio(&self) -> f64 {
        if self.max == 0 {
            1.0
        } else {
            self.used as f64 / self.max as f64
        }
    }

    /// Reads a `Sforce-Limit-Info` header value: `api-usage=18/15000`,
    /// possibly with more `; key=value` parts around it.
    pub fn from_limit_info(header: &str) -> Option<ApiUsage> {
        header.split([';', ',']).find_map(|part| {
            let (used, max) = part.trim().strip_prefix("api-usage=")?.split_once('/')?;
            Some(ApiUsage {
                used: used.trim().parse().ok()?,
                max: max.trim().parse().ok()?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_info_headers() {
        let cases = [
            ("api-usage=18/15000", Some((18, 15000))),
            (
                "api-usage=25/5000; per-app-api-usage=17/250(appName=sample-app)",
                Some((25, 5000)),
            ),
            (
                "per-app-api-usage=17/250(appName=x); api-usage=3/100",
                Some((3, 100)),
            ),
            ("api-usage=abc/100", None),
            ("", None),
        ];
        for (header, expected) in cases {
            let parsed = ApiUsage::from_limit_info(header).map(|usage| (usage.used, usage.max));
            assert_eq!(parsed, expected, "{header}");
        }
    }

    #[test]
    fn usage_ratio() {
        assert_eq!(
            ApiUsage {
                used: 7500,
                max: 15000
            }
            .ratio(),
            0.5
        );
        assert_eq!(ApiUsage { used: 0, max: 0 }.ratio(), 1.0);
    }
}
