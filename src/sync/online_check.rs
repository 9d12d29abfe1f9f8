//! `check --online`, wherever it runs: in the CLI when the daemon is
//! stopped, or in the daemon through `POST /admin/check-online` while it
//! runs, so the daemon's Salesforce session (and, with rotation, its refresh
//! token) is the one used and never revoked behind its back.

use std::future::Future;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::mapping::online::{self, OrgReader};
use crate::mapping::{self, Diagnostics};
use crate::salesforce::SalesforceError;

/// What the online checks found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnlineReport {
    /// Mapping files checked.
    pub mappings: usize,
    /// The API version the org was found to serve (the configured one).
    pub api_version: String,
    /// One line per problem, `file:line:column: ...`; empty when all is well.
    pub problems: Vec<String>,
    /// One line per warning: flows whose `select` both match records today.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Why the online checks could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum OnlineCheckError {
    /// A mapping file is invalid offline already.
    #[error("{0}")]
    Mappings(Diagnostics),
    /// The org does not serve the configured `api_version`.
    #[error("{0}")]
    ApiVersion(SalesforceError),
    #[error("cannot finish the online checks: {0}")]
    Salesforce(String),
}

impl OnlineCheckError {
    /// The operator must change a file (exit 2), not wait for the network.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            OnlineCheckError::Mappings(_) | OnlineCheckError::ApiVersion(_)
        )
    }
}

/// Checks that the org serves the configured version (`version_check`,
/// which logs in when there is no session yet), then every mapping file in
/// `mappings_dir` against the org's metadata, read through `org`, and
/// counts the records two flows' `select` both match.
pub async fn check_online<R: OrgReader>(
    org: &R,
    version_check: impl Future<Output = Result<(), SalesforceError>>,
    api_version: &str,
    mappings_dir: &Path,
) -> Result<OnlineReport, OnlineCheckError> {
    let mappings = mapping::load_dir(mappings_dir).map_err(OnlineCheckError::Mappings)?;
    version_check.await.map_err(|error| match error {
        SalesforceError::ApiVersionNotOffered { .. } => OnlineCheckError::ApiVersion(error),
        other => OnlineCheckError::Salesforce(other.to_string()),
    })?;
    let problems = online::check_online(org, &mappings)
        .await
        .map_err(|error| OnlineCheckError::Salesforce(error.to_string()))?;
    // Counting needs valid `select` conditions: only once nothing is wrong.
    let overlaps = if problems.is_empty() {
        online::overlaps(org, &mappings).await.map_err(|error| {
            OnlineCheckError::Salesforce(format!(
                "cannot count the Accounts the mappings share: {error}"
            ))
        })?
    } else {
        Vec::new()
    };
    Ok(OnlineReport {
        mappings: mappings.len(),
        api_version: api_version.to_owned(),
        problems: problems.0.iter().map(ToString::to_string).collect(),
        warnings: overlaps.iter().map(ToString::to_string).collect(),
    })
}
