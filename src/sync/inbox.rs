//! The webhooks' streaming worker: each stored webhook is picked up as soon
//! as the listener rings, and its application is fetched as soon as one of
//! the `[ondorse] max_concurrent_reads` application reads is free, never
//! behind a pass's slowest fetch. It runs the step's own unit of work
//! ([`Engine::work_off`]), so what one fetch does is the same as in
//! [`Engine::process_inbox`].
//!
//! - Events about one application coalesce into one fetch only while that
//!   fetch has not begun: all of them were stored before it, so its answer
//!   is at least as new as each. An event stored while its application's
//!   fetch is in flight may be newer than that answer: it waits for the
//!   fetch to end, then gets a fetch of its own.
//! - An item is completed only once what its fetch caused is on disk
//!   ([`crate::store::Store::complete_inbox_items`]); the fetches in flight
//!   share those flushes.
//! - Parked items and items the budget governor or a breaker turned away
//!   stay in the queue, unclaimed: the worker looks over the whole queue
//!   again every `inbox_interval`, so each comes back when it is due.
//! - At most [`INBOX_BATCH`] items are claimed at once, so a deep inbox is
//!   read as room frees up, not all into memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::decisions::{INBOX_BATCH, InboxReport, Pending, Sorted};
use super::{Engine, SyncError, now};
use crate::shutdown::Shutdown;
use crate::store::InboxQueue;

/// What the worker has claimed from the queue, and where each claim is.
#[derive(Default)]
struct Claims {
    /// Every item read and not yet settled: never read twice.
    items: HashSet<u64>,
    /// Applications whose fetch is in flight.
    fetching: HashSet<String>,
    /// Applications waiting for a free fetch, oldest first, with their
    /// items: an event arriving meanwhile joins them.
    ready: VecDeque<String>,
    waiting: HashMap<String, Pending>,
    /// Items stored while their application's fetch was in flight: they
    /// get a fetch of their own once it ends.
    after: HashMap<String, Pending>,
    fetches: JoinSet<Result<InboxReport, SyncError>>,
    /// Each fetch's application and the items it covers.
    running: HashMap<tokio::task::Id, (String, Vec<u64>)>,
}

impl Claims {
    /// Files the items about `application_id` read now.
    fn claim(&mut self, application_id: String, pending: Pending) {
        self.items.extend(pending.sequences.iter().copied());
        if self.fetching.contains(&application_id) {
            self.after.entry(application_id).or_default().merge(pending);
        } else if let Some(waiting) = self.waiting.get_mut(&application_id) {
            waiting.merge(pending);
        } else {
            self.ready.push_back(application_id.clone());
            self.waiting.insert(application_id, pending);
        }
    }

    /// Starts fetches while fewer than `slots` are in flight.
    fn launch(&mut self, engine: &Arc<Engine>, slots: usize) {
        while self.fetches.len() < slots {
            let Some(application_id) = self.ready.pop_front() else {
                return;
            };
            let pending = self
                .waiting
                .remove(&application_id)
                .expect("every ready application has its items waiting");
            self.fetching.insert(application_id.clone());
            let engine = engine.clone();
            let id = application_id.clone();
            let sequences = pending.sequences.clone();
            let handle = self
                .fetches
                .spawn(async move { engine.work_off(&id, &pending).await });
            self.running
                .insert(handle.id(), (application_id, sequences));
        }
    }

    /// Releases what a finished fetch held (a failed or panicked one too:
    /// its items are unclaimed and come back at the next sweep); the items
    /// stored during it become ready, ahead of the rest (they have waited
    /// longest).
    fn settle(&mut self, task: tokio::task::Id) {
        let Some((application_id, sequences)) = self.running.remove(&task) else {
            return;
        };
        for sequence in &sequences {
            self.items.remove(sequence);
        }
        self.fetching.remove(&application_id);
        if let Some(pending) = self.after.remove(&application_id) {
            self.ready.push_front(application_id.clone());
            self.waiting.insert(application_id, pending);
        }
    }
}

impl Engine {
    /// The webhooks' streaming worker (see the module docs), until stopped;
    /// then it lets the fetches in flight finish and flushes.
    pub(super) async fn webhook_worker(self: Arc<Self>, wake: Arc<Notify>, shutdown: Shutdown) {
        // Twice the read slots: a fetch whose answer is back may still wait
        // for its flush, and the client's read slots bound the GETs anyway.
        let slots = 2 * self.settings.ondorse_reads.max(1);
        let mut claims = Claims::default();
        // The first look covers what a previous run left in the queue.
        let mut look = true;
        let mut next_sweep = Instant::now();
        loop {
            let sweep = Instant::now() >= next_sweep;
            if sweep {
                next_sweep = Instant::now() + self.settings.inbox_interval;
            }
            if look || sweep {
                look = match self.claim_due(&mut claims).await {
                    // No room for all: more may be due, looked for again
                    // after the next fetch ends.
                    Ok(cut_short) => cut_short,
                    Err(error) => {
                        tracing::error!(%error, "reading the webhook inbox failed");
                        false
                    }
                };
            }
            claims.launch(&self, slots);
            tokio::select! {
                Some(done) = claims.fetches.join_next_with_id(), if !claims.fetches.is_empty() => {
                    match done {
                        Ok((task, outcome)) => {
                            claims.settle(task);
                            if let Err(error) = outcome {
                                tracing::error!(%error, "working off a webhook failed");
                            }
                        }
                        Err(error) => {
                            claims.settle(error.id());
                            tracing::error!(%error, "a webhook fetch task failed");
                        }
                    }
                }
                _ = wake.notified() => look = true,
                () = tokio::time::sleep_until(next_sweep) => {}
                () = shutdown.stopping() => {
                    while claims.fetches.join_next().await.is_some() {}
                    if let Err(error) = self.store.flush().await {
                        tracing::error!(%error, "the webhook inbox could not be flushed");
                    }
                    return;
                }
            }
        }
    }

    /// Claims the due webhooks not yet claimed, up to the room left; true
    /// when the room was too small to see them all. Ignored events are
    /// completed here.
    async fn claim_due(&self, claims: &mut Claims) -> Result<bool, SyncError> {
        let room = INBOX_BATCH.saturating_sub(claims.items.len());
        if room == 0 {
            return Ok(true);
        }
        let items =
            self.store
                .due_inbox_items_where(InboxQueue::Webhooks, now(), room, |sequence| {
                    !claims.items.contains(&sequence)
                })?;
        let filled = items.len() == room;
        let sorted = Sorted::of(items);
        self.store.complete_inbox_items(&sorted.ignored).await?;
        // Only a store from before the queues were split holds hints here.
        self.work_off_hints(&sorted.hinted_ids, &sorted.hint_sequences)
            .await?;
        for (application_id, pending) in sorted.applications {
            claims.claim(application_id, pending);
        }
        Ok(filled)
    }
}
