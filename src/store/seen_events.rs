//! The Ondorse event ids already accepted, remembered for
//! [`SEEN_EVENT_RETENTION`] so a redelivery is answered as a duplicate
//! ([`Store::accept_webhook`] checks and remembers an id in the webhook's
//! own transaction).
//!
//! Ids are kept in [`BUCKETS`] buckets, one sled value each, not one value
//! per id: sled keeps bookkeeping in memory for every page of a tree while
//! the store is open, and a page holds at most 16 values whatever their
//! size, so a value per id (three per Account a backfill decides) made the
//! daemon's memory grow with the org for two days. An id's bucket is the
//! FNV-1a hash of its bytes (stable across versions and machines) modulo
//! [`BUCKETS`], keyed as a big-endian `u16`. A bucket holds records of a
//! big-endian `u32` id length, the id, and the instant it was accepted (the
//! codec's big-endian milliseconds).
//!
//! A store written before buckets kept one value per id in the keyspace
//! `seen_events`; opening it moves those ids into their buckets, once.

use chrono::{DateTime, Utc};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::codec;
use super::inbox::SEEN_EVENT_RETENTION;
use super::{SEEN_EVENTS_TREE, Store, StoreError};

/// How many buckets the ids are spread over: a bound on the values the
/// keyspace holds, and few enough that they cost little memory at any
/// size; many enough that a bucket stays small (the 300,000 ids of 100,000
/// decided Accounts in two days are about 18 ids, under 1 KiB, a bucket),
/// since each accepted id rewrites its bucket.
const BUCKETS: u16 = 1 << 14;

/// The keyspace of a store written before buckets: one value per id.
const LEGACY_TREE: &str = "seen_events";

/// Bytes of a record's id length and of its instant.
const LENGTH_BYTES: usize = 4;
const INSTANT_BYTES: usize = 8;

/// The bucket of `event_id`.
fn bucket_key(event_id: &[u8]) -> [u8; 2] {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let hash = event_id.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(PRIME)
    });
    let bucket = u16::try_from(hash % u32::from(BUCKETS)).expect("below BUCKETS, a u16");
    bucket.to_be_bytes()
}

/// One remembered id.
struct Seen<'a> {
    event_id: &'a [u8],
    accepted_at: DateTime<Utc>,
}

/// The records of the bucket at `key`.
fn decode<'a>(key: &[u8], bytes: &'a [u8]) -> Result<Vec<Seen<'a>>, StoreError> {
    let corrupt = |offset: usize, reason: &str| StoreError::Corrupt {
        keyspace: SEEN_EVENTS_TREE,
        key: codec::describe_key(key),
        reason: format!("{reason} at byte {offset}"),
    };
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let length = bytes
            .get(offset..offset + LENGTH_BYTES)
            .and_then(|length| <[u8; LENGTH_BYTES]>::try_from(length).ok())
            .map(u32::from_be_bytes)
            .and_then(|length| usize::try_from(length).ok())
            .ok_or_else(|| corrupt(offset, "a record is cut short in its id length"))?;
        let id_start = offset + LENGTH_BYTES;
        let instant_start = id_start + length;
        let end = instant_start + INSTANT_BYTES;
        let (Some(event_id), Some(instant)) = (
            bytes.get(id_start..instant_start),
            bytes.get(instant_start..end),
        ) else {
            return Err(corrupt(offset, "a record is cut short"));
        };
        let accepted_at = codec::decode_instant(SEEN_EVENTS_TREE, key, instant)?;
        records.push(Seen {
            event_id,
            accepted_at,
        });
        offset = end;
    }
    Ok(records)
}

/// Adds a record to a bucket's bytes.
fn append(
    bucket: &mut Vec<u8>,
    event_id: &[u8],
    accepted_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let length = u32::try_from(event_id.len()).map_err(|_| StoreError::Corrupt {
        keyspace: SEEN_EVENTS_TREE,
        key: codec::describe_key(event_id),
        reason: format!(
            "an event id of {} bytes is too long to remember",
            event_id.len()
        ),
    })?;
    bucket.extend_from_slice(&length.to_be_bytes());
    bucket.extend_from_slice(event_id);
    bucket.extend_from_slice(&codec::encode_instant(accepted_at));
    Ok(())
}

/// In a transaction over the keyspace: whether `event_id` was remembered
/// already; remembers it as accepted at `accepted_at` if not.
pub(super) fn remember(
    seen: &TransactionalTree,
    event_id: &[u8],
    accepted_at: DateTime<Utc>,
) -> Result<bool, ConflictableTransactionError<StoreError>> {
    let key = bucket_key(event_id);
    let mut bucket = match seen.get(key)? {
        Some(bytes) => {
            let known = decode(&key, &bytes)
                .map_err(ConflictableTransactionError::Abort)?
                .iter()
                .any(|record| record.event_id == event_id);
            if known {
                return Ok(true);
            }
            bytes.to_vec()
        }
        None => Vec::new(),
    };
    append(&mut bucket, event_id, accepted_at).map_err(ConflictableTransactionError::Abort)?;
    seen.insert(&key, bucket)?;
    Ok(false)
}

/// Moves the ids of a store written before buckets into their buckets,
/// each move one transaction (a crash in between moves the rest at the
/// next open), then drops the old keyspace.
pub(super) fn adopt_legacy(db: &sled::Db, seen: &sled::Tree) -> Result<(), StoreError> {
    if !db
        .tree_names()
        .iter()
        .any(|name| name == LEGACY_TREE.as_bytes())
    {
        return Ok(());
    }
    let legacy = db.open_tree(LEGACY_TREE).map_err(StoreError::database(
        "open the seen event ids of an earlier version",
    ))?;
    let mut moved = 0u64;
    for item in legacy.iter() {
        let (event_id, instant) = item.map_err(StoreError::database(
            "read the seen event ids of an earlier version",
        ))?;
        let accepted_at = codec::decode_instant(LEGACY_TREE, &event_id, &instant)?;
        (&legacy, seen)
            .transaction(|(legacy, seen)| {
                legacy.remove(&event_id)?;
                remember(seen, &event_id, accepted_at)?;
                Ok(())
            })
            .map_err(super::writebacks::transaction_error(
                "move a seen event id into its bucket",
            ))?;
        moved += 1;
    }
    drop(legacy);
    db.drop_tree(LEGACY_TREE).map_err(StoreError::database(
        "drop the seen event ids of an earlier version",
    ))?;
    tracing::info!(
        moved,
        "moved the seen webhook event ids of an earlier version into buckets"
    );
    Ok(())
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
            for record in decode(&key, &value)? {
                if record.accepted_at < cutoff {
                    forgotten += 1;
                } else {
                    append(&mut kept, record.event_id, record.accepted_at)?;
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
