//! Group commit: many writers, one fsync.
//!
//! A caller of [`GroupCommit::flush`] needs a flush that *started after* its
//! write. If none is running it starts one; if one is running (it may have
//! started before the write) it waits for that one to finish and then for
//! the next, which it or another waiter starts. Everyone who arrived during
//! a flush shares the following one, so throughput grows with concurrency
//! instead of queueing one fsync per write.
//!
//! The fsync runs on a blocking thread that owns the bookkeeping, so a
//! caller that is cancelled (a client hanging up) cannot leave the group
//! waiting on a flush that nobody finishes.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::StoreError;

#[derive(Debug)]
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    db: sled::Db,
    state: Mutex<State>,
    /// Carries the generation of the last finished flush, to wake waiters.
    finished: watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    /// Generations are numbered from 1; this is the last one started.
    started: u64,
    finished: u64,
    in_flight: bool,
    /// The outcome of generation `finished`.
    last_outcome: Result<(), sled::Error>,
}

impl GroupCommit {
    pub(crate) fn new(db: sled::Db) -> GroupCommit {
        GroupCommit {
            shared: Arc::new(Shared {
                db,
                state: Mutex::new(State {
                    started: 0,
                    finished: 0,
                    in_flight: false,
                    last_outcome: Ok(()),
                }),
                finished: watch::Sender::new(0),
            }),
        }
    }

    /// Returns once every write made before the call is on disk.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let mut target = None;
        loop {
            let (generation, mut finished) = {
                let mut state = self
                    .shared
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                // The first flush that starts after this point covers our writes.
                let target = *target.get_or_insert(state.started + 1);
                if state.finished >= target {
                    return state.last_outcome.clone().map_err(StoreError::Flush);
                }
                if state.in_flight {
                    // Subscribed under the lock, so the finishing flush,
                    // which takes the lock before it announces, cannot be missed.
                    (None, self.shared.finished.subscribe())
                } else {
                    state.in_flight = true;
                    state.started += 1;
                    (Some(state.started), self.shared.finished.subscribe())
                }
            };
            match generation {
                Some(generation) => {
                    let shared = Arc::clone(&self.shared);
                    let outcome =
                        tokio::task::spawn_blocking(move || shared.flush_generation(generation))
                            .await
                            .map_err(|error| StoreError::FlushTask(error.to_string()))?;
                    return outcome.map_err(StoreError::Flush);
                }
                None => {
                    // The sender lives as long as `self`, so this cannot fail.
                    let _ = finished.changed().await;
                }
            }
        }
    }
}

impl Shared {
    fn flush_generation(&self, generation: u64) -> Result<(), sled::Error> {
        let outcome = self.db.flush().map(drop);
        if let Err(error) = &outcome {
            tracing::error!(%error, generation, "the store could not flush to disk");
        }
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.in_flight = false;
            state.finished = generation;
            state.last_outcome = outcome.clone();
        }
        self.finished.send_replace(generation);
        outcome
    }
}
