//! Work on one key at a time: a (mapping, Account) link, a mapping's cursor.
//!
//! Every path that reads a link, calls out and writes the link back (intake,
//! portal creation, decisions, reconcile, resync) takes the link's lock
//! here, and re-reads the link once it holds it, so two paths never race on
//! one link (a portal POSTed twice at once, a last-writer-wins rewrite).
//! Locks on other keys are independent: no path waits for another
//! Account's network call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::OwnedMutexGuard;

/// Entries kept before forgotten keys are swept out of the map.
const SWEEP_AT: usize = 1024;

/// One async mutex per key, created on first use, forgotten when unused.
#[derive(Debug, Default)]
pub(super) struct KeyedLocks {
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    by_key: HashMap<String, Weak<tokio::sync::Mutex<()>>>,
    sweep_at: usize,
}

/// Held while the key's work runs; the next waiter goes on when dropped.
#[derive(Debug)]
pub(super) struct KeyGuard {
    _guard: OwnedMutexGuard<()>,
}

impl KeyedLocks {
    /// Waits for the key's lock.
    pub(super) async fn lock(&self, key: &str) -> KeyGuard {
        KeyGuard {
            _guard: self.slot(key).lock_owned().await,
        }
    }

    /// The key's lock if nobody holds it: `None` means its work is in
    /// flight elsewhere.
    pub(super) fn try_lock(&self, key: &str) -> Option<KeyGuard> {
        let guard = self.slot(key).try_lock_owned().ok()?;
        Some(KeyGuard { _guard: guard })
    }

    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.by_key.get(key).and_then(Weak::upgrade) {
            return slot;
        }
        if slots.by_key.len() >= slots.sweep_at.max(SWEEP_AT) {
            slots.by_key.retain(|_, slot| slot.strong_count() > 0);
            slots.sweep_at = slots.by_key.len() * 2;
        }
        let slot = Arc::new(tokio::sync::Mutex::new(()));
        slots.by_key.insert(key.to_owned(), Arc::downgrade(&slot));
        slot
    }
}

/// The lock key of one (mapping, Account) link.
pub(super) fn link_key(mapping: &str, account_id: &str) -> String {
    format!("{mapping}\0{account_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_keys_are_independent() {
        let locks = KeyedLocks::default();
        let held = locks.lock("a").await;
        assert!(locks.try_lock("a").is_none(), "a is held");
        let other = locks.try_lock("b").expect("b is free while a is held");
        drop(held);
        assert!(locks.try_lock("a").is_some(), "a is free once dropped");
        drop(other);
    }

    #[tokio::test]
    async fn forgotten_keys_are_swept() {
        let locks = KeyedLocks::default();
        for index in 0..3 * SWEEP_AT {
            drop(locks.lock(&index.to_string()).await);
        }
        let kept = locks.slots.lock().unwrap().by_key.len();
        assert!(kept <= SWEEP_AT, "{kept} entries kept");
    }
}
