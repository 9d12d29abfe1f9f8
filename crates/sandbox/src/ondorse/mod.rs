//! Sandbox Ondorse: portals, applications, reviews and webhook delivery, faults.
//!
//! A real HTTP server (axum) on `127.0.0.1:0` that serves the Ondorse API as
//! Ondorse documents it, keeps everything in memory and is fast enough for
//! the benchmark (tens of thousands of portals and webhooks). Tests drive it
//! through [`OndorseSandbox`]: they play the portal's client
//! ([`OndorseSandbox::submit_portal`]) and the compliance team
//! ([`OndorseSandbox::review`]), flip faults and read what it holds.
//!
//! Choices where the contract is silent:
//! - an `Idempotency-Key` reused with a *different* body answers 422 with a
//!   `detail` item at `loc: ["header", "Idempotency-Key"]`; the same body
//!   replays the first answer (201, `Idempotent-Replayed: true`) and creates
//!   nothing;
//! - injected 500s carry `{"detail": ...}`, other injected 5xx an empty
//!   body (as a gateway would answer);
//! - a portal without `type` onboards a business;
//! - closing a collect ([`OndorseSandbox::close_collect`]) takes `portals`
//!   off the application and raises `collect.closed`;
//! - events raised while no webhook URL is set, or while webhooks are
//!   suppressed, are recorded (see [`OndorseSandbox::events`]) but never
//!   delivered;
//! - while "down", every request answers 503 with an empty body (a
//!   gateway in front of a stopped service); a throttle on portal creation
//!   answers 429 with its `Retry-After` on `POST /api/portals` alone;
//! - `POST /api/portals` are counted per `Idempotency-Key`, with the keys
//!   that ever had two requests in flight at once;
//! - under a latency profile ([`OndorseSandboxOptions::latency`]), a route
//!   waits its draw before doing anything, after the fault guard.
//!
//! Layout: `options` (what it starts with, what it counts), `api` (routes
//! and the fault guard), `faults` (the switches), `state` (the records),
//! `delivery` (the clock: scheduled submissions, reviews, webhook
//! deliveries with retries), `signature` (webhook signing),
//! `connection` (dropping a connection without answering).

mod api;
mod connection;
mod delivery;
mod faults;
mod options;
mod signature;
mod state;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinHandle;

pub use self::options::{
    DEFAULT_APPROVE_RATIO, DEFAULT_DELIVERY_CONCURRENCY, DEFAULT_DELIVERY_TIMEOUT,
    DEFAULT_RETRY_BASE, DEFAULT_RETRY_CAP, DEFAULT_SEED, ONDORSE_MAX_RETRIES, ONDORSE_RETRY_BASE,
    ONDORSE_RETRY_CAP, OndorseSandboxOptions, OndorseSandboxStats, REORDER_WINDOW,
};

use self::connection::{ConnectionHandle, KillableListener};
use self::delivery::{Delivery, Job, Timers};
use self::faults::Faults;
use self::state::{PortalOutcome, State};
use super::latency::Latency;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    portal_posts: AtomicU64,
    portals_created: AtomicU64,
    idempotent_replays: AtomicU64,
    application_gets: AtomicU64,
    failed_requests: AtomicU64,
    rate_limited: AtomicU64,
    unauthorized: AtomicU64,
    dropped_responses: AtomicU64,
    events_emitted: AtomicU64,
    events_undelivered: AtomicU64,
    deliveries_attempted: AtomicU64,
    deliveries_succeeded: AtomicU64,
    deliveries_abandoned: AtomicU64,
    deliveries_pending: AtomicU64,
}

/// `POST /api/portals` per `Idempotency-Key`: how many arrived, how many
/// are in flight, and whether two ever overlapped.
#[derive(Default)]
struct PortalKeys {
    posts: HashMap<String, u64>,
    in_flight: HashMap<String, u32>,
    /// Keys that had a POST arrive while another with the same key was in
    /// flight.
    overlapping: HashSet<String>,
    /// POSTs in flight now, whatever their key, and the most ever at once.
    all_in_flight: u32,
    most_in_flight: u32,
}

/// API requests of any kind in flight now, and the most ever at once.
#[derive(Default)]
struct RequestsInFlight {
    now: AtomicU64,
    most: AtomicU64,
}

impl Shared {
    /// Marks an API request in flight until the guard drops.
    fn request_started(self: &Arc<Self>) -> RequestGuard {
        let requests = &self.requests_in_flight;
        let now = requests.now.fetch_add(1, Ordering::AcqRel) + 1;
        requests.most.fetch_max(now, Ordering::AcqRel);
        RequestGuard {
            shared: self.clone(),
        }
    }
}

/// An API request in flight; done when dropped (answered or cut off).
struct RequestGuard {
    shared: Arc<Shared>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.shared
            .requests_in_flight
            .now
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Marks a portal POST with `key` in flight until the guard drops.
    fn portal_post_started(self: &Arc<Self>, key: String) -> PortalPostGuard {
        let mut keys = self.portal_keys.lock().expect("portal keys poisoned");
        *keys.posts.entry(key.clone()).or_default() += 1;
        let in_flight = keys.in_flight.entry(key.clone()).or_default();
        *in_flight += 1;
        if *in_flight > 1 {
            keys.overlapping.insert(key.clone());
        }
        keys.all_in_flight += 1;
        keys.most_in_flight = keys.most_in_flight.max(keys.all_in_flight);
        PortalPostGuard {
            shared: self.clone(),
            key,
        }
    }
}

/// A portal POST in flight; done when dropped (answered or cut off).
struct PortalPostGuard {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for PortalPostGuard {
    fn drop(&mut self) {
        let mut keys = self
            .shared
            .portal_keys
            .lock()
            .expect("portal keys poisoned");
        if let Some(in_flight) = keys.in_flight.get_mut(&self.key) {
            *in_flight = in_flight.saturating_sub(1);
        }
        keys.all_in_flight = keys.all_in_flight.saturating_sub(1);
    }
}

/// Everything the server, the clock and the handle share.
struct Shared {
    options: OndorseSandboxOptions,
    /// The `auth_header` value a client must send.
    expected_auth: String,
    webhook_url: Mutex<Option<String>>,
    state: Mutex<State>,
    faults: Faults,
    /// The latency profile's draws, waited by each route.
    latency: Latency,
    counters: Counters,
    portal_keys: Mutex<PortalKeys>,
    requests_in_flight: RequestsInFlight,
    timers: Timers,
    /// Client for webhook deliveries (its own pool).
    http: reqwest::Client,
    delivery_slots: Arc<Semaphore>,
    /// Rung when `deliveries_pending` drops to zero.
    idle: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sandbox ondorse state poisoned")
    }

    fn webhook_url(&self) -> Option<String> {
        self.webhook_url
            .lock()
            .expect("webhook url poisoned")
            .clone()
    }

    fn create_portal(&self, body: Map<String, Value>, key: Option<String>) -> PortalOutcome {
        let outcome = self
            .lock()
            .create_portal(body, key, &self.options.portal_base_url);
        match &outcome {
            PortalOutcome::Created(portal) => {
                self.counters
                    .portals_created
                    .fetch_add(1, Ordering::Relaxed);
                if let (Some(delay), Some(id)) = (self.options.submit_after, portal["id"].as_str())
                {
                    self.timers.schedule(delay, Job::Submit(id.to_owned()));
                }
            }
            PortalOutcome::Replayed(_) => {
                self.counters
                    .idempotent_replays
                    .fetch_add(1, Ordering::Relaxed);
            }
            PortalOutcome::Conflict => {}
        }
        outcome
    }

    fn application(&self, id: &str) -> Option<Value> {
        self.lock().application(id)
    }

    fn submit_portal(&self, portal_id: &str) -> Option<String> {
        let mut state = self.lock();
        let (application_id, new) = state.submit_portal(portal_id)?;
        if new {
            let created = state.event("application.created", &application_id);
            let submitted = state.event("application.submitted", &application_id);
            self.dispatch(&mut state, created);
            self.dispatch(&mut state, submitted);
            drop(state);
            if let Some(delay) = self.options.review_after {
                self.timers
                    .schedule(delay, Job::Review(application_id.clone()));
            }
        }
        Some(application_id)
    }

    fn automatic_review(&self, application_id: &str) {
        let verdict = self.lock().verdict(self.options.approve_ratio);
        self.review(
            application_id,
            verdict.decision,
            verdict.risk_level,
            verdict.risk_score,
        );
    }

    fn review(
        &self,
        application_id: &str,
        decision: &str,
        risk_level: i64,
        risk_score: Option<f64>,
    ) {
        let mut state = self.lock();
        if state.review(application_id, decision, risk_level, risk_score) {
            let event = state.event("application.review_updated", application_id);
            self.dispatch(&mut state, event);
        }
    }

    fn open_collect(&self, application_id: &str) -> Option<String> {
        let mut state = self.lock();
        let link = state.open_collect(application_id, &self.options.portal_base_url)?;
        let event = state.event("collect.opened", application_id);
        self.dispatch(&mut state, event);
        Some(link)
    }

    fn close_collect(&self, application_id: &str) -> bool {
        let mut state = self.lock();
        if !state.close_collect(application_id) {
            return false;
        }
        let event = state.event("collect.closed", application_id);
        self.dispatch(&mut state, event);
        true
    }

    fn send_event(&self, event_type: &str, application_id: &str) -> String {
        let mut state = self.lock();
        let event = state.event(event_type, application_id);
        let event_id = event["event_id"].as_str().unwrap_or_default().to_owned();
        self.dispatch(&mut state, event);
        event_id
    }

    /// Queues an event's deliveries (one, or two for a duplicate), unless
    /// webhooks are suppressed or there is nowhere to send them.
    fn dispatch(&self, state: &mut State, event: Value) {
        self.counters.events_emitted.fetch_add(1, Ordering::Relaxed);
        let event_id = event["event_id"].as_str().unwrap_or_default().to_owned();
        if self.faults.suppress_webhooks.load(Ordering::Acquire) || self.webhook_url().is_none() {
            self.counters
                .events_undelivered
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%event_id, "sandbox ondorse recorded an event it will not deliver");
            return;
        }
        let body = Bytes::from(serde_json::to_vec(&event).expect("json values serialise"));
        let copies = if state.random_ratio() < self.options.duplicate_ratio {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.options.reorder {
                REORDER_WINDOW.mul_f64(state.random_ratio())
            } else {
                Duration::ZERO
            };
            self.counters
                .deliveries_pending
                .fetch_add(1, Ordering::AcqRel);
            self.timers.schedule(
                delay,
                Job::Deliver(Delivery {
                    event_id: event_id.clone(),
                    body: body.clone(),
                    attempt: 0,
                }),
            );
        }
    }

    /// A delivery is over (delivered or abandoned).
    fn finish_delivery(&self) {
        if self
            .counters
            .deliveries_pending
            .fetch_sub(1, Ordering::AcqRel)
            == 1
        {
            self.idle.notify_waiters();
        }
    }
}

/// A running sandbox Ondorse. Dropping it stops the server, the clock and
/// every delivery in flight.
pub struct OndorseSandbox {
    shared: Arc<Shared>,
    address: std::net::SocketAddr,
    clock: JoinHandle<()>,
    /// Dropping the sender starts the server's graceful shutdown.
    _shutdown: oneshot::Sender<()>,
}

impl Drop for OndorseSandbox {
    fn drop(&mut self) {
        self.clock.abort();
    }
}

impl OndorseSandbox {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(options: OndorseSandboxOptions) -> std::io::Result<OndorseSandbox> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(std::io::Error::other)?;
        let scheme = options.auth_scheme.trim();
        let expected_auth = if scheme.is_empty() {
            options.api_key.clone()
        } else {
            format!("{scheme} {}", options.api_key)
        };
        let shared = Arc::new(Shared {
            expected_auth,
            webhook_url: Mutex::new(options.webhook_url.clone()),
            state: Mutex::new(State::new(options.seed)),
            faults: Faults::default(),
            latency: Latency::new(options.latency, options.seed),
            counters: Counters::default(),
            portal_keys: Mutex::new(PortalKeys::default()),
            requests_in_flight: RequestsInFlight::default(),
            timers: Timers::default(),
            http,
            delivery_slots: Arc::new(Semaphore::new(options.delivery_concurrency.max(1))),
            idle: Notify::new(),
            options,
        });

        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let app =
            api::router(shared.clone()).into_make_service_with_connect_info::<ConnectionHandle>();
        tokio::spawn(async move {
            let served = axum::serve(KillableListener(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown_signal.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "sandbox ondorse server stopped");
            }
        });
        let clock = tokio::spawn(delivery::run_clock(shared.clone()));
        tracing::debug!(%address, "sandbox ondorse listening");
        Ok(OndorseSandbox {
            shared,
            address,
            clock,
            _shutdown: shutdown,
        })
    }

    /// `http://127.0.0.1:PORT` (API paths are under `/api/`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The options it was started with.
    pub fn options(&self) -> &OndorseSandboxOptions {
        &self.shared.options
    }

    /// Where later events go; `None` stops delivering new events.
    pub fn set_webhook_url(&self, url: Option<String>) {
        *self
            .shared
            .webhook_url
            .lock()
            .expect("webhook url poisoned") = url;
    }

    /// Every portal as stored: the answer's fields plus every request key.
    pub fn portals(&self) -> Vec<Value> {
        self.shared.lock().portals()
    }

    pub fn portal(&self, id: &str) -> Option<Value> {
        self.shared.lock().portal(id)
    }

    pub fn applications(&self) -> Vec<Value> {
        self.shared.lock().applications()
    }

    pub fn application(&self, id: &str) -> Option<Value> {
        self.shared.application(id)
    }

    /// Every event raised so far, as its envelope, delivered or not.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events()
    }

    /// The portal's client submits: creates the application (its
    /// `custom_fields` are the portal's `default_custom_fields`) and raises
    /// `application.created` then `application.submitted`. A second call
    /// returns the same application and raises nothing. `None` for an
    /// unknown portal.
    pub fn submit_portal(&self, portal_id: &str) -> Option<String> {
        self.shared.submit_portal(portal_id)
    }

    /// Compliance decides: sets `status_review`, `risk_level`, `risk_score`,
    /// `status_execution: "done"`, `updated_at`; raises
    /// `application.review_updated`. Unknown ids are ignored.
    pub fn review(
        &self,
        application_id: &str,
        decision: &str,
        risk_level: i64,
        risk_score: Option<f64>,
    ) {
        self.shared
            .review(application_id, decision, risk_level, risk_score);
    }

    /// Opens a collect portal on the application (`portals.link`), raises
    /// `collect.opened`; returns the link, `None` for an unknown id.
    pub fn open_collect(&self, application_id: &str) -> Option<String> {
        self.shared.open_collect(application_id)
    }

    /// The applicant sends the requested documents: the collect portal
    /// closes (`portals` leaves the application) and `collect.closed` is
    /// raised; the case is back in review. `false` (nothing raised) for an
    /// unknown application or one with no open collect.
    pub fn close_collect(&self, application_id: &str) -> bool {
        self.shared.close_collect(application_id)
    }

    /// Raises any event type (unknown ones included) about an application;
    /// returns its `event_id`.
    pub fn send_event(&self, event_type: &str, application_id: &str) -> String {
        self.shared.send_event(event_type, application_id)
    }

    /// How many `POST /api/portals` arrived per `Idempotency-Key` (faults
    /// included).
    pub fn portal_posts_by_key(&self) -> HashMap<String, u64> {
        self.shared
            .portal_keys
            .lock()
            .expect("portal keys poisoned")
            .posts
            .clone()
    }

    /// The most `POST /api/portals` ever in flight at once, any keys,
    /// from arrival to answer.
    pub fn most_portal_posts_in_flight(&self) -> u32 {
        self.shared
            .portal_keys
            .lock()
            .expect("portal keys poisoned")
            .most_in_flight
    }

    /// The most API requests (portal POSTs and application GETs alike)
    /// ever in flight at once, from arrival to answer.
    pub fn most_requests_in_flight(&self) -> u64 {
        self.shared.requests_in_flight.most.load(Ordering::Acquire)
    }

    /// The keys that had two `POST /api/portals` in flight at once.
    pub fn overlapping_portal_keys(&self) -> HashSet<String> {
        self.shared
            .portal_keys
            .lock()
            .expect("portal keys poisoned")
            .overlapping
            .clone()
    }

    pub fn stats(&self) -> OndorseSandboxStats {
        let counters = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Acquire);
        OndorseSandboxStats {
            requests: read(&counters.requests),
            portal_posts: read(&counters.portal_posts),
            portals_created: read(&counters.portals_created),
            idempotent_replays: read(&counters.idempotent_replays),
            application_gets: read(&counters.application_gets),
            failed_requests: read(&counters.failed_requests),
            rate_limited: read(&counters.rate_limited),
            unauthorized: read(&counters.unauthorized),
            dropped_responses: read(&counters.dropped_responses),
            events_emitted: read(&counters.events_emitted),
            events_undelivered: read(&counters.events_undelivered),
            deliveries_attempted: read(&counters.deliveries_attempted),
            deliveries_succeeded: read(&counters.deliveries_succeeded),
            deliveries_abandoned: read(&counters.deliveries_abandoned),
            deliveries_pending: read(&counters.deliveries_pending),
        }
    }

    /// Waits until no delivery is queued or waiting for a retry; `false`
    /// if that did not happen within `deadline`.
    pub async fn wait_deliveries_idle(&self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        let pending = || {
            self.shared
                .counters
                .deliveries_pending
                .load(Ordering::Acquire)
        };
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pending() == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return pending() == 0;
            }
        }
    }
}
