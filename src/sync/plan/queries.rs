//! Every SOQL string the engine sends: intake polls, chosen Accounts,
//! read-backs, and the online check's two queries. Ids go in through
//! [`crate::salesforce::soql::quote`], chunked so no query nears SOQL's
//! length limit.

use chrono::{DateTime, Utc};

use crate::mapping::Mapping;

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

/// The SOQL that asks Salesforce to parse a mapping's `select` (the online
/// check): one row at most, whatever matches.
pub fn select_check_query(mapping: &Mapping) -> String {
    format!(
        "SELECT Id FROM {} WHERE ({}) LIMIT 1",
        mapping.object, mapping.select
    )
}

/// The SOQL counting the records two mappings' `select` both match.
pub fn overlap_query(first: &Mapping, second: &Mapping) -> String {
    format!(
        "SELECT Id FROM {} WHERE ({}) AND ({})",
        first.object, first.select, second.select
    )
}

/// Ids per `Id IN (...)` query: far below SOQL's 100,000-character limit.
pub const IDS_PER_QUERY: usize = 500;

/// The SOQL reading chosen Accounts of a mapping that match its `select`
/// (push hints, resync), one query per [`IDS_PER_QUERY`] Ids.
pub fn accounts_queries(mapping: &Mapping, ids: &[impl AsRef<str>]) -> Vec<String> {
    ids.chunks(IDS_PER_QUERY)
        .map(|chunk| {
            format!(
                "SELECT {} FROM {} WHERE ({}) AND Id IN ({}) ORDER BY SystemModstamp, Id",
                query_fields(mapping).join(", "),
                mapping.object,
                mapping.select,
                id_list(chunk),
            )
        })
        .collect()
}

/// The SOQL reading chosen Accounts with every field a mapping reads and
/// writes, whatever its `select` says (a resynced or previewed Account may
/// not match it), one query per [`IDS_PER_QUERY`] Ids.
pub fn by_id_queries(mapping: &Mapping, ids: &[impl AsRef<str>]) -> Vec<String> {
    let fields = query_fields(mapping);
    fields_queries(&mapping.object, fields.iter().map(String::as_str), ids)
}

/// The SOQL reading `fields` of chosen records, whatever any `select` says
/// (the writer reading back what landed, the recycle bin), one query per
/// [`IDS_PER_QUERY`] Ids.
pub fn fields_queries<'a>(
    object: &str,
    fields: impl IntoIterator<Item = &'a str>,
    ids: &[impl AsRef<str>],
) -> Vec<String> {
    let mut names = vec!["Id"];
    names.extend(
        fields
            .into_iter()
            .filter(|field| !field.eq_ignore_ascii_case("Id")),
    );
    ids.chunks(IDS_PER_QUERY)
        .map(|chunk| {
            format!(
                "SELECT {} FROM {object} WHERE Id IN ({}) ORDER BY Id",
                names.join(", "),
                id_list(chunk),
            )
        })
        .collect()
}

/// `'001…', '001…'`: Ids as SOQL literals for `Id IN (...)`.
fn id_list(ids: &[impl AsRef<str>]) -> String {
    ids.iter()
        .map(|id| crate::salesforce::soql::quote(id.as_ref()))
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
