//! The process-wide Prometheus registry and typed recorders; the list of
//! metrics is in the [module documentation](crate::telemetry).
//!
//! Labels are built here from fixed sets: callers hand in enums or the
//! strings they already have (a request path, an event type), and anything
//! outside the known set becomes `other`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::ondorse::webhook::EventType;
use crate::salesforce::model::ApiUsage;

/// The `Content-Type` of [`render_metrics`]: Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric name starts with this.
const PREFIX: &str = "ondorse_bridge";

/// Request duration buckets, in seconds: Prometheus's usual steps from a
/// fast Ondorse answer (milliseconds) to a 2,000-row query page or a
/// 200-record update running the org's triggers (tens of seconds).
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The API a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Salesforce,
    Ondorse,
}

impl Api {
    fn as_str(self) -> &'static str {
        match self {
            Api::Salesforce => "salesforce",
            Api::Ondorse => "ondorse",
        }
    }

    /// The bounded `endpoint` label of a request: for Salesforce, from the
    /// request line (`GET /services/data/v62.0/query`) or `token`; for
    /// Ondorse, from the client's name of the answer (`portal`).
    fn endpoint(self, request: &str) -> &'static str {
        match self {
            Api::Salesforce => {
                let path = request.split_whitespace().last().unwrap_or_default();
                let path = path.split('?').next().unwrap_or_default();
                if request == "token" || path.ends_with("/oauth2/token") {
                    "token"
                } else if path.contains("/query/") || path.contains("/queryAll/") {
                    "query_more"
                } else if path.ends_with("/query") || path.ends_with("/queryAll") {
                    "query"
                } else if path.ends_with("/describe") {
                    "describe"
                } else if path.contains("/composite/") {
                    "composite"
                } else if path.ends_with("/limits") {
                    "limits"
                } else if request.starts_with("PATCH ") && path.contains("/sobjects/") {
                    // The writer's single-record fallback; the Id stays out.
                    "record"
                } else {
                    "other"
                }
            }
            Api::Ondorse => match request {
                "portal" => "portal",
                "application" => "application",
                _ => "other",
            },
        }
    }
}

/// How a portal creation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalResult {
    Created,
    /// The intent stays pending and is tried again.
    Failed,
}

/// How a write-back was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritebackResult {
    Written,
    Retried,
    DeadLettered,
    /// Refused before sending (a value the field cannot take): a dead letter.
    Refused,
}

/// The public endpoint a delivery came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookSource {
    Ondorse,
    Salesforce,
}

impl WebhookSource {
    fn as_str(self) -> &'static str {
        match self {
            WebhookSource::Ondorse => "ondorse",
            WebhookSource::Salesforce => "salesforce",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MappingLabels {
    mapping: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MappingResultLabels {
    mapping: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    source: &'static str,
    event_type: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    source: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    endpoint: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    api: &'static str,
    endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkLabels {
    work: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabels {
    schedule: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

/// A gauge holding a fraction or a timestamp.
type FloatGauge = Gauge<f64, AtomicU64>;

/// The reasons of `ondorse_bridge_salesforce_paused`, all always present.
pub(crate) const PAUSE_REASONS: [&str; 3] = ["over_budget", "near_limit", "limit_exceeded"];

/// Every metric of the process. Obtain it with [`metrics`].
pub struct Metrics {
    registry: Registry,
    accounts_seen: Family<MappingLabels, Counter>,
    portals: Family<MappingResultLabels, Counter>,
    writebacks: Family<MappingResultLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    webhooks_rejected: Family<RejectionLabels, Counter>,
    api_requests: Family<RequestLabels, Counter>,
    api_request_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    api_usage_ratio: FloatGauge,
    api_budget_ratio: FloatGauge,
    paused: Family<ReasonLabels, Gauge>,
    deferred: Family<WorkLabels, Counter>,
    queue_depth: Family<QueueLabels, Gauge>,
    parked: Family<QueueLabels, Gauge>,
    dead_letters: Gauge,
    cursor_lag: Family<MappingLabels, FloatGauge>,
    last_poll: Family<MappingLabels, FloatGauge>,
    schedule_alive: Family<ScheduleLabels, Gauge>,
    /// Cursor positions per mapping: the lag is computed when rendered, so
    /// it is right at scrape time, not at the last poll.
    cursors: Mutex<BTreeMap<String, DateTime<Utc>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::register);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Every metric in the Prometheus text exposition format
/// ([`METRICS_CONTENT_TYPE`]), for `GET /metrics`.
pub fn render_metrics() -> String {
    metrics().render()
}

impl Metrics {
    fn register() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let metrics = Metrics {
            accounts_seen: Family::default(),
            portals: Family::default(),
            writebacks: Family::default(),
            webhooks: Family::default(),
            webhooks_rejected: Family::default(),
            api_requests: Family::default(),
            api_request_duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            api_usage_ratio: FloatGauge::default(),
            api_budget_ratio: FloatGauge::default(),
            paused: Family::default(),
            deferred: Family::default(),
            queue_depth: Family::default(),
            parked: Family::default(),
            dead_letters: Gauge::default(),
            cursor_lag: Family::default(),
            last_poll: Family::default(),
            schedule_alive: Family::default(),
            cursors: Mutex::new(BTreeMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "accounts_seen",
            "Accounts read by intake (polls, push hints, resync), per mapping",
            metrics.accounts_seen.clone(),
        );
        registry.register(
            "portals",
            "Ondorse portal creations per mapping, by result (created, failed)",
            metrics.portals.clone(),
        );
        registry.register(
            "writebacks",
            "Salesforce Account write-backs per mapping, by result (written, retried, dead_lettered, refused)",
            metrics.writebacks.clone(),
        );
        registry.register(
            "webhooks",
            "Webhook deliveries accepted, by source, event type and result (stored, duplicate)",
            metrics.webhooks.clone(),
        );
        registry.register(
            "webhooks_rejected",
            "Webhook deliveries refused, by source and reason",
            metrics.webhooks_rejected.clone(),
        );
        registry.register(
            "api_requests",
            "HTTP requests to Salesforce and Ondorse, by endpoint and status class (error: no answer)",
            metrics.api_requests.clone(),
        );
        registry.register_with_unit(
            "api_request_duration",
            "Time until Salesforce or Ondorse answered a request's status line",
            Unit::Seconds,
            metrics.api_request_duration.clone(),
        );
        registry.register(
            "salesforce_api_usage_ratio",
            "Share of the org's rolling 24-hour API allowance used, from the last answer",
            metrics.api_usage_ratio.clone(),
        );
        registry.register(
            "salesforce_api_budget_ratio",
            "salesforce.api_budget_percent as a ratio: above it polling and reconcile pause",
            metrics.api_budget_ratio.clone(),
        );
        registry.register(
            "salesforce_paused",
            "1 while the API budget governor holds a pause of this reason (over_budget, near_limit, limit_exceeded)",
            metrics.paused.clone(),
        );
        registry.register(
            "salesforce_deferred",
            "Steps the API budget governor turned away, by kind of work",
            metrics.deferred.clone(),
        );
        registry.register(
            "queue_depth",
            "Items waiting: the webhook inbox and Accounts with a write-back pending",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "parked",
            "Items that keep failing, parked with a growing retry delay, per queue (webhooks, hints, intents)",
            metrics.parked.clone(),
        );
        registry.register(
            "dead_letters",
            "Dead letters waiting for a human",
            metrics.dead_letters.clone(),
        );
        registry.register_with_unit(
            "cursor_lag",
            "Now minus the SystemModstamp of the mapping's intake cursor",
            Unit::Seconds,
            metrics.cursor_lag.clone(),
        );
        registry.register_with_unit(
            "last_poll_timestamp",
            "Unix time of the mapping's last successful poll",
            Unit::Seconds,
            metrics.last_poll.clone(),
        );
        registry.register(
            "schedule_alive",
            "1 while the schedule fires on time, 0 once a slot passed without firing",
            metrics.schedule_alive.clone(),
        );
        for reason in PAUSE_REASONS {
            metrics
                .paused
                .get_or_create(&ReasonLabels { reason })
                .set(0);
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    fn render(&self) -> String {
        let now = Utc::now();
        for (mapping, cursor) in self
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let lag = (now - *cursor).num_milliseconds() as f64 / 1000.0;
            self.cursor_lag
                .get_or_create(&MappingLabels {
                    mapping: mapping.clone(),
                })
                .set(lag.max(0.0));
        }
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a
        // bug in a label, and half a page is better than none for a scrape.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(%error, "metrics could not be fully rendered");
        }
        text
    }

    /// Accounts read by one intake page.
    pub fn accounts_seen(&self, mapping: &str, count: usize) {
        self.accounts_seen
            .get_or_create(&MappingLabels {
                mapping: mapping.to_owned(),
            })
            .inc_by(count as u64);
    }

    pub fn portal(&self, mapping: &str, result: PortalResult) {
        let result = match result {
            PortalResult::Created => "created",
            PortalResult::Failed => "failed",
        };
        self.portals
            .get_or_create(&MappingResultLabels {
                mapping: mapping.to_owned(),
                result,
            })
            .inc();
    }

    /// One Account's write-back settled; it counts once for each mapping
    /// whose fields it carried.
    pub fn writeback<'a>(
        &self,
        mappings: impl IntoIterator<Item = &'a str>,
        result: WritebackResult,
    ) {
        let result = match result {
            WritebackResult::Written => "written",
            WritebackResult::Retried => "retried",
            WritebackResult::DeadLettered => "dead_lettered",
            WritebackResult::Refused => "refused",
        };
        for mapping in mappings {
            self.writebacks
                .get_or_create(&MappingResultLabels {
                    mapping: mapping.to_owned(),
                    result,
                })
                .inc();
        }
    }

    /// A delivery stored (`duplicate` false) or recognised as a duplicate.
    /// `event_type` is `None` for a Salesforce push hint.
    pub fn webhook(&self, source: WebhookSource, event_type: Option<&EventType>, duplicate: bool) {
        let event_type = match event_type {
            None => "hint",
            Some(EventType::ApplicationCreated) => "application.created",
            Some(EventType::ApplicationUpdated) => "application.updated",
            Some(EventType::ApplicationSubmitted) => "application.submitted",
            Some(EventType::ApplicationReviewUpdated) => "application.review_updated",
            Some(EventType::ApplicationStatusUpdated) => "application.status_updated",
            Some(EventType::CollectOpened) => "collect.opened",
            Some(EventType::CollectClosed) => "collect.closed",
            Some(EventType::WebhooksTest) => "webhooks.test",
            Some(EventType::Other(_)) => "other",
        };
        let result = if duplicate { "duplicate" } else { "stored" };
        self.webhooks
            .get_or_create(&WebhookLabels {
                source: source.as_str(),
                event_type,
                result,
            })
            .inc();
    }

    /// A delivery refused with `status` (the public listener's answers).
    pub fn webhook_rejected(&self, source: WebhookSource, status: u16) {
        let reason = match status {
            413 => "too_large",
            404 => "wrong_secret",
            403 => "forbidden_source",
            401 => "bad_signature",
            400 => "malformed",
            408 => "timeout",
            503 => "store_unavailable",
            _ => "other",
        };
        self.webhooks_rejected
            .get_or_create(&RejectionLabels {
                source: source.as_str(),
                reason,
            })
            .inc();
    }

    /// One HTTP request: `status` is `None` when no answer came.
    pub fn api_request(&self, api: Api, request: &str, status: Option<u16>, elapsed: Duration) {
        let endpoint = api.endpoint(request);
        let status = match status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) | None => "error",
        };
        self.api_requests
            .get_or_create(&RequestLabels {
                api: api.as_str(),
                endpoint,
                status,
            })
            .inc();
        self.api_request_duration
            .get_or_create(&EndpointLabels {
                api: api.as_str(),
                endpoint,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The org's usage, as the last answer reported it.
    pub fn salesforce_usage(&self, usage: ApiUsage) {
        self.api_usage_ratio.set(usage.ratio());
    }

    pub fn salesforce_budget(&self, budget_percent: u8) {
        self.api_budget_ratio.set(f64::from(budget_percent) / 100.0);
    }

    /// Which pauses are in force (`reason` from [`PAUSE_REASONS`]).
    pub(crate) fn salesforce_paused(&self, in_force: &[&'static str]) {
        for reason in PAUSE_REASONS {
            self.paused
                .get_or_create(&ReasonLabels { reason })
                .set(i64::from(in_force.contains(&reason)));
        }
    }

    /// A step the budget governor turned away (`work` is a bounded name).
    pub(crate) fn salesforce_deferred(&self, work: &'static str) {
        self.deferred.get_or_create(&WorkLabels { work }).inc();
    }

    /// Items parked after failing, per queue (`webhooks`, `hints`, `intents`).
    pub fn parked(&self, queue: &str, count: usize) {
        let queue = match queue {
            "webhooks" => "webhooks",
            "hints" => "hints",
            "intents" => "intents",
            _ => "other",
        };
        self.parked
            .get_or_create(&QueueLabels { queue })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn queue_depths(&self, inbox: u64, pending_writes: u64, dead_letters: u64) {
        let depth = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
        self.queue_depth
            .get_or_create(&QueueLabels { queue: "inbox" })
            .set(depth(inbox));
        self.queue_depth
            .get_or_create(&QueueLabels {
                queue: "pending_writes",
            })
            .set(depth(pending_writes));
        self.dead_letters.set(depth(dead_letters));
    }

    /// Whether a schedule (`poll`, `reconcile`) fires on time.
    pub fn schedule_alive(&self, schedule: &str, alive: bool) {
        let schedule = match schedule {
            "poll" => "poll",
            "reconcile" => "reconcile",
            _ => "other",
        };
        self.schedule_alive
            .get_or_create(&ScheduleLabels { schedule })
            .set(i64::from(alive));
    }

    /// Where a mapping's cursor stands.
    pub fn cursor(&self, mapping: &str, system_modstamp: DateTime<Utc>) {
        self.cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(mapping.to_owned(), system_modstamp);
    }

    /// A mapping's poll finished without error at `at`.
    pub fn poll_succeeded(&self, mapping: &str, at: DateTime<Utc>) {
        self.last_poll
            .get_or_create(&MappingLabels {
                mapping: mapping.to_owned(),
            })
            .set(at.timestamp_millis() as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_endpoints_are_named_from_the_request_line() {
        let cases = [
            ("token", "token"),
            (
                "POST https://login.salesforce.com/services/oauth2/token",
                "token",
            ),
            ("GET /services/data/v62.0/query", "query"),
            ("GET /services/data/v62.0/queryAll", "query"),
            (
                "GET /services/data/v62.0/query/01gD0000002HU6KIAW-2000",
                "query_more",
            ),
            (
                "GET /services/data/v62.0/sobjects/Account/describe",
                "describe",
            ),
            ("PATCH /services/data/v62.0/composite/sobjects", "composite"),
            ("GET /services/data/v62.0/limits", "limits"),
            (
                "PATCH /services/data/v62.0/sobjects/Account/001xx000003DGb2AAG",
                "record",
            ),
            (
                "GET /services/data/v62.0/sobjects/Account/001xx000003DGb2AAG",
                "other",
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(Api::Salesforce.endpoint(request), expected, "{request}");
        }
        assert_eq!(Api::Ondorse.endpoint("portal"), "portal");
        assert_eq!(Api::Ondorse.endpoint("application \"app_1\""), "other");
    }

    #[test]
    fn rendering_shows_prefixed_names_and_bounded_labels() {
        let metrics = metrics();
        metrics.api_request(
            Api::Ondorse,
            "application",
            Some(503),
            Duration::from_millis(3),
        );
        metrics.webhook(
            WebhookSource::Ondorse,
            Some(&EventType::parse("x.custom_event_1234")),
            false,
        );
        let text = render_metrics();
        assert!(
            text.contains(r#"ondorse_bridge_api_requests_total{api="ondorse",endpoint="application",status="5xx"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ondorse_bridge_webhooks_total{source="ondorse",event_type="other",result="stored"}"#),
            "{text}"
        );
        assert!(!text.contains("custom_event_1234"), "{text}");
        assert!(
            text.contains("# TYPE ondorse_bridge_api_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(r#"ondorse_bridge_salesforce_paused{reason="limit_exceeded"}"#),
            "{text}"
        );
    }
}
