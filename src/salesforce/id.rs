//! Salesforce record Ids, the one place the product reads them: the shape
//! (15 or 18 letters and digits), the 15 → 18 character checksum, and the
//! key prefix that names the object (an Account's is `001`).
//!
//! Every Id that enters the bridge goes through [`Id`], and so is kept and
//! compared in one form: the CLI and admin `--account`, the push-hint
//! endpoint (and hints stored before, read back), resync, explain, query
//! rows (`Id`, in the client's page reader), a merge's `MasterRecordId`,
//! the Account Id in an application's custom fields, the client's record
//! paths and the `id`/`reference` field conversion.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::Record;

/// Lengths of a Salesforce record Id: case-sensitive 15, or the
/// case-insensitive 18 the API returns (15 plus a 3-character checksum).
const ID_LENGTHS: [usize; 2] = [15, 18];

/// Characters of the checksum suffix: each encodes which of five
/// characters are upper case.
const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// Account Ids start with this key prefix (Person Accounts too).
const ACCOUNT_PREFIX: &str = "001";

/// Key prefixes (an Id's first three characters name its object) people
/// paste by mistake where an Account Id belongs.
const OTHER_OBJECT_PREFIXES: &[(&str, &str)] = &[
    ("003", "Contact"),
    ("00Q", "Lead"),
    ("005", "User"),
    ("006", "Opportunity"),
    ("500", "Case"),
];

/// A well-formed Salesforce record Id in its 18-character form, the one the
/// API returns and the store keys on (people often copy the 15-character
/// form from a Salesforce Classic URL). Read from JSON through
/// [`Id::parse`], so a stored or received 15-character Id becomes this form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Id(String);

/// Why a text is not the Id it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "{id:?} is not a Salesforce Id: an Id has 15 or 18 letters and digits, e.g. 001000000000001AAA"
    )]
    Malformed { id: String },
    #[error(
        "{id} is not a Salesforce Id: its last three characters {suffix} do not match its first fifteen, which give {expected} (a typo, or a change of letter case: the 15 characters are case-sensitive)"
    )]
    Checksum {
        id: String,
        suffix: String,
        expected: String,
    },
    #[error("{id} is not an Account Id: {reason}")]
    NotAnAccount { id: String, reason: String },
}

impl Id {
    /// Checks the shape and, for an 18-character Id, that its last three
    /// characters are the checksum of its first fifteen; answers the
    /// 18-character form.
    pub fn parse(text: &str) -> Result<Id, IdError> {
        let well_formed = ID_LENGTHS.contains(&text.len())
            && text.bytes().all(|byte| byte.is_ascii_alphanumeric());
        if !well_formed {
            return Err(IdError::Malformed {
                id: text.to_owned(),
            });
        }
        let (case_sensitive, suffix) = text.split_at(15);
        let expected = checksum(case_sensitive);
        if !suffix.is_empty() && !suffix.eq_ignore_ascii_case(&expected) {
            return Err(IdError::Checksum {
                id: text.to_owned(),
                suffix: suffix.to_owned(),
                expected,
            });
        }
        Ok(Id(format!("{case_sensitive}{expected}")))
    }

    /// [`Id::parse`] of an Id that must be an Account's: a Contact's or a
    /// Lead's is refused with the reason.
    pub fn parse_account(text: &str) -> Result<Id, IdError> {
        let id = Id::parse(text)?;
        let prefix = id.key_prefix();
        if prefix == ACCOUNT_PREFIX {
            return Ok(id);
        }
        let reason = match OTHER_OBJECT_PREFIXES
            .iter()
            .find(|(known, _)| *known == prefix)
        {
            Some((_, object)) => format!(
                "it starts with {prefix}, so it is a {object} Id; give the Id of the Account (it starts with {ACCOUNT_PREFIX})"
            ),
            None => format!("it starts with {prefix}, and Account Ids start with {ACCOUNT_PREFIX}"),
        };
        Err(IdError::NotAnAccount { id: id.0, reason })
    }

    /// Puts a query row's `Id` in its 18-character form (the API answers
    /// that form; this keeps a row that does not from meeting the store
    /// under another key). A value that is no Id is left as it is.
    pub fn normalise_record(record: &mut Record) {
        if let Some(serde_json::Value::String(text)) = record.get_mut("Id")
            && let Ok(id) = Id::parse(text)
        {
            *text = id.0;
        }
    }

    /// The first three characters, which name the record's object.
    pub fn key_prefix(&self) -> &str {
        &self.0[..ACCOUNT_PREFIX.len()]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The three characters that make a 15-character Id an 18-character one:
/// each says which of five characters are upper case.
fn checksum(case_sensitive: &str) -> String {
    case_sensitive
        .as_bytes()
        .chunks(5)
        .map(|chunk| {
            let bits = chunk
                .iter()
                .enumerate()
                .filter(|(_, byte)| byte.is_ascii_uppercase())
                .fold(0usize, |bits, (position, _)| bits | 1 << position);
            char::from(SUFFIX_ALPHABET[bits])
        })
        .collect()
}

impl fmt::Display for Id {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Id {
    type Error = IdError;

    fn try_from(text: String) -> Result<Id, IdError> {
        Id::parse(&text)
    }
}

impl From<Id> for String {
    fn from(id: Id) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row: what is given, and the 18-character Id or the message.
    fn check(parse: fn(&str) -> Result<Id, IdError>, cases: &[(&str, Result<&str, &str>)]) {
        for (given, expected) in cases {
            let answer = parse(given)
                .map(String::from)
                .map_err(|error| error.to_string());
            match expected {
                Ok(id) => assert_eq!(answer.as_deref(), Ok(*id), "{given}"),
                Err(says) => {
                    let message = answer.expect_err(given);
                    assert!(message.contains(says), "{given}: {message}");
                }
            }
        }
    }

    #[test]
    fn an_id_is_read_in_its_18_character_form() {
        check(
            Id::parse,
            &[
                ("001A0000006Vm9r", Ok("001A0000006Vm9rIAC")),
                ("001A0000006Vm9rIAC", Ok("001A0000006Vm9rIAC")),
                ("001000000000000", Ok("001000000000000AAA")),
                ("001xx000003DGb2", Ok("001xx000003DGb2AAG")),
                ("ABCDEABCDEABCDE", Ok("ABCDEABCDEABCDE555")),
                // Any object: the shape says nothing about the prefix.
                ("003A0000006Vm9r", Ok("003A0000006Vm9rIAC")),
                ("", Err("\"\" is not a Salesforce Id: an Id has 15 or 18")),
                (
                    "001A0000006Vm9",
                    Err("\"001A0000006Vm9\" is not a Salesforce Id"),
                ),
                ("001xx000003DGb2AA", Err("is not a Salesforce Id")),
                // A lower-case checksum is the same checksum.
                ("001xx000003DGb2aag", Ok("001xx000003DGb2AAG")),
                (
                    "001xx000003DGb2AAA",
                    Err(
                        "001xx000003DGb2AAA is not a Salesforce Id: its last three characters AAA do not match its first fifteen, which give AAG",
                    ),
                ),
                // The letter case of the first fifteen changed (copied
                // through something that upper-cased it).
                (
                    "001XX000003DGB2AAG",
                    Err("do not match its first fifteen, which give"),
                ),
                ("001xx000003DGb2AAGX", Err("is not a Salesforce Id")),
                ("001xx000003DG'2AAG", Err("\"001xx000003DG'2AAG\" is not")),
                ("001xx000003DGé2AA", Err("is not a Salesforce Id")),
                ("001-bad", Err("is not a Salesforce Id")),
            ],
        );
    }

    #[test]
    fn ids_read_from_json_and_query_rows_take_their_18_character_form() {
        // A hint stored as sent (before Ids were normalised) reads back
        // in the form the links are keyed on.
        let stored: Vec<Id> =
            serde_json::from_str(r#"["001A0000006Vm9r", "001A0000006Vm9rIAC"]"#).unwrap();
        assert_eq!(stored, vec![Id::parse("001A0000006Vm9rIAC").unwrap(); 2]);
        assert_eq!(
            serde_json::to_string(&stored[0]).unwrap(),
            r#""001A0000006Vm9rIAC""#
        );
        let refused = serde_json::from_str::<Id>(r#""001-bad""#).unwrap_err();
        assert!(
            refused.to_string().contains("is not a Salesforce Id"),
            "{refused}"
        );

        for (row, expected) in [
            (
                serde_json::json!({"Id": "001A0000006Vm9r", "Name": "001A0000006Vm9r"}),
                serde_json::json!({"Id": "001A0000006Vm9rIAC", "Name": "001A0000006Vm9r"}),
            ),
            (
                serde_json::json!({"Id": "001A0000006Vm9rIAC"}),
                serde_json::json!({"Id": "001A0000006Vm9rIAC"}),
            ),
            (
                serde_json::json!({"Id": "not an id"}),
                serde_json::json!({"Id": "not an id"}),
            ),
            (
                serde_json::json!({"Id": null}),
                serde_json::json!({"Id": null}),
            ),
            (
                serde_json::json!({"Name": "x"}),
                serde_json::json!({"Name": "x"}),
            ),
        ] {
            let mut record = row.as_object().unwrap().clone();
            Id::normalise_record(&mut record);
            assert_eq!(serde_json::Value::Object(record), expected, "{row}");
        }
    }

    #[test]
    fn a_contact_or_lead_id_is_refused_where_an_account_id_belongs() {
        check(
            Id::parse_account,
            &[
                ("001A0000006Vm9r", Ok("001A0000006Vm9rIAC")),
                (
                    "003A0000006Vm9r",
                    Err(
                        "003A0000006Vm9rIAC is not an Account Id: it starts with 003, so it is a Contact Id; give the Id of the Account (it starts with 001)",
                    ),
                ),
                ("00QA0000006Vm9rMAC", Err("so it is a Lead Id")),
                ("005A0000006Vm9rIAC", Err("so it is a User Id")),
                (
                    "a01A0000006Vm9rIAC",
                    Err("it starts with a01, and Account Ids start with 001"),
                ),
                ("not-an-id", Err("\"not-an-id\" is not a Salesforce Id")),
            ],
        );
        assert_eq!(
            Id::parse_account("001A0000006Vm9r").unwrap().key_prefix(),
            "001"
        );
    }
}
