//! Maps from an id to a small value kept in a bounded number of sled
//! values ("buckets") rather than one sled value per id.
//!
//! sled keeps bookkeeping in memory for every page of a tree while the
//! store is open, and a page holds at most 16 values whatever their size:
//! a keyspace with a value per Account (or three: the webhook event ids a
//! decision brings) makes the daemon's memory grow with the org. A bucketed
//! map holds at most its number of buckets, whatever the number of ids.
//!
//! An id's bucket is the FNV-1a hash of its bytes (stable across versions
//! and machines) modulo the number of buckets, keyed as a big-endian `u16`.
//! A bucket is a run of records: a big-endian `u32` id length, the id, a
//! big-endian `u32` value length, the value. Each change rewrites its
//! bucket, so a map has buckets enough that one stays small.
//!
//! A store written before a map was bucketed kept one value per id in a
//! keyspace of its own: [`BucketMap::adopt`] moves those ids into their
//! buckets when the store opens, each in a transaction, then drops it.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::StoreError;
use super::codec;
use super::writebacks::transaction_error;

/// The bytes of a record's lengths.
const LENGTH_BYTES: usize = 4;

/// An error inside a transaction, which aborts it.
type Aborting = ConflictableTransactionError<StoreError>;

/// One record of a bucket.
pub(super) struct Record<'a> {
    pub(super) id: &'a [u8],
    pub(super) value: &'a [u8],
}

/// A map kept in `buckets` buckets in the keyspace `keyspace`.
pub(super) struct BucketMap {
    pub(super) keyspace: &'static str,
    pub(super) buckets: u16,
}

impl BucketMap {
    /// The key of `id`'s bucket.
    fn bucket_key(&self, id: &[u8]) -> [u8; 2] {
        const OFFSET: u32 = 0x811c_9dc5;
        const PRIME: u32 = 0x0100_0193;
        let hash = id.iter().fold(OFFSET, |hash, byte| {
            (hash ^ u32::from(*byte)).wrapping_mul(PRIME)
        });
        let bucket = u16::try_from(hash % u32::from(self.buckets)).expect("below a u16 count");
        bucket.to_be_bytes()
    }

    /// The records of the bucket stored at `key`.
    pub(super) fn records<'a>(
        &self,
        key: &[u8],
        bytes: &'a [u8],
    ) -> Result<Vec<Record<'a>>, StoreError> {
        let corrupt = |offset: usize| StoreError::Corrupt {
            keyspace: self.keyspace,
            key: codec::describe_key(key),
            reason: format!("a record is cut short at byte {offset}"),
        };
        let mut records = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() {
            let start = offset;
            let mut field = || {
                let length = bytes
                    .get(offset..offset + LENGTH_BYTES)
                    .and_then(|length| <[u8; LENGTH_BYTES]>::try_from(length).ok())
                    .and_then(|length| usize::try_from(u32::from_be_bytes(length)).ok())
                    .ok_or_else(|| corrupt(start))?;
                let field = bytes
                    .get(offset + LENGTH_BYTES..offset + LENGTH_BYTES + length)
                    .ok_or_else(|| corrupt(start))?;
                offset += LENGTH_BYTES + length;
                Ok::<_, StoreError>(field)
            };
            let id = field()?;
            let value = field()?;
            records.push(Record { id, value });
        }
        Ok(records)
    }

    /// Adds a record to a bucket's bytes.
    pub(super) fn push(
        &self,
        bucket: &mut Vec<u8>,
        id: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        for field in [id, value] {
            let length = u32::try_from(field.len()).map_err(|_| StoreError::Corrupt {
                keyspace: self.keyspace,
                key: codec::describe_key(id),
                reason: format!("a field of {} bytes is too long for a bucket", field.len()),
            })?;
            bucket.extend_from_slice(&length.to_be_bytes());
            bucket.extend_from_slice(field);
        }
        Ok(())
    }

    /// The value of `id`.
    pub(super) fn get(&self, tree: &sled::Tree, id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.bucket_key(id);
        let Some(bytes) = tree.get(key).map_err(|source| StoreError::Database {
            operation: "read a bucket",
            source,
        })?
        else {
            return Ok(None);
        };
        self.find(&key, &bytes, id)
    }

    /// In a transaction: the value of `id`.
    pub(super) fn get_in(
        &self,
        tree: &TransactionalTree,
        id: &[u8],
    ) -> Result<Option<Vec<u8>>, Aborting> {
        let key = self.bucket_key(id);
        let Some(bytes) = tree.get(key)? else {
            return Ok(None);
        };
        self.find(&key, &bytes, id)
            .map_err(ConflictableTransactionError::Abort)
    }

    /// The value of `id` in the bucket stored at `key`.
    fn find(&self, key: &[u8], bytes: &[u8], id: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .records(key, bytes)?
            .into_iter()
            .find(|record| record.id == id)
            .map(|record| record.value.to_vec()))
    }

    /// In a transaction: sets the value of `id`.
    pub(super) fn insert_in(
        &self,
        tree: &TransactionalTree,
        id: &[u8],
        value: &[u8],
    ) -> Result<(), Aborting> {
        let key = self.bucket_key(id);
        let mut bucket = Vec::new();
        if let Some(bytes) = tree.get(key)? {
            for record in self
                .records(&key, &bytes)
                .map_err(ConflictableTransactionError::Abort)?
                .into_iter()
                .filter(|record| record.id != id)
            {
                self.push(&mut bucket, record.id, record.value)
                    .map_err(ConflictableTransactionError::Abort)?;
            }
        }
        self.push(&mut bucket, id, value)
            .map_err(ConflictableTransactionError::Abort)?;
        tree.insert(&key, bucket)?;
        Ok(())
    }

    /// Moves the ids of the keyspace `legacy` (one value per id, written by
    /// an earlier version) into their buckets in `tree`, each move one
    /// transaction (a crash in between moves the rest at the next open),
    /// then drops `legacy`; how many were moved.
    pub(super) fn adopt(
        &self,
        db: &sled::Db,
        legacy: &str,
        tree: &sled::Tree,
    ) -> Result<u64, StoreError> {
        if !db.tree_names().iter().any(|name| name == legacy.as_bytes()) {
            return Ok(0);
        }
        let database = |operation| move |source| StoreError::Database { operation, source };
        let old = db
            .open_tree(legacy)
            .map_err(database("open a keyspace of an earlier version"))?;
        let mut moved = 0;
        for item in old.iter() {
            let (id, value) = item.map_err(database("read a keyspace of an earlier version"))?;
            (&old, tree)
                .transaction(|(old, tree)| {
                    old.remove(&id)?;
                    self.insert_in(tree, &id, &value)
                })
                .map_err(transaction_error("move an id into its bucket"))?;
            moved += 1;
        }
        drop(old);
        db.drop_tree(legacy)
            .map_err(database("drop a keyspace of an earlier version"))?;
        tracing::info!(
            moved,
            from = legacy,
            to = self.keyspace,
            "moved the ids of an earlier version into buckets"
        );
        Ok(moved)
    }
}
