//! The labels of the metrics: the enums callers hand in and the label sets
//! each family is keyed by.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::gauge::Gauge;

/// The API a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Salesforce,
    Ondorse,
}

impl Api {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Api::Salesforce => "salesforce",
            Api::Ondorse => "ondorse",
        }
    }

    /// The bounded `endpoint` label of a request: for Salesforce, from the
    /// request line (`GET /services/data/v62.0/query`) or `token`; for
    /// Ondorse, from the client's name of the answer (`portal`).
    pub(super) fn endpoint(self, request: &str) -> &'static str {
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
    pub(super) fn as_str(self) -> &'static str {
        match self {
            WebhookSource::Ondorse => "ondorse",
            WebhookSource::Salesforce => "salesforce",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MappingLabels {
    pub(super) mapping: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MappingResultLabels {
    pub(super) mapping: String,
    pub(super) result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct WebhookLabels {
    pub(super) source: &'static str,
    pub(super) event_type: &'static str,
    pub(super) result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RejectionLabels {
    pub(super) source: &'static str,
    pub(super) reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) api: &'static str,
    pub(super) endpoint: &'static str,
    pub(super) status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EndpointLabels {
    pub(super) api: &'static str,
    pub(super) endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct WorkLabels {
    pub(super) work: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ScheduleLabels {
    pub(super) schedule: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct QueueLabels {
    pub(super) queue: &'static str,
}

/// A gauge holding a fraction or a timestamp.
pub(super) type FloatGauge = Gauge<f64, AtomicU64>;

/// The reasons of `ondorse_bridge_salesforce_paused`, all always present.
pub(crate) const PAUSE_REASONS: [&str; 3] = ["over_budget", "near_limit", "limit_exceeded"];

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
}
