//! Mappings checked against the org itself (`check --online`, reload,
//! schema drift): what only Salesforce's describe metadata and its SOQL
//! parser can prove.
//!
//! [`OrgMetadata::fetch`] gathers the describes a set of mappings needs
//! (Account, and every object a relationship path reaches, such as User for
//! `Owner.Email`); [`check_fields`] is then pure, so the daemon can re-run
//! it on a fresh describe without touching anything else; [`check_select`]
//! asks Salesforce to parse each `select`.

use std::collections::{BTreeMap, btree_map};
use std::sync::Arc;

use serde_json::Value;

use super::diagnostic::{Diagnostic, Diagnostics};
use super::{Mapping, MappingSet, convert_value};
use crate::salesforce::model::{FieldDescribe, SObjectDescribe};
use crate::salesforce::{SalesforceClient, SalesforceError};
use crate::sync::plan;
use crate::text::{Position, did_you_mean};

/// What the online checks read from the org. `check --online` reads with
/// the client itself; the running engine reads through its API budget
/// governor (`sync::governed`).
pub trait OrgReader {
    type Error: std::fmt::Display;

    /// The fields of `sobject`.
    fn describe(
        &self,
        sobject: &str,
    ) -> impl Future<Output = Result<SObjectDescribe, Self::Error>> + Send;

    /// Runs `soql` for its first page: `Ok(Some(refusal))` when Salesforce
    /// refused the query itself (a REST error answer), `Err` when it did not
    /// answer.
    fn try_query(
        &self,
        soql: String,
    ) -> impl Future<Output = Result<Option<QueryRefusal>, Self::Error>> + Send;

    /// How many records `soql` matches (its first page's `totalSize`).
    fn count(&self, soql: String) -> impl Future<Output = Result<u64, Self::Error>> + Send;
}

impl OrgReader for SalesforceClient {
    type Error = SalesforceError;

    async fn describe(&self, sobject: &str) -> Result<SObjectDescribe, SalesforceError> {
        SalesforceClient::describe(self, sobject).await
    }

    async fn try_query(&self, soql: String) -> Result<Option<QueryRefusal>, SalesforceError> {
        QueryRefusal::of(self.query(soql).next_page().await)
    }

    async fn count(&self, soql: String) -> Result<u64, SalesforceError> {
        let mut pages = self.query(soql);
        pages.next_page().await?;
        Ok(pages.total_size().unwrap_or_default())
    }
}

/// Salesforce's REST error answer to a query: the query itself is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRefusal {
    pub code: String,
    pub message: String,
}

impl QueryRefusal {
    /// Splits a query's outcome into accepted, refused, or not answered.
    pub fn of<T>(
        answer: Result<T, SalesforceError>,
    ) -> Result<Option<QueryRefusal>, SalesforceError> {
        match answer {
            Ok(_) => Ok(None),
            Err(SalesforceError::Api { code, message, .. }) => {
                Ok(Some(QueryRefusal { code, message }))
            }
            Err(error) => Err(error),
        }
    }
}

/// The describes of the objects some mappings read and write, by lowercase
/// object name (Salesforce names are case-insensitive).
#[derive(Debug, Clone, Default)]
pub struct OrgMetadata {
    objects: BTreeMap<String, SObjectDescribe>,
}

impl OrgMetadata {
    /// Fetches the describe of every mapping's object and of each object a
    /// relationship path reaches. A path through a missing relationship is
    /// left for [`check_fields`] to report.
    pub async fn fetch<R: OrgReader>(
        client: &R,
        mappings: &MappingSet,
    ) -> Result<OrgMetadata, R::Error> {
        let mut metadata = OrgMetadata::default();
        for mapping in mappings.iter() {
            metadata.fetch_for(client, mapping).await?;
        }
        Ok(metadata)
    }

    /// Adds what one mapping needs (describes already held are not fetched again).
    pub async fn fetch_for<R: OrgReader>(
        &mut self,
        client: &R,
        mapping: &Mapping,
    ) -> Result<(), R::Error> {
        self.ensure(client, &mapping.object).await?;
        for (path, _) in mapping.read_fields_with_positions() {
            let mut object = mapping.object.clone();
            let segments: Vec<&str> = path.split('.').collect();
            for relationship in &segments[..segments.len() - 1] {
                let Some(target) = self
                    .object(&object)
                    .and_then(|describe| describe.relationship(relationship))
                    .and_then(|field| field.reference_to.first().cloned())
                else {
                    break;
                };
                self.ensure(client, &target).await?;
                object = target;
            }
        }
        Ok(())
    }

    /// Metadata made of describes already at hand (tests, the engine's cache).
    pub fn from_describes(describes: impl IntoIterator<Item = SObjectDescribe>) -> OrgMetadata {
        OrgMetadata {
            objects: describes
                .into_iter()
                .map(|describe| (describe.name.to_ascii_lowercase(), describe))
                .collect(),
        }
    }

    /// The describe of `object`, when fetched.
    pub fn object(&self, object: &str) -> Option<&SObjectDescribe> {
        self.objects.get(&object.to_ascii_lowercase())
    }

    async fn ensure<R: OrgReader>(&mut self, client: &R, object: &str) -> Result<(), R::Error> {
        let key = object.to_ascii_lowercase();
        if let btree_map::Entry::Vacant(slot) = self.objects.entry(key) {
            slot.insert(client.describe(object).await?);
        }
        Ok(())
    }
}

/// Every field problem of `mapping` against the org: read fields that do not
/// exist (relationship paths followed), written fields that do not exist or
/// cannot be written, and fixed values that do not fit their field.
pub fn check_fields(mapping: &Mapping, metadata: &OrgMetadata) -> Diagnostics {
    let mut diagnostics = Diagnostics::default();
    let file = &mapping.file;
    let Some(root) = metadata.object(&mapping.object) else {
        diagnostics.push(Diagnostic::new(
            file,
            Position::START,
            format!(
                "the org shows no object `{}` to the integration user",
                mapping.object
            ),
        ));
        return diagnostics;
    };
    for (path, position) in mapping.read_fields_with_positions() {
        if let Err(message) = resolve_read(&path, root, metadata) {
            diagnostics.push(Diagnostic::new(file, position, message));
        }
    }
    for written in mapping.written_fields() {
        let Some(field) = root.field(&written.field) else {
            let message = format!(
                "{} has no field `{}` (or the integration user cannot see it){}",
                root.name,
                written.field,
                did_you_mean(
                    &written.field,
                    root.fields.iter().map(|field| field.name.as_str())
                )
            );
            diagnostics.push(Diagnostic::new(file, written.position, message));
            continue;
        };
        if field.calculated {
            diagnostics.push(Diagnostic::new(
                file,
                written.position,
                format!(
                    "`{}` is a formula field (calculated): Salesforce computes it and nobody can write it; write the fields it is computed from, or remove it",
                    field.name
                ),
            ));
            continue;
        }
        if !field.updateable {
            diagnostics.push(Diagnostic::new(
                file,
                written.position,
                format!(
                    "`{}` is read-only for the integration user; grant edit access to it (field-level security) or remove it",
                    field.name
                ),
            ));
            continue;
        }
        for (value, position) in &written.fixed_values {
            if let Err(message) = check_fixed_value(value, field) {
                diagnostics.push(Diagnostic::new(file, *position, message));
            }
        }
    }
    diagnostics
}

/// Asks Salesforce to parse `mapping.select` (`SELECT Id FROM Account WHERE
/// (<select>) LIMIT 1`). `Ok(Some(_))` is Salesforce refusing it; `Err` is
/// Salesforce not answering, which proves nothing about the mapping.
pub async fn check_select<R: OrgReader>(
    client: &R,
    mapping: &Mapping,
) -> Result<Option<Diagnostic>, R::Error> {
    Ok(client
        .try_query(plan::select_check_query(mapping))
        .await?
        .map(|QueryRefusal { code, message }| {
            Diagnostic::new(
                &mapping.file,
                mapping.select_position,
                format!("`select` is not valid SOQL; Salesforce answered {code}: {message}"),
            )
        }))
}

/// Everything `check --online` proves, for every mapping, all problems at once.
pub async fn check_online<R: OrgReader>(
    client: &R,
    mappings: &MappingSet,
) -> Result<Diagnostics, R::Error> {
    let metadata = OrgMetadata::fetch(client, mappings).await?;
    let mut diagnostics = Diagnostics::default();
    for mapping in mappings.iter() {
        diagnostics.extend(check_fields(mapping, &metadata));
        if let Some(problem) = check_select(client, mapping).await? {
            diagnostics.push(problem);
        }
    }
    diagnostics.0.sort_by(|left, right| {
        (&left.file, left.line, left.column).cmp(&(&right.file, right.line, right.column))
    });
    Ok(diagnostics)
}

/// Two mappings whose `select` both match some records: each of those
/// Accounts gets a portal from both flows.
#[derive(Debug, Clone)]
pub struct Overlap {
    pub first: Arc<Mapping>,
    pub second: Arc<Mapping>,
    /// How many records both conditions match now.
    pub records: u64,
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |mapping: &Mapping| {
            format!(
                "{}:{}:{}",
                mapping.file.display(),
                mapping.select_position.line,
                mapping.select_position.column
            )
        };
        write!(
            formatter,
            "{}: warning: the `select` of `{}` and of `{}` ({}) both match {} {} record(s) today: each gets a portal from both flows; narrow one `select` if that is not intended",
            at(&self.first),
            self.first.name,
            self.second.name,
            at(&self.second),
            self.records,
            self.first.object
        )
    }
}

/// Counts, for every pair of mappings on the same object, the records both
/// `select` conditions match (the first page's `totalSize`: one call a pair).
pub async fn overlaps<R: OrgReader>(
    client: &R,
    mappings: &MappingSet,
) -> Result<Vec<Overlap>, R::Error> {
    let all: Vec<&Arc<Mapping>> = mappings.iter().collect();
    let mut found = Vec::new();
    for (index, first) in all.iter().enumerate() {
        for second in all.iter().skip(index + 1) {
            if first.object != second.object {
                continue;
            }
            let records = client.count(plan::overlap_query(first, second)).await?;
            if records > 0 {
                found.push(Overlap {
                    first: Arc::clone(first),
                    second: Arc::clone(second),
                    records,
                });
            }
        }
    }
    Ok(found)
}

/// Follows `Owner.Email` through `Owner`'s `referenceTo`; the message names
/// the segment that does not resolve and the nearest real name.
fn resolve_read(path: &str, root: &SObjectDescribe, metadata: &OrgMetadata) -> Result<(), String> {
    let segments: Vec<&str> = path.split('.').collect();
    let (last, relationships) = segments.split_last().unwrap_or((&"", &[]));
    let mut object = root;
    for relationship in relationships {
        let Some(reference) = object.relationship(relationship) else {
            let names = object
                .fields
                .iter()
                .filter_map(|field| field.relationship_name.as_deref());
            return Err(format!(
                "{} has no relationship `{relationship}` (in `{path}`){}",
                object.name,
                did_you_mean(relationship, names)
            ));
        };
        let spelled = reference.relationship_name.as_deref().unwrap_or_default();
        if spelled != *relationship {
            return Err(case_mismatch(
                "relationship",
                &object.name,
                relationship,
                spelled,
            ));
        }
        let target = reference
            .reference_to
            .first()
            .and_then(|target| metadata.object(target));
        let Some(target) = target else {
            return Err(format!(
                "cannot follow `{relationship}` in `{path}`: the org shows no describe of {}",
                reference.reference_to.join(" or ")
            ));
        };
        object = target;
    }
    if let Some(field) = object.field(last) {
        if field.name != *last {
            return Err(case_mismatch("field", &object.name, last, &field.name));
        }
        return Ok(());
    }
    let mut message = format!(
        "{} has no field `{last}`{} (or the integration user cannot see it)",
        object.name,
        if relationships.is_empty() {
            String::new()
        } else {
            format!(" (in `{path}`)")
        },
    );
    message.push_str(&did_you_mean(
        last,
        object.fields.iter().map(|field| field.name.as_str()),
    ));
    Err(message)
}

/// Salesforce accepts any case in a query and answers with the field's own
/// spelling, while templates are case-sensitive: `{{ name }}` would read
/// nothing on every Account.
fn case_mismatch(what: &str, object: &str, written: &str, spelled: &str) -> String {
    format!(
        "{object} {what} `{written}` is spelled `{spelled}` in the org; templates are case-sensitive, write `{spelled}`"
    )
}

/// A fixed value (a literal, a `map` output, a `default`) must fit the
/// field; a picklist value must be active even when the picklist is not
/// restricted, since an inactive value is one the org retired.
fn check_fixed_value(value: &Value, field: &FieldDescribe) -> Result<(), String> {
    if matches!(field.field_type.as_str(), "picklist" | "multipicklist")
        && let Some(text) = value.as_str()
        && !field.active_picklist_values().any(|active| active == text)
    {
        let active: Vec<&str> = field.active_picklist_values().collect();
        let retired = field
            .picklist_values
            .iter()
            .any(|entry| entry.value == text);
        return Err(format!(
            "`{text}` is {} value of picklist `{}`; active values: {}{}",
            if retired { "an inactive" } else { "not a" },
            field.name,
            active.join(", "),
            did_you_mean(text, active.iter().copied()),
        ));
    }
    convert_value(value, field)
        .map(drop)
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::mapping::parse_mapping;

    fn describe(name: &str, fields: Value) -> SObjectDescribe {
        serde_json::from_value(json!({ "name": name, "fields": fields })).expect("a describe")
    }

    fn org() -> OrgMetadata {
        let text = |name: &str, length: u32| json!({ "name": name, "type": "string", "length": length, "updateable": true, "nillable": true });
        OrgMetadata::from_describes([
            describe(
                "Account",
                json!([
                    { "name": "Id", "type": "id" },
                    text("Name", 255),
                    text("BillingCountryCode", 2),
                    { "name": "OwnerId", "type": "reference", "referenceTo": ["User"], "relationshipName": "Owner" },
                    { "name": "Status__c", "type": "picklist", "updateable": true, "nillable": true,
                      "restrictedPicklist": false,
                      "picklistValues": [{ "value": "Sent", "active": true }, { "value": "Old", "active": false }] },
                    { "name": "Band__c", "type": "string", "length": 10, "updateable": false, "calculated": true },
                    { "name": "Locked__c", "type": "string", "length": 10, "updateable": false },
                ]),
            ),
            describe(
                "User",
                json!([{ "name": "Id", "type": "id" }, text("Email", 80)]),
            ),
        ])
    }

    /// The problems of a mapping whose portal reads `reads` and whose
    /// `on_portal_created` writes `writes`, as `line:column: message`.
    fn check(reads: &str, writes: &str) -> Vec<String> {
        let yaml = format!(
            "version: 1\nname: test\nobject: Account\nselect: \"Name != null\"\nportal:\n  type: business\n  default_custom_fields:\n    value: \"{reads}\"\nwriteback:\n  on_portal_created:\n{writes}\n"
        );
        let mapping = parse_mapping(Path::new("m.yaml"), &yaml).expect("the mapping parses");
        check_fields(&mapping, &org())
            .iter()
            .map(|problem| format!("{}:{}: {}", problem.line, problem.column, problem.message))
            .collect()
    }

    #[test]
    fn fields_that_exist_and_fit_pass() {
        let problems = check(
            "{{ Name }} {{ Owner.Email }}",
            "    Status__c: Sent\n    BillingCountryCode: FR",
        );
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn read_fields_are_followed_through_relationships() {
        let problems = check("{{ BillingCountryCod }}", "    Status__c: Sent");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("8:16: Account has no field `BillingCountryCod`"),
            "{problems:?}"
        );
        assert!(
            problems[0].ends_with("did you mean `BillingCountryCode`?"),
            "{problems:?}"
        );

        let problems = check("{{ Owner.Emial }}", "    Status__c: Sent");
        assert!(
            problems[0].contains("User has no field `Emial` (in `Owner.Emial`)"),
            "{problems:?}"
        );
        assert!(
            problems[0].ends_with("did you mean `Email`?"),
            "{problems:?}"
        );

        let problems = check("{{ Ownr.Email }}", "    Status__c: Sent");
        assert!(
            problems[0].contains("Account has no relationship `Ownr`"),
            "{problems:?}"
        );
        assert!(
            problems[0].ends_with("did you mean `Owner`?"),
            "{problems:?}"
        );
    }

    #[test]
    fn written_fields_must_exist_be_writable_and_take_their_fixed_values() {
        let problems = check(
            "{{ Name }}",
            "    Band__c: x\n    Locked__c: y\n    Status__c: Old\n    BillingCountryCode: FRA\n    Stauts__c: Sent",
        );
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(
            problems[0].starts_with("11:5: `Band__c` is a formula field (calculated)"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("12:5: `Locked__c` is read-only"),
            "{problems:?}"
        );
        // Inactive even though the picklist is not restricted.
        assert!(
            problems[2].starts_with(
                "13:16: `Old` is an inactive value of picklist `Status__c`; active values: Sent"
            ),
            "{problems:?}"
        );
        assert!(
            problems[3]
                .starts_with("14:25: field `BillingCountryCode` (string) cannot take \"FRA\""),
            "{problems:?}"
        );
        assert!(
            problems[4].starts_with("15:5: Account has no field `Stauts__c`"),
            "{problems:?}"
        );
        assert!(
            problems[4].ends_with("did you mean `Status__c`?"),
            "{problems:?}"
        );
    }
}
