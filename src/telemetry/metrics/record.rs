//! The typed recorders: what the code calls where things happen.

use std::sync::PoisonError;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ondorse::webhook::EventType;
use crate::salesforce::model::ApiUsage;

use super::Metrics;
use super::labels::{
    Api, EndpointLabels, MappingLabels, MappingResultLabels, PAUSE_REASONS, PortalResult,
    QueueLabels, ReasonLabels, RejectionLabels, RequestLabels, ScheduleLabels, WebhookLabels,
    WebhookSource, WorkLabels, WritebackResult,
};

impl Metrics {
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
