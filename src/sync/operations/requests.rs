//! The admin requests (`POST /admin/resync`, `POST /admin/dead-letters/retry`
//! and the CLI flags that build them), read and validated.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::OperationError;
use crate::salesforce::Id;

/// Which dead letters to retry (`{"ids":[..]}` or `{"all":true}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySelection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// A resync as asked: `{"accounts":[..]}`, `{"since":"RFC 3339"}` or
/// `{"all":true}`, with an optional `mapping` and `dry_run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// With `accounts`: abandon each pending intent (one Ondorse refused,
    /// say) and start a fresh one from the Account as it is now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_intent: bool,
}

/// What a resync covers, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResyncScope {
    Accounts(Vec<Id>),
    Since(DateTime<Utc>),
}

/// The forms `--since` accepts, for messages.
pub const SINCE_FORMS: &str = "RFC 3339 (2026-11-25T08:00:00Z, 2026-11-25T09:00:00+01:00), a UTC date-time (2026-11-25T08:00:00) or a UTC date (2026-11-25)";

/// Reads a `--since` value: RFC 3339, or a date-time or date taken as UTC.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, OperationError> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").map(|at| at.and_utc())
        })
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|date| date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| {
            OperationError::InvalidRequest(format!(
                "cannot read the time {text:?}; accepted forms: {SINCE_FORMS}"
            ))
        })
}

impl ResyncRequest {
    /// The scope, once exactly one of `accounts`, `since` and `all` is given
    /// and its values are well-formed.
    pub fn scope(&self) -> Result<ResyncScope, OperationError> {
        let given = usize::from(!self.accounts.is_empty())
            + usize::from(self.since.is_some())
            + usize::from(self.all);
        if given != 1 {
            return Err(OperationError::InvalidRequest(
                "say what to resync: some accounts, a since time, or all (exactly one)".to_owned(),
            ));
        }
        if self.new_intent && self.accounts.is_empty() {
            return Err(OperationError::InvalidRequest(
                "--new-intent applies to chosen accounts only: name them with --account".to_owned(),
            ));
        }
        if let Some(since) = &self.since {
            return Ok(ResyncScope::Since(parse_since(since)?));
        }
        if self.all {
            return Ok(ResyncScope::Since(DateTime::<Utc>::UNIX_EPOCH));
        }
        let mut ids = self
            .accounts
            .iter()
            .map(|id| Id::parse_account(id))
            .collect::<Result<Vec<Id>, _>>()?;
        ids.sort();
        ids.dedup();
        Ok(ResyncScope::Accounts(ids))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::salesforce::IdError;

    #[test]
    fn since_accepts_the_documented_forms_and_names_them_otherwise() {
        let expected = DateTime::parse_from_rfc3339("2026-11-25T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for text in [
            "2026-11-25T08:00:00Z",
            "2026-11-25T09:00:00+01:00",
            "2026-11-25T08:00:00",
        ] {
            assert_eq!(parse_since(text).unwrap(), expected, "{text}");
        }
        assert_eq!(
            parse_since("2026-11-25").unwrap(),
            expected - chrono::Duration::hours(8)
        );
        let error = parse_since("yesterday").unwrap_err().to_string();
        assert!(
            error.contains("\"yesterday\"") && error.contains("RFC 3339"),
            "{error}"
        );
    }

    #[test]
    fn a_resync_request_names_exactly_one_scope() {
        let request = |json: Value| {
            serde_json::from_value::<ResyncRequest>(json)
                .unwrap()
                .scope()
        };
        assert!(request(json!({})).is_err());
        assert!(request(json!({"all": true, "since": "2026-01-01"})).is_err());
        assert_eq!(
            request(json!({"all": true})).unwrap(),
            ResyncScope::Since(DateTime::<Utc>::UNIX_EPOCH)
        );
        assert!(matches!(
            request(json!({"accounts": ["001-bad"]})),
            Err(OperationError::InvalidId(IdError::Malformed { .. }))
        ));
        assert_eq!(
            request(json!({"accounts": ["001000000000001AAA"]})).unwrap(),
            ResyncScope::Accounts(vec![Id::parse("001000000000001AAA").unwrap()])
        );
        assert!(serde_json::from_value::<ResyncRequest>(json!({"everything": true})).is_err());
    }
}
