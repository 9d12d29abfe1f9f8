//! The org's schema and values: Account and User field definitions (what
//! describe serves), Salesforce Ids, and the per-field rules a write must pass.
//!
//! Stored values are kept in their wire form (`2026-11-25T20:49:32.000+0000`,
//! `2026-11-25`, JSON numbers), so rendering a query is a copy. Because every
//! stored datetime is UTC with a fixed width, comparing two of them as text
//! compares the instants; the SOQL evaluator relies on that.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value, json};

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

// ---------------------------------------------------------------------------
// Ids

/// The alphabet of the 15-char case-sensitive Id body, in ASCII order so
/// that counters of equal width sort like their numbers.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// The alphabet of the 3-char checksum suffix of 18-char Ids.
const CHECKSUM_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
/// Characters between the key prefix and the counter: a pod marker and
/// padding, like `001Sb00000...`.
const ID_POD: &str = "Sb";

/// An 18-char Id for the `serial`-th record with this key prefix.
pub(crate) fn make_id(prefix: &str, serial: u64) -> String {
    let width = 15 - prefix.len() - ID_POD.len();
    let mut digits = vec![b'0'; width];
    let mut rest = serial;
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    let body = format!(
        "{prefix}{ID_POD}{}",
        String::from_utf8(digits).expect("base62 digits are ASCII")
    );
    with_checksum(&body)
}

/// The 18-char form of a 15-char Id: one suffix char per 5-char chunk, whose
/// bits say which chars of the chunk are upper case.
fn with_checksum(body: &str) -> String {
    let mut id = String::with_capacity(18);
    id.push_str(body);
    for chunk in body.as_bytes().chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, byte)| byte.is_ascii_uppercase())
            .fold(0usize, |bits, (position, _)| bits | (1 << position));
        id.push(CHECKSUM_ALPHABET[bits] as char);
    }
    id
}

/// The 18-char Id for a 15- or 18-char one, or `None` when it is malformed
/// (wrong length, non-alphanumeric, or a checksum that does not match).
pub(crate) fn normalize_id(id: &str) -> Option<String> {
    if !id.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        return None;
    }
    match id.len() {
        15 => Some(with_checksum(id)),
        18 => {
            let full = with_checksum(&id[..15]);
            // The suffix is case-insensitive in Salesforce.
            full.eq_ignore_ascii_case(id).then_some(full)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Times

/// A datetime in the wire form Salesforce answers: `2026-11-25T20:49:32.000+0000`.
pub(crate) fn format_datetime(instant: DateTime<Utc>) -> String {
    instant.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Now, at the second precision Salesforce stores.
pub(crate) fn now_stamp() -> String {
    format_datetime(truncate_to_second(Utc::now()))
}

/// Salesforce stores datetimes to the second: answers always say `.000`.
fn truncate_to_second(instant: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(instant.timestamp(), 0).unwrap_or(instant)
}

/// A datetime in RFC 3339 (`Z`, `+01:00`) or Salesforce's `+0000` form.
pub(crate) fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.with_timezone(&Utc));
    }
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .map(|instant| instant.with_timezone(&Utc))
}

/// A date in `YYYY-MM-DD` form.
pub(crate) fn parse_date(text: &str) -> Option<NaiveDate> {
    if text.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

// ---------------------------------------------------------------------------
// Writes

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
    use super::*;

    #[test]
    fn ids_carry_the_case_checksum() {
        // A documented example: 15-char 001A0000006Vm9r → 18-char 001A0000006Vm9rIAC.
        assert_eq!(
            normalize_id("001A0000006Vm9r").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
        assert_eq!(
            normalize_id("001A0000006Vm9rIAC").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
        assert_eq!(normalize_id("001A0000006Vm9rAAA"), None);
        assert_eq!(normalize_id("001A0000006Vm9"), None);
        assert_eq!(normalize_id("001A0000006Vm9r'; "), None);
    }

    #[test]
    fn generated_ids_sort_like_their_serials() {
        let first = make_id(ACCOUNT_PREFIX, 61);
        let second = make_id(ACCOUNT_PREFIX, 62);
        assert!(first < second, "{first} < {second}");
        assert_eq!(first.len(), 18);
        assert_eq!(normalize_id(&first), Some(first.clone()));
    }

    #[test]
    fn datetimes_parse_both_forms() {
        let expected = parse_datetime("2026-11-25T20:49:32Z").unwrap();
        assert_eq!(
            parse_datetime("2026-11-25T21:49:32.000+0100"),
            Some(expected)
        );
        assert_eq!(parse_datetime("2026-11-25T21:49:32+01:00"), Some(expected));
        assert_eq!(format_datetime(expected), "2026-11-25T20:49:32.000+0000");
    }

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
