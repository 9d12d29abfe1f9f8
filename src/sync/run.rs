//! The engine loop: cron schedules (tokio-cron-scheduler) for poll and
//! reconcile, wake-ups for the inbox and the writer; the health of the
//! schedules is kept in [`super::schedules`].
//!
//! Cron jobs only signal; the work runs in the engine's own tasks, so a long
//! poll never piles up behind itself and every step stays callable without
//! the scheduler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::task::TaskTracker;

use super::schedules::{PollFailures, ScheduleHealth, Schedules};
use super::{Engine, SyncError, now};
use crate::config::ScheduleConfig;
use crate::memory;
use crate::shutdown::Shutdown;
use crate::store::InboxQueue;

/// How often the store's gauges are refreshed: the queues' depths are
/// counters, so this costs the same whatever their depth.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// How often freed memory goes back to the system while work goes on: a
/// trim walks the allocator's free lists (milliseconds), and a backfill frees
/// tens of MiB a minute.
const RELEASE_INTERVAL: Duration = Duration::from_secs(10);
/// How long the deferred-intent loop sleeps when no intent is parked: a
/// failed attempt wakes it sooner, and reconcile is the safety net.
const INTENTS_IDLE: Duration = Duration::from_secs(60);

/// A started engine: its schedules and its tasks.
pub struct RunningEngine {
    pub schedules: Arc<Schedules>,
    scheduler: JobScheduler,
    /// The loops, each spawned with the engine's [`Shutdown`]: they end
    /// after their current step once it is stopping, or at its cut-off.
    tasks: TaskTracker,
    shutdown: Shutdown,
}

impl RunningEngine {
    /// Stops taking work and waits for each task to finish its current
    /// step. Unbounded on its own: the caller bounds it and, past its
    /// deadline, cuts the shutdown off, which ends [`RunningEngine::finished`].
    pub async fn stop(&mut self) {
        self.shutdown.stop();
        if let Err(error) = self.scheduler.shutdown().await {
            tracing::warn!(%error, "the scheduler did not shut down cleanly");
        }
        self.finished().await;
    }

    /// Resolves once every task has ended (after a stop or the cut-off).
    pub async fn finished(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Engine {
    /// Starts the schedules and the loops. The first poll and reconcile run
    /// at once, so a restart catches up without waiting for a slot.
    pub async fn start(
        self: Arc<Self>,
        schedule: &ScheduleConfig,
        shutdown: Shutdown,
    ) -> anyhow::Result<RunningEngine> {
        let schedules = Arc::new(Schedules {
            poll: ScheduleHealth::new("poll", &schedule.poll, now())?,
            reconcile: ScheduleHealth::new("reconcile", &schedule.reconcile, now())?,
            poll_failures: PollFailures::default(),
        });
        let poll_due = Arc::new(Notify::new());
        let reconcile_due = Arc::new(Notify::new());
        let scheduler = JobScheduler::new().await?;
        for (expression, due) in [
            (&schedule.poll, &poll_due),
            (&schedule.reconcile, &reconcile_due),
        ] {
            let due = due.clone();
            let schedules = schedules.clone();
            let is_poll = Arc::ptr_eq(&due, &poll_due);
            scheduler
                .add(Job::new_async(expression.as_str(), move |_, _| {
                    let due = due.clone();
                    let schedules = schedules.clone();
                    Box::pin(async move {
                        let health = if is_poll {
                            &schedules.poll
                        } else {
                            &schedules.reconcile
                        };
                        health.fired(now());
                        due.notify_one();
                    })
                })?)
                .await?;
        }
        scheduler.start().await?;
        poll_due.notify_one();
        reconcile_due.notify_one();

        let tasks = TaskTracker::new();
        let engine = self.clone();
        let health = schedules.clone();
        shutdown.spawn(
            &tasks,
            on_signal(poll_due, shutdown.clone(), move || {
                let engine = engine.clone();
                let health = health.clone();
                async move {
                    let results = engine.poll_all().await;
                    health.poll_failures.record(&results, now());
                    let error = results.into_iter().find_map(|(mapping, result)| {
                        result.err().map(|error| format!("{mapping}: {error}"))
                    });
                    health.poll.finished(now(), error);
                }
            }),
        );
        let engine = self.clone();
        let health = schedules.clone();
        shutdown.spawn(
            &tasks,
            on_signal(reconcile_due, shutdown.clone(), move || {
                let engine = engine.clone();
                let health = health.clone();
                async move {
                    let result = engine.reconcile().await;
                    // A pause was logged once by the governor when it began.
                    if let Err(error) = &result
                        && !matches!(error, SyncError::Paused(_))
                    {
                        tracing::warn!(%error, "reconcile failed");
                    }
                    let error = result.err().map(|error| error.to_string());
                    health.reconcile.finished(now(), error);
                }
            }),
        );
        // The listener rings one bell; each queue has its own loop (and
        // head), so each gets its own wake-up.
        let webhooks_wake = Arc::new(Notify::new());
        let hints_wake = Arc::new(Notify::new());
        shutdown.spawn(
            &tasks,
            relay_wake(
                self.inbox_wake.clone(),
                [webhooks_wake.clone(), hints_wake.clone()],
                shutdown.clone(),
            ),
        );
        shutdown.spawn(
            &tasks,
            self.clone().webhook_worker(webhooks_wake, shutdown.clone()),
        );
        shutdown.spawn(
            &tasks,
            self.clone().hints_loop(hints_wake, shutdown.clone()),
        );
        shutdown.spawn(&tasks, self.clone().intents_loop(shutdown.clone()));
        shutdown.spawn(
            &tasks,
            self.clone().gauge_loop(schedules.clone(), shutdown.clone()),
        );
        shutdown.spawn(&tasks, self.clone().writer_loop(shutdown.clone()));
        Ok(RunningEngine {
            schedules,
            scheduler,
            tasks,
            shutdown,
        })
    }

    /// Works off the push hints in passes: the Accounts hinted meanwhile
    /// are read together, in one query per 500. Parked items wait for their
    /// retry time (skipped by each pass meanwhile), so a poison item never
    /// spins. (Webhooks stream: [`Engine::webhook_worker`].)
    async fn hints_loop(self: Arc<Self>, wake: Arc<Notify>, shutdown: Shutdown) {
        loop {
            match self.process_queue(InboxQueue::Hints).await {
                // Progress: look again at once.
                Ok(report) if report.progressed() => continue,
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "push hint processing failed"),
            }
            if wait_or_stop(&shutdown, self.settings.inbox_interval, Some(&wake)).await {
                return;
            }
        }
    }

    /// Retries parked intents when their time comes (or when an attempt
    /// failed), so portal creation resumes soon after Ondorse does,
    /// without waiting for reconcile.
    async fn intents_loop(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            let wait = match self.retry_intents().await {
                Ok(report) => report.next_retry.map_or(INTENTS_IDLE, |at| {
                    (at - now()).to_std().unwrap_or(Duration::ZERO)
                }),
                Err(error) => {
                    tracing::error!(%error, "retrying parked intents failed");
                    self.breakers.policy().settings().max_delay
                }
            };
            if wait_or_stop(
                &shutdown,
                wait.max(Duration::from_millis(10)),
                Some(&self.intents_deferred),
            )
            .await
            {
                return;
            }
        }
    }

    /// Refreshes the gauges that describe the store (queue depths, dead
    /// letters, cursors) and the schedules every [`GAUGE_INTERVAL`].
    async fn gauge_loop(self: Arc<Self>, schedules: Arc<Schedules>, shutdown: Shutdown) {
        let mut worked = false;
        let mut released = Instant::now();
        // When the connections the last burst used have closed.
        let mut settled_at = None;
        loop {
            let at = now();
            self.metrics.schedule_alive(
                schedules.poll.name,
                schedules.poll.missed_slot(at).is_none(),
            );
            self.metrics.schedule_alive(
                schedules.reconcile.name,
                schedules.reconcile.missed_slot(at).is_none(),
            );
            self.record_gauges();
            // What work freed goes back to the system instead of staying
            // resident in the allocator: when a burst is over, every
            // RELEASE_INTERVAL while one lasts, and once more when the
            // connections it used have closed. An idle daemon does not trim.
            let busy = self.store.inbox_depth() > 0 || self.store.pending_write_count() > 0;
            worked |= busy;
            if worked && (!busy || released.elapsed() >= RELEASE_INTERVAL) {
                memory::release_freed();
                released = Instant::now();
                worked = busy;
                if !busy {
                    settled_at = Some(released + memory::SETTLED_AFTER);
                }
            } else if !busy && settled_at.is_some_and(|at| Instant::now() >= at) {
                memory::release_freed();
                settled_at = None;
            }
            if wait_or_stop(&shutdown, GAUGE_INTERVAL, None).await {
                return;
            }
        }
    }

    fn record_gauges(&self) {
        let metrics = &self.metrics;
        let store = &self.store;
        metrics.queue_depths(
            store.inbox_depth(),
            store.pending_write_count() as u64,
            store.dead_letter_count() as u64,
        );
        for (label, queue) in [
            ("webhooks", InboxQueue::Webhooks),
            ("hints", InboxQueue::Hints),
        ] {
            metrics.parked(label, store.parked_inbox_count(queue));
        }
        match self.store.cursors() {
            Ok(cursors) => {
                for (mapping, cursor) in cursors {
                    metrics.cursor(&mapping, cursor.system_modstamp);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the cursors for metrics"),
        }
    }
}

/// Passes each ring of `bell` on to every one of `wakes`, until stopped.
async fn relay_wake<const N: usize>(
    bell: Arc<Notify>,
    wakes: [Arc<Notify>; N],
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = bell.notified() => wakes.iter().for_each(|wake| wake.notify_one()),
            () = shutdown.stopping() => return,
        }
    }
}

/// Runs `step` each time `due` is notified, until stopped.
async fn on_signal<F, Fut>(due: Arc<Notify>, shutdown: Shutdown, step: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = due.notified() => step().await,
            () = shutdown.stopping() => return,
        }
        if shutdown.is_stopping() {
            return;
        }
    }
}

/// Waits `timeout` (or a wake-up); true when the engine is stopping.
async fn wait_or_stop(shutdown: &Shutdown, timeout: Duration, wake: Option<&Notify>) -> bool {
    if shutdown.is_stopping() {
        return true;
    }
    let woken = async {
        match wake {
            Some(wake) => wake.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(timeout) => false,
        _ = woken => false,
        () = shutdown.stopping() => true,
    }
}
