//! How values and keys become bytes, for every keyspace of the store.
//!
//! - Values are JSON (`serde_json`): readable with any tool, tolerant of
//!   added fields, and our records are small. The journal joins several
//!   values into one as JSON Lines (see `journal.rs`).
//! - Ordered sequences use big-endian `u64` keys, so sled's byte order is
//!   numeric order.
//! - Composite keys join their parts with `\0`, which never occurs in
//!   Salesforce ids, Ondorse ids or mapping names.
//! - Instants are big-endian `i64` milliseconds since the Unix epoch.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// Separator between the parts of a composite key.
pub(crate) const KEY_SEPARATOR: u8 = 0;

pub(crate) fn encode_value<T: Serialize>(
    keyspace: &'static str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { keyspace, source })
}

pub(crate) fn decode_value<T: DeserializeOwned>(
    keyspace: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        keyspace,
        key: describe_key(key),
        reason: source.to_string(),
    })
}

pub(crate) fn sequence_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

pub(crate) fn decode_sequence_key(keyspace: &'static str, key: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            keyspace,
            key: describe_key(key),
            reason: format!("a sequence key has 8 bytes, this one has {}", key.len()),
        })
}

/// `parts` joined with [`KEY_SEPARATOR`].
pub(crate) fn composite_key(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|part| part.len() + 1).sum());
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            key.push(KEY_SEPARATOR);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

pub(crate) fn encode_instant(instant: DateTime<Utc>) -> [u8; 8] {
    instant.timestamp_millis().to_be_bytes()
}

pub(crate) fn decode_instant(
    keyspace: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<DateTime<Utc>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        keyspace,
        key: describe_key(key),
        reason,
    };
    let millis = <[u8; 8]>::try_from(bytes)
        .map(i64::from_be_bytes)
        .map_err(|_| {
            corrupt(format!(
                "an instant has 8 bytes, this one has {}",
                bytes.len()
            ))
        })?;
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| corrupt(format!("{millis} ms is out of range")))
}

/// A key as text for error messages: UTF-8 when it is, hex otherwise.
pub(crate) fn describe_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if !text.contains('\0') => text.to_owned(),
        _ => format!("0x{}", hex::encode(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_keys_sort_numerically() {
        let mut keys: Vec<[u8; 8]> = [300u64, 2, 1 << 40, 17].map(sequence_key).into();
        keys.sort();
        let decoded: Vec<u64> = keys
            .iter()
            .map(|key| decode_sequence_key("test", key).unwrap())
            .collect();
        assert_eq!(decoded, [2, 17, 300, 1 << 40]);
    }

    #[test]
    fn composite_keys_group_by_their_first_part() {
        assert_eq!(composite_key(&["kyc", "001A"]), b"kyc\x00001A");
        assert!(composite_key(&["a", "z"]) < composite_key(&["ab", ""]));
    }

    #[test]
    fn instants_round_trip_to_the_millisecond() {
        let instant = DateTime::from_timestamp_millis(1_764_000_000_123).unwrap();
        assert_eq!(
            decode_instant("test", b"k", &encode_instant(instant)).unwrap(),
            instant
        );
        assert!(decode_instant("test", b"k", b"short").is_err());
    }
}
