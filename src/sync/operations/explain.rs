//! `explain`: one Account's story.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::OperationError;
use super::status::{ParkedStatus, parked_intent, parked_items};
use crate::salesforce::Id;
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

/// Everything recorded about one Account.
pub fn explain(store: &Store, account_id: &str) -> Result<Explanation, OperationError> {
    let account_id = Id::parse_account(account_id)?;
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
    // Every parked item, to find this Account's (only parked ones are decoded).
    let parked = parked_items(store, usize::MAX, intents)?
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
