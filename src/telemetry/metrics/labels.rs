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
}

/// An endpoint of an API we call, named by the client that calls it (the
/// way `salesforce::Endpoint` and `ondorse::Endpoint` do): the metrics never
/// parse a path, so a query locator or an Id can never become a label.
pub trait ApiEndpoint: Copy {
    /// The API the endpoint belongs to.
    const API: Api;
    /// The bounded `endpoint` label.
    fn label(self) -> &'static str;
}

/// How a portal creation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalResult {
    Created,
    /// The intent stays pending and is tried again.
    Failed,
}

impl PortalResult {
    pub(super) fn label(self) -> &'static str {
        match self {
            PortalResult::Created => "created",
            PortalResult::Failed => "failed",
        }
    }
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

impl WritebackResult {
    pub(super) fn label(self) -> &'static str {
        match self {
            WritebackResult::Written => "written",
            WritebackResult::Retried => "retried",
            WritebackResult::DeadLettered => "dead_lettered",
            WritebackResult::Refused => "refused",
        }
    }
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
