//! What the journal keeps, and for how long.
//!
//! KYC records are evidence: anti-money-laundering rules commonly require
//! keeping them for five years. The journal entries that record what was
//! read, sent, decided and written are kept for `[store] retention_days`
//! (default [`DEFAULT_RETENTION_DAYS`]; `0` keeps them forever). Failures
//! and retries are noise once they stop: an entry of a [`NOISE_STEPS`] step
//! goes [`NOISE_RETENTION`] after it last happened. The Account fields an
//! intent was recorded with (personal data) go once the mapping's portal
//! exists: its `portal_created` entry holds the request that was sent.
//!
//! Pruning streams over the journal one Account at a time, and packs what
//! it keeps of an Account into as few chunks as fit (a store written before
//! chunks gets its Accounts packed by the first pass); reconcile runs it.

use chrono::{DateTime, Utc};

use super::codec;
use super::journal::{self, Chunk, JournalEntry};
use super::{Store, StoreError};

/// Five years, in days: what anti-money-laundering rules commonly require.
pub const DEFAULT_RETENTION_DAYS: u64 = 5 * 365;

/// How long a failure or a retry stays in the journal after it last
/// happened: long enough to read what went wrong last month, short enough
/// that an Account that failed for a week does not carry it for years.
pub const NOISE_RETENTION: chrono::Duration = chrono::Duration::days(30);

/// The journal steps that are noise: failed attempts and retries, whose
/// outcome (created, written, dead-lettered, decided) is recorded by its own
/// entry. Any other step is evidence (a portal Ondorse refused for good is:
/// it waits for a human).
pub const NOISE_STEPS: [&str; 9] = [
    "application_fetch_failed",
    "application_refresh_failed",
    "inbox_parked",
    "mapping_missing",
    "portal_failed",
    "render_failed",
    "write_call_failed",
    "write_retry",
    "write_unknown",
];

/// Whether entries of `step` are noise (see [`NOISE_STEPS`]).
pub(super) fn is_noise(step: &str) -> bool {
    NOISE_STEPS.contains(&step)
}

/// The step whose `fields` hold the Account as read when the intent was
/// recorded, and the step after which nothing needs them.
const SNAPSHOT_STEP: &str = "intent_recorded";
const SNAPSHOT_FIELD: &str = "fields";
const PORTAL_STEP: &str = "portal_created";

/// How long evidence is kept (`[store] retention_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// `retention_days = 0`: nothing that records what was sent, decided or
    /// written is ever dropped.
    Forever,
    Days(u64),
}

impl Retention {
    /// `0` is forever.
    pub fn from_days(days: u64) -> Retention {
        if days == 0 {
            Retention::Forever
        } else {
            Retention::Days(days)
        }
    }

    /// Evidence that last happened before this instant goes.
    fn cutoff(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Retention::Forever => None,
            Retention::Days(days) => {
                let days = i64::try_from(days).unwrap_or(i64::MAX);
                Some(
                    chrono::Duration::try_days(days)
                        .and_then(|age| now.checked_sub_signed(age))
                        .unwrap_or(DateTime::<Utc>::MIN_UTC),
                )
            }
        }
    }
}

impl Default for Retention {
    fn default() -> Retention {
        Retention::Days(DEFAULT_RETENTION_DAYS)
    }
}

/// What one pruning pass dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Evidence entries older than the retention.
    pub evidence: u64,
    /// Failures and retries older than [`NOISE_RETENTION`].
    pub noise: u64,
    /// Intent entries whose Account fields were dropped.
    pub snapshots: u64,
}

impl Store {
    /// Drops what the journal no longer needs as of `now` (see the module
    /// documentation). Durable at the next flush.
    pub fn prune_journal(
        &self,
        now: DateTime<Utc>,
        retention: Retention,
    ) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        let mut account: Vec<Chunk> = Vec::new();
        for item in self.inner.journal.iter() {
            let (key, value) = item.map_err(StoreError::database("read the journal"))?;
            if account
                .first()
                .is_some_and(|first| account_of(&first.key) != account_of(&key))
            {
                self.prune_account(std::mem::take(&mut account), now, retention, &mut report)?;
            }
            account.push(Chunk { key, value });
        }
        self.prune_account(account, now, retention, &mut report)?;
        if report != PruneReport::default() {
            tracing::info!(
                evidence = report.evidence,
                noise = report.noise,
                snapshots = report.snapshots,
                "pruned the journal"
            );
        }
        Ok(report)
    }

    /// Prunes one Account's chunks and packs what is left into as few
    /// chunks as fit, in one transaction that first checks no chunk changed
    /// meanwhile: a repeat counted or an entry appended meanwhile keeps the
    /// Account as it is until the next pass.
    fn prune_account(
        &self,
        chunks: Vec<Chunk>,
        now: DateTime<Utc>,
        retention: Retention,
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        let evidence_cutoff = retention.cutoff(now);
        let noise_cutoff = now - NOISE_RETENTION;
        let stored = chunks
            .iter()
            .map(Chunk::entries)
            .collect::<Result<Vec<_>, _>>()?;
        let portals: Vec<Option<String>> = stored
            .iter()
            .flatten()
            .filter(|entry| entry.step == PORTAL_STEP)
            .map(|entry| entry.mapping.clone())
            .collect();
        let mut pruned = PruneReport::default();
        let mut kept: Vec<Vec<JournalEntry>> = Vec::with_capacity(stored.len());
        for entries in stored {
            let mut chunk = Vec::with_capacity(entries.len());
            for mut entry in entries {
                let last = entry.last_at.unwrap_or(entry.at);
                let noise = is_noise(&entry.step);
                if noise && last < noise_cutoff {
                    pruned.noise += 1;
                    continue;
                }
                if !noise && evidence_cutoff.is_some_and(|cutoff| last < cutoff) {
                    pruned.evidence += 1;
                    continue;
                }
                if entry.step == SNAPSHOT_STEP
                    && portals.contains(&entry.mapping)
                    && let Some(detail) = entry.detail.as_object_mut()
                    && detail.remove(SNAPSHOT_FIELD).is_some()
                {
                    pruned.snapshots += 1;
                }
                chunk.push(entry);
            }
            kept.push(chunk);
        }
        let values = journal::repack(&kept)?;
        let unchanged = pruned == PruneReport::default() && values.iter().all(Option::is_some);
        if !unchanged && self.replace_chunks(&chunks, values)? {
            report.evidence += pruned.evidence;
            report.noise += pruned.noise;
            report.snapshots += pruned.snapshots;
        }
        Ok(())
    }
}

/// The Account part of a journal key (`account \0 sequence`).
fn account_of(key: &[u8]) -> &[u8] {
    let end = key
        .iter()
        .position(|byte| *byte == codec::KEY_SEPARATOR)
        .unwrap_or(key.len());
    &key[..end]
}
