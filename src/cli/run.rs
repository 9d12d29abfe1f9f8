//! `ondorse-bridge run`: the daemon, until SIGTERM or SIGINT; SIGHUP
//! reloads the mappings.

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::Failure;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::sync::EngineSettings;
use crate::systemd;

pub async fn run(config: Config) -> Result<(), Failure> {
    // Installed first: until then a SIGTERM would kill the process outright.
    let mut signals = StopSignals::listen()?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let mut daemon = Daemon::start(&config, EngineSettings::default()).await?;
    systemd::notify_ready();
    systemd::spawn_watchdog(daemon.schedules().clone(), daemon.shutdown().clone());
    let signal_name = loop {
        tokio::select! {
            name = signals.recv() => break name,
            error = daemon.listener_failed() => return Err(error.into()),
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the mappings");
                daemon.reload_mappings().await;
            }
        }
    };
    tracing::info!(signal = signal_name, "stopping: finishing work in flight");
    systemd::notify_stopping();
    daemon.stop().await?;
    Ok(())
}

/// SIGTERM (systemd) and SIGINT (a terminal), which both mean "stop".
pub(crate) struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    pub(crate) fn listen() -> anyhow::Result<StopSignals> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// Waits for either and names it.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
