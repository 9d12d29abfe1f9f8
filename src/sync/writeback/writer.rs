//! The running engine's writer: calls side by side, up to
//! `[salesforce] max_concurrent_requests`, never two for one Account, each
//! taking what the batcher says is due when it starts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{BATCH_SIZE, Batch, WriteReport};
use crate::shutdown::Shutdown;
use crate::sync::{Engine, SyncError, now};

/// The shortest sleep of the writer loop, so a clock that says "due now"
/// over and over never spins it.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// The calls in flight and the Accounts each one carries.
#[derive(Default)]
struct InFlight {
    calls: JoinSet<Result<bool, SyncError>>,
    accounts: HashMap<tokio::task::Id, Vec<String>>,
    busy: HashSet<String>,
}

impl InFlight {
    fn start(&mut self, engine: &Arc<Engine>, batch: Vec<crate::store::PendingWrite>) {
        let accounts: Vec<String> = batch
            .iter()
            .map(|pending| pending.account_id.clone())
            .collect();
        self.busy.extend(accounts.iter().cloned());
        let engine = engine.clone();
        let handle = self
            .calls
            .spawn(async move { engine.write_batch(batch, &mut WriteReport::default()).await });
        self.accounts.insert(handle.id(), accounts);
    }

    /// Frees the Accounts of a finished call; its outcome.
    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, Result<bool, SyncError>), tokio::task::JoinError>,
    ) -> Result<bool, String> {
        let (id, outcome) = match done {
            Ok((id, outcome)) => (id, outcome.map_err(|error| error.to_string())),
            Err(error) => (error.id(), Err(error.to_string())),
        };
        for account in self.accounts.remove(&id).unwrap_or_default() {
            self.busy.remove(&account);
        }
        outcome
    }
}

impl Engine {
    pub(in crate::sync) async fn writer_loop(self: Arc<Self>, shutdown: Shutdown) {
        let slots = self.settings.write_calls.max(1);
        let mut in_flight = InFlight::default();
        let mut paused_until: Option<Instant> = None;
        // While links alone linger: when they go (a new link only makes the
        // batcher look again once a call could be full).
        let mut linger_until: Option<Instant> = None;
        let mut look = true;
        // After an intake run: what lingers goes without waiting.
        let mut flush_links = false;
        loop {
            let mut wait = self.settings.inbox_interval;
            match (paused_until, linger_until) {
                (Some(until), _) if Instant::now() < until => wait = until - Instant::now(),
                (_, Some(until)) if !look && Instant::now() < until => {
                    wait = until - Instant::now();
                }
                _ => {
                    paused_until = None;
                    linger_until = None;
                    while in_flight.calls.len() < slots {
                        let free_calls = slots - in_flight.calls.len();
                        match self.next_batch(flush_links, &in_flight.busy, free_calls) {
                            Ok(Batch::Send(batch)) => in_flight.start(&self, batch),
                            Ok(Batch::Linger(left)) => {
                                wait = left;
                                linger_until = Some(Instant::now() + left);
                                break;
                            }
                            Ok(Batch::Idle) => {
                                flush_links = false;
                                // Calls in flight wake the loop when they end.
                                if in_flight.calls.is_empty() {
                                    wait = self.next_write_wait();
                                }
                                break;
                            }
                            Err(error) => {
                                tracing::error!(%error, "cannot read the pending write-backs");
                                wait = self.breakers.policy().settings().initial_delay;
                                break;
                            }
                        }
                    }
                }
            }
            look = true;
            tokio::select! {
                Some(done) = in_flight.calls.join_next_with_id(), if !in_flight.calls.is_empty() => {
                    match in_flight.finished(done) {
                        Ok(true) => {}
                        // The breaker opened or the governor holds writes:
                        // no new call until the pause ends.
                        Ok(false) => {
                            paused_until = Some(Instant::now() + self.writer_pause_left());
                        }
                        Err(error) => tracing::error!(%error, "write-back call failed"),
                    }
                }
                _ = tokio::time::sleep(wait.max(MIN_WAIT)) => {}
                // New writes do not end a pause.
                _ = self.writes_queued.notified(), if paused_until.is_none() => {}
                _ = self.intake_finished.notified(), if paused_until.is_none() => {
                    flush_links = true;
                }
                _ = self.links_queued.notified(), if paused_until.is_none() => {
                    look = self.store.pending_write_count() >= BATCH_SIZE + in_flight.busy.len();
                }
                () = shutdown.stopping() => {
                    while in_flight.calls.join_next().await.is_some() {}
                    // Last chance for what is already due.
                    if let Err(error) = self.flush_writes().await {
                        tracing::warn!(%error, "final write-back pass failed");
                    }
                    return;
                }
            }
        }
    }

    /// How long the writer's pause lasts: its breaker's wait, or the budget
    /// governor's next look at the org's usage.
    fn writer_pause_left(&self) -> Duration {
        let writer = self.writer_state();
        let until = writer
            .until
            .filter(|_| writer.open)
            .or(self.budget_state().until);
        until
            .and_then(|until| (until - now()).to_std().ok())
            .unwrap_or(self.breakers.policy().settings().initial_delay)
    }

    /// How long until the next pending write is due (a backoff).
    fn next_write_wait(&self) -> Duration {
        match self.store.next_write_due() {
            Some(due) => (due - now()).to_std().unwrap_or(MIN_WAIT),
            None => self.settings.inbox_interval,
        }
    }
}
