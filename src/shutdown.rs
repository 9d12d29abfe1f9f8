//! The one way the daemon stops: a [`Shutdown`] handed to every long-lived
//! task (the engine's loops, both listeners and their connections, the
//! mapping watch, the systemd watchdog), and a `TaskTracker` per owner to
//! wait for them.
//!
//! A stop has two moments, both [`CancellationToken`]s: *stopping* (take no
//! new work, finish what is in flight) and the *cut-off* (the grace period
//! is over: whatever still runs is dropped at its next await). Tasks spawned
//! with [`Shutdown::spawn`] end at the cut-off on their own, so nothing is
//! aborted from outside.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// When to stop. Cheap to clone: clones share both moments.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the stop begins.
    stopping: CancellationToken,
    /// Cancelled when the grace period is over.
    cut_off: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A part that stops on its own signal but shares the cut-off: the
    /// admin listener answers (`/readyz` 503) until the rest has stopped.
    pub fn with_own_stop(&self) -> Shutdown {
        Shutdown {
            stopping: CancellationToken::new(),
            cut_off: self.cut_off.clone(),
        }
    }

    /// Begins the stop: take no new work.
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Resolves once the stop began (at once if it already did).
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.stopping.cancelled()
    }

    /// Ends the grace period: every task spawned with [`Shutdown::spawn`]
    /// is dropped at its next await.
    pub fn cut_off(&self) {
        self.cut_off.cancel();
    }

    /// Runs `task` on `tracker` until it ends or the cut-off comes
    /// (`None` then).
    pub fn spawn<F>(&self, tracker: &TaskTracker, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tracker.spawn(self.cut_off.clone().run_until_cancelled_owned(task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cut_off_drops_what_still_runs_and_a_later_part_stops_on_its_own() {
        let shutdown = Shutdown::new();
        let admin = shutdown.with_own_stop();
        let tracker = TaskTracker::new();
        let finishing = {
            let shutdown = shutdown.clone();
            shutdown.clone().spawn(&tracker, async move {
                shutdown.stopping().await;
                "finished its step"
            })
        };
        let stuck = shutdown.spawn(&tracker, std::future::pending::<()>());
        shutdown.stop();
        assert!(
            !admin.is_stopping(),
            "the admin part waits for its own stop"
        );
        assert_eq!(finishing.await.unwrap(), Some("finished its step"));
        shutdown.cut_off();
        assert_eq!(stuck.await.unwrap(), None);
        tracker.close();
        tracker.wait().await;
        admin.stop();
        assert!(admin.is_stopping());
    }
}
