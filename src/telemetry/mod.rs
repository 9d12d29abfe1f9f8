//! Logs and metrics (README's "Metrics" lists every metric and its labels).
//!
//! - [`init_logging`]: human-readable logs on a terminal, JSON lines when
//!   stderr is the systemd journal; every event carries structured fields
//!   (`account_id`, `mapping`, `error`, ...).
//! - [`Metrics`]: one Prometheus registry per daemon, a value made with
//!   `sync::Prepared` and handed down to the clients, the engine and the
//!   listeners (no process-wide static, so each daemon counts its own).
//!   Code records at the point where things happen
//!   (`self.metrics.portal(...)`); the admin listener serves
//!   [`Metrics::render`] on `GET /metrics` with [`METRICS_CONTENT_TYPE`].
//!
//! # Metrics
//!
//! Every label takes values from a fixed set (or from the configured mapping
//! names), so the number of series stays bounded: no Account, application
//! or event Id ever becomes a label.
//!
//! | name | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `ondorse_bridge_accounts_seen_total` | counter | `mapping` | Accounts read by intake (polls, push hints, resync); the poll overlap re-reads some |
//! | `ondorse_bridge_portals_total` | counter | `mapping`, `result` = `created` \| `failed` | portal creations; a failed one stays pending and is tried again |
//! | `ondorse_bridge_writebacks_total` | counter | `mapping`, `result` = `written` \| `retried` \| `dead_lettered` \| `refused` | Account write-backs settled (`refused`: a value the field cannot take, dead-lettered before sending); a write carrying fields of two mappings counts in both |
//! | `ondorse_bridge_webhooks_total` | counter | `source` = `ondorse` \| `salesforce`, `event_type`, `result` = `stored` \| `duplicate` | deliveries accepted; `event_type` is a known Ondorse type, `other`, or `hint` for Salesforce push hints |
//! | `ondorse_bridge_webhooks_rejected_total` | counter | `source`, `reason` = `too_large` \| `wrong_secret` \| `forbidden_source` \| `bad_signature` \| `malformed` \| `timeout` \| `store_unavailable` \| `other` | deliveries refused, by why |
//! | `ondorse_bridge_api_requests_total` | counter | `api` = `salesforce` \| `ondorse`, `endpoint`, `status` = `2xx` \| `3xx` \| `4xx` \| `5xx` \| `error` | HTTP requests sent; `endpoint` is `token`, `query`, `query_more`, `describe`, `composite`, `record` (a single-record update), `limits` (Salesforce) or `portal`, `application` (Ondorse), else `other`; `error` means no answer (timeout, connection) |
//! | `ondorse_bridge_api_request_duration_seconds` | histogram | `api`, `endpoint` | time until the answer's status line |
//! | `ondorse_bridge_salesforce_api_usage_ratio` | gauge | | the org's rolling 24-hour API usage, `used / max`, from the last `Sforce-Limit-Info` or `GET /limits` (0 until the first answer) |
//! | `ondorse_bridge_salesforce_api_budget_ratio` | gauge | | `salesforce.api_budget_percent / 100`: above it polling and reconcile pause |
//! | `ondorse_bridge_salesforce_paused` | gauge | `reason` = `over_budget` \| `near_limit` \| `limit_exceeded` | 1 while the budget governor holds that pause, else 0 |
//! | `ondorse_bridge_salesforce_deferred_total` | counter | `work` = `intake` \| `reconcile` \| `writeback` \| `lookup` | steps the budget governor turned away |
//! | `ondorse_bridge_queue_depth` | gauge | `queue` = `inbox` \| `pending_writes` | items waiting: stored webhooks and hints not yet processed, Accounts with a write-back pending |
//! | `ondorse_bridge_parked` | gauge | `queue` = `webhooks` \| `hints` \| `intents` | items that keep failing, parked with a growing retry delay (`status` and `explain` show why) |
//! | `ondorse_bridge_dead_letters` | gauge | | dead letters waiting for a human (`dead-letters list`) |
//! | `ondorse_bridge_cursor_lag_seconds` | gauge | `mapping` | now minus the `SystemModstamp` of the mapping's cursor; grows in a quiet org too, so alert on it together with the last poll |
//! | `ondorse_bridge_last_poll_timestamp_seconds` | gauge | `mapping` | Unix time of the mapping's last successful poll |
//! | `ondorse_bridge_schedule_alive` | gauge | `schedule` = `poll` \| `reconcile` | 1 while the cron schedule fires on time, 0 once a slot passed without firing (a stalled scheduler) |

mod logging;
mod metrics;

pub use logging::{LOG_FORMAT_ENV, LogFormat, init_logging};
pub use metrics::{
    Api, ApiEndpoint, METRICS_CONTENT_TYPE, Metrics, PortalResult, WebhookSource, WritebackResult,
};
