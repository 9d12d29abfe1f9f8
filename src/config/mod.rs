//! The TOML configuration (every key is shown in `config/example.toml`):
//! raw keys in, validated settings out.
//!
//! Loading goes through the `config` crate (TOML file, then
//! `ONDORSE_BRIDGE__SECTION__KEY` environment overrides). Every problem is
//! collected before failing, so an operator fixes a file in one pass. Secrets
//! are read from `*_file` keys into [`secrecy::SecretString`] at once and never printed.

mod load;
mod positions;
mod secrets;
mod sections;
mod types;

use std::path::Path;

pub use load::{KnownKey, known_keys};
pub use positions::Origins;
pub use types::*;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ondorse-bridge/config.toml";
/// Environment variable naming the configuration file (beaten by `--config`).
pub const CONFIG_PATH_ENV: &str = "ONDORSE_BRIDGE_CONFIG";
/// Prefix of the environment overrides: `ONDORSE_BRIDGE__SALESFORCE__API_VERSION`.
pub const ENV_PREFIX: &str = "ONDORSE_BRIDGE";
/// Separator between prefix, section and key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";
/// systemd's `LoadCredential=` directory: relative secret file names live here.
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Every problem found in a configuration, reported together.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors {
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(formatter)?;
            }
            write!(formatter, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Whether the user running this process can create or write the store
    /// directory. `run` needs to; `check` says so before it is started,
    /// naming the user, since under systemd the service's user differs.
    pub fn check_store_path(&self) -> Result<(), String> {
        let path = &self.store.path;
        let refuse = |reason: String| {
            format!(
                "{}: [store] path: {reason}",
                self.origins.of("store", "path")
            )
        };
        let (probed, verb) = if path.exists() {
            (path.as_path(), "written")
        } else {
            let ancestor = path
                .ancestors()
                .skip(1)
                .map(|ancestor| {
                    if ancestor.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        ancestor
                    }
                })
                .find(|ancestor| ancestor.exists())
                .unwrap_or(Path::new("/"));
            (ancestor, "created")
        };
        if !probed.is_dir() {
            return Err(refuse(format!(
                "{} cannot be {verb}: {} is not a directory",
                path.display(),
                probed.display()
            )));
        }
        // A uniquely named file, created then removed.
        let probe = probed.join(format!(
            ".ondorse-bridge-probe-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe);
        created
            .map(|_| drop(std::fs::remove_file(&probe)))
            .map_err(|error| {
                refuse(format!(
                    "{} cannot be {verb} by the user running this command ({}: {error}); \
                 under systemd it is the service's user that needs it (StateDirectory= makes it)",
                    path.display(),
                    probed.display()
                ))
            })
    }
}

/// Parses a cron expression with seconds the way the scheduler will.
pub fn parse_schedule(expression: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expression)
}
