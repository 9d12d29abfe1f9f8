//! Dead letters: write-backs Salesforce refused for good (validation rule,
//! restricted picklist, deleted record), kept with its code and message
//! until an operator retries or the record is fixed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::codec;
use super::writebacks::Fields;
use super::{DEAD_LETTERS_TREE, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub account_id: String,
    pub mappings: Vec<String>,
    pub fields: Fields,
    /// The Salesforce `statusCode` / `errorCode`, or our own code for a value
    /// that could not be converted to the field's type.
    pub code: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

impl Store {
    /// Records a dead letter and returns its id; durable at the next flush.
    pub fn add_dead_letter(
        &self,
        account_id: &str,
        mappings: Vec<String>,
        fields: Fields,
        code: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let id = self.next_sequence()?;
        let letter = DeadLetter {
            id,
            account_id: account_id.to_owned(),
            mappings,
            fields,
            code: code.to_owned(),
            message: message.to_owned(),
            at,
        };
        let value = codec::encode_value(DEAD_LETTERS_TREE, &letter)?;
        self.inner
            .dead_letters
            .insert(codec::sequence_key(id), value)
            .map_err(StoreError::database("record a dead letter"))?;
        Ok(id)
    }

    /// Every dead letter, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner
            .dead_letters
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(StoreError::database("read dead letters"))?;
                codec::decode_value(DEAD_LETTERS_TREE, &key, &value)
            })
            .collect()
    }

    /// Removes a dead letter and returns it, if it exists.
    pub fn take_dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        let key = codec::sequence_key(id);
        self.inner
            .dead_letters
            .remove(key)
            .map_err(StoreError::database("remove a dead letter"))?
            .map(|bytes| codec::decode_value(DEAD_LETTERS_TREE, &key, &bytes))
            .transpose()
    }

    pub fn dead_letter_count(&self) -> usize {
        self.inner.dead_letters.len()
    }
}
