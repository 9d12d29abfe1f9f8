//! Fault switches: flipped by tests through the handle, read by the API guard.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};

use super::OndorseSandbox;

/// Fault switches, flipped by tests, read by the API guard.
#[derive(Default)]
pub(super) struct Faults {
    pub(super) failures_left: AtomicUsize,
    pub(super) failure_status: AtomicU16,
    pub(super) rate_limits_left: AtomicUsize,
    pub(super) rate_limit_retry_after: Mutex<Option<Duration>>,
    pub(super) latency_micros: AtomicU64,
    pub(super) dropped_portal_responses_left: AtomicUsize,
    pub(super) suppress_webhooks: AtomicBool,
    /// Every API request answers 503 while on (Ondorse down).
    pub(super) down: AtomicBool,
    /// `POST /api/portals` answers 429 with this `Retry-After` while set.
    pub(super) portal_throttle: Mutex<Option<Duration>>,
    /// `GET /api/applications/{id}` answers this status for these ids.
    pub(super) refused_applications: Mutex<HashMap<String, u16>>,
    /// `GET /api/applications/{id}` for these ids reads the application,
    /// then waits this long before answering.
    pub(super) slow_applications: Mutex<HashMap<String, Duration>>,
    /// `POST /api/portals` whose `default_custom_fields` hold one of these
    /// (key, value) pairs answers 422: data Ondorse refuses for good.
    pub(super) refused_portal_values: Mutex<Vec<(String, Value)>>,
    /// Top-level keys left out of `POST /api/portals` answers (the portal
    /// keeps them): an answer the contract allows without `url`.
    pub(super) portal_answer_omits: Mutex<Vec<String>>,
}

/// Takes one from a countdown; `false` when it is already zero.
fn take_one(countdown: &AtomicUsize) -> bool {
    countdown
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

impl Faults {
    pub(super) fn take_failure(&self) -> Option<u16> {
        take_one(&self.failures_left).then(|| self.failure_status.load(Ordering::Acquire))
    }

    /// `Some(retry_after)` when this request must be answered 429.
    pub(super) fn take_rate_limit(&self) -> Option<Option<Duration>> {
        take_one(&self.rate_limits_left).then(|| {
            *self
                .rate_limit_retry_after
                .lock()
                .expect("fault switch poisoned")
        })
    }

    /// `answer` without the keys portal answers leave out now.
    pub(super) fn portal_answer(&self, mut answer: Value) -> Value {
        if let Value::Object(members) = &mut answer {
            for key in self
                .portal_answer_omits
                .lock()
                .expect("fault switch poisoned")
                .iter()
            {
                members.remove(key);
            }
        }
        answer
    }

    pub(super) fn take_dropped_portal_response(&self) -> bool {
        take_one(&self.dropped_portal_responses_left)
    }

    pub(super) fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_micros.load(Ordering::Relaxed))
    }

    pub(super) fn portal_throttle(&self) -> Option<Duration> {
        *self.portal_throttle.lock().expect("fault switch poisoned")
    }

    /// The first refused (key, value) the portal body's custom fields hold.
    pub(super) fn refused_portal_value(&self, body: &Map<String, Value>) -> Option<String> {
        let fields = body.get("default_custom_fields")?.as_object()?;
        self.refused_portal_values
            .lock()
            .expect("fault switch poisoned")
            .iter()
            .find(|(key, value)| fields.get(key) == Some(value))
            .map(|(key, _)| key.clone())
    }

    pub(super) fn slow_application(&self, id: &str) -> Option<Duration> {
        self.slow_applications
            .lock()
            .expect("fault switch poisoned")
            .get(id)
            .copied()
    }

    pub(super) fn refused_application(&self, id: &str) -> Option<u16> {
        self.refused_applications
            .lock()
            .expect("fault switch poisoned")
            .get(id)
            .copied()
    }
}

impl OndorseSandbox {
    /// The next `count` API requests answer `status` (a 5xx).
    pub fn fail_next_requests(&self, count: usize, status: u16) {
        let faults = &self.shared.faults;
        faults.failure_status.store(status, Ordering::Release);
        faults.failures_left.store(count, Ordering::Release);
    }

    /// The next `count` API requests answer 429, with `Retry-After` in
    /// whole seconds (rounded up) when given.
    pub fn rate_limit_next_requests(&self, count: usize, retry_after: Option<Duration>) {
        let faults = &self.shared.faults;
        *faults
            .rate_limit_retry_after
            .lock()
            .expect("fault switch poisoned") = retry_after;
        faults.rate_limits_left.store(count, Ordering::Release);
    }

    /// While on, every API request answers 503 with an empty body, as a
    /// gateway in front of a stopped service would.
    pub fn set_down(&self, down: bool) {
        self.shared.faults.down.store(down, Ordering::Release);
    }

    /// While `Some`, `POST /api/portals` answers 429 with this
    /// `Retry-After` (whole seconds, rounded up); applications are served.
    pub fn throttle_portals(&self, retry_after: Option<Duration>) {
        *self
            .shared
            .faults
            .portal_throttle
            .lock()
            .expect("fault switch poisoned") = retry_after;
    }

    /// `GET /api/applications/{id}` answers `status` (a 4xx with a
    /// `detail`) for this id from now on; `None` serves it again.
    pub fn refuse_application(&self, id: &str, status: Option<u16>) {
        let mut refused = self
            .shared
            .faults
            .refused_applications
            .lock()
            .expect("fault switch poisoned");
        match status {
            Some(status) => refused.insert(id.to_owned(), status),
            None => refused.remove(id),
        };
    }

    /// `GET /api/applications/{id}` for this id reads the application when
    /// the request arrives, then waits `delay` before answering, so the
    /// answer shows the application as it was when read (a slow server or
    /// network); the other applications answer at their usual pace. `None`
    /// makes it quick again.
    pub fn slow_application(&self, id: &str, delay: Option<Duration>) {
        let mut slow = self
            .shared
            .faults
            .slow_applications
            .lock()
            .expect("fault switch poisoned");
        match delay {
            Some(delay) => slow.insert(id.to_owned(), delay),
            None => slow.remove(id),
        };
    }

    /// From now on, `POST /api/portals` whose `default_custom_fields[key]`
    /// is `value` answers 422 at that field (Ondorse refuses the data) and
    /// creates nothing.
    pub fn refuse_portals_with(&self, key: &str, value: Value) {
        self.shared
            .faults
            .refused_portal_values
            .lock()
            .expect("fault switch poisoned")
            .push((key.to_owned(), value));
    }

    /// From now on, `POST /api/portals` answers leave out these top-level
    /// keys (say `url` and `link`); the portal is created and stored whole.
    /// An empty list answers in full again.
    pub fn omit_from_portal_answers(&self, keys: &[&str]) {
        *self
            .shared
            .faults
            .portal_answer_omits
            .lock()
            .expect("fault switch poisoned") = keys.iter().map(|key| (*key).to_owned()).collect();
    }

    /// Every API request waits this long before being handled.
    pub fn set_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared
            .faults
            .latency_micros
            .store(micros, Ordering::Relaxed);
    }

    /// The next `count` `POST /api/portals` do their write, then drop the
    /// connection without answering.
    pub fn drop_next_portal_responses(&self, count: usize) {
        self.shared
            .faults
            .dropped_portal_responses_left
            .store(count, Ordering::Release);
    }

    /// While on, events are recorded as never delivered (not queued).
    pub fn suppress_webhooks(&self, suppress: bool) {
        self.shared
            .faults
            .suppress_webhooks
            .store(suppress, Ordering::Release);
    }
}
