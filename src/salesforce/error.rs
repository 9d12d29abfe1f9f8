//! What can go wrong talking to Salesforce, and what a caller should do about it.
//!
//! Two levels: [`SalesforceError`] is a whole call that failed (the token
//! endpoint refused us, the org is out of API calls, the network dropped);
//! [`RecordError`] is one record of an sObject Collections update that
//! Salesforce refused while the others went through.

/// Error codes Salesforce uses that we branch on.
pub mod codes {
    /// 401: the access token expired or was revoked.
    pub const INVALID_SESSION_ID: &str = "INVALID_SESSION_ID";
    /// 403: the org's rolling 24-hour API allowance is used up, or (with a
    /// message naming [`LONG_REQUESTS_LIMIT`]) too many long-running
    /// requests are in flight.
    pub const REQUEST_LIMIT_EXCEEDED: &str = "REQUEST_LIMIT_EXCEEDED";
    /// 400/404: a `nextRecordsUrl` locator expired or was never valid.
    pub const INVALID_QUERY_LOCATOR: &str = "INVALID_QUERY_LOCATOR";
    /// The limit a `REQUEST_LIMIT_EXCEEDED` message names when the org has
    /// too many requests of 20 s or more in flight (`ConcurrentPerOrgLongTxn
    /// Limit exceeded.`), as opposed to the daily allowance (`TotalRequests`).
    pub const LONG_REQUESTS_LIMIT: &str = "ConcurrentPerOrgLongTxn";
    /// A row lock held by another transaction; worth retrying.
    pub const UNABLE_TO_LOCK_ROW: &str = "UNABLE_TO_LOCK_ROW";
    /// The token endpoint throttles logins; worth retrying later.
    pub const RATE_LIMIT_EXCEEDED: &str = "rate_limit_exceeded";
}

/// A failed call to Salesforce.
///
/// Callers branch on [`SalesforceError::is_retriable`]; the client itself
/// never retries, except replaying a call once after refreshing an expired
/// token.
#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    /// The token endpoint refused the credentials (`400 {"error", ...}`).
    #[error(
        "salesforce token endpoint {url} refused the {flow} login: {error}: {description}; {hint}"
    )]
    Auth {
        url: String,
        /// The OAuth flow that was tried (`jwt_bearer`, ...).
        flow: &'static str,
        /// The OAuth `error` (`invalid_grant`, `invalid_client`, ...).
        error: String,
        /// The OAuth `error_description`, possibly empty.
        description: String,
        /// What the operator should check, in words.
        hint: &'static str,
    },

    /// The token endpoint answered something that is not an OAuth answer: a
    /// redirect (usually a wrong `login_url`, or client credentials against
    /// login.salesforce.com instead of the org's My Domain), an HTML page or
    /// a server error.
    #[error(
        "salesforce token endpoint {url} answered {status}{location}: {body_excerpt}; check salesforce.login_url"
    )]
    TokenEndpoint {
        url: String,
        status: u16,
        /// `" (redirect to ...)"` when the answer was a redirect, else empty.
        location: String,
        body_excerpt: String,
    },

    /// The org does not serve the configured `api_version`
    /// (`GET /services/data/`). Work waits (retriable) until the org offers
    /// it or the configuration names one it serves.
    #[error(
        "salesforce.api_version {configured} is not offered; this org serves up to {newest}: set salesforce.api_version to a version it serves and restart"
    )]
    ApiVersionNotOffered { configured: String, newest: String },

    /// Salesforce rotated the refresh token but the store could not keep
    /// it: its access token is not used, so a restart never finds only a
    /// revoked token. Retrying rotates again and keeps that one.
    #[error(
        "salesforce rotated the refresh token but the store could not keep it ({reason}); the call is retried once the store works"
    )]
    TokenNotKept { reason: String },

    /// The configuration cannot produce a working client (for example a
    /// private key that is not an RSA key in PEM form). Never retriable.
    #[error("salesforce client configuration: {0}")]
    Configuration(String),

    /// A REST error answer: `[{"message", "errorCode", "fields"}]`.
    #[error("salesforce {endpoint} failed with {status} {code}: {message}")]
    Api {
        endpoint: String,
        status: u16,
        code: String,
        message: String,
        fields: Vec<String>,
    },

    /// `403 REQUEST_LIMIT_EXCEEDED`: the org's daily API allowance is used
    /// up. Salesforce sends no `Retry-After`; the allowance is a rolling 24
    /// hours, so callers should stop every Salesforce call and back off for
    /// minutes, not seconds, and resume when [`crate::salesforce::SalesforceClient::limits`]
    /// shows room again.
    #[error(
        "salesforce daily api allowance exhausted ({message}); calls resume when the org's 24-hour usage drops"
    )]
    RequestLimitExceeded { message: String },

    /// `403 REQUEST_LIMIT_EXCEEDED` naming [`codes::LONG_REQUESTS_LIMIT`]:
    /// the org already runs as many requests of 20 s or more as it allows
    /// at once (25 on a production org). Nothing about the daily allowance:
    /// the call is retried with backoff once fewer are in flight, and the
    /// engine keeps at most [`crate::salesforce::ORG_LONG_REQUESTS`] calls
    /// in flight from then on.
    #[error(
        "salesforce refused the call: the org has too many long-running requests in flight ({message}); retried with backoff, at most {limit} calls in flight from now on (salesforce.max_concurrent_requests)",
        limit = crate::salesforce::ORG_LONG_REQUESTS
    )]
    TooManyLongRequests { message: String },

    /// `INVALID_QUERY_LOCATOR`: a `nextRecordsUrl` expired. The query cannot
    /// continue; restart it from the caller's own cursor.
    #[error("salesforce query locator expired ({message}); restart the query from the last cursor")]
    InvalidQueryLocator { message: String },

    /// A 5xx whose body is not a REST error array (HTML, empty).
    #[error("salesforce {endpoint} answered server error {status}: {body_excerpt}")]
    Server {
        endpoint: String,
        status: u16,
        body_excerpt: String,
    },

    /// The request did not complete: connection refused or reset, timeout.
    #[error("salesforce {endpoint} request failed: {reason}")]
    Transport {
        endpoint: String,
        reason: String,
        timed_out: bool,
    },

    /// A success status whose answer breaks the contract (no body, fewer
    /// results than records, results about other records), as proxies and
    /// Salesforce-compatible servers answer: the call may or may not have
    /// been carried out.
    #[error(
        "salesforce {endpoint} answered {status} with {problem}, not what the contract says; body: {excerpt}"
    )]
    UnexpectedAnswer {
        endpoint: String,
        status: u16,
        /// What was unexpected, in words.
        problem: String,
        excerpt: String,
    },

    /// An answer we cannot read: wrong shape, not JSON, unexpected status.
    #[error("unexpected salesforce answer for {what}: {excerpt}")]
    Decode { what: String, excerpt: String },

    /// More records than one sObject Collections call accepts; nothing was sent.
    #[error(
        "{count} records in one salesforce update, at most {max} are allowed; split the batch",
        max = crate::salesforce::client::MAX_RECORDS_PER_UPDATE
    )]
    TooManyRecords { count: usize },

    /// An argument that would not form a valid request; nothing was sent.
    #[error("invalid {what} {value:?} for a salesforce request")]
    InvalidArgument { what: &'static str, value: String },
}

impl SalesforceError {
    /// The HTTP status Salesforce answered, when the call got an answer.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            SalesforceError::TokenEndpoint { status, .. }
            | SalesforceError::Api { status, .. }
            | SalesforceError::Server { status, .. }
            | SalesforceError::UnexpectedAnswer { status, .. } => Some(*status),
            SalesforceError::RequestLimitExceeded { .. }
            | SalesforceError::TooManyLongRequests { .. } => Some(403),
            _ => None,
        }
    }

    /// Whether the same call may succeed later without anyone changing
    /// configuration or data.
    ///
    /// `RequestLimitExceeded` is retriable only after a long backoff (see the
    /// variant); `InvalidQueryLocator` is retriable by restarting the query,
    /// not by repeating the page.
    pub fn is_retriable(&self) -> bool {
        match self {
            SalesforceError::Auth { error, .. } => error == codes::RATE_LIMIT_EXCEEDED,
            SalesforceError::TokenEndpoint { status, .. } => *status >= 500,
            SalesforceError::Api { status, code, .. } => {
                *status >= 500 || code == codes::UNABLE_TO_LOCK_ROW
            }
            SalesforceError::RequestLimitExceeded { .. }
            | SalesforceError::TooManyLongRequests { .. }
            | SalesforceError::InvalidQueryLocator { .. }
            | SalesforceError::Server { .. }
            | SalesforceError::Transport { .. }
            | SalesforceError::TokenNotKept { .. }
            | SalesforceError::ApiVersionNotOffered { .. } => true,
            SalesforceError::Configuration(_)
            | SalesforceError::Decode { .. }
            | SalesforceError::UnexpectedAnswer { .. }
            | SalesforceError::TooManyRecords { .. }
            | SalesforceError::InvalidArgument { .. } => false,
        }
    }

    /// The Salesforce error code (`MALFORMED_QUERY`, `invalid_grant`, ...),
    /// when the server sent one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            SalesforceError::Auth { error, .. } => Some(error),
            SalesforceError::Api { code, .. } => Some(code),
            SalesforceError::RequestLimitExceeded { .. }
            | SalesforceError::TooManyLongRequests { .. } => Some(codes::REQUEST_LIMIT_EXCEEDED),
            SalesforceError::InvalidQueryLocator { .. } => Some(codes::INVALID_QUERY_LOCATOR),
            _ => None,
        }
    }
}

/// What to do with a record Salesforce refused (contract, "Per-record codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Transient (a row lock): send it again with backoff.
    Retry,
    /// The data or the org refuses it: a dead letter with the message.
    Permanent,
    /// The record no longer exists: stop working on it.
    Gone,
}

/// One error on one record of an sObject Collections update.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordError {
    /// Per-record errors say `statusCode` (top-level errors say `errorCode`).
    pub status_code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

impl RecordError {
    /// What to do with the record, per the contract's table. Codes we do
    /// not know are permanent: a human reads the dead letter rather than
    /// the bridge retrying something that may never succeed.
    pub fn disposition(&self) -> Disposition {
        match self.status_code.as_str() {
            codes::UNABLE_TO_LOCK_ROW => Disposition::Retry,
            // Triggers and flows wrap the lock error of the rows they touch.
            "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY" | "CANNOT_EXECUTE_FLOW_TRIGGER"
                if self.message.contains(codes::UNABLE_TO_LOCK_ROW) =>
            {
                Disposition::Retry
            }
            "ENTITY_IS_DELETED" | "NOT_FOUND" | "MALFORMED_ID" => Disposition::Gone,
            _ => Disposition::Permanent,
        }
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.status_code, self.message)?;
        if !self.fields.is_empty() {
            write!(formatter, " (fields: {})", self.fields.join(", "))?;
        }
        Ok(())
    }
}

/// At most this many characters of an unexpected body go into an error.
const EXCERPT_CHARS: usize = 300;

/// The start of a body, as text, for an error message.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut excerpt: String = trimmed.chars().take(EXCERPT_CHARS).collect();
    if trimmed.chars().nth(EXCERPT_CHARS).is_some() {
        excerpt.push('…');
    }
    excerpt
}

/// A transport failure as one line: reqwest's own message is terse ("error
/// sending request"), the cause ("connection refused", "operation timed
/// out") is further down the chain. The URL is left out: a query URL can be
/// 100,000 characters of SOQL.
pub(crate) fn transport_reason(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_error(code: &str, message: &str) -> RecordError {
        RecordError {
            status_code: code.to_owned(),
            message: message.to_owned(),
            fields: Vec::new(),
        }
    }

    #[test]
    fn dispositions_follow_the_contract_table() {
        let cases = [
            (
                "UNABLE_TO_LOCK_ROW",
                "unable to obtain exclusive access",
                Disposition::Retry,
            ),
            (
                "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
                "MyTrigger: execution of AfterUpdate caused by: UNABLE_TO_LOCK_ROW",
                Disposition::Retry,
            ),
            (
                "CANNOT_EXECUTE_FLOW_TRIGGER",
                "flow failed: division by zero",
                Disposition::Permanent,
            ),
            (
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "needs a review date",
                Disposition::Permanent,
            ),
            (
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                "bad value",
                Disposition::Permanent,
            ),
            ("STRING_TOO_LONG", "too long", Disposition::Permanent),
            (
                "INSUFFICIENT_ACCESS_OR_READONLY",
                "no access",
                Disposition::Permanent,
            ),
            ("ENTITY_IS_DELETED", "entity is deleted", Disposition::Gone),
            ("NOT_FOUND", "not found", Disposition::Gone),
            ("MALFORMED_ID", "bad id", Disposition::Gone),
            ("SOMETHING_NEW", "unknown", Disposition::Permanent),
        ];
        for (code, message, expected) in cases {
            assert_eq!(
                record_error(code, message).disposition(),
                expected,
                "{code}"
            );
        }
    }

    #[test]
    fn excerpts_are_bounded_and_say_when_empty() {
        assert_eq!(excerpt(b"  \n"), "(empty body)");
        let long = "é".repeat(EXCERPT_CHARS * 2);
        let cut = excerpt(long.as_bytes());
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
