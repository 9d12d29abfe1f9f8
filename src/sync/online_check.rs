//! `check --online`, wherever it runs: in the CLI when the daemon is
//! stopped, or in the daemon through `POST /admin/check-online` while it
//! runs, so the daemon's Salesforce session (and, with rotation, its refresh
//! token) is the one used and never revoked behind its back.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::mapping::{self, Diagnostics, online};
use crate::salesforce::{SalesforceClient, SalesforceError};

/// What the online checks found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnlineReport {
    /// Mapping files checked.
    pub mappings: usize,
    /// The API version the org was found to serve (the configured one).
    pub api_version: String,
    /// One line per problem, `file:line:column: ...`; empty when all is well.
    pub problems: Vec<String>,
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
    Salesforce(SalesforceError),
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

/// Logs in if needed, checks the org serves the configured version, and checks
/// every mapping file in `mappings_dir` against the org's metadata.
pub async fn check_online(
    salesforce: &SalesforceClient,
    api_version: &str,
    mappings_dir: &Path,
) -> Result<OnlineReport, OnlineCheckError> {
    let mappings = mapping::load_dir(mappings_dir).map_err(OnlineCheckError::Mappings)?;
    // Logs in only when there is no session yet: the daemon's own session
    // is used as it is, so no refresh token is rotated for nothing.
    salesforce
        .check_api_version()
        .await
        .map_err(|error| match error {
            SalesforceError::ApiVersionNotOffered { .. } => OnlineCheckError::ApiVersion(error),
            other => OnlineCheckError::Salesforce(other),
        })?;
    let problems = online::check_online(salesforce, &mappings)
        .await
        .map_err(OnlineCheckError::Salesforce)?;
    Ok(OnlineReport {
        mappings: mappings.len(),
        api_version: api_version.to_owned(),
        problems: problems.0.iter().map(ToString::to_string).collect(),
    })
}
