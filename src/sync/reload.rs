//! Mapping reloads and schema drift: the two ways the mappings in force
//! change while the daemon runs.
//!
//! - **Reload** (SIGHUP, or a change in `mappings.dir`): the directory is
//!   loaded and, when Salesforce answers, checked online; a valid set
//!   replaces the old one between steps (work in flight keeps its
//!   `Arc<Mapping>`); an invalid one is refused, its diagnostics kept for
//!   `status`, and the last good set keeps running.
//! - **Drift** (Salesforce answers `INVALID_FIELD` to a mapping's query, or
//!   refuses a write because a field vanished or lost permission): only that
//!   mapping pauses, its cursor untouched; `poll_all` re-checks it against a
//!   fresh describe before each poll and resumes it once the field is back,
//!   and a valid reload resumes every mapping.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use super::{Engine, SyncError, now};
use crate::mapping::online::{self, OrgMetadata};
use crate::mapping::{self, Diagnostics, Mapping};
use crate::salesforce::{RecordError, SalesforceError};

/// Salesforce codes meaning "this field is gone or not ours to touch":
/// schema drift, which only a mapping or org change fixes.
pub const DRIFT_CODES: [&str; 3] = [
    "INVALID_FIELD",
    "INVALID_FIELD_FOR_INSERT_UPDATE",
    "INSUFFICIENT_ACCESS_OR_READONLY",
];

/// How often the mapping directory is looked at for changes. Editors save
/// in several steps (temp file, rename); one second of stillness between
/// two looks is the debounce.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What the last reload did, for `status` and the admin API.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReloadStatus {
    /// When the last reload was tried (none yet: the start-up set runs).
    pub at: Option<DateTime<Utc>>,
    /// The problems that made the last reload refused; empty when it was
    /// accepted (the set in force is then the directory's).
    pub problems: Vec<String>,
    /// Whether the last reload was checked against the org (false when
    /// Salesforce could not be reached, or the files were already invalid).
    pub checked_online: bool,
}

/// A paused mapping: why, and since when.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Pause {
    pub since: DateTime<Utc>,
    /// Names the field and the mapping, and what to do.
    pub reason: String,
}

/// Reload and drift state of an engine. Shared by the engine steps, the
/// reload trigger and `status`.
#[derive(Debug, Default)]
pub struct MappingHealth {
    reload: Mutex<ReloadStatus>,
    paused: Mutex<BTreeMap<String, Pause>>,
}

impl MappingHealth {
    pub fn reload_status(&self) -> ReloadStatus {
        self.reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Paused mappings by name.
    pub fn paused(&self) -> BTreeMap<String, Pause> {
        self.paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn pause(&self, mapping: &str, reason: String) {
        let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
        let since = paused.get(mapping).map_or_else(now, |pause| pause.since);
        paused.insert(mapping.to_owned(), Pause { since, reason });
    }

    fn resume(&self, mapping: &str) -> bool {
        self.paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(mapping)
            .is_some()
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    /// The new set is in force.
    Applied {
        mappings: usize,
        checked_online: bool,
    },
    /// The directory is invalid; the previous set keeps running.
    Refused(Diagnostics),
}

impl Engine {
    /// Reload and drift state, for `status`.
    pub fn mapping_health(&self) -> &MappingHealth {
        &self.health
    }

    /// Loads `dir` again; puts it in force only if every file is valid and,
    /// when Salesforce answers, passes the online checks.
    pub async fn reload_mappings(&self, dir: &Path) -> ReloadOutcome {
        let (outcome, checked_online) = match mapping::load_dir(dir) {
            Err(diagnostics) => (Err(diagnostics), false),
            Ok(set) => match online::check_online(&self.salesforce.checker(), &set).await {
                Ok(problems) if !problems.is_empty() => (Err(problems), true),
                Ok(_) => (Ok(set), true),
                Err(error) => {
                    tracing::warn!(%error, "salesforce unreachable: the reloaded mappings are checked offline only");
                    (Ok(set), false)
                }
            },
        };
        let mut status = ReloadStatus {
            at: Some(now()),
            problems: Vec::new(),
            checked_online,
        };
        let outcome = match outcome {
            Ok(set) => {
                let mappings = set.len();
                set.log_warnings();
                self.replace_mappings(set);
                self.forget_describe().await;
                // The new set passed the checks (or nobody could check it):
                // give every paused mapping its chance again.
                self.health
                    .paused
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
                tracing::info!(mappings, checked_online, dir = %dir.display(), "mappings reloaded");
                ReloadOutcome::Applied {
                    mappings,
                    checked_online,
                }
            }
            Err(diagnostics) => {
                for diagnostic in diagnostics.iter() {
                    // One event per problem, the whole `file:line:column: message`
                    // in one field, as an editor or a terminal links it.
                    tracing::error!(problem = %diagnostic, "mapping reload refused; the previous mappings keep running");
                }
                status.problems = diagnostics.iter().map(ToString::to_string).collect();
                ReloadOutcome::Refused(diagnostics)
            }
        };
        *self
            .health
            .reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
        outcome
    }

    /// Why `mapping` must not poll now, if it is paused by drift. A paused
    /// mapping is first re-checked against a fresh describe and resumes
    /// when the org has its fields again.
    pub(super) async fn drift_pause(&self, mapping: &Mapping) -> Option<String> {
        let pause = self.health.paused().remove(&mapping.name)?;
        match self.drift_problems(mapping).await {
            Ok(problems) if problems.is_empty() => {
                // The engine's cached describe predates the fix.
                self.forget_describe().await;
                self.health.resume(&mapping.name);
                tracing::info!(mapping = %mapping.name, "the org has the mapping's fields again; mapping resumed");
                None
            }
            Ok(problems) => {
                let reason = pause_reason(mapping, &problems.to_string());
                self.health.pause(&mapping.name, reason.clone());
                Some(reason)
            }
            Err(error) => {
                tracing::warn!(mapping = %mapping.name, %error, "cannot re-check a paused mapping");
                Some(pause.reason)
            }
        }
    }

    /// Pauses `mapping` when a poll failed on schema drift; true if so.
    pub(super) async fn pause_on_query_drift(&self, mapping: &Mapping, error: &SyncError) -> bool {
        let SyncError::Salesforce(SalesforceError::Api { code, message, .. }) = error else {
            return false;
        };
        if !DRIFT_CODES.contains(&code.as_str()) {
            return false;
        }
        self.forget_describe().await;
        let detail = match self.drift_problems(mapping).await {
            Ok(problems) if !problems.is_empty() => problems.to_string(),
            _ => format!("Salesforce answered {code}: {message}"),
        };
        self.pause_with(mapping, detail);
        true
    }

    /// Pauses every mapping that writes a field Salesforce refused as gone or
    /// not writable.
    pub(super) async fn pause_on_write_drift(&self, mappings: &[String], errors: &[RecordError]) {
        let drifted: Vec<&RecordError> = errors
            .iter()
            .filter(|error| DRIFT_CODES.contains(&error.status_code.as_str()))
            .collect();
        if drifted.is_empty() {
            return;
        }
        self.forget_describe().await;
        let set = self.mappings();
        for name in mappings {
            let Some(mapping) = set.get(name) else {
                continue;
            };
            let written = mapping.written_fields();
            for error in &drifted {
                let Some(field) = error.fields.iter().find(|field| {
                    written
                        .iter()
                        .any(|written| written.field.eq_ignore_ascii_case(field))
                }) else {
                    continue;
                };
                self.pause_with(
                    mapping,
                    format!(
                        "Salesforce refused writing `{field}`: {}: {}",
                        error.status_code, error.message
                    ),
                );
            }
        }
    }

    fn pause_with(&self, mapping: &Mapping, detail: String) {
        let reason = pause_reason(mapping, &detail);
        tracing::error!(mapping = %mapping.name, reason = %reason, "mapping paused: the org no longer matches it");
        self.health.pause(&mapping.name, reason);
    }

    /// The online field checks of one mapping against a fresh describe.
    async fn drift_problems(&self, mapping: &Mapping) -> Result<Diagnostics, SyncError> {
        let mut metadata = OrgMetadata::default();
        metadata
            .fetch_for(&self.salesforce.checker(), mapping)
            .await?;
        Ok(online::check_fields(mapping, &metadata))
    }
}

fn pause_reason(mapping: &Mapping, detail: &str) -> String {
    format!(
        "mapping `{}` is paused, its cursor kept: {detail}; fix the mapping and reload (SIGHUP), or restore the field in Salesforce (the mapping resumes by itself once it is back)",
        mapping.name
    )
}

/// What identifies the state of a mapping directory: each file's name, size
/// and modification time. A change means an edit, a new or a removed file.
pub fn directory_fingerprint(dir: &Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut fingerprint: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let metadata = entry.metadata().ok()?;
            Some((
                entry.file_name().to_string_lossy().into_owned(),
                metadata.len(),
                metadata.modified().ok(),
            ))
        })
        .collect();
    fingerprint.sort();
    fingerprint
}
