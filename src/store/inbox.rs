//! The webhook inbox: events and hints stored durably before they are
//! answered, then worked off by the sync engine, oldest first.
//!
//! Webhooks and Salesforce push hints have separate queues (keyspaces), so
//! a pile of hints never stands in front of a decision. An item whose
//! processing fails is parked with its reason and a retry time that grows
//! with each failure; the items behind it go on ([`Store::due_inbox_items`]
//! skips it until then).
//!
//! Ondorse delivers at least once and retries for about 27 h, so each
//! accepted `event_id` is remembered in a second keyspace for
//! [`SEEN_EVENT_RETENTION`] (`seen_events.rs`); a replay inside that window
//! is answered as a duplicate without being stored again. The check and the
//! insert are one transaction, so two concurrent deliveries of one event
//! store it once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::codec;
use super::queue_counts::{Changes, Queue, is_parked};
use super::{HINTS_TREE, INBOX_TREE, Store, StoreError, seen_events};
use crate::ondorse::webhook::WebhookEnvelope;
use crate::salesforce::Id;

/// How long an accepted event id is remembered. Ondorse retries a delivery
/// for about 27 h (15 retries, backoff capped at 4 h); 48 h covers that with
/// room for clock skew and a daemon that was down for a while.
pub const SEEN_EVENT_RETENTION: Duration = Duration::from_secs(48 * 60 * 60);

/// The answer to [`Store::accept_webhook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Newly stored under this inbox sequence.
    Stored { sequence: u64 },
    /// The event id was accepted before; nothing was written.
    Duplicate,
}

/// What was stored in the inbox, not yet on disk: [`Unflushed::durable`]
/// is the only way to the outcome, so no sender is answered before the
/// flush, while the inbox's worker may already start on the item.
#[must_use = "an inbox item is acknowledged only once it is on disk"]
pub struct Unflushed<'a, T> {
    store: &'a Store,
    outcome: T,
}

impl<T> Unflushed<'_, T> {
    /// The outcome, before it is on disk (to wake the worker early).
    pub fn outcome(&self) -> &T {
        &self.outcome
    }

    /// The outcome, once on disk (concurrent callers share the fsync).
    pub async fn durable(self) -> Result<T, StoreError> {
        self.store.flush().await?;
        Ok(self.outcome)
    }
}

/// One unit of pending work.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxItem {
    /// Position in the inbox: increasing in arrival order, across restarts.
    pub sequence: u64,
    pub received_at: DateTime<Utc>,
    pub kind: InboxKind,
    /// Set while the item is parked after failing.
    pub parked: Option<ParkedItem>,
}

/// Why an inbox item waits, and until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedItem {
    /// Failed attempts so far; the retry delay grows with them.
    pub attempts: u32,
    pub reason: String,
    pub retry_at: DateTime<Utc>,
    /// The Account it is about, when known (for `explain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

/// The two inbox queues, each with its own head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxQueue {
    /// Ondorse webhooks (and hints stored before the queues were split).
    Webhooks,
    /// Salesforce push hints.
    Hints,
}

/// What arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum InboxKind {
    /// An Ondorse event; events of ignorable types (see
    /// [`crate::ondorse::webhook::EventType::is_ignorable`]) are kept too,
    /// for the record, and skipped by the engine.
    Webhook(WebhookEnvelope),
    /// A Salesforce Flow asking for these Accounts to be read now (hints
    /// stored with a 15-character Id read back in the 18-character form).
    SalesforceHint { ids: Vec<Id> },
}

/// The stored form of an inbox entry (the sequence is the key).
#[derive(Serialize, Deserialize)]
struct StoredItem {
    received_at: DateTime<Utc>,
    #[serde(flatten)]
    kind: InboxKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parked: Option<ParkedItem>,
}

impl Store {
    /// Stores an Ondorse event unless its id was seen, and returns once the
    /// outcome is on disk.
    pub async fn accept_webhook(
        &self,
        envelope: &WebhookEnvelope,
        received_at: DateTime<Utc>,
    ) -> Result<Accepted, StoreError> {
        self.record_webhook(envelope, received_at)?.durable().await
    }

    /// Stores an Ondorse event unless its id was seen; the outcome is on
    /// disk once [`Unflushed::durable`] returns it. In between, the inbox
    /// already holds the event, so its worker can start on it while the
    /// fsync runs: completing an item flushes first, so nothing it caused
    /// outlives a crash that loses the event.
    pub fn record_webhook(
        &self,
        envelope: &WebhookEnvelope,
        received_at: DateTime<Utc>,
    ) -> Result<Unflushed<'_, Accepted>, StoreError> {
        let item = StoredItem {
            received_at,
            kind: InboxKind::Webhook(envelope.clone()),
            parked: None,
        };
        let value = codec::encode_value(INBOX_TREE, &item)?;
        let event_id = envelope.event_id.as_bytes();
        let outcome = (&self.inner.inbox, &self.inner.seen_events).transaction(|(inbox, seen)| {
            if seen_events::remember(seen, event_id, received_at)? {
                return Ok(Accepted::Duplicate);
            }
            let sequence = inbox.generate_id()?;
            inbox.insert(&codec::sequence_key(sequence), value.as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(Accepted::Stored { sequence })
        });
        let accepted = outcome.map_err(|error| match error {
            TransactionError::Abort(error) => error,
            TransactionError::Storage(source) => StoreError::Database {
                operation: "store a webhook",
                source,
            },
        })?;
        self.inner.queues.apply(Changes::added_if(
            Queue::Webhooks,
            matches!(accepted, Accepted::Stored { .. }),
        ));
        // A duplicate is flushed too: the first delivery may have been
        // answered with an error before its own flush finished, and this
        // answer promises the event is on disk.
        Ok(Unflushed {
            store: self,
            outcome: accepted,
        })
    }

    /// Stores a Salesforce push hint and returns its sequence once on disk.
    pub async fn accept_salesforce_hint(
        &self,
        ids: Vec<Id>,
        received_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.record_salesforce_hint(ids, received_at)?
            .durable()
            .await
    }

    /// Stores a Salesforce push hint; its sequence is on disk once
    /// [`Unflushed::durable`] returns it (see [`Store::record_webhook`]).
    pub fn record_salesforce_hint(
        &self,
        ids: Vec<Id>,
        received_at: DateTime<Utc>,
    ) -> Result<Unflushed<'_, u64>, StoreError> {
        let value = codec::encode_value(
            INBOX_TREE,
            &StoredItem {
                received_at,
                kind: InboxKind::SalesforceHint { ids },
                parked: None,
            },
        )?;
        let sequence = self.next_sequence()?;
        let replaced = self
            .inner
            .hints
            .insert(codec::sequence_key(sequence), value)
            .map_err(StoreError::database("store a salesforce hint"))?;
        self.inner
            .queues
            .apply(Changes::added_if(Queue::Hints, replaced.is_none()));
        Ok(Unflushed {
            store: self,
            outcome: sequence,
        })
    }

    /// Up to `limit` items not yet completed, oldest first, parked ones
    /// included, webhooks then hints.
    pub fn inbox_pending(&self, limit: usize) -> Result<Vec<InboxItem>, StoreError> {
        let all = |_: u64, _: &[u8]| true;
        let mut items = self.queue_items(InboxQueue::Webhooks, limit, all, |_| true)?;
        let left = limit.saturating_sub(items.len());
        items.extend(self.queue_items(InboxQueue::Hints, left, all, |_| true)?);
        Ok(items)
    }

    /// Up to `limit` items of one queue that are due at `now` (not parked,
    /// or parked until before `now`), oldest first.
    pub fn due_inbox_items(
        &self,
        queue: InboxQueue,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<InboxItem>, StoreError> {
        self.due_inbox_items_where(queue, now, limit, |_| true)
    }

    /// Like [`Store::due_inbox_items`], only the items whose sequence
    /// `wanted` keeps (a worker skips those it already works on, before
    /// they are decoded); `limit` counts the items kept.
    pub fn due_inbox_items_where(
        &self,
        queue: InboxQueue,
        now: DateTime<Utc>,
        limit: usize,
        wanted: impl Fn(u64) -> bool,
    ) -> Result<Vec<InboxItem>, StoreError> {
        self.queue_items(
            queue,
            limit,
            |sequence, _| wanted(sequence),
            |item| {
                item.parked
                    .as_ref()
                    .is_none_or(|parked| parked.retry_at <= now)
            },
        )
    }

    /// Up to `limit` parked items, webhooks then hints, oldest first
    /// ([`Store::parked_inbox_count`] has how many there are). Only parked
    /// items are decoded, and a queue is read no further than its last
    /// parked item the counters know of.
    pub fn parked_inbox_items(&self, limit: usize) -> Result<Vec<InboxItem>, StoreError> {
        let mut items = Vec::new();
        for queue in [InboxQueue::Webhooks, InboxQueue::Hints] {
            let wanted = limit
                .saturating_sub(items.len())
                .min(self.parked_inbox_count(queue));
            items.extend(self.queue_items(
                queue,
                wanted,
                |_, value| is_parked(value),
                |item| item.parked.is_some(),
            )?);
        }
        Ok(items)
    }

    fn queue_tree(&self, queue: InboxQueue) -> &sled::Tree {
        match queue {
            InboxQueue::Webhooks => &self.inner.inbox,
            InboxQueue::Hints => &self.inner.hints,
        }
    }

    /// Up to `limit` items of a queue, oldest first: those whose sequence
    /// and stored bytes `wanted` keeps (checked before decoding) and `keep`
    /// keeps.
    fn queue_items(
        &self,
        queue: InboxQueue,
        limit: usize,
        wanted: impl Fn(u64, &[u8]) -> bool,
        keep: impl Fn(&InboxItem) -> bool,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let keyspace = match queue {
            InboxQueue::Webhooks => INBOX_TREE,
            InboxQueue::Hints => HINTS_TREE,
        };
        let mut items = Vec::new();
        for entry in self.queue_tree(queue).iter() {
            if items.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(StoreError::database("read the inbox"))?;
            let sequence = codec::decode_sequence_key(keyspace, &key)?;
            if !wanted(sequence, &value) {
                continue;
            }
            let stored: StoredItem = codec::decode_value(keyspace, &key, &value)?;
            let item = InboxItem {
                sequence,
                received_at: stored.received_at,
                kind: stored.kind,
                parked: stored.parked,
            };
            if keep(&item) {
                items.push(item);
            }
        }
        Ok(items)
    }

    /// Marks items done (they leave the inbox), once everything written
    /// before the call (what working them off caused: a link, its queued
    /// fields, a journal entry) is on disk: the one way to complete an item,
    /// so a crash never loses what an item caused. Concurrent callers share
    /// one fsync. The removal itself is durable at the next
    /// [`Store::flush`]; until then a crash hands the items out again, which
    /// the engine tolerates because working off an item is idempotent.
    pub async fn complete_inbox_items(&self, sequences: &[u64]) -> Result<(), StoreError> {
        if sequences.is_empty() {
            return Ok(());
        }
        self.flush().await?;
        for sequence in sequences {
            for (tree, queue, parked) in [
                (&self.inner.inbox, Queue::Webhooks, Queue::ParkedWebhooks),
                (&self.inner.hints, Queue::Hints, Queue::ParkedHints),
            ] {
                let removed = tree
                    .remove(codec::sequence_key(*sequence))
                    .map_err(StoreError::database("complete an inbox item"))?;
                if let Some(value) = removed {
                    self.inner.queues.apply(
                        Changes::removed_if(queue, true)
                            .with(Changes::removed_if(parked, is_parked(&value))),
                    );
                }
            }
        }
        Ok(())
    }

    /// Parks an item after a failed attempt: it is skipped until
    /// `retry_at`, with `reason` for `status` and `explain`. Returns the
    /// attempts so far (0 when the item is gone). Durable at the next flush.
    pub fn park_inbox_item(
        &self,
        sequence: u64,
        reason: &str,
        account_id: Option<&str>,
        retry_at: impl FnOnce(u32) -> DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let key = codec::sequence_key(sequence);
        for (tree, keyspace, parked) in [
            (&self.inner.inbox, INBOX_TREE, Queue::ParkedWebhooks),
            (&self.inner.hints, HINTS_TREE, Queue::ParkedHints),
        ] {
            let Some(value) = tree
                .get(key)
                .map_err(StoreError::database("read an inbox item"))?
            else {
                continue;
            };
            let mut stored: StoredItem = codec::decode_value(keyspace, &key, &value)?;
            let newly_parked = stored.parked.is_none();
            let attempts = stored.parked.as_ref().map_or(0, |parked| parked.attempts) + 1;
            stored.parked = Some(ParkedItem {
                attempts,
                reason: reason.to_owned(),
                retry_at: retry_at(attempts),
                account_id: account_id.map(str::to_owned),
            });
            let updated = codec::encode_value(keyspace, &stored)?;
            // Only if unchanged: an item completed meanwhile stays completed.
            let swapped = tree
                .compare_and_swap(key, Some(value), Some(updated))
                .map_err(StoreError::database("park an inbox item"))?;
            if swapped.is_err() {
                return Ok(0);
            }
            self.inner
                .queues
                .apply(Changes::added_if(parked, newly_parked));
            return Ok(attempts);
        }
        Ok(0)
    }

    /// How many items are pending in both queues, parked ones included;
    /// read from counters, not by counting the entries.
    pub fn inbox_depth(&self) -> u64 {
        self.inner.queues.get(Queue::Webhooks) + self.inner.queues.get(Queue::Hints)
    }

    /// How many items of one queue are parked; read from a counter.
    pub fn parked_inbox_count(&self, queue: InboxQueue) -> usize {
        let count = self.inner.queues.get(match queue {
            InboxQueue::Webhooks => Queue::ParkedWebhooks,
            InboxQueue::Hints => Queue::ParkedHints,
        });
        usize::try_from(count).unwrap_or(usize::MAX)
    }
}
