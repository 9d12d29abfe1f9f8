//! The daemon as a value: everything `run` starts, in the order that makes
//! it safe, and stops in the reverse order. `run`, `demo` and the tests all
//! go through [`Daemon::start`], so they exercise the same composition.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::mapping::Diagnostics;
use crate::server::admin::{self, AdminState};
use crate::server::public::{self, PublicState};
use crate::store::Store;
use crate::sync::operations::ResyncGate;
use crate::sync::reload::{WATCH_INTERVAL, directory_fingerprint};
use crate::sync::{BuildError, Engine, EngineParts, EngineSettings, ReloadOutcome, RunningEngine};

/// How long work in flight may take to finish after a stop is asked.
/// systemd's default stop timeout is 90 s; a webhook answer takes
/// milliseconds and a Salesforce call is bounded by the client's timeout.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The mapping files are invalid: the operator must fix them (exit 2).
    #[error("{0}")]
    Mappings(Diagnostics),
    /// The configuration passed loading but a client refuses it (an
    /// unreadable key, a bad URL): the operator must fix it (exit 2).
    #[error("{0}")]
    Configuration(String),
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl From<BuildError> for StartError {
    fn from(error: BuildError) -> StartError {
        match error {
            BuildError::Mappings(diagnostics) => StartError::Mappings(diagnostics),
            BuildError::Configuration(message) => StartError::Configuration(message),
        }
    }
}

/// A running daemon.
pub struct Daemon {
    pub engine: Arc<Engine>,
    store: Store,
    webhook_address: SocketAddr,
    admin_address: SocketAddr,
    running: RunningEngine,
    public_stop: Arc<Notify>,
    public_server: JoinHandle<std::io::Result<()>>,
    /// Where the mappings are reloaded from (SIGHUP, file changes).
    mappings_dir: PathBuf,
    /// Reloads the mappings when a file in `mappings_dir` changes.
    mappings_watch: JoinHandle<()>,
    /// Kept to flag a stop (`/readyz` answers 503 from then on).
    admin_state: Arc<AdminState>,
    admin_stop: Arc<Notify>,
    admin_server: JoinHandle<std::io::Result<()>>,
}

impl Daemon {
    /// Opens the store, validates the mappings, binds the webhook and admin
    /// listeners and starts the engine. Nothing is polled before all of it
    /// succeeded; `run` tells systemd READY only after this returns.
    pub async fn start(config: &Config, settings: EngineSettings) -> Result<Daemon, StartError> {
        let store = Store::open(&config.store.path).map_err(anyhow::Error::from)?;
        let inbox_wake = Arc::new(Notify::new());
        let engine = Arc::new(Engine::from_config(
            config,
            EngineParts {
                store: store.clone(),
                settings,
                inbox_wake: inbox_wake.clone(),
            },
        )?);

        let listen = config.webhooks.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen for webhooks on {listen}"))?;
        let webhook_address = listener
            .local_addr()
            .context("the webhook listener has no address")?;
        let admin_listen = config.admin.listen;
        let admin_listener = TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("cannot listen for the admin API on {admin_listen}"))?;
        let admin_address = admin_listener
            .local_addr()
            .context("the admin listener has no address")?;
        let state = PublicState {
            store: store.clone(),
            config: Arc::new(config.webhooks.clone()),
            inbox_wake: inbox_wake.clone(),
        };
        let public_stop = Arc::new(Notify::new());
        let stopped = public_stop.clone();
        let public_server = tokio::spawn(public::serve(listener, state, async move {
            stopped.notified().await
        }));
        tracing::info!(address = %webhook_address, store = %config.store.path.display(), mappings = engine.mappings().len(), "listening for webhooks");

        let running = engine.clone().start(&config.schedule).await?;
        engine.mappings().log_warnings();
        let mappings_watch =
            tokio::spawn(watch_mappings(engine.clone(), config.mappings.dir.clone()));
        let admin_state = Arc::new(AdminState {
            store: store.clone(),
            engine: engine.clone(),
            schedules: running.schedules.clone(),
            token: config.admin.token.clone(),
            listen: admin_listen,
            resync_gate: ResyncGate::default(),
            stopping: Default::default(),
        });
        let admin_stop = Arc::new(Notify::new());
        let stopped = admin_stop.clone();
        let admin_server = tokio::spawn(admin::serve(
            admin_listener,
            admin_state.clone(),
            async move { stopped.notified().await },
        ));
        tracing::info!(address = %admin_address, "admin API listening");
        Ok(Daemon {
            mappings_dir: config.mappings.dir.clone(),
            mappings_watch,
            engine,
            store,
            webhook_address,
            admin_address,
            running,
            public_stop,
            public_server,
            admin_state,
            admin_stop,
            admin_server,
        })
    }

    /// The cron schedules and their health.
    pub fn schedules(&self) -> &Arc<crate::sync::Schedules> {
        &self.running.schedules
    }

    /// Re-validates the mapping directory and puts it in force if valid
    /// (SIGHUP); an invalid one is refused and the previous set keeps running.
    pub async fn reload_mappings(&self) -> ReloadOutcome {
        self.engine.reload_mappings(&self.mappings_dir).await
    }

    /// Where the webhook listener is bound (useful with port 0).
    pub fn webhook_address(&self) -> SocketAddr {
        self.webhook_address
    }

    /// Where the admin listener is bound (useful with port 0).
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// Resolves when a listener stopped on its own (a failure).
    pub async fn listener_failed(&mut self) -> anyhow::Error {
        let (name, outcome) = tokio::select! {
            outcome = &mut self.public_server => ("webhook", outcome),
            outcome = &mut self.admin_server => ("admin", outcome),
        };
        match outcome {
            Ok(Ok(())) => anyhow::anyhow!("the {name} listener stopped unexpectedly"),
            Ok(Err(error)) => {
                anyhow::Error::from(error).context(format!("the {name} listener failed"))
            }
            Err(error) => {
                anyhow::Error::from(error).context(format!("the {name} listener task panicked"))
            }
        }
    }

    /// Stops taking work, lets work in flight finish (bounded), flushes.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.admin_state
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // `notify_one` keeps a permit: the stop is not lost if the server
        // has not polled its shutdown future yet.
        self.public_stop.notify_one();
        self.mappings_watch.abort();
        self.running.stop(SHUTDOWN_GRACE).await;
        let mut server = self.public_server;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(outcome) => outcome
                .context("the webhook listener task panicked")?
                .context("the webhook listener failed")?,
            Err(_) => {
                server.abort();
                tracing::warn!(
                    grace_seconds = SHUTDOWN_GRACE.as_secs(),
                    "requests still in flight after the grace period were cut off"
                );
            }
        }
        // The admin API answers (503 on /readyz) until the work is done.
        self.admin_stop.notify_one();
        let mut admin_server = self.admin_server;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut admin_server)
            .await
            .is_err()
        {
            admin_server.abort();
        }
        self.store
            .flush()
            .await
            .context("cannot flush the store while stopping")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Reloads the mappings when the directory changes: a change is acted on
/// once the directory has stayed the same for one [`WATCH_INTERVAL`], so an
/// editor's save in several steps makes one reload, not several.
async fn watch_mappings(engine: Arc<Engine>, dir: PathBuf) {
    let mut in_force = directory_fingerprint(&dir);
    let mut seen = in_force.clone();
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let now = directory_fingerprint(&dir);
        if now != seen {
            seen = now;
            continue;
        }
        if now != in_force {
            tracing::info!(dir = %dir.display(), "mapping files changed; reloading");
            engine.reload_mappings(&dir).await;
            in_force = now;
        }
    }
}
