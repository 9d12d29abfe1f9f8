//! `explain`: one Account's story, and the Account Ids people give.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::OperationError;
use super::status::{ParkedStatus, parked_intent, parked_items};
use crate::salesforce::soql;
use crate::store::{DeadLetter, JournalEntry, PendingWrite, Store};
use crate::sync::now;

/// One Account's story (`explain`, `GET /admin/explain/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub account_id: String,
    pub links: Vec<LinkSummary>,
    pub pending_write: Option<PendingWrite>,
    pub dead_letters: Vec<DeadLetter>,
    /// Its items that keep failing, with their reasons and retry times.
    #[serde(default)]
    pub parked: Vec<ParkedStatus>,
    /// Oldest first.
    pub journal: Vec<JournalEntry>,
}

/// Where one Account stands in one mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    pub mapping: String,
    pub intent_at: DateTime<Utc>,
    pub portal_id: Option<String>,
    pub portal_url: Option<String>,
    pub application_id: Option<String>,
    pub decision_final: bool,
    pub portal_attempts: u32,
    pub last_error: Option<String>,
    /// Why the link is closed (its Account was deleted or merged away).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
}

/// Key prefixes (an Id's first three characters name its object) people
/// paste by mistake where an Account Id belongs.
const OTHER_OBJECT_PREFIXES: &[(&str, &str)] = &[
    ("003", "Contact"),
    ("00Q", "Lead"),
    ("005", "User"),
    ("006", "Opportunity"),
    ("500", "Case"),
];

/// Account Ids start with this key prefix (Person Accounts too).
const ACCOUNT_PREFIX: &str = "001";

/// [`canonical_id`] of an Id that must be an Account's: a Contact's or a
/// Lead's is refused with the reason.
pub fn account_id(id: &str) -> Result<String, OperationError> {
    let id = canonical_id(id)?;
    let prefix = &id[..ACCOUNT_PREFIX.len()];
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
    Err(OperationError::NotAnAccount { id, reason })
}

/// Checks the shape of a Salesforce Id and answers its 18-character form,
/// the one the API returns and the store keys on (people often copy the
/// 15-character form from a Salesforce Classic URL).
pub fn canonical_id(id: &str) -> Result<String, OperationError> {
    if !soql::is_valid_id(id) {
        return Err(OperationError::MalformedId { id: id.to_owned() });
    }
    if id.len() == 18 {
        return Ok(id.to_owned());
    }
    // The suffix encodes, five characters at a time, which are upper case.
    const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut full = id.to_owned();
    for chunk in id.as_bytes().chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, byte)| byte.is_ascii_uppercase())
            .fold(0usize, |bits, (position, _)| bits | 1 << position);
        full.push(char::from(SUFFIX_ALPHABET[bits]));
    }
    Ok(full)
}

/// Everything recorded about one Account.
pub fn explain(store: &Store, account_id: &str) -> Result<Explanation, OperationError> {
    let account_id = self::account_id(account_id)?;
    let account_id = account_id.as_str();
    let links = store.links_of_account(account_id)?;
    let journal = store.journal_of(account_id)?;
    if links.is_empty() && journal.is_empty() {
        return Err(OperationError::NothingRecorded {
            id: account_id.to_owned(),
        });
    }
    let at = now();
    let intents = links
        .iter()
        .filter(|link| link.is_parked(at))
        .map(parked_intent)
        .collect();
    let parked = parked_items(store, intents)?
        .into_iter()
        .filter(|item| item.account_id.as_deref() == Some(account_id))
        .collect();
    Ok(Explanation {
        account_id: account_id.to_owned(),
        parked,
        links: links
            .into_iter()
            .map(|link| LinkSummary {
                portal_id: link.portal.as_ref().map(|portal| portal.id.clone()),
                portal_url: link.portal.as_ref().and_then(|portal| portal.url.clone()),
                mapping: link.mapping,
                intent_at: link.intent_at,
                application_id: link.application_id,
                decision_final: link.decision_final,
                portal_attempts: link.portal_attempts,
                last_error: link.last_error,
                closed: link.closed.map(|closed| closed.reason),
            })
            .collect(),
        pending_write: store.pending_write(account_id)?,
        dead_letters: store
            .dead_letters()?
            .into_iter()
            .filter(|letter| letter.account_id == account_id)
            .collect(),
        journal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_or_lead_id_is_refused_where_an_account_id_belongs() {
        let refused = |id: &str| account_id(id).unwrap_err().to_string();
        assert_eq!(
            refused("003A0000006Vm9r"),
            "003A0000006Vm9rIAC is not an Account Id: it starts with 003, so it is a Contact Id; give the Id of the Account (it starts with 001)"
        );
        assert!(
            refused("00QA0000006Vm9rIAC").contains("so it is a Lead Id"),
            "{}",
            refused("00QA0000006Vm9rIAC")
        );
        assert!(refused("a01A0000006Vm9rIAC").contains("Account Ids start with 001"));
        assert_eq!(account_id("001A0000006Vm9r").unwrap(), "001A0000006Vm9rIAC");
    }

    #[test]
    fn fifteen_character_ids_get_their_checksum_suffix() {
        assert_eq!(
            canonical_id("001A0000006Vm9r").unwrap(),
            "001A0000006Vm9rIAC"
        );
        assert_eq!(
            canonical_id("001A0000006Vm9rIAC").unwrap(),
            "001A0000006Vm9rIAC"
        );
        assert_eq!(
            canonical_id("001000000000000").unwrap(),
            "001000000000000AAA"
        );
        assert!(matches!(
            canonical_id("001A0000006Vm9"),
            Err(OperationError::MalformedId { .. })
        ));
    }
}
