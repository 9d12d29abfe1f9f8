//! What operators and compliance staff ask of the bridge: a status
//! snapshot, the story of one Account, dead-letter retries and manual
//! resyncs. The admin API (daemon running) and the CLI (daemon stopped, the
//! store opened directly) both call these functions, so the logic exists once.
//!
//! Snapshots, explanations and dead-letter retries need only the
//! [`Store`](crate::store::Store); a resync needs the
//! [`Engine`](crate::sync::Engine) (it reads Salesforce and Ondorse) and a
//! [`ResyncGate`], which lets one resync run at a time.

mod dead_letters;
mod explain;
mod requests;
mod resync;
mod status;

pub use dead_letters::{RetryReport, retry_dead_letters};
pub use explain::{Explanation, LinkSummary, explain};
pub use requests::{ResyncRequest, ResyncScope, RetrySelection, SINCE_FORMS, parse_since};
pub use resync::{FieldChange, NewPortal, ResyncGate, ResyncProgress, ResyncReport, ResyncTicket};
pub use status::{
    ClosedStatus, CursorStatus, DaemonStatus, MappingStatus, PARKED_LISTED, ParkedStatus, Queues,
    RunningDaemon, SalesforceStatus, ScheduleStatus, Status, status,
};

use chrono::{DateTime, Utc};

use super::SyncError;
use crate::salesforce::IdError;
use crate::store::StoreError;

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// A malformed Id, or one that is not an Account's.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error(
        "no Account with Id {} exists in Salesforce (or the integration user cannot see it); nothing was changed",
        .ids.join(", ")
    )]
    UnknownAccounts { ids: Vec<String> },
    #[error(
        "nothing is recorded about Account {id}: it never matched a mapping's select (check its fields, or run `resync --account {id}`)"
    )]
    NothingRecorded { id: String },
    #[error(
        "no dead letter with id {}; `dead-letters list` shows the ids; nothing was retried",
        .ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    )]
    UnknownDeadLetters { ids: Vec<u64> },
    #[error("no mapping named `{name}` is loaded (loaded: {})", .loaded.join(", "))]
    UnknownMapping { name: String, loaded: Vec<String> },
    #[error("a resync is already running since {}; wait for it to finish and try again", .since.to_rfc3339())]
    ResyncRunning { since: DateTime<Utc> },
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl OperationError {
    /// True when the request itself is wrong (bad usage: exit 2, HTTP 4xx).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            OperationError::InvalidId(_)
                | OperationError::UnknownAccounts { .. }
                | OperationError::NothingRecorded { .. }
                | OperationError::UnknownDeadLetters { .. }
                | OperationError::UnknownMapping { .. }
                | OperationError::InvalidRequest(_)
        )
    }

    /// True when the same request may succeed later without anyone acting.
    pub fn is_retriable(&self) -> bool {
        match self {
            OperationError::ResyncRunning { .. } => true,
            OperationError::Store(error) => error.is_retriable(),
            OperationError::Sync(error) => error.is_retriable(),
            _ => false,
        }
    }
}
