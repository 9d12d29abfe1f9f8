//! The command line: one module per command.
//!
//! `main.rs` parses [`Cli`] and hands it to [`run()`]; every command returns a
//! [`Failure`] that knows its exit status, so messages and codes are decided
//! in one place.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};

pub mod access;
pub mod check;
pub mod dead_letters;
#[cfg(feature = "demo")]
pub mod demo;
pub mod explain;
pub mod mappings;
pub mod preview;
pub mod resync;
pub mod run;
pub mod status;

/// Exit status for bad usage, configuration or mapping: what the operator
/// must fix, told apart from a runtime failure by scripts and systemd.
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
    Check {
        /// Also authenticate and check every field and `select` against the org.
        #[arg(long)]
        online: bool,
    },
    /// Show what one Account would send to Ondorse and get written back; writes nothing.
    Preview {
        /// The mapping's `name`.
        #[arg(long, value_name = "NAME")]
        mapping: String,
        /// The Salesforce Account Id (001...).
        #[arg(long, value_name = "ID")]
        account: String,
    },
    /// Tools for mapping files.
    Mappings {
        #[command(subcommand)]
        command: mappings::MappingsCommand,
    },
    /// Sandbox Salesforce + sandbox Ondorse + the real daemon, on loopback.
    #[cfg(feature = "demo")]
    Demo(demo::DemoSettings),
    /// Cursors, queues, dead letters, schedules, API usage, per mapping.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The journal of one Account, oldest first.
    Explain {
        /// The Salesforce Account Id (15 or 18 characters).
        #[arg(long, value_name = "ID")]
        account: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write-backs Salesforce refused for good.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Re-read Accounts and bring Salesforce back in line.
    Resync(ResyncArgs),
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Every dead letter, oldest first.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Queue dead letters again (once the cause is fixed).
    Retry {
        /// Dead letter ids, as `list` shows them.
        #[arg(
            value_name = "ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        ids: Vec<u64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["accounts", "since", "all"])))]
pub struct ResyncArgs {
    /// Re-read these Accounts, re-fetch their applications, rewrite what differs.
    #[arg(long = "account", value_name = "ID", num_args = 1..)]
    pub accounts: Vec<String>,
    /// Re-run intake from this time (RFC 3339, or a UTC date or date-time).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Re-run intake from the beginning.
    #[arg(long)]
    pub all: bool,
    /// Only this mapping.
    #[arg(long, value_name = "NAME")]
    pub mapping: Option<String>,
    /// List what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Abandon each named Account's pending portal intent (one Ondorse
    /// refused, once the data is fixed) and start a fresh one.
    #[arg(long, requires = "accounts")]
    pub new_intent: bool,
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
    /// Already told on standard output (as JSON, for `--json`): only the
    /// exit status is left to give.
    #[error("{message}")]
    Printed { status: u8, message: String },
}

impl Failure {
    fn status(&self) -> u8 {
        match self {
            Failure::Invalid(_) => EXIT_INVALID,
            Failure::Runtime(_) => EXIT_RUNTIME,
            Failure::Printed { status, .. } => *status,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.status())
    }

    /// Tells the failure on standard error, once, unless it was told already.
    pub fn report(&self) {
        if !matches!(self, Failure::Printed { .. }) {
            eprintln!("error: {self:#}");
        }
    }

    /// For `--json`: the failure as JSON on standard output, so a script
    /// reading it always gets JSON.
    fn printed_as_json(self) -> Failure {
        let status = self.status();
        let message = format!("{self:#}");
        let answer = serde_json::json!({ "error": message, "exit_status": status });
        println!("{answer:#}");
        Failure::Printed { status, message }
    }
}

impl From<crate::daemon::StartError> for Failure {
    fn from(error: crate::daemon::StartError) -> Failure {
        use crate::daemon::StartError;
        match error {
            StartError::Configuration(message) => Failure::Invalid(message),
            StartError::Runtime(error) => Failure::Runtime(error),
        }
    }
}

/// A configuration the engine cannot be built from: the operator's to fix.
impl From<crate::sync::BuildError> for Failure {
    fn from(error: crate::sync::BuildError) -> Failure {
        Failure::Invalid(error.0)
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

/// Prints `value` as pretty JSON on standard output (`--json`).
pub fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(anyhow::Error::from)?;
    println!("{text}");
    Ok(())
}

impl Command {
    /// Whether the command was asked for JSON output.
    fn json(&self) -> bool {
        match self {
            Command::Status { json }
            | Command::Explain { json, .. }
            | Command::DeadLetters(
                DeadLettersCommand::List { json } | DeadLettersCommand::Retry { json, .. },
            ) => *json,
            Command::Resync(arguments) => arguments.json,
            Command::Run
            | Command::Check { .. }
            | Command::Preview { .. }
            | Command::Mappings { .. } => false,
            #[cfg(feature = "demo")]
            Command::Demo(_) => false,
        }
    }
}

/// Parses the command line. A usage error is told as clap tells it, or
/// as JSON on standard output when `--json` was asked for; help and the
/// version stay text. `Err` is the exit status left to give.
pub fn parse() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    let error = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(error) => error,
    };
    let informational = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational || !std::env::args().any(|argument| argument == "--json") {
        // Printing to a closed terminal is nothing more to report.
        let _ = error.print();
        return Err(ExitCode::from(
            u8::try_from(error.exit_code()).unwrap_or(EXIT_INVALID),
        ));
    }
    let message = error.render().to_string();
    let message = message.trim().trim_start_matches("error: ").to_owned();
    Err(Failure::Invalid(message).printed_as_json().exit_code())
}

/// A reader that stops reading (`ondorse-bridge demo | head`) ends the
/// program quietly, for every command and every thread: printing to a
/// closed stdout panics in Rust (SIGPIPE is ignored, so the write fails
/// with `EPIPE`), and this hook turns that one panic into a quiet exit 0
/// instead of a panic message on the terminal. Every other panic goes to
/// the default hook (a closed stderr included: an error must keep its exit
/// status).
pub fn exit_quietly_when_output_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // std's message: "failed printing to stdout: Broken pipe (os error 32)".
        let broken_pipe = std::io::Error::from_raw_os_error(EPIPE).to_string();
        if message.starts_with("failed printing to stdout") && message.ends_with(&broken_pipe) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// `EPIPE`, "broken pipe", on Linux and the BSDs.
const EPIPE: i32 = 32;

/// Runs one parsed command line; with `--json`, a failure is JSON too.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.command.json();
    let outcome = run_command(&cli).await;
    match outcome {
        Err(failure) if json => Err(failure.printed_as_json()),
        other => other,
    }
}

async fn run_command(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Run => run::run(cli.load_config()?).await,
        Command::Check { online } => check::check(cli, *online).await,
        Command::Preview { mapping, account } => preview::preview(cli, mapping, account).await,
        Command::Mappings { command } => mappings::mappings(command),
        Command::Status { json } => status::status(&cli.load_config()?, *json).await,
        Command::Explain { account, json } => {
            explain::explain(&cli.load_config()?, account, *json).await
        }
        Command::DeadLetters(DeadLettersCommand::List { json }) => {
            dead_letters::list(&cli.load_config()?, *json).await
        }
        Command::DeadLetters(DeadLettersCommand::Retry { ids, all, json }) => {
            let selection = crate::sync::operations::RetrySelection {
                ids: ids.clone(),
                all: *all,
            };
            dead_letters::retry(&cli.load_config()?, selection, *json).await
        }
        Command::Resync(arguments) => {
            let request = crate::sync::operations::ResyncRequest {
                accounts: arguments.accounts.clone(),
                since: arguments.since.clone(),
                all: arguments.all,
                mapping: arguments.mapping.clone(),
                dry_run: arguments.dry_run,
                new_intent: arguments.new_intent,
            };
            resync::resync(&cli.load_config()?, request, arguments.json).await
        }
        #[cfg(feature = "demo")]
        Command::Demo(settings) => demo::demo(settings.clone()).await,
    }
}
