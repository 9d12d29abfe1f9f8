//! Both sandboxes, a configuration that points at them, and a scratch
//! directory for the store: what `demo` and the benchmarks run the real
//! daemon in. The configuration is the shipped `config/demo.toml` with the
//! sandboxes' addresses filled in, written to disk and loaded like any
//! operator's file, so a child process can load it too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use ondorse_sandbox::ondorse::{OndorseSandbox, OndorseSandboxOptions};
use ondorse_sandbox::salesforce::{
    SalesforceSandbox, SalesforceSandboxOptions, generate_jwt_key_pair,
};

use crate::config::Config;
use crate::daemon::{Daemon, Listeners, StartError};
use crate::sync::EngineSettings;

/// The demo configuration and mappings, as shipped in the repository.
const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
const DEMO_MAPPINGS: &[(&str, &str)] = &[
    (
        "business-onboarding.yaml",
        include_str!("../mappings/business-onboarding.yaml"),
    ),
    (
        "person-onboarding.yaml",
        include_str!("../mappings/person-onboarding.yaml"),
    ),
];
/// Secrets of the sandbox world (sandbox credentials, nothing real).
pub const API_KEY: &str = "sandbox-ondorse-key";
pub const PATH_SECRET: &str = "sandbox-webhook-path-secret-0123456789";
pub const ADMIN_TOKEN: &str = "sandbox-admin-token";

/// What to change from the sandboxes' and the demo configuration's defaults.
#[derive(Debug, Clone, Default)]
pub struct SandboxWorldOptions {
    pub salesforce: SalesforceSandboxOptions,
    pub ondorse: OndorseSandboxOptions,
    /// `[schedule] poll` and `reconcile`, when not the demo's.
    pub schedule: Option<(String, String)>,
    /// `[webhooks] listen`, when a fixed address is needed (a daemon run as
    /// a child process); otherwise any free port.
    pub webhooks_listen: Option<SocketAddr>,
    /// `[admin] listen`, when the configuration must name the port (it is
    /// handed to the state commands): the address of a listener bound
    /// beforehand and handed to [`SandboxWorld::start_daemon`]; otherwise
    /// any free port.
    pub admin_listen: Option<SocketAddr>,
    /// `[mappings] dir`, when the mapping files are someone's own (`demo
    /// --mappings DIR`); otherwise a copy of the shipped examples.
    pub mappings_dir: Option<PathBuf>,
}

/// The sandboxes, the generated configuration and its scratch directory
/// (removed when dropped).
pub struct SandboxWorld {
    pub salesforce: SalesforceSandbox,
    pub ondorse: OndorseSandbox,
    pub config: Config,
    pub config_path: PathBuf,
    scratch: tempfile::TempDir,
}

impl SandboxWorld {
    pub async fn start(options: SandboxWorldOptions) -> anyhow::Result<SandboxWorld> {
        let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
        let keys = generate_jwt_key_pair();
        let salesforce = SalesforceSandbox::start(SalesforceSandboxOptions {
            jwt_public_key_pem: Some(keys.public_key_pem.clone()),
            ..options.salesforce.clone()
        })
        .await
        .context("cannot start the sandbox Salesforce")?;
        let ondorse = OndorseSandbox::start(OndorseSandboxOptions {
            api_key: API_KEY.to_owned(),
            ..options.ondorse.clone()
        })
        .await
        .context("cannot start the sandbox Ondorse")?;
        let config_path = write_files(
            scratch.path(),
            &keys.private_key_pem,
            &salesforce,
            &ondorse,
            &options,
        )?;
        let config = Config::load_with(&config_path, None).map_err(|errors| {
            anyhow::anyhow!("the generated sandbox configuration is invalid:\n{errors}")
        })?;
        Ok(SandboxWorld {
            salesforce,
            ondorse,
            config,
            config_path,
            scratch,
        })
    }

    /// The scratch directory (configuration, secrets, mappings, store).
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// Starts the real daemon in this process, serving the `listeners`
    /// handed over, and points Ondorse's webhooks at it.
    pub async fn start_daemon(
        &self,
        settings: EngineSettings,
        listeners: Listeners,
    ) -> Result<Daemon, StartError> {
        let daemon = Daemon::start_on(&self.config, settings, listeners).await?;
        self.ondorse
            .set_webhook_url(Some(webhook_url(daemon.webhook_address())));
        Ok(daemon)
    }
}

/// The Ondorse webhook URL of a daemon of this world listening on `address`.
pub fn webhook_url(address: SocketAddr) -> String {
    format!("http://{address}/webhooks/ondorse/{PATH_SECRET}")
}

/// Writes the configuration (the demo's, pointed at the sandboxes), its
/// secrets beside it and the mapping files; returns the configuration path.
fn write_files(
    scratch: &Path,
    private_key_pem: &str,
    salesforce: &SalesforceSandbox,
    ondorse: &OndorseSandbox,
    options: &SandboxWorldOptions,
) -> anyhow::Result<PathBuf> {
    let write = |path: &Path, content: &str| {
        std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))
    };
    let mappings = match &options.mappings_dir {
        Some(dir) => dir.clone(),
        None => {
            let copy = scratch.join("mappings");
            std::fs::create_dir_all(&copy)
                .with_context(|| format!("cannot create {}", copy.display()))?;
            for (name, text) in DEMO_MAPPINGS {
                write(&copy.join(name), text)?;
            }
            copy
        }
    };
    let mut table: toml::Table = DEMO_CONFIG
        .parse()
        .context("config/demo.toml is not valid TOML")?;
    let mut set = |section: &str, key: &str, value: toml::Value| {
        if let Some(toml::Value::Table(section)) = table.get_mut(section) {
            section.insert(key.to_owned(), value);
        }
    };
    let text = |value: &str| toml::Value::String(value.to_owned());
    set("salesforce", "login_url", text(&salesforce.login_url()));
    set("salesforce", "audience", text(&salesforce.login_url()));
    set(
        "salesforce",
        "client_id",
        text(&salesforce.options().client_id),
    );
    set(
        "salesforce",
        "username",
        text(&salesforce.options().username),
    );
    set("ondorse", "base_url", text(&ondorse.base_url()));
    set(
        "store",
        "path",
        text(&scratch.join("store").to_string_lossy()),
    );
    set("mappings", "dir", text(&mappings.to_string_lossy()));
    if let Some((poll, reconcile)) = &options.schedule {
        set("schedule", "poll", text(poll));
        set("schedule", "reconcile", text(reconcile));
    }
    if let Some(address) = options.webhooks_listen {
        set("webhooks", "listen", text(&address.to_string()));
    }
    if let Some(address) = options.admin_listen {
        set("admin", "listen", text(&address.to_string()));
    }
    for (name, secret) in [
        ("sf-jwt-key.pem", private_key_pem),
        ("ondorse-api-key", API_KEY),
        ("webhook-path-secret", PATH_SECRET),
        ("admin-token", ADMIN_TOKEN),
    ] {
        write(&scratch.join(name), secret)?;
    }
    let path = scratch.join("config.toml");
    write(
        &path,
        &toml::to_string(&table).context("cannot write the sandbox configuration")?,
    )?;
    Ok(path)
}
