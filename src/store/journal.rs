//! The per-Account journal: what was read, sent, decided and written, and
//! what came back, so compliance can answer "why is this Account not
//! updated?" (`explain`).
//!
//! One entry per distinct event: an entry identical to the Account's last
//! one (same step, mapping, summary and detail: an unchanged re-fetch, the
//! same failure again) bumps that entry's `count` and `last_at` instead of
//! growing the journal. A failure or a retry (a noise step, see
//! [`super::NOISE_STEPS`]) is also looked for among the noise entries since
//! the last piece of evidence: a retry cycle journals several steps in turn
//! (a failed fetch, then the item parked, then the same again), and each of
//! them keeps one entry with its count, however long the cycle lasts.
//!
//! # Chunks
//!
//! An Account's entries are stored in chunks, several entries per sled
//! value, keyed `account \0 sequence` (the sequence orders the chunks).
//! sled keeps bookkeeping in memory for every page of a tree, for as long
//! as the store is open, and a page holds at most 16 values whatever their
//! size: the daemon's memory grows with the number of values, not with
//! their bytes. A chunk is JSON Lines, one entry per line, oldest first
//! (compact JSON never holds a raw newline). An append adds a line to the
//! Account's last chunk, or starts a new chunk once that one holds
//! [`CHUNK_ENTRIES`] entries or would pass [`JOURNAL_CHUNK_BYTES`]: a typical
//! Account's whole history is one chunk.
//!
//! A store written before chunks (one entry per value, under the same keys)
//! reads as chunks of one line; an append fills its Account's last value,
//! and the pruning pass packs each Account's values into as few chunks as
//! fit ([`super::retention`]).
//!
//! Every change to a chunk is a compare-and-swap against the value it was
//! computed from, retried from a fresh read when another writer changed
//! the chunk meanwhile: concurrent appends for one Account land in some
//! order and none is lost, whether or not the callers serialize them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::codec;
use super::retention::is_noise;
use super::{JOURNAL_TREE, Store, StoreError};

/// How many noise entries back a repeated failure is looked for: more than
/// the steps one retry cycle journals, few enough to cost a handful of reads.
const NOISE_LOOKBACK: usize = 8;

/// Most entries one chunk holds.
const CHUNK_ENTRIES: usize = 32;

/// Most bytes a chunk grows to (a single larger entry gets a chunk of its
/// own): a typical Account's history fits, a sled page of 16 chunks stays
/// well under the size sled moves out to a file of its own, and an append
/// rewrites no more than this.
pub const JOURNAL_CHUNK_BYTES: usize = 4 * 1024;

/// Between two entries of a chunk.
const LINE_END: u8 = b'\n';

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
    /// How many times this same event happened in a row (1 the first time).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
    /// When it last happened, once it happened more than once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<DateTime<Utc>>,
}

fn one() -> u64 {
    1
}

fn is_one(count: &u64) -> bool {
    *count == 1
}

impl JournalEntry {
    /// A new entry, seen once.
    pub fn new(
        at: DateTime<Utc>,
        mapping: Option<String>,
        step: &str,
        summary: String,
        detail: serde_json::Value,
    ) -> JournalEntry {
        JournalEntry {
            at,
            mapping,
            step: step.to_owned(),
            summary,
            detail,
            count: 1,
            last_at: None,
        }
    }

    /// The same event as `other`, whenever and however often it happened.
    fn same_event(&self, other: &JournalEntry) -> bool {
        self.step == other.step
            && self.mapping == other.mapping
            && self.summary == other.summary
            && self.detail == other.detail
    }
}

/// One stored chunk of an Account's journal, as read.
#[derive(Clone)]
pub(super) struct Chunk {
    pub(super) key: sled::IVec,
    pub(super) value: sled::IVec,
}

impl Chunk {
    /// The encoded entries, oldest first.
    fn lines(&self) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.value.split(|byte| *byte == LINE_END)
    }

    /// Its entries, oldest first.
    pub(super) fn entries(&self) -> Result<Vec<JournalEntry>, StoreError> {
        self.lines()
            .enumerate()
            .map(|(index, line)| decode_line(&self.key, index, line))
            .collect()
    }
}

/// The entry on line `index` of the chunk at `key`; an error names both.
fn decode_line(key: &[u8], index: usize, line: &[u8]) -> Result<JournalEntry, StoreError> {
    codec::decode_value(JOURNAL_TREE, key, line).map_err(|error| match error {
        StoreError::Corrupt {
            keyspace,
            key,
            reason,
        } => StoreError::Corrupt {
            keyspace,
            key: format!("{key} (entry {})", index + 1),
            reason,
        },
        other => other,
    })
}

/// Encoded entries joined into one chunk value.
fn join<T: AsRef<[u8]>>(lines: &[T]) -> Vec<u8> {
    let mut value = Vec::with_capacity(lines.iter().map(|line| line.as_ref().len() + 1).sum());
    for (index, line) in lines.iter().enumerate() {
        if index > 0 {
            value.push(LINE_END);
        }
        value.extend_from_slice(line.as_ref());
    }
    value
}

/// Whether an encoded entry may join a chunk holding `value` (`entries`
/// entries).
fn fits(value: &[u8], entries: usize, line: &[u8]) -> bool {
    entries < CHUNK_ENTRIES && value.len() + 1 + line.len() <= JOURNAL_CHUNK_BYTES
}

/// `entries` packed in order into as few chunks as the limits allow, the
/// way appends fill them.
fn pack(entries: &[JournalEntry]) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut chunks: Vec<(Vec<u8>, usize)> = Vec::new();
    for entry in entries {
        let line = codec::encode_value(JOURNAL_TREE, entry)?;
        match chunks.last_mut() {
            Some((value, count)) if fits(value, *count, &line) => {
                value.push(LINE_END);
                value.extend_from_slice(&line);
                *count += 1;
            }
            _ => chunks.push((line, 1)),
        }
    }
    Ok(chunks.into_iter().map(|(value, _)| value).collect())
}

/// New values for an Account's chunks, given what is kept of each (in
/// order); `None` removes a chunk. What is kept is packed into as few
/// chunks as fit when that takes no more chunks than there are: they take
/// the first keys, so the order stays. Otherwise (chunks that grew past the
/// limits as repeats were counted on them) each chunk keeps what is kept
/// of its own entries.
pub(super) fn repack(kept: &[Vec<JournalEntry>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    let packed = pack(&kept.concat())?;
    if packed.len() <= kept.len() {
        let mut values: Vec<Option<Vec<u8>>> = packed.into_iter().map(Some).collect();
        values.resize(kept.len(), None);
        return Ok(values);
    }
    kept.iter()
        .map(|entries| {
            let lines = entries
                .iter()
                .map(|entry| codec::encode_value(JOURNAL_TREE, entry))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((!lines.is_empty()).then(|| join(&lines)))
        })
        .collect()
}

/// The key prefix of an Account's chunks.
fn account_prefix(account_id: &str) -> Vec<u8> {
    let mut prefix = account_id.as_bytes().to_vec();
    prefix.push(codec::KEY_SEPARATOR);
    prefix
}

/// Whether one attempt at journaling an entry was applied.
enum Attempt {
    Applied,
    /// Another writer changed the chunk it read: read again.
    Raced,
}

impl Store {
    /// Appends to an Account's journal, or counts a repeat of a recent
    /// entry; durable at the next flush.
    pub fn journal(&self, account_id: &str, entry: &JournalEntry) -> Result<(), StoreError> {
        let prefix = account_prefix(account_id);
        let line = codec::encode_value(JOURNAL_TREE, entry)?;
        while let Attempt::Raced = self.journal_once(&prefix, entry, &line)? {}
        Ok(())
    }

    /// One read-modify-write of the Account's chunks.
    fn journal_once(
        &self,
        prefix: &[u8],
        entry: &JournalEntry,
        line: &[u8],
    ) -> Result<Attempt, StoreError> {
        let mut chunks = self.inner.journal.scan_prefix(prefix).rev().map(|stored| {
            let (key, value) = stored.map_err(StoreError::database("read the journal"))?;
            Ok::<_, StoreError>(Chunk { key, value })
        });
        let Some(last) = chunks.next().transpose()? else {
            return self.start_chunk(prefix, line);
        };
        let last_lines = last.lines().count();
        let mut looked = 0;
        'chunks: for chunk in std::iter::once(Ok(last.clone())).chain(chunks) {
            let chunk = chunk?;
            let lines: Vec<&[u8]> = chunk.lines().collect();
            for (index, stored_line) in lines.iter().enumerate().rev() {
                if looked == NOISE_LOOKBACK {
                    break 'chunks;
                }
                looked += 1;
                let mut previous = decode_line(&chunk.key, index, stored_line)?;
                if previous.same_event(entry) {
                    previous.count += entry.count;
                    previous.last_at = Some(entry.last_at.unwrap_or(entry.at));
                    let counted = codec::encode_value(JOURNAL_TREE, &previous)?;
                    let mut updated = lines.clone();
                    updated[index] = &counted;
                    return self.swap(&chunk, join(&updated), "count a journal entry");
                }
                // Evidence is counted only on the last entry, and noise is not
                // looked for beyond the last evidence: the journal keeps its order.
                if !(is_noise(&entry.step) && is_noise(&previous.step)) {
                    break 'chunks;
                }
            }
        }
        if fits(&last.value, last_lines, line) {
            self.swap(
                &last,
                join(&[&last.value[..], line]),
                "append to the journal",
            )
        } else {
            self.start_chunk(prefix, line)
        }
    }

    /// Replaces `chunk` with `value` unless another writer changed it.
    fn swap(
        &self,
        chunk: &Chunk,
        value: Vec<u8>,
        operation: &'static str,
    ) -> Result<Attempt, StoreError> {
        let swapped = self
            .inner
            .journal
            .compare_and_swap(&chunk.key, Some(&chunk.value), Some(value))
            .map_err(StoreError::database(operation))?;
        Ok(match swapped {
            Ok(()) => Attempt::Applied,
            Err(_) => Attempt::Raced,
        })
    }

    /// A new chunk holding `line`, after every chunk of the Account.
    fn start_chunk(&self, prefix: &[u8], line: &[u8]) -> Result<Attempt, StoreError> {
        let mut key = prefix.to_vec();
        key.extend_from_slice(&codec::sequence_key(self.next_sequence()?));
        self.inner
            .journal
            .insert(key, line)
            .map_err(StoreError::database("append to the journal"))?;
        Ok(Attempt::Applied)
    }

    /// Replaces an Account's `chunks` with `values` (`None` removes one),
    /// in one transaction, unless one of them changed since it was read;
    /// whether it did.
    pub(super) fn replace_chunks(
        &self,
        chunks: &[Chunk],
        values: Vec<Option<Vec<u8>>>,
    ) -> Result<bool, StoreError> {
        let replaced = self.inner.journal.transaction(|journal| {
            for chunk in chunks {
                if journal.get(&chunk.key)?.as_ref() != Some(&chunk.value) {
                    return Err(ConflictableTransactionError::Abort(()));
                }
            }
            for (chunk, value) in chunks.iter().zip(&values) {
                match value {
                    Some(value) => journal.insert(&chunk.key, value.as_slice())?,
                    None => journal.remove(&chunk.key)?,
                };
            }
            Ok(())
        });
        match replaced {
            Ok(()) => Ok(true),
            Err(TransactionError::Abort(())) => Ok(false),
            Err(TransactionError::Storage(source)) => Err(StoreError::Database {
                operation: "prune the journal",
                source,
            }),
        }
    }

    /// An Account's journal, oldest first.
    pub fn journal_of(&self, account_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let mut journal = Vec::new();
        for stored in self.inner.journal.scan_prefix(account_prefix(account_id)) {
            let (key, value) = stored.map_err(StoreError::database("read the journal"))?;
            journal.extend(Chunk { key, value }.entries()?);
        }
        Ok(journal)
    }
}
