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

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::codec;
use super::retention::is_noise;
use super::{JOURNAL_TREE, Store, StoreError};

/// How many noise entries back a repeated failure is looked for: more than
/// the steps one retry cycle journals, few enough to cost a handful of reads.
const NOISE_LOOKBACK: usize = 8;

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

impl Store {
    /// Appends to an Account's journal, or counts a repeat of its last
    /// entry; durable at the next flush.
    pub fn journal(&self, account_id: &str, entry: &JournalEntry) -> Result<(), StoreError> {
        let mut prefix = account_id.as_bytes().to_vec();
        prefix.push(codec::KEY_SEPARATOR);
        let recent = self
            .inner
            .journal
            .scan_prefix(&prefix)
            .rev()
            .take(NOISE_LOOKBACK);
        for stored in recent {
            let (key, value) = stored.map_err(StoreError::database("read the journal"))?;
            let mut previous: JournalEntry = codec::decode_value(JOURNAL_TREE, &key, &value)?;
            if previous.same_event(entry) {
                previous.count += entry.count;
                previous.last_at = Some(entry.last_at.unwrap_or(entry.at));
                let updated = codec::encode_value(JOURNAL_TREE, &previous)?;
                let swapped = self
                    .inner
                    .journal
                    .compare_and_swap(&key, Some(&value), Some(updated))
                    .map_err(StoreError::database("count a journal entry"))?;
                if swapped.is_ok() {
                    return Ok(());
                }
                break;
            }
            // Evidence is counted only on the last entry, and noise is not
            // looked for beyond the last evidence: the journal keeps its order.
            if !(is_noise(&entry.step) && is_noise(&previous.step)) {
                break;
            }
        }
        let sequence = self.next_sequence()?;
        let mut key = prefix;
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
