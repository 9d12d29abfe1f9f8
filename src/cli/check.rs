//! `ondorse-bridge check [--online]`: validate the configuration and every
//! mapping file; with `--online`, also against the org's metadata.
//!
//! Offline, it runs what `run` runs before it starts ([`Prepared::new`]):
//! whatever `run` would refuse as configuration, `check` refuses first.

use crate::cli::{Cli, Failure};
use crate::sync::Prepared;
use crate::mapping::online;

pub async fn check(cli: &Cli, online: bool) -> Result<(), Failure> {
    let config = cli.load_config()?;
    let Prepared {
        mappings,
        salesforce,
        ..
    } = Prepared::new(&config)?;
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
    let overlaps = online::overlaps(&salesforce, &mappings)
        .await
        .map_err(|error| {
            anyhow::Error::from(error).context("cannot count the Accounts the mappings share")
        })?;
    for overlap in &overlaps {
        eprintln!("{overlap}");
    }
    println!(
        "every field read and written exists in the org and fits, and every `select` is valid SOQL ({} mapping(s) checked online)",
        mappings.len()
    );
    Ok(())
}
