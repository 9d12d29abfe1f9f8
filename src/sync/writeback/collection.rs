//! Whether sObject Collections answers can be read, or the writer falls
//! back to one update per record until a probe batch is answered properly.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::salesforce::SalesforceError;

/// Unreadable collection answers in a row before the writer sends one
/// update per record: one can be a proxy's hiccup, two in a row is a habit.
const UNREADABLE_BEFORE_FALLBACK: u32 = 2;

/// Whether sObject Collections answers can be read, or the writer sends
/// one update per record until a probe batch is answered properly.
#[derive(Debug, Default)]
pub(in crate::sync) struct CollectionHealth {
    state: Mutex<CollectionState>,
}

#[derive(Debug, Default)]
struct CollectionState {
    /// Unreadable answers in a row.
    unreadable: u32,
    /// Set while falling back: when to try a batch again.
    probe_at: Option<Instant>,
}

impl CollectionHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, CollectionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the next batch goes as one collection update.
    pub(super) fn use_collection(&self) -> bool {
        self.state()
            .probe_at
            .is_none_or(|probe_at| Instant::now() >= probe_at)
    }

    /// Whether the writer sends one update per record now.
    pub(super) fn falling_back(&self) -> bool {
        self.state().probe_at.is_some()
    }

    /// A collection answer broke the contract.
    pub(super) fn unreadable(&self, probe: Duration, error: &SalesforceError) {
        let mut state = self.state();
        state.unreadable += 1;
        if state.unreadable < UNREADABLE_BEFORE_FALLBACK {
            return;
        }
        if state.probe_at.is_none() {
            tracing::warn!(
                %error,
                unreadable = state.unreadable,
                probe_seconds = probe.as_secs(),
                "salesforce keeps answering sObject Collections updates in a way the contract does not allow; writing one record per call (PATCH /sobjects/Account/{{id}}) and trying a batch again later"
            );
        }
        state.probe_at = Some(Instant::now() + probe);
    }

    /// A collection answer was read as the contract says.
    pub(super) fn readable(&self) {
        let mut state = self.state();
        state.unreadable = 0;
        if state.probe_at.take().is_some() {
            tracing::info!(
                "sObject Collections answers are readable again; the writer is back to batches"
            );
        }
    }
}
