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
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::server::admin::{self, AdminState};
use crate::server::public::{self, PublicState};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::sync::operations::ResyncGate;
use crate::sync::reload::{WATCH_INTERVAL, directory_fingerprint};
use crate::sync::{
    BuildError, Engine, EngineParts, EngineSettings, Prepared, ReloadOutcome, RunningEngine,
};

/// How long the whole stop may take before the final flush: the engine's
/// work in flight, then the listeners' requests, share this one deadline.
/// The unit's `TimeoutStopSec=60` leaves the rest (30 s) to the flush and
/// exit, so systemd's SIGKILL never cuts the flush; a webhook answer takes
/// milliseconds and a Salesforce call is bounded by the client's timeout.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration, a mapping or the store path is wrong: the operator
    /// must fix it (exit 2). Every problem found, one per line.
    #[error("{0}")]
    Configuration(String),
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
}

impl From<BuildError> for StartError {
    fn from(error: BuildError) -> StartError {
        StartError::Configuration(error.0)
    }
}

/// Listeners bound before the start, served instead of binding the
/// configured addresses. Whoever must know a port before the daemon starts
/// (the demo writes its admin address into the configuration it hands out;
/// tests hand a port to a daemon) binds it once and hands it over, so no
/// other process can take it in between.
#[derive(Debug, Default)]
pub struct Listeners {
    pub webhooks: Option<std::net::TcpListener>,
    pub admin: Option<std::net::TcpListener>,
}

/// A running daemon.
pub struct Daemon {
    pub engine: Arc<Engine>,
    store: Store,
    webhook_address: SocketAddr,
    admin_address: SocketAddr,
    running: RunningEngine,
    /// Where the mappings are reloaded from (SIGHUP, file changes).
    mappings_dir: PathBuf,
    /// The stop of the engine, the webhook listener and the mapping watch
    /// (`/readyz` answers 503 once it begins), with the one cut-off of the
    /// whole stop path.
    shutdown: Shutdown,
    /// The admin listener's own stop, same cut-off: it answers until the
    /// rest has stopped.
    admin_shutdown: Shutdown,
    /// Both listeners and the mapping watch.
    tasks: TaskTracker,
    public_server: JoinHandle<Option<std::io::Result<()>>>,
    admin_server: JoinHandle<Option<std::io::Result<()>>>,
}

impl Daemon {
    /// Opens the store, validates the mappings, binds the webhook and admin
    /// listeners and starts the engine. Nothing is polled before all of it
    /// succeeded; `run` tells systemd READY only after this returns.
    pub async fn start(config: &Config, settings: EngineSettings) -> Result<Daemon, StartError> {
        Daemon::start_on(config, settings, Listeners::default()).await
    }

    /// [`Daemon::start`], serving the `listeners` handed over; the others
    /// are bound where the configuration says.
    pub async fn start_on(
        config: &Config,
        settings: EngineSettings,
        listeners: Listeners,
    ) -> Result<Daemon, StartError> {
        let prepared = Prepared::new(config)?;
        for warning in exposure_warnings(config) {
            tracing::warn!("{warning}");
        }
        let store = Store::open(&config.store.path)
            .await
            .map_err(anyhow::Error::from)?;
        let inbox_wake = Arc::new(Notify::new());
        let engine = Arc::new(Engine::from_prepared(
            config,
            prepared,
            EngineParts {
                store: store.clone(),
                settings,
                inbox_wake: inbox_wake.clone(),
            },
        ));

        let (listener, webhook_address) =
            listen(config.webhooks.listen, listeners.webhooks, "webhooks").await?;
        let admin_listen = config.admin.listen;
        let (admin_listener, admin_address) =
            listen(admin_listen, listeners.admin, "the admin API").await?;
        let state = PublicState {
            store: store.clone(),
            config: Arc::new(config.webhooks.clone()),
            inbox_wake: inbox_wake.clone(),
            metrics: engine.metrics().clone(),
        };
        let shutdown = Shutdown::new();
        let admin_shutdown = shutdown.with_own_stop();
        let tasks = TaskTracker::new();
        let public_server =
            shutdown.spawn(&tasks, public::serve(listener, state, shutdown.clone()));
        tracing::info!(address = %webhook_address, store = %config.store.path.display(), mappings = engine.mappings().len(), "listening for webhooks");

        let running = engine
            .clone()
            .start(&config.schedule, shutdown.clone())
            .await?;
        engine.mappings().log_warnings();
        shutdown.spawn(
            &tasks,
            watch_mappings(
                engine.clone(),
                config.mappings.dir.clone(),
                shutdown.clone(),
            ),
        );
        let admin_state = Arc::new(AdminState {
            store: store.clone(),
            engine: engine.clone(),
            schedules: running.schedules.clone(),
            token: config.admin.token.clone(),
            listen: admin_listen,
            resync_gate: ResyncGate::default(),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            mappings_dir: config.mappings.dir.clone(),
            api_version: config.salesforce.api_version.clone(),
            failure_grace: config.admin.failure_grace,
        });
        let admin_server = admin_shutdown.spawn(
            &tasks,
            admin::serve(admin_listener, admin_state, admin_shutdown.clone()),
        );
        tracing::info!(address = %admin_address, "admin API listening");
        Ok(Daemon {
            mappings_dir: config.mappings.dir.clone(),
            engine,
            store,
            webhook_address,
            admin_address,
            running,
            shutdown,
            admin_shutdown,
            tasks,
            public_server,
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
            Ok(Some(Ok(())) | None) => anyhow::anyhow!("the {name} listener stopped unexpectedly"),
            Ok(Some(Err(error))) => {
                anyhow::Error::from(error).context(format!("the {name} listener failed"))
            }
            Err(error) => {
                anyhow::Error::from(error).context(format!("the {name} listener task panicked"))
            }
        }
    }

    /// The daemon's stop: begins with [`Daemon::stop`] (the systemd
    /// watchdog stops pinging then too).
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Stops taking work, lets work in flight finish within one
    /// [`SHUTDOWN_GRACE`] for everything (past it, whatever still runs is
    /// cut off), then flushes.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let shutdown = self.shutdown.clone();
        shutdown.stop();
        if within_grace(deadline, &shutdown, self.running.stop()).await {
            tracing::warn!(
                grace_seconds = SHUTDOWN_GRACE.as_secs(),
                "the engine did not stop within the grace period; its tasks were cut off"
            );
        }
        finish_listener("webhook", self.public_server, deadline, &shutdown).await?;
        // The admin API answers (503 on /readyz) until the work is done.
        self.admin_shutdown.stop();
        finish_listener("admin", self.admin_server, deadline, &shutdown).await?;
        self.tasks.close();
        within_grace(deadline, &shutdown, self.tasks.wait()).await;
        self.store
            .flush()
            .await
            .context("cannot flush the store while stopping")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Waits for `work` until `deadline`; past it, cuts everything off, which
/// ends `work` at once. True when it had to cut off.
async fn within_grace(
    deadline: tokio::time::Instant,
    shutdown: &Shutdown,
    work: impl std::future::Future<Output = ()>,
) -> bool {
    let mut work = std::pin::pin!(work);
    if tokio::time::timeout_at(deadline, &mut work).await.is_ok() {
        return false;
    }
    shutdown.cut_off();
    work.await;
    true
}

/// Waits for a stopping listener until `deadline`, then cuts off what is
/// still in flight.
async fn finish_listener(
    name: &str,
    mut server: JoinHandle<Option<std::io::Result<()>>>,
    deadline: tokio::time::Instant,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let mut outcome = None;
    let cut_off = within_grace(deadline, shutdown, async {
        outcome = Some((&mut server).await);
    })
    .await;
    if cut_off {
        tracing::warn!(
            listener = name,
            grace_seconds = SHUTDOWN_GRACE.as_secs(),
            "requests still in flight after the grace period were cut off"
        );
    }
    match outcome.with_context(|| format!("the {name} listener did not end"))? {
        Ok(Some(result)) => result.with_context(|| format!("the {name} listener failed")),
        // Cut off: what it served until then was answered or dropped.
        Ok(None) => Ok(()),
        Err(error) => {
            Err(anyhow::Error::from(error).context(format!("the {name} listener task panicked")))
        }
    }
}

/// What an operator should know about how exposed the configuration is:
/// a key sent over plain http to another host, an admin API reachable from
/// the network. Logged at start and printed by `check`; none stops anything.
pub fn exposure_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for (key, url) in [
        ("ondorse.base_url", &config.ondorse.base_url),
        ("salesforce.login_url", &config.salesforce.login_url),
    ] {
        if plain_http_to_another_host(url) {
            warnings.push(format!(
                "{key} {url} is plain http to a host that is not loopback: credentials and data cross the network unencrypted; use https"
            ));
        }
    }
    if !admin::is_loopback(config.admin.listen.ip()) {
        warnings.push(format!(
            "admin.listen {} is not a loopback address: the admin API is reachable from the network, so /readyz and /metrics need the admin token too (only /healthz stays open); bind it to 127.0.0.1 unless that is what you want",
            config.admin.listen
        ));
    }
    warnings
}

fn plain_http_to_another_host(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let local = match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(address) => admin::is_loopback(address),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    url.scheme() == "http" && !local
}

/// The listener for `what`: the one `handed` over, else one bound on the
/// configured address; with the address it listens on.
async fn listen(
    configured: SocketAddr,
    handed: Option<std::net::TcpListener>,
    what: &str,
) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = match handed {
        Some(listener) => listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
            .with_context(|| format!("cannot serve the listener handed over for {what}"))?,
        None => TcpListener::bind(configured)
            .await
            .with_context(|| format!("cannot listen for {what} on {configured}"))?,
    };
    let address = listener
        .local_addr()
        .with_context(|| format!("the listener for {what} has no address"))?;
    Ok((listener, address))
}

/// Reloads the mappings when the directory changes: a change is acted on
/// once the directory has stayed the same for one [`WATCH_INTERVAL`], so an
/// editor's save in several steps makes one reload, not several.
async fn watch_mappings(engine: Arc<Engine>, dir: PathBuf, shutdown: Shutdown) {
    let mut in_force = directory_fingerprint(&dir);
    let mut seen = in_force.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
            () = shutdown.stopping() => return,
        }
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

#[cfg(test)]
mod tests {
    use super::plain_http_to_another_host;

    #[test]
    fn only_plain_http_to_a_host_that_is_not_loopback_is_exposed() {
        for exposed in [
            "http://api.ondorse.example",
            "http://10.0.0.7:8080/v1",
            "http://[2001:db8::1]/",
        ] {
            assert!(plain_http_to_another_host(exposed), "{exposed}");
        }
        for safe in [
            "https://api.ondorse.example",
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://LOCALHOST",
            "http://[::1]:9000",
            "not a url",
        ] {
            assert!(!plain_http_to_another_host(safe), "{safe}");
        }
    }
}
