//! The command line: one module per command.
//!
//! `main.rs` parses [`Cli`] and hands it to [`run`]; every command returns a
//! [`Failure`] that knows its exit status, so messages and codes are decided
//! in one place.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

pub mod check;
pub mod demo;
pub mod run;

/// Exit status for bad usage, configuration or mapping (SPEC §4).
pub const EXIT_INVALID: u8 = 2;
/// Exit status for a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "ondorse-bridge",
    version,
    about = "Salesforce ↔ Ondorse KYC bridge"
)]
pub struct Cli {
    /// Configuration file [default: /etc/ondorse-bridge/config.toml]
    #[arg(long, global = true, env = config::CONFIG_PATH_ENV, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (systemd runs this).
    Run,
    /// Validate the configuration and every mapping file.
    Check,
    /// Sandbox Salesforce + sandbox Ondorse + the real daemon, on loopback.
    Demo {
        /// How many Accounts to seed in the sandbox Salesforce.
        #[arg(long, default_value_t = 200)]
        accounts: usize,
    },
}

/// Why a command failed, and so which exit status it gets.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The input is wrong (configuration, mapping, arguments): exit 2.
    #[error("{0}")]
    Invalid(String),
    /// Something failed while running: exit 1.
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Invalid(_) => EXIT_INVALID,
            Failure::Runtime(_) => EXIT_RUNTIME,
        })
    }
}

impl From<crate::daemon::StartError> for Failure {
    fn from(error: crate::daemon::StartError) -> Failure {
        use crate::daemon::StartError;
        match error {
            StartError::Mappings(diagnostics) => Failure::Invalid(diagnostics.to_string()),
            StartError::Configuration(message) => Failure::Invalid(message),
            StartError::Runtime(error) => Failure::Runtime(error),
        }
    }
}

impl Cli {
    /// The configuration path: `--config`, then `ONDORSE_BRIDGE_CONFIG`, then the default.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG_PATH))
    }

    /// Loads and validates the configuration, or says everything wrong with it.
    pub fn load_config(&self) -> Result<Config, Failure> {
        Config::load(&self.config_path()).map_err(|errors| Failure::Invalid(errors.to_string()))
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Run => run::run(cli.load_config()?).await,
        Command::Check => check::check(&cli),
        Command::Demo { accounts } => demo::demo(*accounts).await,
    }
}
