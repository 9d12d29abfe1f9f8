//! The typed recorders: what the code calls where things happen.

use std::sync::PoisonError;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ondorse::webhook::EventType;
use crate::salesforce::model::ApiUsage;

use super::Metrics;
use super::labels::{
    ApiEndpoint, EndpointLabels, MappingLabels, MappingResultLabels, PortalResult, QueueLabels,
    ReasonLabels, RejectionLabels, RequestLabels, ScheduleLabels, WebhookLabels, WebhookSource,
    WorkLabels, WritebackResult,
};

impl Metrics {
    /// Accounts read by one intake page.
    pub fn accounts_seen(&self, mapping: &str, count: usize) {
        self.families
            .accounts_seen
            .get_or_create(&MappingLabels {
                mapping: mapping.to_owned(),
            })
            .inc_by(count as u64);
    }

    pub fn portal(&self, mapping: &str, result: PortalResult) {
        self.families
            .portals
            .get_or_create(&MappingResultLabels {
                mapping: mapping.to_owned(),
                result: result.label(),
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
        let result = result.label();
        for mapping in mappings {
            self.families
                .writebacks
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
        let event_type = event_type.map_or("hint", EventType::label);
        let result = if duplicate { "duplicate" } else { "stored" };
        self.families
            .webhooks
            .get_or_create(&WebhookLabels {
                source: source.as_str(),
                event_type,
                result,
            })
            .inc();
    }

    /// A delivery refused, with the `reason` label the public listener
    /// gives its answer.
    pub fn webhook_rejected(&self, source: WebhookSource, reason: &'static str) {
        self.families
            .webhooks_rejected
            .get_or_create(&RejectionLabels {
                source: source.as_str(),
                reason,
            })
            .inc();
    }

    /// One HTTP request to `endpoint`: `status` is `None` when no answer came.
    pub fn api_request<E: ApiEndpoint>(&self, endpoint: E, status: Option<u16>, elapsed: Duration) {
        let api = E::API;
        let endpoint = endpoint.label();
        let status = match status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) | None => "error",
        };
        self.families
            .api_requests
            .get_or_create(&RequestLabels {
                api: api.as_str(),
                endpoint,
                status,
            })
            .inc();
        self.families
            .api_request_duration
            .get_or_create(&EndpointLabels {
                api: api.as_str(),
                endpoint,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The org's usage, as the last answer reported it.
    pub fn salesforce_usage(&self, usage: ApiUsage) {
        self.families.api_usage_ratio.set(usage.ratio());
    }

    pub fn salesforce_budget(&self, budget_percent: u8) {
        self.families
            .api_budget_ratio
            .set(f64::from(budget_percent) / 100.0);
    }

    /// Whether each pause (by its `reason` label) is in force; the governor
    /// names every reason each time, so all are present from its start.
    pub fn salesforce_paused(&self, reasons: &[(&'static str, bool)]) {
        for &(reason, in_force) in reasons {
            self.families
                .paused
                .get_or_create(&ReasonLabels { reason })
                .set(i64::from(in_force));
        }
    }

    /// A step the budget governor turned away (`work`: the work's label).
    pub fn salesforce_deferred(&self, work: &'static str) {
        self.families
            .deferred
            .get_or_create(&WorkLabels { work })
            .inc();
    }

    /// Items parked after failing, per queue (`webhooks`, `hints`, `intents`).
    pub fn parked(&self, queue: &'static str, count: usize) {
        self.families
            .parked
            .get_or_create(&QueueLabels { queue })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn queue_depths(&self, inbox: u64, pending_writes: u64, dead_letters: u64) {
        let depth = |count: u64| i64::try_from(count).unwrap_or(i64::MAX);
        self.families
            .queue_depth
            .get_or_create(&QueueLabels { queue: "inbox" })
            .set(depth(inbox));
        self.families
            .queue_depth
            .get_or_create(&QueueLabels {
                queue: "pending_writes",
            })
            .set(depth(pending_writes));
        self.families.dead_letters.set(depth(dead_letters));
    }

    /// Whether a schedule (`poll`, `reconcile`) fires on time.
    pub fn schedule_alive(&self, schedule: &'static str, alive: bool) {
        self.families
            .schedule_alive
            .get_or_create(&ScheduleLabels { schedule })
            .set(i64::from(alive));
    }

    /// Where a mapping's cursor stands.
    pub fn cursor(&self, mapping: &str, system_modstamp: DateTime<Utc>) {
        self.families
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(mapping.to_owned(), system_modstamp);
    }

    /// A mapping's poll finished without error at `at`.
    pub fn poll_succeeded(&self, mapping: &str, at: DateTime<Utc>) {
        self.families
            .last_poll
            .get_or_create(&MappingLabels {
                mapping: mapping.to_owned(),
            })
            .set(at.timestamp_millis() as f64 / 1000.0);
    }
}
