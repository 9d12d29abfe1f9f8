//! The org's schema and values: Account and User field definitions (what
//! describe serves); Salesforce Ids (`ids`), datetimes (`times`) and the
//! per-field rules a write must pass (`writes`).
//!
//! Stored values are kept in their wire form (`2026-11-25T20:49:32.000+0000`,
//! `2026-11-25`, JSON numbers), so rendering a query is a copy. Because every
//! stored datetime is UTC with a fixed width, comparing two of them as text
//! compares the instants; the SOQL evaluator relies on that.

mod ids;
mod times;
mod writes;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value, json};

pub(crate) use ids::{make_id, normalize_id};
pub(crate) use times::{format_datetime, now_stamp, parse_date, parse_datetime};
pub(crate) use writes::{RecordError, coerce_write};

/// One stored record: canonical field names to wire-form values.
pub(crate) type Row = Map<String, Value>;
/// Records by 18-char Id; the order is Id order, which SOQL falls back to.
/// Rows are shared with open query cursors and replaced, never mutated in
/// place, so a cursor keeps the rows as they were when it was opened.
pub(crate) type Table = BTreeMap<String, Arc<Row>>;

/// Key prefix of Account Ids.
pub(crate) const ACCOUNT_PREFIX: &str = "001";
/// Key prefix of User Ids.
pub(crate) const USER_PREFIX: &str = "005";
/// Key prefix of query locators.
pub(crate) const LOCATOR_PREFIX: &str = "01g";
/// Key prefix of the organization Id.
pub(crate) const ORG_PREFIX: &str = "00D";
/// Text fields without an explicit length in describe answer 255.
const DEFAULT_TEXT_LENGTH: u32 = 255;

/// The field types the sandbox serves (a subset of describe's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    Id,
    String,
    Textarea,
    Picklist,
    Boolean,
    Int,
    Double,
    Currency,
    Date,
    DateTime,
    Email,
    Phone,
    Url,
    Reference,
}

impl FieldType {
    /// The name describe uses.
    pub(crate) fn describe_name(self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::String => "string",
            FieldType::Textarea => "textarea",
            FieldType::Picklist => "picklist",
            FieldType::Boolean => "boolean",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::Currency => "currency",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Url => "url",
            FieldType::Reference => "reference",
        }
    }

    /// The name SOQL error messages use for the type of a filter value.
    pub(crate) fn soql_name(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference => "id",
            FieldType::Boolean => "boolean",
            FieldType::Int => "int",
            FieldType::Double | FieldType::Currency => "double",
            FieldType::Date => "date",
            FieldType::DateTime => "dateTime",
            _ => "string",
        }
    }

    /// Whether values are text that SOQL compares case-insensitively.
    pub(crate) fn is_text(self) -> bool {
        matches!(
            self,
            FieldType::String
                | FieldType::Textarea
                | FieldType::Picklist
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Url
        )
    }

    /// Whether values are Ids (compared case-sensitively, 15 or 18 chars).
    pub(crate) fn is_id(self) -> bool {
        matches!(self, FieldType::Id | FieldType::Reference)
    }

    pub(crate) fn is_number(self) -> bool {
        matches!(
            self,
            FieldType::Int | FieldType::Double | FieldType::Currency
        )
    }
}

/// One picklist entry.
#[derive(Debug, Clone)]
pub(crate) struct PicklistEntry {
    pub(crate) value: String,
    pub(crate) active: bool,
}

/// One field as describe shows it and as writes enforce it.
#[derive(Debug, Clone)]
pub(crate) struct FieldDef {
    pub(crate) name: String,
    pub(crate) label: String,
    pub(crate) field_type: FieldType,
    /// Maximum characters for text; 0 when it does not apply.
    pub(crate) length: u32,
    /// Total digits and digits after the point, for numbers.
    pub(crate) precision: u32,
    pub(crate) scale: u32,
    pub(crate) nillable: bool,
    pub(crate) updateable: bool,
    /// A formula: computed at read time, never writable.
    pub(crate) calculated: bool,
    pub(crate) restricted_picklist: bool,
    pub(crate) picklist: Vec<PicklistEntry>,
    /// For references: the object pointed to and the relationship name.
    pub(crate) reference_to: Option<&'static str>,
    pub(crate) relationship_name: Option<&'static str>,
}

impl FieldDef {
    fn new(name: &str, label: &str, field_type: FieldType) -> FieldDef {
        let length = match field_type {
            FieldType::Id | FieldType::Reference => 18,
            field_type if field_type.is_text() => DEFAULT_TEXT_LENGTH,
            _ => 0,
        };
        FieldDef {
            name: name.to_owned(),
            label: label.to_owned(),
            field_type,
            length,
            precision: 0,
            scale: 0,
            nillable: true,
            updateable: true,
            calculated: false,
            restricted_picklist: false,
            picklist: Vec::new(),
            reference_to: None,
            relationship_name: None,
        }
    }

    fn length(mut self, length: u32) -> FieldDef {
        self.length = length;
        self
    }

    fn number(mut self, precision: u32, scale: u32) -> FieldDef {
        self.precision = precision;
        self.scale = scale;
        self
    }

    /// A system field: always present, never written through the API.
    fn system(mut self) -> FieldDef {
        self.nillable = false;
        self.updateable = false;
        self
    }

    fn required(mut self) -> FieldDef {
        self.nillable = false;
        self
    }

    fn picklist(mut self, values: &[&str], restricted: bool) -> FieldDef {
        self.picklist = values
            .iter()
            .map(|value| PicklistEntry {
                value: (*value).to_owned(),
                active: true,
            })
            .collect();
        self.restricted_picklist = restricted;
        self
    }

    fn inactive_value(mut self, value: &str) -> FieldDef {
        self.picklist.push(PicklistEntry {
            value: value.to_owned(),
            active: false,
        });
        self
    }

    fn reference(mut self, to: &'static str, relationship: &'static str) -> FieldDef {
        self.reference_to = Some(to);
        self.relationship_name = Some(relationship);
        self
    }

    fn formula(mut self) -> FieldDef {
        self.calculated = true;
        self.updateable = false;
        self
    }

    fn is_custom(&self) -> bool {
        self.name.ends_with("__c")
    }

    /// The describe entry.
    pub(crate) fn describe(&self) -> Value {
        let mut field = Map::new();
        field.insert("name".into(), json!(self.name));
        field.insert("label".into(), json!(self.label));
        field.insert("type".into(), json!(self.field_type.describe_name()));
        field.insert("length".into(), json!(self.length));
        // Integers give their size as `digits`; other numbers as precision/scale.
        let (precision, digits) = match self.field_type {
            FieldType::Int => (0, self.precision),
            _ => (self.precision, 0),
        };
        field.insert("precision".into(), json!(precision));
        field.insert("scale".into(), json!(self.scale));
        field.insert("digits".into(), json!(digits));
        field.insert("custom".into(), json!(self.is_custom()));
        field.insert("nillable".into(), json!(self.nillable));
        field.insert(
            "createable".into(),
            json!(self.updateable && !self.calculated),
        );
        field.insert("updateable".into(), json!(self.updateable));
        field.insert("calculated".into(), json!(self.calculated));
        field.insert(
            "filterable".into(),
            json!(self.field_type != FieldType::Textarea || self.length <= 255),
        );
        field.insert(
            "sortable".into(),
            json!(self.field_type != FieldType::Textarea || self.length <= 255),
        );
        field.insert("restrictedPicklist".into(), json!(self.restricted_picklist));
        let picklist: Vec<Value> = self
            .picklist
            .iter()
            .map(|entry| {
                json!({"value": entry.value, "label": entry.value, "active": entry.active, "defaultValue": false})
            })
            .collect();
        field.insert("picklistValues".into(), Value::Array(picklist));
        field.insert(
            "referenceTo".into(),
            json!(self.reference_to.into_iter().collect::<Vec<_>>()),
        );
        field.insert("relationshipName".into(), json!(self.relationship_name));
        field.insert("soapType".into(), json!(self.soap_type()));
        Value::Object(field)
    }

    fn soap_type(&self) -> &'static str {
        match self.field_type {
            FieldType::Id | FieldType::Reference => "tns:ID",
            FieldType::Boolean => "xsd:boolean",
            FieldType::Int => "xsd:int",
            FieldType::Double | FieldType::Currency => "xsd:double",
            FieldType::Date => "xsd:date",
            FieldType::DateTime => "xsd:dateTime",
            _ => "xsd:string",
        }
    }
}

/// One SObject type: its fields in describe order, found case-insensitively.
#[derive(Debug, Clone)]
pub(crate) struct ObjectSchema {
    pub(crate) name: &'static str,
    pub(crate) label: &'static str,
    pub(crate) key_prefix: &'static str,
    fields: Vec<FieldDef>,
    by_lowercase_name: HashMap<String, usize>,
}

impl ObjectSchema {
    fn new(
        name: &'static str,
        label: &'static str,
        key_prefix: &'static str,
        fields: Vec<FieldDef>,
    ) -> ObjectSchema {
        let mut schema = ObjectSchema {
            name,
            label,
            key_prefix,
            fields,
            by_lowercase_name: HashMap::new(),
        };
        schema.reindex();
        schema
    }

    fn reindex(&mut self) {
        self.by_lowercase_name = self
            .fields
            .iter()
            .enumerate()
            .map(|(index, field)| (field.name.to_ascii_lowercase(), index))
            .collect();
    }

    pub(crate) fn fields(&self) -> &[FieldDef] {
        &self.fields
    }

    /// The field with this name, case-insensitively.
    pub(crate) fn field(&self, name: &str) -> Option<&FieldDef> {
        self.by_lowercase_name
            .get(&name.to_ascii_lowercase())
            .map(|index| &self.fields[*index])
    }

    /// The reference field whose relationship is `relationship` (`Owner`).
    pub(crate) fn relationship(&self, relationship: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|field| {
            field
                .relationship_name
                .is_some_and(|name| name.eq_ignore_ascii_case(relationship))
        })
    }

    pub(crate) fn remove_field(&mut self, name: &str) -> bool {
        let before = self.fields.len();
        self.fields
            .retain(|field| !field.name.eq_ignore_ascii_case(name));
        self.reindex();
        self.fields.len() != before
    }

    pub(crate) fn set_updateable(&mut self, name: &str, updateable: bool) -> bool {
        match self
            .by_lowercase_name
            .get(&name.to_ascii_lowercase())
            .copied()
        {
            Some(index) => {
                self.fields[index].updateable = updateable;
                true
            }
            None => false,
        }
    }

    /// The whole describe answer.
    pub(crate) fn describe(&self, api_version: &str) -> Value {
        let fields: Vec<Value> = self.fields.iter().map(FieldDef::describe).collect();
        json!({
            "name": self.name,
            "label": self.label,
            "labelPlural": format!("{}s", self.label),
            "keyPrefix": self.key_prefix,
            "custom": false,
            "queryable": true,
            "updateable": true,
            "fields": fields,
            "urls": {
                "sobject": format!("/services/data/v{api_version}/sobjects/{}", self.name),
                "describe": format!("/services/data/v{api_version}/sobjects/{}/describe", self.name),
                "rowTemplate": format!("/services/data/v{api_version}/sobjects/{}/{{ID}}", self.name),
            },
        })
    }
}

/// The Account object of our org, KYC fields included.
pub(crate) fn account_schema() -> ObjectSchema {
    use FieldType as T;
    let fields = vec![
        FieldDef::new("Id", "Account ID", T::Id).system(),
        FieldDef::new("IsDeleted", "Deleted", T::Boolean).system(),
        FieldDef::new("MasterRecordId", "Master Record ID", T::Reference).system(),
        FieldDef::new("Name", "Account Name", T::String).required(),
        FieldDef::new("Type", "Account Type", T::Picklist)
            .picklist(&["Prospect", "Customer", "Partner", "Other"], false),
        FieldDef::new("AccountSource", "Account Source", T::Picklist).picklist(
            &["Web", "Phone Inquiry", "Partner Referral", "Other"],
            false,
        ),
        FieldDef::new("Industry", "Industry", T::Picklist).picklist(
            &[
                "Banking",
                "Consulting",
                "Education",
                "Finance",
                "Healthcare",
                "Insurance",
                "Manufacturing",
                "Retail",
                "Technology",
                "Other",
            ],
            false,
        ),
        FieldDef::new("BillingStreet", "Billing Street", T::Textarea),
        FieldDef::new("BillingCity", "Billing City", T::String).length(40),
        FieldDef::new("BillingPostalCode", "Billing Zip/Postal Code", T::String).length(20),
        FieldDef::new("BillingCountry", "Billing Country", T::String).length(80),
        FieldDef::new("BillingCountryCode", "Billing Country Code", T::String).length(2),
        FieldDef::new("Phone", "Account Phone", T::Phone).length(40),
        FieldDef::new("Website", "Website", T::Url),
        FieldDef::new("AnnualRevenue", "Annual Revenue", T::Currency).number(18, 0),
        FieldDef::new("NumberOfEmployees", "Employees", T::Int).number(8, 0),
        FieldDef::new("Description", "Account Description", T::Textarea).length(32000),
        FieldDef::new("OwnerId", "Owner ID", T::Reference)
            .required()
            .reference("User", "Owner"),
        FieldDef::new("CreatedDate", "Created Date", T::DateTime).system(),
        FieldDef::new("LastModifiedDate", "Last Modified Date", T::DateTime).system(),
        FieldDef::new("SystemModstamp", "System Modstamp", T::DateTime).system(),
        FieldDef::new("Registration_Number__c", "Registration Number", T::String).length(32),
        FieldDef::new("Contact_First_Name__c", "Contact First Name", T::String).length(80),
        FieldDef::new("Contact_Last_Name__c", "Contact Last Name", T::String).length(80),
        FieldDef::new("Contact_Email__c", "Contact Email", T::Email).length(80),
        FieldDef::new("Date_Of_Birth__c", "Date of Birth", T::Date),
        FieldDef::new("KYC_Status__c", "KYC Status", T::Picklist)
            .picklist(
                &[
                    "Portal sent",
                    "Documents requested",
                    "In review",
                    "Approved",
                    "Rejected",
                ],
                true,
            )
            .inactive_value("Legacy"),
        FieldDef::new("KYC_Risk_Level__c", "KYC Risk Level", T::Picklist)
            .picklist(&["Low", "Medium", "High", "Forbidden"], true),
        FieldDef::new("KYC_Risk_Score__c", "KYC Risk Score", T::Double).number(5, 2),
        FieldDef::new("KYC_Decision_Date__c", "KYC Decision Date", T::DateTime),
        FieldDef::new("Ondorse_Portal_Url__c", "Ondorse Portal URL", T::Url),
        FieldDef::new("Ondorse_Collect_Url__c", "Ondorse Collect URL", T::Url),
        FieldDef::new(
            "Ondorse_Application_Id__c",
            "Ondorse Application ID",
            T::String,
        )
        .length(64),
        FieldDef::new("KYC_Score_Band__c", "KYC Score Band", T::String)
            .length(1300)
            .formula(),
    ];
    ObjectSchema::new("Account", "Account", ACCOUNT_PREFIX, fields)
}

/// The User object, as far as Accounts reach it through `Owner`.
pub(crate) fn user_schema() -> ObjectSchema {
    use FieldType as T;
    let fields = vec![
        FieldDef::new("Id", "User ID", T::Id).system(),
        FieldDef::new("Name", "Full Name", T::String)
            .length(121)
            .system(),
        FieldDef::new("Email", "Email", T::Email)
            .length(128)
            .required(),
        FieldDef::new("Username", "Username", T::String)
            .length(80)
            .required(),
        FieldDef::new("IsActive", "Active", T::Boolean).required(),
    ];
    ObjectSchema::new("User", "User", USER_PREFIX, fields)
}

/// Recomputes the formula fields of an Account after any change, so reads
/// are plain lookups (the formula depends only on the row itself).
pub(crate) fn apply_account_formulas(row: &mut Row) {
    let band = score_band(row);
    row.insert("KYC_Score_Band__c".into(), band);
}

/// `KYC_Score_Band__c`: `IF(score < 30, "Low", IF(score < 70, "Medium", "High"))`.
fn score_band(row: &Row) -> Value {
    /// Scores below this are "Low", below the next "Medium", else "High".
    const LOW_BELOW: f64 = 30.0;
    const MEDIUM_BELOW: f64 = 70.0;
    match row.get("KYC_Risk_Score__c").and_then(Value::as_f64) {
        None => Value::Null,
        Some(score) if score < LOW_BELOW => json!("Low"),
        Some(score) if score < MEDIUM_BELOW => json!("Medium"),
        Some(_) => json!("High"),
    }
}
