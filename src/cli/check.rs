//! `ondorse-bridge check [--online]`: validate the configuration and every
//! mapping file; with `--online`, also against the org's metadata.
//!
//! Offline, it runs what `run` runs before it starts ([`Prepared::new`]):
//! whatever `run` would refuse as configuration, `check` refuses first.
//!
//! With the refresh-token flow, the online checks run where the refresh
//! token lives: in the running daemon (through its admin API) when it holds
//! the store, else here with the store's newest refresh token, keeping the
//! one Salesforce rotates in. The other flows check here, store untouched.

use std::sync::Arc;

use crate::cli::access::AdminClient;
use crate::cli::{Cli, Failure};
use crate::config::{Config, SalesforceAuth};
use crate::salesforce::SalesforceClient;
use crate::store::{Store, StoreError};
use crate::sync::Prepared;
use crate::sync::online_check::{self, OnlineReport};

pub async fn check(cli: &Cli, online: bool) -> Result<(), Failure> {
    let config = cli.load_config()?;
    let Prepared {
        mappings,
        salesforce,
        ..
    } = Prepared::new(&config)?;
    for warning in mappings.warnings() {
        eprintln!("{}", warning.as_warning());
    }
    let names: Vec<&str> = mappings.names().collect();
    println!("configuration {} is valid", cli.config_path().display());
    for warning in crate::daemon::exposure_warnings(&config) {
        eprintln!("warning: {warning}");
    }
    println!(
        "{} mapping(s) in {} are valid: {}",
        mappings.len(),
        config.mappings.dir.display(),
        names.join(", ")
    );
    if !online {
        return Ok(());
    }
    let report: OnlineReport = match open_store(&config).await? {
        StoreAccess::Daemon => {
            println!("the daemon runs: it runs the online checks with its own session");
            AdminClient::new(&config.admin)?
                .post("check-online", &serde_json::json!({}), None)
                .await?
        }
        StoreAccess::Here(store) => check_here(&config, salesforce, store).await?,
    };
    if !report.problems.is_empty() {
        return Err(Failure::Invalid(format!(
            "{}\n{} problem(s) found against the org",
            report.problems.join("\n"),
            report.problems.len()
        )));
    }
    for warning in &report.warnings {
        eprintln!("{warning}");
    }
    println!(
        "the org serves api version {}; every field read and written exists in the org and fits, and every `select` is valid SOQL ({} mapping(s) checked online)",
        report.api_version, report.mappings
    );
    Ok(())
}

/// Who holds the store, and so the refresh token.
enum StoreAccess {
    Daemon,
    /// The checks run here; `None` when the flow keeps no refresh token
    /// (the store is then not touched: another process holding it is no
    /// concern of `check`).
    Here(Option<Store>),
}

async fn open_store(config: &Config) -> Result<StoreAccess, Failure> {
    if !matches!(config.salesforce.auth, SalesforceAuth::RefreshToken { .. }) {
        return Ok(StoreAccess::Here(None));
    }
    match Store::open(&config.store.path).await {
        Ok(store) => Ok(StoreAccess::Here(Some(store))),
        Err(StoreError::InUse { .. }) => Ok(StoreAccess::Daemon),
        Err(error) => Err(Failure::Runtime(error.into())),
    }
}

async fn check_here(
    config: &Config,
    salesforce: SalesforceClient,
    store: Option<Store>,
) -> Result<OnlineReport, Failure> {
    if let Some(store) = store {
        salesforce.keep_refresh_tokens_in(Arc::new(store));
    }
    salesforce.authenticate().await.map_err(|error| {
        // A refused login is the configuration's to fix; an org that does
        // not answer may answer later.
        if error.is_retriable() {
            Failure::Runtime(
                anyhow::Error::from(error)
                    .context("cannot authenticate to Salesforce for the online checks"),
            )
        } else {
            Failure::Invalid(format!(
                "{}: salesforce refused the login of the online checks: {error}",
                config.origins.of("salesforce", "auth")
            ))
        }
    })?;
    online_check::check_online(
        &salesforce,
        salesforce.check_api_version(),
        &config.salesforce.api_version,
        &config.mappings.dir,
    )
    .await
    .map_err(|error| {
        if error.is_bad_input() {
            Failure::Invalid(error.to_string())
        } else {
            Failure::Runtime(anyhow::Error::from(error))
        }
    })
}
