//! Dead letters: field values Salesforce refused for a reason a human must
//! fix (validation rule, restricted picklist, read-only field), kept with
//! Salesforce's code and message and the value Salesforce kept instead.
//!
//! A refused value is also remembered per Account (`refused_fields`):
//! planning counts it as already sent, so the same refusal is not planned,
//! sent and dead-lettered again on every reconcile; a new value (the inputs
//! changed) is planned as usual. Retrying letters forgets those refusals and
//! marks the Accounts for re-planning from their current state (`replans`),
//! rather than replaying the letters' old values.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::codec;
use super::queue_counts::{Changes, Queue};
use super::writebacks::{
    Fields, PendingWrite, WriteChanges, account_fields, keep_or_remove_write, transaction_error,
};
use super::{
    DEAD_LETTERS_TREE, KNOWN_FIELDS_TREE, REFUSED_FIELDS_TREE, REPLANS_TREE, Store, StoreError,
    WRITES_TREE,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub account_id: String,
    pub mappings: Vec<String>,
    /// The values Salesforce refused.
    pub fields: Fields,
    /// What Salesforce kept for those fields instead, as last read or
    /// written (null when never seen).
    #[serde(default)]
    pub kept: Fields,
    /// The Salesforce `statusCode` / `errorCode`, or our own code for a value
    /// that could not be converted to the field's type.
    pub code: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// Accounts waiting to be planned again after `dead-letters retry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replan {
    pub account_id: String,
    /// The mappings the letters named (for the journal: every mapping
    /// linked to the Account is planned again).
    pub mappings: BTreeSet<String>,
}

type Abort = ConflictableTransactionError<StoreError>;

/// Marks `account_id` for re-planning, naming `mappings`, inside a transaction.
pub(super) fn mark_replan(
    replans: &TransactionalTree,
    account_id: &str,
    mappings: &[String],
) -> Result<(), Abort> {
    let key = account_id.as_bytes();
    let mut replan = match replans.get(key)? {
        Some(bytes) => codec::decode_value(REPLANS_TREE, key, &bytes).map_err(Abort::Abort)?,
        None => Replan {
            account_id: account_id.to_owned(),
            mappings: BTreeSet::new(),
        },
    };
    replan.mappings.extend(mappings.iter().cloned());
    let value = codec::encode_value(REPLANS_TREE, &replan).map_err(Abort::Abort)?;
    replans.insert(key, value)?;
    Ok(())
}

fn read_fields(
    tree: &TransactionalTree,
    keyspace: &'static str,
    key: &[u8],
) -> Result<Fields, Abort> {
    match tree.get(key)? {
        Some(bytes) => codec::decode_value(keyspace, key, &bytes).map_err(Abort::Abort),
        None => Ok(Fields::new()),
    }
}

fn write_fields(
    tree: &TransactionalTree,
    keyspace: &'static str,
    key: &[u8],
    fields: &Fields,
) -> Result<(), Abort> {
    if fields.is_empty() {
        tree.remove(key)?;
    } else {
        tree.insert(
            key,
            codec::encode_value(keyspace, fields).map_err(Abort::Abort)?,
        )?;
    }
    Ok(())
}

/// Forgets the refusals of `names` for an Account (the field was written,
/// or its letter retried).
pub(super) fn forget_refusals<'a>(
    refused_fields: &TransactionalTree,
    key: &[u8],
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), Abort> {
    let mut refused = read_fields(refused_fields, REFUSED_FIELDS_TREE, key)?;
    let before = refused.len();
    for name in names {
        refused.remove(name);
    }
    if refused.len() != before {
        write_fields(refused_fields, REFUSED_FIELDS_TREE, key, &refused)?;
    }
    Ok(())
}

impl Store {
    /// Records a dead letter for values refused before sending (they do not
    /// fit the field) and returns its id; durable at the next flush.
    pub fn add_dead_letter(
        &self,
        account_id: &str,
        mappings: Vec<String>,
        fields: Fields,
        code: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.record_dead_letter(account_id, mappings, fields, None, code, message, at)
    }

    /// Dead-letters a write Salesforce refused for good, in one transaction:
    /// the letter (with what Salesforce kept), the values leave the write
    /// queue, and the refusal is remembered for planning. Returns the
    /// letter's id; durable at the next flush.
    pub fn dead_letter_write(
        &self,
        attempted: &PendingWrite,
        code: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.record_dead_letter(
            &attempted.account_id,
            attempted.mappings.iter().cloned().collect(),
            attempted.fields.clone(),
            Some(attempted),
            code,
            message,
            at,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn record_dead_letter(
        &self,
        account_id: &str,
        mappings: Vec<String>,
        fields: Fields,
        attempted: Option<&PendingWrite>,
        code: &str,
        message: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let id = self.next_sequence()?;
        let key = account_id.as_bytes();
        let inner = &self.inner;
        let changes = (
            &inner.dead_letters,
            &inner.known_fields,
            &inner.refused_fields,
            &inner.writes,
        )
            .transaction(|(dead_letters, known_fields, refused_fields, writes)| {
                let known = read_fields(known_fields, KNOWN_FIELDS_TREE, key)?;
                let kept: Fields = fields
                    .keys()
                    .map(|name| {
                        let value = known.get(name).cloned().unwrap_or_default();
                        (name.clone(), value)
                    })
                    .collect();
                let letter = DeadLetter {
                    id,
                    account_id: account_id.to_owned(),
                    mappings: mappings.clone(),
                    fields: fields.clone(),
                    kept,
                    code: code.to_owned(),
                    message: message.to_owned(),
                    at,
                };
                let value =
                    codec::encode_value(DEAD_LETTERS_TREE, &letter).map_err(Abort::Abort)?;
                let replaced = dead_letters.insert(&codec::sequence_key(id), value)?;
                let added = Changes::added_if(Queue::DeadLetters, replaced.is_none());
                let mut refused = read_fields(refused_fields, REFUSED_FIELDS_TREE, key)?;
                refused.extend(fields.clone());
                write_fields(refused_fields, REFUSED_FIELDS_TREE, key, &refused)?;
                let Some(attempted) = attempted else {
                    return Ok(WriteChanges::from(added));
                };
                let Some(bytes) = writes.get(key)? else {
                    return Ok(WriteChanges::from(added));
                };
                let mut pending: PendingWrite =
                    codec::decode_value(WRITES_TREE, key, &bytes).map_err(Abort::Abort)?;
                // Values queued again meanwhile stay pending.
                pending
                    .fields
                    .retain(|name, value| attempted.fields.get(name) != Some(value));
                pending.attempts = 0;
                pending.last_error = None;
                Ok(keep_or_remove_write(writes, key, &pending)?.with(added))
            })
            .map_err(transaction_error("record a dead letter"))?;
        self.apply_write_changes(changes)?;
        Ok(id)
    }

    /// The values Salesforce refused for good for an Account, by field.
    pub fn refused_fields(&self, account_id: &str) -> Result<Fields, StoreError> {
        account_fields(&self.inner.refused_fields, REFUSED_FIELDS_TREE, account_id)
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

    /// Retries dead letters, in one transaction: each letter goes, its
    /// refusals are forgotten, and its Account is marked for re-planning
    /// from its current state. Durable at the next flush.
    pub fn retry_dead_letters(&self, letters: &[DeadLetter]) -> Result<(), StoreError> {
        let inner = &self.inner;
        let changes = (&inner.dead_letters, &inner.refused_fields, &inner.replans)
            .transaction(|(dead_letters, refused_fields, replans)| {
                let mut changes = Changes::none();
                for letter in letters {
                    let key = letter.account_id.as_bytes();
                    let removed = dead_letters.remove(&codec::sequence_key(letter.id))?;
                    changes =
                        changes.with(Changes::removed_if(Queue::DeadLetters, removed.is_some()));
                    forget_refusals(refused_fields, key, letter.fields.keys())?;
                    mark_replan(replans, &letter.account_id, &letter.mappings)?;
                }
                Ok(changes)
            })
            .map_err(transaction_error("retry dead letters"))?;
        inner.queues.apply(changes);
        Ok(())
    }

    /// Marks an Account to be planned again from its current links (an
    /// undeleted Account whose link reopened). Durable at the next flush.
    pub fn mark_replan(&self, account_id: &str, mapping: &str) -> Result<(), StoreError> {
        self.inner
            .replans
            .transaction(|replans| mark_replan(replans, account_id, &[mapping.to_owned()]))
            .map_err(transaction_error("mark an Account for re-planning"))
    }

    /// Accounts waiting to be planned again, in Account Id order.
    pub fn replans(&self) -> Result<Vec<Replan>, StoreError> {
        self.inner
            .replans
            .iter()
            .map(|entry| {
                let (key, value) = entry.map_err(StoreError::database("read re-plans"))?;
                codec::decode_value(REPLANS_TREE, &key, &value)
            })
            .collect()
    }

    /// The Account was planned again: its mark goes.
    pub fn replanned(&self, account_id: &str) -> Result<(), StoreError> {
        self.inner
            .replans
            .remove(account_id.as_bytes())
            .map_err(StoreError::database("remove a re-plan"))?;
        Ok(())
    }

    /// How many dead letters wait for a human; read from a counter.
    pub fn dead_letter_count(&self) -> usize {
        usize::try_from(self.inner.queues.get(Queue::DeadLetters)).unwrap_or(usize::MAX)
    }
}
