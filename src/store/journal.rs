//! The per-Account journal: what was read, sent, decided and written, and
//! what came back, so compliance can answer "why is this Account not
//! updated?" (`explain`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::codec;
use super::{JOURNAL_TREE, Store, StoreError};

/// One step in an Account's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub at: DateTime<Utc>,
    pub mapping: Option<String>,
    /// A short stable name (`portal_created`, `written`, `dead_lettered`...).
    pub step: String,
    /// A sentence for people.
    pub summary: String,
    /// The data behind it (fields sent, Salesforce's answer...).
    #[serde(default)]
    pub detail: serde_json::Value,
}

impl Store {
    /// Appends to an Account's journal; durable at the next flush.
    pub fn journal(&self, account_id: &str, entry: &JournalEntry) -> Result<(), StoreError> {
        let sequence = self.next_sequence()?;
        let mut key = account_id.as_bytes().to_vec();
        key.push(codec::KEY_SEPARATOR);
        key.extend_from_slice(&codec::sequence_key(sequence));
        let value = codec::encode_value(JOURNAL_TREE, entry)?;
        self.inner
            .journal
            .insert(key, value)
            .map_err(StoreError::database("append to the journal"))?;
        Ok(())
    }

    /// An Account's journal, oldest first.
    pub fn journal_of(&self, account_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let mut prefix = account_id.as_bytes().to_vec();
        prefix.push(codec::KEY_SEPARATOR);
        self.inner
            .journal
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry.map_err(StoreError::database("read the journal"))?;
                codec::decode_value(JOURNAL_TREE, &key, &value)
            })
            .collect()
    }
}
