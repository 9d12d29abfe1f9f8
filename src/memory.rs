//! What the daemon does about its own memory beyond bounding its data (the
//! store's page cache, the queues' batches): how the C allocator keeps the
//! memory the daemon freed.
//!
//! glibc's `malloc` gives a thread that finds its arena locked an arena of
//! its own (up to eight per core), and memory freed in one arena serves only
//! that arena; freed memory inside an arena stays resident until it is
//! trimmed. After a backfill or a burst of decisions, that is what a
//! long-running daemon would keep: tens of MiB it no longer uses.
//!
//! - [`limit_arenas`], before the runtime's threads exist: one arena ([`ARENAS`]).
//! - [`release_freed`] after a burst: freed pages go back to the system.
//!   Elsewhere (another C library, another OS) both do nothing.
//! - [`IDLE_CONNECTION_TIMEOUT`]: the HTTP clients close a connection left
//!   unused that long, and with it its buffers; [`SETTLED_AFTER`] a burst,
//!   what they held is released too.

use std::time::Duration;

/// How long a connection to Salesforce or Ondorse stays open unused before
/// the client closes it (reqwest's default is 90 s). Under load a connection
/// is reused within milliseconds, so this only ends the connections a burst
/// left behind, each holding its read and write buffers; the next poll or
/// webhook opens one again (a TLS handshake). The pool looks for expired
/// connections every timeout, so one goes within twice this.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// When, after a burst of work, the connections it used are closed
/// ([`IDLE_CONNECTION_TIMEOUT`] twice, and a second) and freed memory is
/// released once more.
pub const SETTLED_AFTER: Duration = Duration::from_secs(IDLE_CONNECTION_TIMEOUT.as_secs() * 2 + 1);

/// How many malloc arenas the daemon's threads share: one. Its work waits
/// on the network and the disk, and glibc's per-thread cache (tcache) serves
/// most small allocations without taking the arena's lock, so threads rarely
/// wait on it; freed memory in one arena serves every thread, where a second
/// arena kept its own. Measured at 20,000 Accounts on loopback (one run
/// each, loaded machine): one arena against two, 64.0 against 75.9 MiB at
/// the peak and 49.2 against 56.0 MiB idle, the same decisions per second.
pub const ARENAS: i32 = 1;

/// Caps the malloc arenas at [`ARENAS`]. Called first thing in `main`,
/// before any thread exists, as glibc asks of `mallopt`.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets an allocator parameter; it is called
        // before any other thread exists.
        let accepted = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
        if accepted != 1 {
            tracing::debug!("the C allocator refused the arena limit");
        }
    }
}

/// Returns the memory the allocator holds freed to the system (its free
/// pages, in every arena). Costs a walk over the free lists, so it runs
/// after a burst of work, not per request.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` only releases free pages; it takes each
        // arena's lock like any `malloc` does.
        unsafe { libc::malloc_trim(0) };
    }
}
