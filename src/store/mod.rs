//! The sled ledger: the only module that names sled.
//!
//! Everything the daemon must not forget across a crash lives here: the
//! webhook inbox and the event ids already seen (this module), and, as
//! sibling modules, the sync engine's cursors, links, intents, write-backs,
//! dead letters and journal.
//!
//! # Conventions for a keyspace
//!
//! - One sled [`sled::Tree`] per keyspace, named by a `*_TREE` constant and
//!   opened in [`Store::open`]; its operations are an `impl Store` block in
//!   its own file (see `inbox.rs`).
//! - Keys and values go through the private `codec`: JSON values, big-endian
//!   `u64` keys for ordered sequences (numbered by [`sled::Db::generate_id`],
//!   monotonic across restarts), `\0`-joined composite keys, instants as
//!   big-endian milliseconds.
//! - Writes that must be atomic together use one sled transaction over the
//!   trees involved.
//! - **Durability is explicit.** A write is on disk only after
//!   [`Store::flush`] returns. Anything acknowledged to the outside world
//!   (a webhook 200, a moved cursor, a portal intent before its POST) awaits
//!   `flush` first. Concurrent callers share one fsync (group commit), so
//!   awaiting it per write is cheap under load.
//! - Operations are synchronous except those that flush: sled reads and
//!   unflushed writes are memory-speed.

use std::path::{Path, PathBuf};

mod buckets;
mod codec;
mod credentials;
mod cursors;
mod dead_letters;
mod flush;
mod inbox;
mod journal;
mod link_index;
mod links;
mod queue_counts;
mod release;
mod retention;
mod seen_events;
mod writebacks;

pub use cursors::Cursor;
pub use dead_letters::DeadLetter;
pub use inbox::{
    Accepted, InboxItem, InboxKind, InboxQueue, ParkedItem, SEEN_EVENT_RETENTION, Unflushed,
};
pub use journal::{JOURNAL_CHUNK_BYTES, JournalEntry};
pub use link_index::{LinkCounts, LinkState};
pub use links::{CollectChange, GoneLink, Link, LinkClosure, PortalRecord, PortalRequest};
pub use retention::{DEFAULT_RETENTION_DAYS, NOISE_RETENTION, NOISE_STEPS, PruneReport, Retention};
pub use writebacks::{DueWrite, Fields, PendingWrite, Urgency, WriteSettlement};

/// sled's page cache, in MiB, unless `[store] page_cache_mib` says
/// otherwise. Its own default (1 GiB) lets a long-running daemon grow far
/// past what its working set needs: cursors, pending work and the links
/// being touched. Cold reads (an old journal) go to the disk, mostly to the
/// system's file cache. sled counts a page by its size on disk; decoded in
/// memory it takes about half as much again, so each MiB here costs about
/// 1.5 MiB of resident memory (the daemon at idle under `valgrind
/// --tool=massif`: 12 MB of decoded nodes with 8 MiB). It is the largest
/// part of an idle daemon's heap; 32, 8 and 4 MiB showed no consistent
/// difference in the benchmark's throughput at 20,000 Accounts (single runs
/// on a loaded machine).
pub const DEFAULT_PAGE_CACHE_MIB: u64 = 4;

/// Keyspace: pending inbox items (webhooks), by sequence.
const INBOX_TREE: &str = "inbox";
/// Keyspace: pending Salesforce push hints, by sequence (their own queue).
const HINTS_TREE: &str = "hints";
/// Keyspace: Ondorse event ids already accepted, with when they arrived,
/// in a bounded number of buckets.
const SEEN_EVENTS_TREE: &str = "seen_event_buckets";
/// Keyspace: intake cursor per mapping.
const CURSORS_TREE: &str = "cursors";
/// Keyspace: link per (Account, mapping): intent, portal, application.
const LINKS_TREE: &str = "links";
/// Keyspace: per-mapping link counts, kept with every link write.
const LINK_COUNTS_TREE: &str = "link_counts";
/// Keyspace: the links in each state some pass works off, `state \0 link key`.
const LINK_STATES_TREE: &str = "link_states";
/// Keyspace: application id → link key, in a bounded number of buckets.
const APPLICATIONS_TREE: &str = "application_buckets";
/// Keyspace: pending write-back per Account.
const WRITES_TREE: &str = "writes";
/// Keyspace: field values we believe Salesforce holds, per Account.
const KNOWN_FIELDS_TREE: &str = "known_fields";
/// Keyspace: refused write-backs, by sequence.
const DEAD_LETTERS_TREE: &str = "dead_letters";
/// Keyspace: field values Salesforce refused for good, per Account; planning
/// treats them as sent, so a refusal is not planned again until the inputs
/// change.
const REFUSED_FIELDS_TREE: &str = "refused_fields";
/// Keyspace: Accounts whose retried dead letters wait to be planned again
/// from their current state, with the mappings concerned.
const REPLANS_TREE: &str = "replans";
/// Keyspace: per-Account journal in chunks of entries, `account \0 sequence`.
const JOURNAL_TREE: &str = "journal";

/// A handle on the ledger; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    inner: std::sync::Arc<Inner>,
}

/// Only the path: sled's own `Debug` would dump every record into a log.
impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    inbox: sled::Tree,
    hints: sled::Tree,
    seen_events: sled::Tree,
    cursors: sled::Tree,
    links: sled::Tree,
    link_counts: sled::Tree,
    link_states: sled::Tree,
    applications: sled::Tree,
    writes: sled::Tree,
    known_fields: sled::Tree,
    dead_letters: sled::Tree,
    refused_fields: sled::Tree,
    replans: sled::Tree,
    journal: sled::Tree,
    group_commit: flush::GroupCommit,
    /// Links decoded since the store opened ([`Store::links_read`]).
    links_read: std::sync::atomic::AtomicU64,
    /// How deep each queue is, so nobody counts entries to know.
    queues: queue_counts::QueueCounts,
    /// When each pending write is due, so the writer never scans `writes`.
    pending: writebacks::PendingView,
}

impl Drop for Inner {
    fn drop(&mut self) {
        release::released(&self.path);
    }
}

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store at {path} is in use by another process (is the daemon running? use its admin API)"
    )]
    InUse { path: PathBuf },
    #[error(
        "there is no store at {path} (a store holds sled's files `conf` and `db`); nothing was created"
    )]
    Missing { path: PathBuf },
    #[error(
        "cannot look into the store at {path}: {source}; it belongs to the daemon's user (under systemd, run this as root)"
    )]
    Inaccessible {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("the store failed to {operation}: {source}")]
    Database {
        operation: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("the store could not flush to disk: {0}")]
    Flush(#[source] sled::Error),
    #[error("the store's flush task stopped: {0}")]
    FlushTask(String),
    #[error("the task opening the store stopped: {0}")]
    OpenTask(String),
    #[error("cannot encode a value for the store keyspace {keyspace}: {source}")]
    Encode {
        keyspace: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the store keyspace {keyspace} holds an unreadable entry at key {key}: {reason}")]
    Corrupt {
        keyspace: &'static str,
        key: String,
        reason: String,
    },
}

impl StoreError {
    /// True when trying again later may succeed (an I/O hiccup), false when
    /// the data or the setup is wrong.
    pub fn is_retriable(&self) -> bool {
        match self {
            StoreError::Database { source, .. } | StoreError::Flush(source) => {
                matches!(source, sled::Error::Io(_))
            }
            StoreError::FlushTask(_) | StoreError::OpenTask(_) => true,
            StoreError::InUse { .. }
            | StoreError::Missing { .. }
            | StoreError::Inaccessible { .. }
            | StoreError::Open { .. }
            | StoreError::Encode { .. }
            | StoreError::Corrupt { .. } => false,
        }
    }

    fn database(operation: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
        move |source| StoreError::Database { operation, source }
    }
}

/// Files sled writes in every store directory: how an existing store is
/// recognised (under systemd the empty state directory always exists).
const STORE_FILES: [&str; 2] = ["conf", "db"];

impl Store {
    /// Opens the store in `path` only if one is there: the state commands
    /// read a store, they never create an empty one to read from.
    pub async fn open_existing(path: &Path) -> Result<Store, StoreError> {
        for name in STORE_FILES {
            match std::fs::metadata(path.join(name)) {
                Ok(metadata) if metadata.is_file() => {}
                Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(StoreError::Inaccessible {
                        path: path.to_owned(),
                        source,
                    });
                }
                Ok(_) | Err(_) => {
                    return Err(StoreError::Missing {
                        path: path.to_owned(),
                    });
                }
            }
        }
        Store::open(path).await
    }

    /// Opens (creating if needed) the store in the directory `path`, with
    /// the default page cache.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_page_cache(path, DEFAULT_PAGE_CACHE_MIB).await
    }

    /// [`Store::open`] with a page cache of `page_cache_mib` MiB (what the
    /// daemon opens with `[store] page_cache_mib`), on the runtime's
    /// blocking threads: sled's open reads files, and a store this process
    /// just closed is waited for until sled lets go of it (`release`),
    /// neither of which may hold up a runtime thread.
    pub async fn open_with_page_cache(
        path: &Path,
        page_cache_mib: u64,
    ) -> Result<Store, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Store::open_blocking_with(&path, page_cache_mib))
            .await
            .map_err(|error| StoreError::OpenTask(error.to_string()))?
    }

    /// [`Store::open`] for code that runs outside an async runtime: it
    /// blocks the calling thread while it waits.
    pub fn open_blocking(path: &Path) -> Result<Store, StoreError> {
        Store::open_blocking_with(path, DEFAULT_PAGE_CACHE_MIB)
    }

    fn open_blocking_with(path: &Path, page_cache_mib: u64) -> Result<Store, StoreError> {
        let db = release::open_after_release(
            path,
            |error| matches!(error, StoreError::InUse { .. }),
            || {
                sled::Config::new()
                    .path(path)
                    .cache_capacity(page_cache_mib.saturating_mul(1024 * 1024))
                    .open()
                    .map_err(|source| {
                        // sled reports a held lock as a bare I/O error; recognise it so
                        // the operator learns what to do.
                        let message = source.to_string();
                        if message.contains("could not acquire lock") {
                            StoreError::InUse {
                                path: path.to_owned(),
                            }
                        } else {
                            StoreError::Open {
                                path: path.to_owned(),
                                source,
                            }
                        }
                    })
            },
        )?;
        let open_tree = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })
        };
        let inbox = open_tree(INBOX_TREE)?;
        let hints = open_tree(HINTS_TREE)?;
        let seen_events = open_tree(SEEN_EVENTS_TREE)?;
        let cursors = open_tree(CURSORS_TREE)?;
        let links = open_tree(LINKS_TREE)?;
        let link_counts = open_tree(LINK_COUNTS_TREE)?;
        let link_states = open_tree(LINK_STATES_TREE)?;
        let applications = open_tree(APPLICATIONS_TREE)?;
        let writes = open_tree(WRITES_TREE)?;
        let known_fields = open_tree(KNOWN_FIELDS_TREE)?;
        let dead_letters = open_tree(DEAD_LETTERS_TREE)?;
        let refused_fields = open_tree(REFUSED_FIELDS_TREE)?;
        let replans = open_tree(REPLANS_TREE)?;
        let journal = open_tree(JOURNAL_TREE)?;
        seen_events::SEEN_EVENTS.adopt(&db, seen_events::LEGACY_SEEN_EVENTS_TREE, &seen_events)?;
        links::APPLICATION_INDEX.adopt(&db, links::LEGACY_APPLICATIONS_TREE, &applications)?;
        let pending = writebacks::PendingView::build(&writes)?;
        tracing::debug!(path = %path.display(), "store opened");
        let store = Store {
            inner: std::sync::Arc::new(Inner {
                path: path.to_owned(),
                group_commit: flush::GroupCommit::new(db.clone()),
                db,
                inbox,
                hints,
                seen_events,
                cursors,
                links,
                link_counts,
                link_states,
                applications,
                writes,
                known_fields,
                dead_letters,
                refused_fields,
                replans,
                journal,
                links_read: std::sync::atomic::AtomicU64::new(0),
                queues: queue_counts::QueueCounts::default(),
                pending,
            }),
        };
        store.build_link_index()?;
        store
            .inner
            .queues
            .apply(queue_counts::QueueCounts::count(&store.inner)?);
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Returns once every write made before this call is on disk.
    ///
    /// Concurrent callers share one fsync (group commit): a caller is
    /// released by the first flush that started after it called.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.group_commit.flush().await
    }

    /// A fresh number from sled's monotonic generator: unique and increasing
    /// across restarts, not contiguous.
    fn next_sequence(&self) -> Result<u64, StoreError> {
        self.inner
            .db
            .generate_id()
            .map_err(StoreError::database("generate a sequence number"))
    }
}
