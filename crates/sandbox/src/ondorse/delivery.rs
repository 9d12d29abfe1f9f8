//! The sandbox's clock: scheduled submissions, reviews and webhook deliveries.
//!
//! One task owns a timer heap. Submissions and reviews run inline (they only
//! touch the in-memory state); each delivery runs in its own task, bounded by
//! a semaphore of `delivery_concurrency` permits, so API requests never wait
//! on webhooks. A failed delivery (non-2xx, error, or no answer within
//! `delivery_timeout`) is rescheduled after `retry_base * 2^attempt`, capped
//! at `retry_cap`, until `max_retries` retries are spent: at least once,
//! like Ondorse.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Shared;
use super::signature::{SIGNATURE_HEADER, signature_header};

/// How long the clock sleeps when nothing is scheduled (it is woken early
/// whenever something is).
const IDLE_TICK: Duration = Duration::from_secs(3600);

/// Something the clock does when its time comes.
pub(super) enum Job {
    /// The portal's client submits the form.
    Submit(String),
    /// Compliance reviews the application.
    Review(String),
    Deliver(Delivery),
}

/// One webhook on its way, possibly a retry.
pub(super) struct Delivery {
    pub(super) event_id: String,
    pub(super) body: Bytes,
    /// 0 for the first try.
    pub(super) attempt: u32,
}

struct Timer {
    due: Instant,
    /// Keeps jobs due at the same instant in scheduling order.
    sequence: u64,
    job: Job,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Timer) -> bool {
        (self.due, self.sequence) == (other.due, other.sequence)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Timer) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    // Reversed: `BinaryHeap` is a max-heap and the earliest timer goes first.
    fn cmp(&self, other: &Timer) -> CmpOrdering {
        (other.due, other.sequence).cmp(&(self.due, self.sequence))
    }
}

/// The heap of pending jobs and the bell that wakes the clock.
#[derive(Default)]
pub(super) struct Timers {
    heap: std::sync::Mutex<BinaryHeap<Timer>>,
    sequence: std::sync::atomic::AtomicU64,
    wake: tokio::sync::Notify,
}

impl Timers {
    pub(super) fn schedule(&self, delay: Duration, job: Job) {
        let timer = Timer {
            due: Instant::now() + delay,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            job,
        };
        self.heap.lock().expect("timer heap poisoned").push(timer);
        self.wake.notify_one();
    }

    /// Removes the jobs due by `now`; also returns when the next one is due.
    fn take_due(&self, now: Instant) -> (Vec<Job>, Option<Instant>) {
        let mut heap = self.heap.lock().expect("timer heap poisoned");
        let mut due = Vec::new();
        while heap.peek().is_some_and(|timer| timer.due <= now) {
            due.push(heap.pop().expect("peeked").job);
        }
        (due, heap.peek().map(|timer| timer.due))
    }
}

/// Runs until aborted (when the sandbox is dropped, which also aborts the
/// deliveries in flight, since they live in this task's `JoinSet`).
pub(super) async fn run_clock(shared: Arc<Shared>) {
    let mut in_flight = JoinSet::new();
    loop {
        let (due, next) = shared.timers.take_due(Instant::now());
        for job in due {
            match job {
                Job::Submit(portal_id) => {
                    shared.submit_portal(&portal_id);
                }
                Job::Review(application_id) => shared.automatic_review(&application_id),
                Job::Deliver(delivery) => {
                    in_flight.spawn(deliver(shared.clone(), delivery));
                }
            }
        }
        let next = next.unwrap_or_else(|| Instant::now() + IDLE_TICK);
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shared.timers.wake.notified() => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
}

/// Backoff before retry number `attempt + 1`: doubling from `base`, capped.
pub(super) fn retry_delay(base: Duration, cap: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt)).min(cap)
}

async fn deliver(shared: Arc<Shared>, delivery: Delivery) {
    let Ok(_permit) = shared.delivery_slots.clone().acquire_owned().await else {
        return;
    };
    let Some(url) = shared.webhook_url() else {
        tracing::debug!(event_id = %delivery.event_id, "sandbox ondorse has no webhook url; delivery dropped");
        shared
            .counters
            .deliveries_abandoned
            .fetch_add(1, Ordering::Relaxed);
        shared.finish_delivery();
        return;
    };
    shared
        .counters
        .deliveries_attempted
        .fetch_add(1, Ordering::Relaxed);
    let mut request = shared
        .http
        .post(&url)
        .timeout(shared.options.delivery_timeout)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(delivery.body.clone());
    if let Some(secret) = &shared.options.signing_secret {
        let now = chrono::Utc::now().timestamp();
        request = request.header(
            SIGNATURE_HEADER,
            signature_header(secret.as_bytes(), now, &delivery.body),
        );
    }
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status();
            // Drain the body so the connection goes back to the pool.
            let _ = response.bytes().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("http {status}"))
            }
        }
        Err(error) => Err(error.to_string()),
    };
    drop(_permit);

    match outcome {
        Ok(()) => {
            shared
                .counters
                .deliveries_succeeded
                .fetch_add(1, Ordering::Relaxed);
            shared.finish_delivery();
        }
        Err(error) if delivery.attempt >= shared.options.max_retries => {
            tracing::warn!(event_id = %delivery.event_id, attempts = delivery.attempt + 1, %error, "sandbox ondorse gave up on a webhook");
            shared
                .counters
                .deliveries_abandoned
                .fetch_add(1, Ordering::Relaxed);
            shared.finish_delivery();
        }
        Err(error) => {
            let delay = retry_delay(
                shared.options.retry_base,
                shared.options.retry_cap,
                delivery.attempt,
            );
            tracing::debug!(event_id = %delivery.event_id, attempt = delivery.attempt, %error, delay_ms = delay.as_millis() as u64, "sandbox ondorse will retry a webhook");
            shared.timers.schedule(
                delay,
                Job::Deliver(Delivery {
                    attempt: delivery.attempt + 1,
                    ..delivery
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_cap() {
        let base = Duration::from_secs(10);
        let cap = Duration::from_secs(4 * 3600);
        assert_eq!(retry_delay(base, cap, 0), Duration::from_secs(10));
        assert_eq!(retry_delay(base, cap, 2), Duration::from_secs(40));
        assert_eq!(retry_delay(base, cap, 20), cap);
        assert_eq!(retry_delay(base, cap, 200), cap);
    }
}
