//! `ondorse-bridge check [--online]`: validate the configuration and every
//! mapping file; with `--online`, also against the org's metadata.

use crate::cli::{Cli, Failure};
use crate::mapping::{self, online};
use crate::salesforce::SalesforceClient;

pub async fn check(cli: &Cli, online: bool) -> Result<(), Failure> {
    let config = cli.load_config()?;
    let mappings = mapping::load_dir(&config.mappings.dir)
        .map_err(|diagnostics| Failure::Invalid(diagnostics.to_string()))?;
    for warning in mappings.warnings() {
        eprintln!("{}", warning.as_warning());
    }
    let names: Vec<&str> = mappings.names().collect();
    println!("configuration {} is valid", cli.config_path().display());
    println!(
        "{} mapping(s) in {} are valid: {}",
        mappings.len(),
        config.mappings.dir.display(),
        names.join(", ")
    );
    if !online {
        return Ok(());
    }
    let salesforce = SalesforceClient::new(&config.salesforce)
        .map_err(|error| Failure::Invalid(format!("{}: {error}", config.source.display())))?;
    salesforce.authenticate().await.map_err(|error| {
        anyhow::Error::from(error)
            .context("cannot authenticate to Salesforce for the online checks")
    })?;
    let problems = online::check_online(&salesforce, &mappings)
        .await
        .map_err(|error| {
            anyhow::Error::from(error).context("the online checks could not finish")
        })?;
    if !problems.is_empty() {
        return Err(Failure::Invalid(format!(
            "{problems}\n{} problem(s) found against the org",
            problems.len()
        )));
    }
    println!(
        "every field read and written exists in the org and fits, and every `select` is valid SOQL ({} mapping(s) checked online)",
        mappings.len()
    );
    Ok(())
}
