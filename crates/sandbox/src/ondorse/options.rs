//! What a sandbox Ondorse is started with, and the counters it reports.

use std::time::Duration;

use serde::Serialize;

use crate::latency::LatencyProfile;

/// The real Ondorse's first retry delay; tests use milliseconds instead.
pub const ONDORSE_RETRY_BASE: Duration = Duration::from_secs(10);
/// The real Ondorse's longest retry delay.
pub const ONDORSE_RETRY_CAP: Duration = Duration::from_secs(4 * 3600);
/// The real Ondorse's number of retries (about 27 h with the delays above).
pub const ONDORSE_MAX_RETRIES: u32 = 15;
/// Default first retry delay: fast enough for tests to see several retries.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_millis(20);
/// Default retry cap: keeps a test's worst case within seconds.
pub const DEFAULT_RETRY_CAP: Duration = Duration::from_secs(1);
/// Default time a receiver has to answer one delivery.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Default parallel deliveries: enough for the benchmark, gentle on a
/// 2-core machine.
pub const DEFAULT_DELIVERY_CONCURRENCY: usize = 16;
/// Default share of automatic reviews that approve.
pub const DEFAULT_APPROVE_RATIO: f64 = 0.8;
/// Default seed: any fixed value makes runs repeatable.
pub const DEFAULT_SEED: u64 = 42;
/// Longest extra delay given to a first delivery when `reorder` is on:
/// long enough to overtake neighbours, short enough for tests.
pub const REORDER_WINDOW: Duration = Duration::from_millis(50);

/// How the sandbox behaves. `Default` is a well-behaved, fast Ondorse.
#[derive(Debug, Clone)]
pub struct OndorseSandboxOptions {
    /// The key clients must present.
    pub api_key: String,
    /// Header carrying the key (`Authorization`).
    pub auth_header: String,
    /// Prefix before the key (`Bearer`); empty expects the bare key.
    pub auth_scheme: String,
    /// Portal URLs are `{portal_base_url}/portals/{link}`.
    pub portal_base_url: String,
    /// Where events are delivered (can be set later).
    pub webhook_url: Option<String>,
    /// Signs deliveries with `Ondorse-Signature` when set.
    pub signing_secret: Option<String>,
    /// A portal is submitted by its client this long after creation
    /// (`None`: only when a test calls `submit_portal`).
    pub submit_after: Option<Duration>,
    /// A submitted application is reviewed this long after submission
    /// (`None`: only when a test calls `review`).
    pub review_after: Option<Duration>,
    /// Share of automatic reviews that approve (the rest reject).
    pub approve_ratio: f64,
    /// Seeds ids, decisions, risk levels, scores, duplicates and reordering.
    pub seed: u64,
    /// First delivery retry delay; doubles each time up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Retries after the first attempt before a delivery is abandoned.
    pub max_retries: u32,
    /// A delivery not answered within this is a failure, retried.
    pub delivery_timeout: Duration,
    /// Share of events delivered twice (same `event_id`).
    pub duplicate_ratio: f64,
    /// Delays each first delivery by a random time up to
    /// [`REORDER_WINDOW`], so events overtake each other.
    pub reorder: bool,
    /// Honour `Idempotency-Key` on `POST /api/portals`.
    pub honour_idempotency_key: bool,
    /// Deliveries in flight at once.
    pub delivery_concurrency: usize,
    /// How long portal POSTs and application GETs take (drawn from `seed`).
    pub latency: LatencyProfile,
}

impl Default for OndorseSandboxOptions {
    fn default() -> OndorseSandboxOptions {
        OndorseSandboxOptions {
            api_key: "sandbox-ondorse-api-key".to_owned(),
            auth_header: "Authorization".to_owned(),
            auth_scheme: "Bearer".to_owned(),
            portal_base_url: "https://collect.ondorse.co".to_owned(),
            webhook_url: None,
            signing_secret: None,
            submit_after: None,
            review_after: None,
            approve_ratio: DEFAULT_APPROVE_RATIO,
            seed: DEFAULT_SEED,
            retry_base: DEFAULT_RETRY_BASE,
            retry_cap: DEFAULT_RETRY_CAP,
            max_retries: ONDORSE_MAX_RETRIES,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            duplicate_ratio: 0.0,
            reorder: false,
            honour_idempotency_key: true,
            delivery_concurrency: DEFAULT_DELIVERY_CONCURRENCY,
            latency: LatencyProfile::Loopback,
        }
    }
}

/// What the sandbox has seen and done, for assertions and the demo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OndorseSandboxStats {
    /// Every API request, faults included.
    pub requests: u64,
    /// `POST /api/portals` that passed the faults and the key check.
    pub portal_posts: u64,
    pub portals_created: u64,
    /// Portal posts answered from an earlier `Idempotency-Key`.
    pub idempotent_replays: u64,
    pub application_gets: u64,
    /// Injected 5xx answers.
    pub failed_requests: u64,
    /// Injected 429 answers.
    pub rate_limited: u64,
    /// Requests refused for a missing or wrong key.
    pub unauthorized: u64,
    /// Portal answers dropped on purpose after the portal was written.
    pub dropped_responses: u64,
    pub events_emitted: u64,
    /// Events recorded but never delivered (suppressed, or no webhook URL).
    pub events_undelivered: u64,
    pub deliveries_attempted: u64,
    pub deliveries_succeeded: u64,
    /// Deliveries given up after `max_retries`.
    pub deliveries_abandoned: u64,
    /// Deliveries queued or waiting for a retry.
    pub deliveries_pending: u64,
}
