//! Reopening a store this process has just closed.
//!
//! sled lets go of its directory lock from its own threads a moment after
//! the last handle is dropped (a log write or segment truncation still
//! holding the file finishes first). A store closed and reopened in one
//! process (a daemon stopped and started again, a command after a stop)
//! would otherwise be told the store is in use by itself. Dropping the last
//! handle records the directory here; opening it again waits, with a
//! deadline, for sled to let go. A store held by another process, or by a
//! live handle here, is still reported at once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Longest sled takes to let go of a dropped handle's files on a loaded
/// machine; past it the store is reported in use.
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);
/// Between two attempts to take the lock.
const RELEASE_POLL: Duration = Duration::from_millis(10);

/// Directories whose last handle in this process was dropped and not yet
/// reopened.
static RELEASED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// The identity of a store directory, however its path was spelled.
fn key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// Called when the last handle on the store in `path` is dropped.
pub(super) fn released(path: &Path) {
    RELEASED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key(path));
}

/// Runs `open` and, while it fails with `in_use` on a directory this
/// process released, tries again until [`RELEASE_DEADLINE`].
pub(super) fn open_after_release<T, E>(
    path: &Path,
    in_use: impl Fn(&E) -> bool,
    mut open: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let start = Instant::now();
    loop {
        let outcome = open();
        let waiting_for_ourselves = match &outcome {
            Ok(_) => {
                RELEASED
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key(path));
                false
            }
            Err(error) => {
                in_use(error)
                    && start.elapsed() < RELEASE_DEADLINE
                    && RELEASED
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .contains(&key(path))
            }
        };
        if !waiting_for_ourselves {
            return outcome;
        }
        std::thread::sleep(RELEASE_POLL);
    }
}
