//! Both sandboxes, a configuration that points at them, and the real
//! daemon: the world end-to-end tests run in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ondorse_bridge::config::Config;
use ondorse_bridge::daemon::Daemon;
use ondorse_bridge::ondorse::webhook::parse_envelope;
use ondorse_bridge::sync::{BudgetSettings, Engine, EngineParts, EngineSettings, RetrySettings};
use ondorse_sandbox::ondorse::{OndorseSandbox, OndorseSandboxOptions};
use ondorse_sandbox::salesforce::{
    SalesforceSandbox, SalesforceSandboxOptions, generate_jwt_key_pair,
};
use serde_json::{Value, json};

use crate::support::config::{ConfigSettings, ONDORSE_API_KEY, write_config};

/// Longest an end-to-end condition may take on a loaded 2-core machine.
pub const E2E_DEADLINE: Duration = Duration::from_secs(60);

/// The repository's mapping examples: the tests run exactly what ships.
pub fn repository_mappings() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings")
}

/// Copies the shipped mapping files into `dir`.
pub fn copy_mappings(dir: &Path) {
    std::fs::create_dir_all(dir).expect("create the mappings dir");
    for entry in std::fs::read_dir(repository_mappings()).expect("read mappings/") {
        let path = entry.expect("mappings entry").path();
        if path
            .extension()
            .is_some_and(|extension| extension == "yaml")
        {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).expect("copy a mapping");
        }
    }
}

/// How long links alone wait for company in tests.
pub const QUICK_LINK_BATCH_WAIT: Duration = Duration::from_millis(200);
/// Ondorse requests in flight in tests.
pub const TEST_ONDORSE_CONCURRENCY: usize = 16;

/// Engine settings with production logic and test-sized delays.
pub fn quick_settings() -> EngineSettings {
    EngineSettings {
        inbox_interval: Duration::from_millis(100),
        budget: BudgetSettings {
            recheck_interval: Duration::from_millis(100),
            limit_backoff_base: Duration::from_millis(100),
            limit_backoff_cap: Duration::from_millis(800),
            ..BudgetSettings::default()
        },
        ..EngineSettings::default()
    }
}

/// The retry policy with test-sized waits (what `[retry]` would set).
pub fn quick_retry() -> RetrySettings {
    RetrySettings {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        retry_after_cap: Duration::from_secs(1),
    }
}

/// Both sandboxes and a configuration for them, in a temp dir.
pub struct World {
    pub salesforce: SalesforceSandbox,
    pub ondorse: OndorseSandbox,
    pub config: Config,
    pub config_path: PathBuf,
    /// Holds the configuration, secrets and store; removed on drop.
    _dir: tempfile::TempDir,
}

impl World {
    /// Sandboxes with their defaults, except what `ondorse` changes.
    pub async fn start(ondorse: OndorseSandboxOptions) -> World {
        World::start_with(SalesforceSandboxOptions::default(), ondorse, "").await
    }

    pub async fn start_with(
        salesforce_options: SalesforceSandboxOptions,
        ondorse_options: OndorseSandboxOptions,
        extra_config: &str,
    ) -> World {
        let keys = generate_jwt_key_pair();
        let salesforce = SalesforceSandbox::start(SalesforceSandboxOptions {
            jwt_public_key_pem: Some(keys.public_key_pem.clone()),
            ..salesforce_options
        })
        .await
        .expect("sandbox salesforce starts");
        let ondorse = OndorseSandbox::start(OndorseSandboxOptions {
            api_key: ONDORSE_API_KEY.to_owned(),
            ..ondorse_options
        })
        .await
        .expect("sandbox ondorse starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = ConfigSettings::in_dir(dir.path());
        settings.salesforce_login_url = salesforce.login_url();
        settings.ondorse_base_url = ondorse.base_url();
        settings.extra = extra_config.to_owned();
        copy_mappings(&settings.mappings_dir);
        let files = write_config(dir.path(), &settings, &keys.private_key_pem);
        let mut config =
            Config::load_with(&files.path, None).expect("the test configuration is valid");
        // Test-sized waits, as `[retry]` in the file would set them.
        config.retry = quick_retry();
        // Links linger a test-sized while, as `[salesforce]
        // link_batch_wait_seconds` would (in whole seconds).
        config.salesforce.link_batch_wait = QUICK_LINK_BATCH_WAIT;
        // A first burst of 16 portal POSTs at most, as `[ondorse]
        // max_concurrent_requests = 16` would: the fault tests count it.
        config.ondorse.max_concurrent_requests = TEST_ONDORSE_CONCURRENCY;
        World {
            salesforce,
            ondorse,
            config,
            config_path: files.path,
            _dir: dir,
        }
    }

    /// Starts the real daemon in-process and points Ondorse's webhooks at it.
    pub async fn daemon(&self) -> Daemon {
        self.daemon_with(quick_settings()).await
    }

    /// [`World::daemon`] with other engine settings.
    pub async fn daemon_with(&self, settings: EngineSettings) -> Daemon {
        let daemon = Daemon::start(&self.config, settings)
            .await
            .expect("the daemon starts");
        self.ondorse
            .set_webhook_url(Some(self.webhook_url(daemon.webhook_address())));
        daemon
    }

    /// The webhook URL of a daemon listening on `address`.
    pub fn webhook_url(&self, address: std::net::SocketAddr) -> String {
        format!(
            "http://{address}/webhooks/ondorse/{}",
            crate::support::config::PATH_SECRET
        )
    }

    /// The engine of a daemon that is not started: tests drive its steps.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine_with(quick_settings())
    }

    /// [`World::engine`] with other settings.
    pub fn engine_with(&self, settings: EngineSettings) -> Arc<Engine> {
        use ondorse_bridge::store::Store;
        let store = Store::open_blocking(&self.config.store.path).expect("open the store");
        Arc::new(
            Engine::from_config(
                &self.config,
                EngineParts {
                    store,
                    settings,
                    inbox_wake: Arc::new(tokio::sync::Notify::new()),
                },
            )
            .expect("the engine builds from the test configuration"),
        )
    }

    /// Seeds `count` Accounts of a given `Type` (Customer matches the
    /// business mapping) and returns their Ids.
    pub fn seed(&self, count: usize, account_type: &str, seed: u64) -> Vec<String> {
        let accounts = SalesforceSandbox::generate_accounts(count, seed)
            .into_iter()
            .map(|mut account| {
                account.insert("Type".to_owned(), json!(account_type));
                account
            })
            .collect();
        self.salesforce.insert_accounts(accounts)
    }

    /// A field of a Salesforce Account as the sandbox holds it.
    pub fn field(&self, account_id: &str, field: &str) -> Value {
        self.salesforce
            .account(account_id)
            .and_then(|account| account.get(field).cloned())
            .unwrap_or(Value::Null)
    }

    /// The id of the Ondorse portal created for an Account.
    pub fn portal_of(&self, account_id: &str) -> String {
        self.ondorse
            .portals()
            .into_iter()
            .find(|portal| {
                portal["default_custom_fields"]["salesforce_account_id"] == json!(account_id)
            })
            .and_then(|portal| portal["id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no portal for {account_id}"))
    }

    /// Submits the Ondorse portal created for `account_id` and reviews the
    /// application, as the applicant and a compliance officer would; returns
    /// the application id.
    pub fn decide(
        &self,
        account_id: &str,
        decision: &str,
        risk_level: i64,
        risk_score: Option<f64>,
    ) -> String {
        let application = self
            .ondorse
            .submit_portal(&self.portal_of(account_id))
            .expect("the portal is submitted");
        self.ondorse
            .review(&application, decision, risk_level, risk_score);
        application
    }

    /// Stores every event Ondorse raised so far in the engine's inbox, as
    /// the webhook listener would (for an engine driven without a daemon:
    /// no webhook URL is set, so none was sent); how many.
    pub async fn store_raised_events(&self, engine: &Engine) -> usize {
        self.store_raised_events_where(engine, |_| true).await
    }

    /// Stores the events Ondorse raised so far that `keep` picks (the
    /// listener receiving those, in the order the test chooses); how many.
    pub async fn store_raised_events_where(
        &self,
        engine: &Engine,
        keep: impl Fn(&serde_json::Value) -> bool,
    ) -> usize {
        let events: Vec<_> = self
            .ondorse
            .events()
            .into_iter()
            .filter(|event| keep(event))
            .collect();
        for event in &events {
            let envelope = parse_envelope(event.to_string().as_bytes()).expect("an envelope");
            engine
                .store()
                .accept_webhook(&envelope, chrono::Utc::now())
                .await
                .expect("stored");
        }
        events.len()
    }

    /// Portals per Salesforce Account Id, as Ondorse holds them.
    pub fn portals_by_account(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for portal in self.ondorse.portals() {
            if let Some(id) = portal
                .pointer("/default_custom_fields/salesforce_account_id")
                .and_then(Value::as_str)
            {
                *counts.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// Waits (async) until `condition` holds, or panics naming `what`.
pub async fn eventually(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    eventually_some(what, deadline, || {
        std::future::ready(condition().then_some(()))
    })
    .await
}

/// Waits (async) until `condition`, which may itself wait (run a command,
/// call HTTP), gives a value; answers it, or panics naming `what`.
pub async fn eventually_some<T, Condition, Answer>(
    what: &str,
    deadline: Duration,
    mut condition: Condition,
) -> T
where
    Condition: FnMut() -> Answer,
    Answer: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
