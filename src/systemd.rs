//! The systemd notify protocol (`Type=notify`): READY once the daemon
//! serves, WATCHDOG pings while every schedule fires on time, STOPPING when
//! asked to stop. Outside systemd (`NOTIFY_SOCKET` unset) every call does
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::shutdown::Shutdown;
use crate::sync::Schedules;

/// Tells systemd the daemon is ready: call once the store is open, the
/// mappings are valid and the listeners are bound.
pub fn notify_ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Tells systemd the daemon is stopping, so it does not count the time
/// spent finishing work as a hang.
pub fn notify_stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing work in flight"),
    ]);
}

/// When systemd asks for watchdog pings (`WatchdogSec=`), pings at half the
/// interval (as sd_watchdog_enabled(3) advises) while the schedules are
/// alive; a stalled schedule stops the pings and systemd restarts us.
/// Only the process's own health counts: a refused login or failing polls
/// make `/readyz` 503, never a restart loop that cannot fix the other side.
/// The pings end once `shutdown` is stopping (systemd was told STOPPING).
/// Nothing is spawned when no watchdog is configured.
pub fn spawn_watchdog(schedules: Arc<Schedules>, shutdown: Shutdown) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let interval = interval / 2;
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
        let mut stalled = false;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.stopping() => return,
            }
            let alive = schedules.alive(chrono::Utc::now());
            if alive {
                send(&[NotifyState::Watchdog]);
            } else if !stalled {
                tracing::error!(
                    "a schedule missed its slot: watchdog pings stop, systemd will restart the daemon"
                );
            }
            stalled = !alive;
        }
    });
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}
