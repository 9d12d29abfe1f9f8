//! Write-backs waiting for Salesforce, coalesced per Account, and the field
//! values we believe Salesforce holds (read by intake, or written by us), so
//! only changed fields are sent.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};

use super::codec;
use super::dead_letters::forget_refusals;
use super::queue_counts::{Changes, Queue};
use super::{KNOWN_FIELDS_TREE, Store, StoreError, WRITES_TREE};

/// Field API name → value, as sent to Salesforce.
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// The fields waiting to be written to one Account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingWrite {
    pub account_id: String,
    pub fields: Fields,
    /// The mappings that asked for these fields (for dead letters and status).
    pub mappings: BTreeSet<String>,
    pub queued_at: DateTime<Utc>,
    /// Failed attempts so far; drives the backoff.
    #[serde(default)]
    pub attempts: u32,
    /// Not to be tried before this instant (backoff after a retriable failure).
    pub not_before: DateTime<Utc>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Whether the writer may hold it back to fill a batch (only portal
    /// links may wait; a write stored before this existed goes at once).
    #[serde(default)]
    pub urgency: Urgency,
}

/// How soon a queued write must go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// A decision, a resync: written as soon as the writer has a free call.
    #[default]
    Now,
    /// A portal link: may wait a little for company, to fill a call.
    MayWait,
}

impl Urgency {
    /// Both together: a write that must go now takes whatever waits with it.
    fn and(self, other: Urgency) -> Urgency {
        match (self, other) {
            (Urgency::MayWait, Urgency::MayWait) => Urgency::MayWait,
            _ => Urgency::Now,
        }
    }
}

/// What became of an attempted write, for [`Store::settle_write`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteSettlement {
    /// Salesforce holds these values now.
    Written,
    /// Try again after `not_before`.
    Retry {
        not_before: DateTime<Utc>,
        error: String,
    },
}

/// Merges `fields` into an Account's pending write, inside a transaction;
/// the changes count a write the Account did not have.
pub(super) fn merge_write(
    writes: &TransactionalTree,
    account_id: &str,
    mapping: &str,
    fields: &Fields,
    urgency: Urgency,
    now: DateTime<Utc>,
) -> ConflictableTransactionResult<Changes, StoreError> {
    let key = account_id.as_bytes();
    let existing = writes.get(key)?;
    let added = Changes::added_if(Queue::PendingWrites, existing.is_none());
    let mut pending = match existing {
        Some(bytes) => codec::decode_value(WRITES_TREE, key, &bytes)
            .map_err(ConflictableTransactionError::Abort)?,
        None => PendingWrite {
            account_id: account_id.to_owned(),
            fields: Fields::new(),
            mappings: BTreeSet::new(),
            queued_at: now,
            attempts: 0,
            not_before: now,
            last_error: None,
            urgency,
        },
    };
    pending.urgency = pending.urgency.and(urgency);
    for (name, value) in fields {
        pending.fields.insert(name.clone(), value.clone());
    }
    pending.mappings.insert(mapping.to_owned());
    pending.not_before = pending.not_before.min(now);
    let value =
        codec::encode_value(WRITES_TREE, &pending).map_err(ConflictableTransactionError::Abort)?;
    writes.insert(key, value)?;
    Ok(added)
}

/// Drops an Account's pending write, if any, inside a transaction; the
/// changes count it. The one way a pending write is removed.
pub(super) fn remove_write(
    writes: &TransactionalTree,
    key: &[u8],
) -> ConflictableTransactionResult<Changes, StoreError> {
    let removed = writes.remove(key)?;
    Ok(Changes::removed_if(Queue::PendingWrites, removed.is_some()))
}

/// Stores what is left of an Account's pending write after some of its
/// fields were settled, inside a transaction: nothing left removes it, and
/// the changes count that.
pub(super) fn keep_or_remove_write(
    writes: &TransactionalTree,
    key: &[u8],
    pending: &PendingWrite,
) -> ConflictableTransactionResult<Changes, StoreError> {
    if pending.fields.is_empty() {
        return remove_write(writes, key);
    }
    let value =
        codec::encode_value(WRITES_TREE, pending).map_err(ConflictableTransactionError::Abort)?;
    writes.insert(key, value)?;
    Ok(Changes::none())
}

pub(super) fn transaction_error(
    operation: &'static str,
) -> impl FnOnce(TransactionError<StoreError>) -> StoreError {
    move |error| match error {
        TransactionError::Abort(error) => error,
        TransactionError::Storage(source) => StoreError::Database { operation, source },
    }
}

/// The fields an Account has in a per-Account keyspace of [`Fields`]
/// (none when absent).
pub(super) fn account_fields(
    tree: &sled::Tree,
    keyspace: &'static str,
    account_id: &str,
) -> Result<Fields, StoreError> {
    let key = account_id.as_bytes();
    Ok(tree
        .get(key)
        .map_err(|source| StoreError::Database {
            operation: "read an account's fields",
            source,
        })?
        .map(|bytes| codec::decode_value(keyspace, key, &bytes))
        .transpose()?
        .unwrap_or_default())
}

impl Store {
    /// The field values we believe Salesforce holds for an Account.
    pub fn known_fields(&self, account_id: &str) -> Result<Fields, StoreError> {
        account_fields(&self.inner.known_fields, KNOWN_FIELDS_TREE, account_id)
    }

    /// Records values read from Salesforce (they win over what we wrote), in
    /// one transaction: a write settled meanwhile is never overwritten with
    /// a stale copy.
    pub fn remember_fields(&self, account_id: &str, fields: &Fields) -> Result<(), StoreError> {
        let key = account_id.as_bytes();
        self.inner
            .known_fields
            .transaction(|known_fields| {
                let abort = ConflictableTransactionError::Abort;
                let mut known: Fields = match known_fields.get(key)? {
                    Some(bytes) => {
                        codec::decode_value(KNOWN_FIELDS_TREE, key, &bytes).map_err(abort)?
                    }
                    None => Fields::new(),
                };
                for (name, value) in fields {
                    known.insert(name.clone(), value.clone());
                }
                let value = codec::encode_value(KNOWN_FIELDS_TREE, &known).map_err(abort)?;
                known_fields.insert(key, value)?;
                Ok(())
            })
            .map_err(transaction_error("remember fields"))
    }

    /// What planning compares a new value with: the fields Salesforce holds
    /// (as last read or written, with `read` just read on top), then the
    /// values it refused for good (so a refusal is not planned again until
    /// the value changes), then the pending writes (what it will hold once
    /// they land).
    pub fn planning_baseline(&self, account_id: &str, read: &Fields) -> Result<Fields, StoreError> {
        let mut baseline = self.known_fields(account_id)?;
        baseline.extend(read.clone());
        baseline.extend(self.refused_fields(account_id)?);
        if let Some(pending) = self.pending_write(account_id)? {
            baseline.extend(pending.fields);
        }
        Ok(baseline)
    }

    /// The write pending for an Account, if any.
    pub fn pending_write(&self, account_id: &str) -> Result<Option<PendingWrite>, StoreError> {
        let key = account_id.as_bytes();
        self.inner
            .writes
            .get(key)
            .map_err(StoreError::database("read a pending write"))?
            .map(|bytes| codec::decode_value(WRITES_TREE, key, &bytes))
            .transpose()
    }

    /// Up to `limit` pending writes due at `now`, in Account Id order.
    pub fn due_writes(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PendingWrite>, StoreError> {
        self.due_writes_where(now, limit, |_| true)
    }

    /// Like [`Store::due_writes`], only the writes `wanted` keeps (the
    /// writer skips the Accounts it has in flight).
    pub fn due_writes_where(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        wanted: impl Fn(&PendingWrite) -> bool,
    ) -> Result<Vec<PendingWrite>, StoreError> {
        let mut due = Vec::new();
        for entry in self.inner.writes.iter() {
            let (key, value) = entry.map_err(StoreError::database("read pending writes"))?;
            let pending: PendingWrite = codec::decode_value(WRITES_TREE, &key, &value)?;
            if pending.not_before <= now && wanted(&pending) {
                due.push(pending);
                if due.len() == limit {
                    break;
                }
            }
        }
        Ok(due)
    }

    /// The earliest `not_before` among pending writes.
    pub fn next_write_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut earliest: Option<DateTime<Utc>> = None;
        for entry in self.inner.writes.iter() {
            let (key, value) = entry.map_err(StoreError::database("read pending writes"))?;
            let pending: PendingWrite = codec::decode_value(WRITES_TREE, &key, &value)?;
            earliest = Some(earliest.map_or(pending.not_before, |current| {
                current.min(pending.not_before)
            }));
        }
        Ok(earliest)
    }

    /// How many Accounts have a write pending; read from a counter.
    pub fn pending_write_count(&self) -> usize {
        usize::try_from(self.inner.queues.get(Queue::PendingWrites)).unwrap_or(usize::MAX)
    }

    /// Settles an attempted write. Fields queued again meanwhile with other
    /// values stay pending; the rest leave the queue (or wait, on retry).
    pub fn settle_write(
        &self,
        attempted: &PendingWrite,
        settlement: &WriteSettlement,
    ) -> Result<(), StoreError> {
        let key = attempted.account_id.as_bytes();
        let changes = (
            &self.inner.writes,
            &self.inner.known_fields,
            &self.inner.refused_fields,
        )
            .transaction(|(writes, known_fields, refused_fields)| {
                let abort = ConflictableTransactionError::Abort;
                let Some(bytes) = writes.get(key)? else {
                    return Ok(Changes::none());
                };
                let mut pending: PendingWrite =
                    codec::decode_value(WRITES_TREE, key, &bytes).map_err(abort)?;
                match settlement {
                    WriteSettlement::Written => {
                        pending
                            .fields
                            .retain(|name, value| attempted.fields.get(name) != Some(value));
                        pending.attempts = 0;
                        pending.last_error = None;
                    }
                    WriteSettlement::Retry { not_before, error } => {
                        pending.attempts = attempted.attempts + 1;
                        pending.not_before = *not_before;
                        pending.last_error = Some(error.clone());
                    }
                }
                if *settlement == WriteSettlement::Written {
                    let mut known: Fields = match known_fields.get(key)? {
                        Some(bytes) => {
                            codec::decode_value(KNOWN_FIELDS_TREE, key, &bytes).map_err(abort)?
                        }
                        None => Fields::new(),
                    };
                    for (name, value) in &attempted.fields {
                        known.insert(name.clone(), value.clone());
                    }
                    let value = codec::encode_value(KNOWN_FIELDS_TREE, &known).map_err(abort)?;
                    known_fields.insert(key, value)?;
                    forget_refusals(refused_fields, key, attempted.fields.keys())?;
                }
                keep_or_remove_write(writes, key, &pending)
            })
            .map_err(transaction_error("settle a write"))?;
        self.inner.queues.apply(changes);
        Ok(())
    }
}
