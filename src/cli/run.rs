//! `ondorse-bridge run`: the daemon.

use crate::cli::Failure;
use crate::config::Config;

pub async fn run(config: Config) -> Result<(), Failure> {
    let _ = config;
    Err(Failure::Runtime(anyhow::anyhow!(
        "the daemon is not built yet"
    )))
}
