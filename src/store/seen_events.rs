//! The Ondorse event ids already accepted, remembered for
//! [`SEEN_EVENT_RETENTION`] so a redelivery is answered as a duplicate
//! ([`Store::accept_webhook`] checks and remembers an id in the webhook's
//! own transaction).
//!
//! The ids are a bucketed map (`buckets.rs`) from the id to the instant it
//! was accepted (the codec's big-endian milliseconds), not a value per id:
//! a backfill's decisions bring three ids per Account, and sled's memory
//! grows with the number of values for the two days they are kept. A store
//! written before kept one value per id in the keyspace `seen_events`;
//! opening it moves those ids into their buckets, once.

use chrono::{DateTime, Utc};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::buckets::BucketMap;
use super::codec;
use super::inbox::SEEN_EVENT_RETENTION;
use super::{SEEN_EVENTS_TREE, Store, StoreError};

/// The map: 16,384 buckets are few enough to cost little memory at any
/// size and many enough that a bucket stays small (the 300,000 ids of
/// 100,000 decided Accounts in two days are about 18 ids, under 1 KiB, a
/// bucket), since each accepted id rewrites its bucket.
pub(super) const SEEN_EVENTS: BucketMap = BucketMap {
    keyspace: SEEN_EVENTS_TREE,
    buckets: 1 << 14,
};

/// The keyspace of a store written before buckets: one value per id.
pub(super) const LEGACY_SEEN_EVENTS_TREE: &str = "seen_events";

/// In a transaction over the keyspace: whether `event_id` was remembered
/// already; remembers it as accepted at `accepted_at` if not.
pub(super) fn remember(
    seen: &TransactionalTree,
    event_id: &[u8],
    accepted_at: DateTime<Utc>,
) -> Result<bool, ConflictableTransactionError<StoreError>> {
    if SEEN_EVENTS.get_in(seen, event_id)?.is_some() {
        return Ok(true);
    }
    SEEN_EVENTS.insert_in(seen, event_id, &codec::encode_instant(accepted_at))?;
    Ok(false)
}

impl Store {
    /// Forgets event ids accepted more than [`SEEN_EVENT_RETENTION`] before
    /// `now`; returns how many were dropped.
    pub fn prune_seen_events(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let retention = chrono::Duration::from_std(SEEN_EVENT_RETENTION)
            .expect("the retention is a few days, well inside chrono's range");
        let cutoff = now - retention;
        let mut dropped = 0;
        for item in self.inner.seen_events.iter() {
            let (key, value) = item.map_err(StoreError::database("read the seen event ids"))?;
            let mut kept = Vec::with_capacity(value.len());
            let mut forgotten = 0;
            for record in SEEN_EVENTS.records(&key, &value)? {
                let accepted_at = codec::decode_instant(SEEN_EVENTS_TREE, record.id, record.value)?;
                if accepted_at < cutoff {
                    forgotten += 1;
                } else {
                    SEEN_EVENTS.push(&mut kept, record.id, record.value)?;
                }
            }
            if forgotten == 0 {
                continue;
            }
            // Only if unchanged: never drop an id that was just accepted.
            let swapped = self
                .inner
                .seen_events
                .compare_and_swap(&key, Some(&value), (!kept.is_empty()).then_some(kept))
                .map_err(StoreError::database("prune the seen event ids"))?;
            if swapped.is_ok() {
                dropped += forgotten;
            }
        }
        if dropped > 0 {
            tracing::info!(dropped, "pruned seen webhook event ids");
        }
        Ok(dropped)
    }
}
