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
