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
//! - [`limit_arenas`], before the runtime's threads exist: [`ARENAS`] arenas.
//! - [`release_freed`] after a burst: freed pages go back to the system.
//!
//! Elsewhere (another C library, another OS) both do nothing.

/// How many malloc arenas the daemon's threads share. Its work waits on the
/// network and the disk, so threads rarely meet on a locked arena; two keep
/// that rare and bound how much freed memory sits in arenas.
pub const ARENAS: i32 = 2;

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
