//! [`Metrics`]: one Prometheus registry per daemon, with typed recorders;
//! the list of metrics is in the [module documentation](crate::telemetry).
//!
//! Labels come from fixed sets, and each is spelt by the module that owns
//! the thing it names (vector's `internal_events` do the same): an
//! endpoint by its client ([`ApiEndpoint`]), an event type by
//! [`EventType::label`](crate::ondorse::webhook::EventType::label), a pause
//! by `sync::PauseReason`. Nothing here parses a path or re-spells a wire name.
//!
//! - `labels`: the enums callers hand in and the label set of each family.
//! - `record`: the typed recorders.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod labels;
mod record;

pub use labels::{Api, ApiEndpoint, PortalResult, WebhookSource, WritebackResult};
use labels::{
    EndpointLabels, FloatGauge, MappingLabels, MappingResultLabels, QueueLabels, ReasonLabels,
    RejectionLabels, RequestLabels, ScheduleLabels, WebhookLabels, WorkLabels,
};

/// The `Content-Type` of [`Metrics::render`]: Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric name starts with this.
const PREFIX: &str = "ondorse_bridge";

/// Request duration buckets, in seconds: Prometheus's usual steps from a
/// fast Ondorse answer (milliseconds) to a 2,000-row query page or a
/// 200-record update running the org's triggers (tens of seconds).
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric of one daemon: the daemon's composition makes one (with
/// `sync::Prepared`) and hands it to the clients, the engine and the
/// listeners, so two daemons in one process (tests) count apart. Cheap to
/// clone: clones share the registry.
#[derive(Clone)]
pub struct Metrics {
    families: Arc<Families>,
}

/// The registry and the families it renders.
struct Families {
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

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered and no sample recorded.
    pub fn new() -> Metrics {
        Metrics {
            families: Arc::new(Families::register()),
        }
    }

    /// Every metric in the Prometheus text exposition format
    /// ([`METRICS_CONTENT_TYPE`]), for `GET /metrics`.
    pub fn render(&self) -> String {
        let families = &self.families;
        let now = Utc::now();
        for (mapping, cursor) in families
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let lag = (now - *cursor).num_milliseconds() as f64 / 1000.0;
            families
                .cursor_lag
                .get_or_create(&MappingLabels {
                    mapping: mapping.clone(),
                })
                .set(lag.max(0.0));
        }
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a
        // bug in a label, and half a page is better than none for a scrape.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &families.registry)
        {
            tracing::error!(%error, "metrics could not be fully rendered");
        }
        text
    }
}

impl Families {
    fn register() -> Families {
        let mut registry = Registry::with_prefix(PREFIX);
        let metrics = Families {
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
        Families {
            registry,
            ..metrics
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ondorse::webhook::EventType;

    #[derive(Clone, Copy)]
    struct Application;

    impl ApiEndpoint for Application {
        const API: Api = Api::Ondorse;
        fn label(self) -> &'static str {
            "application"
        }
    }

    #[test]
    fn rendering_shows_prefixed_names_and_bounded_labels() {
        let metrics = Metrics::new();
        metrics.api_request(Application, Some(503), Duration::from_millis(3));
        metrics.webhook(
            WebhookSource::Ondorse,
            Some(&EventType::parse("x.custom_event_1234")),
            false,
        );
        metrics.salesforce_paused(&[("limit_exceeded", false)]);
        let text = metrics.render();
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
