//! `ondorse-bridge run`: the daemon.
//!
//! A small composition: open the store, listen for webhooks, prune old
//! webhook event ids hourly, and on SIGTERM or SIGINT stop accepting, let
//! requests in flight finish (within [`SHUTDOWN_GRACE`]), flush the store
//! and return.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Notify;

use crate::cli::Failure;
use crate::config::Config;
use crate::server::public::{self, PublicState};
use crate::store::Store;

/// How long requests in flight may take to finish after a stop is asked.
/// systemd's default stop timeout is 90 s; a webhook answer takes
/// milliseconds, so 10 s only matters for a stuck sender.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often event ids older than the deduplication window are forgotten.
/// The window is two days, so hourly keeps the keyspace near its floor.
pub const SEEN_EVENT_PRUNE_INTERVAL: Duration = Duration::from_secs(60 * 60);

pub async fn run(config: Config) -> Result<(), Failure> {
    // Installed first: until then a SIGTERM would kill the process outright.
    let mut signals = StopSignals::listen()?;
    let store = Store::open(&config.store.path).map_err(anyhow::Error::from)?;
    let listen = config.webhooks.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for webhooks on {listen}"))?;
    let address = listener
        .local_addr()
        .context("the webhook listener has no address")?;
    tracing::info!(%address, store = %config.store.path.display(), "listening for webhooks");

    let state = PublicState {
        store: store.clone(),
        config: Arc::new(config.webhooks.clone()),
        inbox_wake: Arc::new(Notify::new()),
    };
    let stop = Arc::new(Notify::new());
    let stopped = Arc::clone(&stop);
    let mut server = tokio::spawn(public::serve(listener, state, async move {
        stopped.notified().await
    }));

    let pruner = tokio::spawn(prune_seen_events(store.clone()));

    let signal_name = tokio::select! {
        name = signals.recv() => name,
        // The server ends on its own only when it fails.
        outcome = &mut server => {
            outcome.context("the webhook listener task panicked")?
                .context("the webhook listener failed")?;
            return Err(anyhow::anyhow!("the webhook listener stopped unexpectedly").into());
        }
    };
    tracing::info!(
        signal = signal_name,
        "stopping: finishing requests in flight"
    );
    pruner.abort();
    // `notify_one` keeps a permit, so the stop is not lost if the server has
    // not polled its shutdown future yet.
    stop.notify_one();
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
    store
        .flush()
        .await
        .context("cannot flush the store while stopping")?;
    tracing::info!("stopped");
    Ok(())
}

/// Forgets old webhook event ids now and every [`SEEN_EVENT_PRUNE_INTERVAL`].
/// A failure is logged and retried at the next tick: until then the ids
/// only take space.
async fn prune_seen_events(store: Store) {
    let mut ticks = tokio::time::interval(SEEN_EVENT_PRUNE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A scan of the whole keyspace: off the async workers.
        let pruning = store.clone();
        let outcome =
            tokio::task::spawn_blocking(move || pruning.prune_seen_events(chrono::Utc::now()))
                .await;
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot prune old webhook event ids; will retry")
            }
            Err(error) => {
                tracing::warn!(%error, "the webhook event id pruning task failed; will retry")
            }
        }
    }
}

/// SIGTERM (systemd) and SIGINT (a terminal), which both mean "stop".
struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    fn listen() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// Waits for either and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
