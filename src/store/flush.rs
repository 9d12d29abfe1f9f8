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

pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
}

struct Shared {
    db: sled::Db,
    state: Mutex<State>,
    /// Carries the generation of the last finished flush, to wake waiters.
    finished: watch::Sender<u64>,
}

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    impl GroupCommit {
        fn started(&self) -> u64 {
            self.shared.state.lock().unwrap().started
        }

        fn in_flight(&self) -> bool {
            self.shared.state.lock().unwrap().in_flight
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_flushes() {
        const CALLERS: u64 = 200;
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let group_commit = Arc::new(GroupCommit::new(db.clone()));
        let callers: Vec<_> = (0..CALLERS)
            .map(|index| {
                let group_commit = Arc::clone(&group_commit);
                let db = db.clone();
                tokio::spawn(async move {
                    db.insert(index.to_be_bytes(), &b"value"[..]).unwrap();
                    group_commit.flush().await
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap().unwrap();
        }
        let started = group_commit.started();
        assert!(
            (1..CALLERS / 2).contains(&started),
            "{CALLERS} callers should share far fewer flushes, {started} were started"
        );
    }

    #[tokio::test]
    async fn a_caller_after_a_finished_flush_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let group_commit = GroupCommit::new(sled::open(dir.path()).unwrap());
        group_commit.flush().await.unwrap();
        group_commit.flush().await.unwrap();
        assert_eq!(group_commit.started(), 2);
    }

    #[test]
    fn a_cancelled_leader_does_not_stall_the_group() {
        // One blocking thread, kept busy until released: the leader's flush
        // waits in the queue behind it, so the leader is certainly dropped
        // while its flush is still to run, whatever the machine's load.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let db = sled::open(dir.path()).unwrap();
            let group_commit = GroupCommit::new(db.clone());
            let (release, released) = std::sync::mpsc::channel::<()>();
            let blocker = tokio::task::spawn_blocking(move || released.recv());
            db.insert(b"key", &b"value"[..]).unwrap();

            let mut leader = Box::pin(group_commit.flush());
            assert!(
                futures::poll!(leader.as_mut()).is_pending(),
                "the leader's flush cannot run while the blocking thread is busy"
            );
            assert!(group_commit.in_flight(), "the leader started a flush");
            drop(leader);

            release.send(()).unwrap();
            blocker.await.unwrap().unwrap();
            tokio::time::timeout(Duration::from_secs(10), group_commit.flush())
                .await
                .expect("the next caller is released")
                .unwrap();
            assert_eq!(
                group_commit.started(),
                2,
                "the cancelled leader's flush ran, then the caller's own"
            );
        });
    }
}
