//! Per-mapping intake cursors: the `(SystemModstamp, Id)` of the last
//! Account whose page of work is durable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::codec;
use super::{CURSORS_TREE, Store, StoreError};

/// Where a mapping's intake stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub system_modstamp: DateTime<Utc>,
    pub id: String,
}

impl Store {
    /// The cursor of `mapping`, `None` before its first page.
    pub fn cursor(&self, mapping: &str) -> Result<Option<Cursor>, StoreError> {
        let key = mapping.as_bytes();
        self.inner
            .cursors
            .get(key)
            .map_err(StoreError::database("read a cursor"))?
            .map(|bytes| codec::decode_value(CURSORS_TREE, key, &bytes))
            .transpose()
    }

    /// Moves the cursor of `mapping`; durable at the next [`Store::flush`].
    pub fn set_cursor(&self, mapping: &str, cursor: &Cursor) -> Result<(), StoreError> {
        let value = codec::encode_value(CURSORS_TREE, cursor)?;
        self.inner
            .cursors
            .insert(mapping.as_bytes(), value)
            .map_err(StoreError::database("move a cursor"))?;
        Ok(())
    }

    /// Every mapping's cursor, by mapping name.
    pub fn cursors(&self) -> Result<Vec<(String, Cursor)>, StoreError> {
        self.inner
            .cursors
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(StoreError::database("read the cursors"))?;
                let cursor = codec::decode_value(CURSORS_TREE, &key, &value)?;
                Ok((String::from_utf8_lossy(&key).into_owned(), cursor))
            })
            .collect()
    }
}
