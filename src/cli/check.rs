//! `ondorse-bridge check`: validate the configuration and the mapping files.

use crate::cli::{Cli, Failure};

pub fn check(cli: &Cli) -> Result<(), Failure> {
    cli.load_config()?;
    println!("configuration {} is valid", cli.config_path().display());
    Ok(())
}
