//! Write-backs waiting for Salesforce, coalesced per Account, and the field
//! values we believe Salesforce holds (read by intake, or written by us), so
//! only changed fields are sent.
//!
//! The `writes` tree is the truth; beside it the store keeps in memory when
//! each pending write is due and how urgent it is ([`PendingView`]), so the
//! writer finds what is due without reading, let alone decoding, every
//! pending write each time a call is free. The view is built from the tree
//! when the store opens and is moved only by [`Store::apply_write_changes`],
//! which every transaction that writes the tree must hand its
//! [`WriteChanges`] to: the one way a pending write is added, changed or
//! removed (`merge_write`, `keep_or_remove_write`, `remove_write`) returns
//! them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

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

/// A pending write as the writer chooses it: whose it is, how soon it must
/// go and since when it waits. What it carries is read from the store only
/// once it is chosen ([`Store::pending_writes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueWrite {
    pub account_id: String,
    pub urgency: Urgency,
    pub queued_at: DateTime<Utc>,
    pub not_before: DateTime<Utc>,
}

/// The part of a stored [`PendingWrite`] the view keeps (the other fields
/// are not decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
struct Schedule {
    queued_at: DateTime<Utc>,
    not_before: DateTime<Utc>,
    #[serde(default)]
    urgency: Urgency,
}

/// When each pending write is due, in memory: per urgency, the Accounts in
/// the order their writes fall due (then by Id).
#[derive(Default)]
pub(super) struct PendingView(Mutex<Schedules>);

/// Room for this many pending writes is kept once they are all written;
/// more is given back.
const SHRINK_ABOVE: usize = 1024;

#[derive(Default)]
struct Schedules {
    /// Each Account's schedule, to find its place in an order when it moves.
    by_account: HashMap<String, Schedule>,
    /// Decisions and resyncs by `(not_before, Account)`: the writer takes
    /// them first, without walking past the links.
    now: BTreeSet<(DateTime<Utc>, String)>,
    /// Portal links, likewise.
    may_wait: BTreeSet<(DateTime<Utc>, String)>,
}

impl Schedules {
    fn order(&mut self, urgency: Urgency) -> &mut BTreeSet<(DateTime<Utc>, String)> {
        match urgency {
            Urgency::Now => &mut self.now,
            Urgency::MayWait => &mut self.may_wait,
        }
    }

    /// Puts an Account's schedule in place of the one it had (none drops it).
    fn set(&mut self, account_id: String, schedule: Option<Schedule>) {
        if let Some(old) = self.by_account.remove(&account_id) {
            self.order(old.urgency)
                .remove(&(old.not_before, account_id.clone()));
        }
        if let Some(schedule) = schedule {
            self.order(schedule.urgency)
                .insert((schedule.not_before, account_id.clone()));
            self.by_account.insert(account_id, schedule);
        } else if self.by_account.is_empty() && self.by_account.capacity() > SHRINK_ABOVE {
            // A backfill's thousands of links are written: an idle daemon
            // does not keep their room.
            self.by_account.shrink_to_fit();
        }
    }
}

impl PendingView {
    /// The view of every write in `writes` (when the store opens).
    pub(super) fn build(writes: &sled::Tree) -> Result<PendingView, StoreError> {
        let mut schedules = Schedules::default();
        for entry in writes.iter() {
            let (key, value) = entry.map_err(StoreError::database("read pending writes"))?;
            let schedule = codec::decode_value(WRITES_TREE, &key, &value)?;
            schedules.set(account_of(&key), Some(schedule));
        }
        Ok(PendingView(Mutex::new(schedules)))
    }

    fn schedules(&self) -> std::sync::MutexGuard<'_, Schedules> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes the view of one Account's write what the tree holds now. Read
    /// under the view's lock, so of two refreshes racing after two commits
    /// the last to run sees the later commit: the view never keeps an older
    /// state than the tree's.
    fn refresh(&self, writes: &sled::Tree, key: &[u8]) -> Result<(), StoreError> {
        let mut schedules = self.schedules();
        let schedule = writes
            .get(key)
            .map_err(StoreError::database("read a pending write"))?
            .map(|bytes| codec::decode_value(WRITES_TREE, key, &bytes))
            .transpose()?;
        schedules.set(account_of(key), schedule);
        Ok(())
    }
}

/// The Account a `writes` key names.
fn account_of(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// What a transaction did to the pending writes: the queue counters'
/// changes and the Account whose write it touched, handed to
/// [`Store::apply_write_changes`] once the transaction committed.
#[must_use = "the pending writes' view and counters drift unless the changes are applied"]
#[derive(Debug, Default)]
pub(super) struct WriteChanges {
    queues: Changes,
    touched: Option<Vec<u8>>,
}

impl WriteChanges {
    /// The write of `key` touched, with these counter changes.
    fn touched(key: &[u8], queues: Changes) -> WriteChanges {
        WriteChanges {
            queues,
            touched: Some(key.to_vec()),
        }
    }

    /// These changes and other counter changes of the same transaction.
    pub(super) fn with(mut self, queues: Changes) -> WriteChanges {
        self.queues = self.queues.with(queues);
        self
    }
}

impl From<Changes> for WriteChanges {
    /// Counter changes of a transaction that wrote no pending write.
    fn from(queues: Changes) -> WriteChanges {
        WriteChanges {
            queues,
            touched: None,
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
) -> ConflictableTransactionResult<WriteChanges, StoreError> {
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
    Ok(WriteChanges::touched(key, added))
}

/// Drops an Account's pending write, if any, inside a transaction; the
/// changes count it. The one way a pending write is removed.
pub(super) fn remove_write(
    writes: &TransactionalTree,
    key: &[u8],
) -> ConflictableTransactionResult<WriteChanges, StoreError> {
    let removed = writes.remove(key)?;
    Ok(WriteChanges::touched(
        key,
        Changes::removed_if(Queue::PendingWrites, removed.is_some()),
    ))
}

/// Stores what is left of an Account's pending write after some of its
/// fields were settled, inside a transaction: nothing left removes it, and
/// the changes count that.
pub(super) fn keep_or_remove_write(
    writes: &TransactionalTree,
    key: &[u8],
    pending: &PendingWrite,
) -> ConflictableTransactionResult<WriteChanges, StoreError> {
    if pending.fields.is_empty() {
        return remove_write(writes, key);
    }
    let value =
        codec::encode_value(WRITES_TREE, pending).map_err(ConflictableTransactionError::Abort)?;
    writes.insert(key, value)?;
    Ok(WriteChanges::touched(key, Changes::none()))
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

    /// Up to `limit` pending writes due at `now`, those due first first.
    pub fn due_writes(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PendingWrite>, StoreError> {
        self.pending_writes(&self.due_writes_where(now, limit, None, |_| true))
    }

    /// Up to `limit` writes due at `now`, those due first first, of one
    /// urgency or either, of the Accounts `wanted` keeps (the writer skips
    /// those it has in flight): from memory, nothing read from the tree.
    pub fn due_writes_where(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        urgency: Option<Urgency>,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<DueWrite> {
        let schedules = self.inner.pending.schedules();
        let orders = match urgency {
            Some(Urgency::Now) => [Some(&schedules.now), None],
            Some(Urgency::MayWait) => [Some(&schedules.may_wait), None],
            None => [Some(&schedules.now), Some(&schedules.may_wait)],
        };
        let mut due: Vec<DueWrite> = Vec::new();
        for order in orders.into_iter().flatten() {
            due.extend(
                order
                    .iter()
                    .take_while(|(not_before, _)| *not_before <= now)
                    .filter(|(_, account_id)| wanted(account_id))
                    .take(limit)
                    .map(|(_, account_id)| {
                        let schedule = schedules.by_account[account_id];
                        DueWrite {
                            account_id: account_id.clone(),
                            urgency: schedule.urgency,
                            queued_at: schedule.queued_at,
                            not_before: schedule.not_before,
                        }
                    }),
            );
        }
        due.sort_by(|left, right| {
            (left.not_before, &left.account_id).cmp(&(right.not_before, &right.account_id))
        });
        due.truncate(limit);
        due
    }

    /// What the chosen writes carry, as stored now; a write settled or
    /// dropped since it was chosen is left out.
    pub fn pending_writes(&self, chosen: &[DueWrite]) -> Result<Vec<PendingWrite>, StoreError> {
        let mut pending = Vec::with_capacity(chosen.len());
        for due in chosen {
            match self.pending_write(&due.account_id)? {
                Some(write) => pending.push(write),
                // Gone between its commit and the view's refresh: the
                // view catches up now rather than offer it again.
                None => self
                    .inner
                    .pending
                    .refresh(&self.inner.writes, due.account_id.as_bytes())?,
            }
        }
        Ok(pending)
    }

    /// The earliest `not_before` among pending writes (from memory).
    pub fn next_write_due(&self) -> Option<DateTime<Utc>> {
        let schedules = self.inner.pending.schedules();
        [schedules.now.first(), schedules.may_wait.first()]
            .into_iter()
            .flatten()
            .map(|(not_before, _)| *not_before)
            .min()
    }

    /// Applies what a committed transaction did to the pending writes: the
    /// queue counters, and the view of the Account's write it touched.
    pub(super) fn apply_write_changes(&self, changes: WriteChanges) -> Result<(), StoreError> {
        self.inner.queues.apply(changes.queues);
        match changes.touched {
            Some(key) => self.inner.pending.refresh(&self.inner.writes, &key),
            None => Ok(()),
        }
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
                    return Ok(WriteChanges::default());
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
        self.apply_write_changes(changes)
    }
}
