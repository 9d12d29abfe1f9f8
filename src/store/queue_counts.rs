//! How deep each queue is, without counting its entries: the gauges (every
//! second), `status` and the writer (before each batch) read these counters,
//! so their cost does not grow with the queues.
//!
//! The queues are counted once when the store opens; from then on every
//! operation that adds or removes an entry moves the counters by what sled
//! reported it did (the value an insert replaced, the value a removal took,
//! what a transaction read before it wrote), after the write succeeded. A
//! transaction's closure reports its [`Changes`] as its result, so a closure
//! sled runs again counts only its last, committed run. The counters live in
//! memory: a crash loses nothing, since the next open counts again.

use std::sync::atomic::{AtomicI64, Ordering};

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{Inner, StoreError};

/// A counted queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queue {
    /// Ondorse webhooks waiting in the inbox, parked ones included.
    Webhooks,
    /// Salesforce push hints waiting, parked ones included.
    Hints,
    ParkedWebhooks,
    ParkedHints,
    /// Accounts with a write pending.
    PendingWrites,
    DeadLetters,
}

const QUEUES: usize = 6;

impl Queue {
    fn index(self) -> usize {
        match self {
            Queue::Webhooks => 0,
            Queue::Hints => 1,
            Queue::ParkedWebhooks => 2,
            Queue::ParkedHints => 3,
            Queue::PendingWrites => 4,
            Queue::DeadLetters => 5,
        }
    }
}

/// What one store operation did to the queues, applied with
/// [`QueueCounts::apply`] once its write has succeeded.
#[must_use = "the queue counters drift unless the changes are applied"]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Changes([i64; QUEUES]);

impl Changes {
    /// No change.
    pub(super) fn none() -> Changes {
        Changes::default()
    }

    /// One entry added to `queue` when `added`.
    pub(super) fn added_if(queue: Queue, added: bool) -> Changes {
        Changes::none().and(queue, i64::from(added))
    }

    /// One entry removed from `queue` when `removed`.
    pub(super) fn removed_if(queue: Queue, removed: bool) -> Changes {
        Changes::none().and(queue, -i64::from(removed))
    }

    /// These changes and `delta` entries of `queue`.
    pub(super) fn and(mut self, queue: Queue, delta: i64) -> Changes {
        self.0[queue.index()] += delta;
        self
    }

    /// These changes and `other`.
    pub(super) fn with(mut self, other: Changes) -> Changes {
        for (total, delta) in self.0.iter_mut().zip(other.0) {
            *total += delta;
        }
        self
    }
}

/// The counters, one per [`Queue`].
#[derive(Debug, Default)]
pub(super) struct QueueCounts([AtomicI64; QUEUES]);

impl QueueCounts {
    /// The entries of every queue, counted (once, when the store opens).
    pub(super) fn count(inner: &Inner) -> Result<Changes, StoreError> {
        let mut changes = Changes::none();
        for (tree, queue, parked) in [
            (&inner.inbox, Queue::Webhooks, Queue::ParkedWebhooks),
            (&inner.hints, Queue::Hints, Queue::ParkedHints),
        ] {
            for entry in tree.iter().values() {
                let value = entry.map_err(StoreError::database("count the inbox"))?;
                changes = changes
                    .and(queue, 1)
                    .and(parked, i64::from(is_parked(&value)));
            }
        }
        for (tree, queue) in [
            (&inner.writes, Queue::PendingWrites),
            (&inner.dead_letters, Queue::DeadLetters),
        ] {
            for entry in tree.iter().keys() {
                entry.map_err(StoreError::database("count a queue"))?;
                changes = changes.and(queue, 1);
            }
        }
        Ok(changes)
    }

    pub(super) fn apply(&self, changes: Changes) {
        for (counter, delta) in self.0.iter().zip(changes.0) {
            if delta != 0 {
                counter.fetch_add(delta, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn get(&self, queue: Queue) -> u64 {
        u64::try_from(self.0[queue.index()].load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// Whether a stored inbox item is parked; only that field is read.
pub(super) fn is_parked(value: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct ParkedField {
        #[serde(default)]
        parked: Option<IgnoredAny>,
    }
    serde_json::from_slice::<ParkedField>(value).is_ok_and(|item| item.parked.is_some())
}
