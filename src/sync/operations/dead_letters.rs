//! `dead-letters retry`: refused values a human fixed, planned again.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{OperationError, RetrySelection};
use crate::store::{DeadLetter, JournalEntry, Store};
use crate::sync::{Engine, now};

/// What a retry did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryReport {
    /// The letters put back in the write queue.
    pub retried: Vec<DeadLetter>,
}

/// Retries the selected dead letters: the letters go, their refusals are
/// forgotten, and their Accounts are marked to be planned again from their
/// current link and application (the running engine does it at once, or at
/// its next reconcile when this runs offline): a letter's old values are
/// never replayed. Unknown ids refuse the whole request before anything
/// changes. Durable when it returns.
pub async fn retry_dead_letters(
    store: &Store,
    selection: &RetrySelection,
) -> Result<RetryReport, OperationError> {
    let letters = store.dead_letters()?;
    let chosen: Vec<DeadLetter> = match (selection.all, selection.ids.is_empty()) {
        (true, true) => letters,
        (false, false) => {
            let unknown: Vec<u64> = selection
                .ids
                .iter()
                .filter(|id| !letters.iter().any(|letter| letter.id == **id))
                .copied()
                .collect();
            if !unknown.is_empty() {
                return Err(OperationError::UnknownDeadLetters { ids: unknown });
            }
            letters
                .into_iter()
                .filter(|letter| selection.ids.contains(&letter.id))
                .collect()
        }
        _ => {
            return Err(OperationError::InvalidRequest(
                "name the dead letters to retry (ids) or all of them (all), not both and not neither".to_owned(),
            ));
        }
    };
    store.retry_dead_letters(&chosen)?;
    let at = now();
    for letter in &chosen {
        store.journal(
            &letter.account_id,
            &JournalEntry::new(
                at,
                letter.mappings.first().cloned(),
                "dead_letter_retried",
                format!(
                    "dead letter {} ({}) retried: the Account is planned again from its current state",
                    letter.id, letter.code,
                ),
                json!({ "refused": letter.fields, "kept": letter.kept }),
            ),
        )?;
        tracing::info!(account_id = %letter.account_id, dead_letter = letter.id, code = %letter.code, "dead letter retried; the account will be planned again");
    }
    store.flush().await?;
    Ok(RetryReport { retried: chosen })
}

impl Engine {
    /// Retries the selected dead letters and plans their Accounts again now.
    pub async fn retry_dead_letters(
        &self,
        selection: &RetrySelection,
    ) -> Result<RetryReport, OperationError> {
        let report = retry_dead_letters(&self.store, selection).await?;
        self.replan_marked().await?;
        Ok(report)
    }
}
