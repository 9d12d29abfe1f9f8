//! Reading Salesforce's answers: REST error arrays into
//! [`SalesforceError`], sObject Collections results checked against the
//! contract, `GET /limits`, and the checks on what goes into a path.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::salesforce::Id;
use crate::salesforce::error::{RecordError, SalesforceError, codes, excerpt, transport_reason};
use crate::salesforce::model::RecordUpdate;

/// One entry of an sObject Collections answer.
#[derive(Deserialize)]
pub(super) struct CompositeResult {
    /// Present on successes; names the record the result is about.
    #[serde(default)]
    id: Option<String>,
    pub(super) success: bool,
    #[serde(default)]
    pub(super) errors: Vec<RecordError>,
}

/// The part of `GET /limits` we read.
#[derive(Deserialize)]
pub(super) struct Limits {
    #[serde(rename = "DailyApiRequests")]
    pub(super) daily_api_requests: DailyLimit,
}

#[derive(Deserialize)]
pub(super) struct DailyLimit {
    #[serde(rename = "Max")]
    pub(super) max: u64,
    #[serde(rename = "Remaining")]
    pub(super) remaining: u64,
}

/// One entry of a REST error answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestError {
    #[serde(default)]
    message: String,
    error_code: String,
    #[serde(default)]
    fields: Vec<String>,
}

/// A REST error answer: an array, or (seen on some endpoints) one object.
#[derive(Deserialize)]
#[serde(untagged)]
enum RestErrors {
    Many(Vec<RestError>),
    One(RestError),
}

/// The error for a non-2xx answer.
pub(super) fn classify(
    endpoint: &str,
    status: http::StatusCode,
    location: Option<&str>,
    body: &[u8],
) -> SalesforceError {
    let first = match serde_json::from_slice::<RestErrors>(body) {
        Ok(RestErrors::Many(errors)) => errors.into_iter().next(),
        Ok(RestErrors::One(error)) => Some(error),
        Err(_) => None,
    };
    match first {
        Some(error)
            if error.error_code == codes::REQUEST_LIMIT_EXCEEDED
                && error.message.contains(codes::LONG_REQUESTS_LIMIT) =>
        {
            SalesforceError::TooManyLongRequests {
                message: error.message,
            }
        }
        Some(error) if error.error_code == codes::REQUEST_LIMIT_EXCEEDED => {
            SalesforceError::RequestLimitExceeded {
                message: error.message,
            }
        }
        Some(error) if error.error_code == codes::INVALID_QUERY_LOCATOR => {
            SalesforceError::InvalidQueryLocator {
                message: error.message,
            }
        }
        Some(error) => SalesforceError::Api {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            code: error.error_code,
            message: error.message,
            fields: error.fields,
        },
        None if status.is_server_error() => SalesforceError::Server {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            body_excerpt: excerpt(body),
        },
        None => SalesforceError::Decode {
            what: match location {
                Some(target) => format!("{endpoint} (status {status}, redirect to {target})"),
                None => format!("{endpoint} (status {status})"),
            },
            excerpt: excerpt(body),
        },
    }
}

pub(super) fn decode<T: DeserializeOwned>(
    endpoint: &str,
    body: &[u8],
) -> Result<T, SalesforceError> {
    serde_json::from_slice(body).map_err(|error| SalesforceError::Decode {
        what: format!("{endpoint} ({error})"),
        excerpt: excerpt(body),
    })
}

pub(super) fn transport(endpoint: &str, error: reqwest::Error) -> SalesforceError {
    SalesforceError::Transport {
        endpoint: endpoint.to_owned(),
        timed_out: error.is_timeout(),
        reason: transport_reason(error),
    }
}

/// The results of an sObject Collections update as the contract says they
/// come (one per record, in order, a success naming its record), or what
/// is wrong with them, in words.
pub(super) fn read_results(
    records: &[RecordUpdate],
    body: &[u8],
) -> Result<Vec<CompositeResult>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(format!(
            "no body, where one result per record was expected ({} records sent)",
            records.len()
        ));
    }
    let results: Vec<CompositeResult> = serde_json::from_slice(body)
        .map_err(|error| format!("a body that is not a list of results ({error})"))?;
    if results.len() != records.len() {
        return Err(format!(
            "{} results for {} records sent",
            results.len(),
            records.len()
        ));
    }
    for (index, (record, result)) in records.iter().zip(&results).enumerate() {
        if let Some(id) = &result.id
            && !same_record(id, &record.id)
        {
            return Err(format!(
                "result {} is about record {id}, but record {} was sent there",
                index + 1,
                record.id
            ));
        }
    }
    Ok(results)
}

/// Whether two Ids name one record: an 18-character Id is the 15-character
/// one plus a case checksum.
fn same_record(left: &str, right: &str) -> bool {
    match (Id::parse(left), Id::parse(right)) {
        (Ok(left), Ok(right)) => left == right,
        _ => left == right,
    }
}

/// Record Ids go into paths: 15 or 18 letters and digits.
pub(super) fn check_record_id(id: &str) -> Result<(), SalesforceError> {
    Id::parse(id)
        .map(drop)
        .map_err(|_| SalesforceError::InvalidArgument {
            what: "record id",
            value: id.to_owned(),
        })
}

/// SObject API names go into paths: letters, digits and underscores only.
pub(super) fn check_sobject_name(sobject: &str) -> Result<(), SalesforceError> {
    let valid = !sobject.is_empty()
        && sobject
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(SalesforceError::InvalidArgument {
            what: "sobject name",
            value: sobject.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_error_answers() {
        let status = |code: u16| http::StatusCode::from_u16(code).unwrap();
        let limit = classify(
            "GET /q",
            status(403),
            None,
            br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
        );
        assert!(matches!(
            limit,
            SalesforceError::RequestLimitExceeded { .. }
        ));
        assert!(limit.is_retriable());

        // The same code about requests in flight is not the daily allowance.
        let long = classify(
            "PATCH /sobjects",
            status(403),
            None,
            br#"[{"message":"ConcurrentPerOrgLongTxn Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
        );
        assert!(matches!(long, SalesforceError::TooManyLongRequests { .. }));
        assert!(long.is_retriable());
        assert_eq!(long.error_code(), Some("REQUEST_LIMIT_EXCEEDED"));

        let malformed = classify(
            "GET /q",
            status(400),
            None,
            br#"[{"message":"unexpected token: FROM","errorCode":"MALFORMED_QUERY"}]"#,
        );
        assert_eq!(malformed.error_code(), Some("MALFORMED_QUERY"));
        assert!(!malformed.is_retriable());

        let field = classify(
            "GET /q",
            status(400),
            None,
            br#"{"message":"No such column","errorCode":"INVALID_FIELD","fields":["Foo__c"]}"#,
        );
        assert!(
            matches!(&field, SalesforceError::Api { fields, .. } if fields == &["Foo__c".to_owned()])
        );

        let locator = classify(
            "GET /q/1",
            status(400),
            None,
            br#"[{"message":"invalid query locator","errorCode":"INVALID_QUERY_LOCATOR"}]"#,
        );
        assert!(matches!(
            locator,
            SalesforceError::InvalidQueryLocator { .. }
        ));

        let html = classify(
            "GET /q",
            status(503),
            None,
            b"<html>Service Unavailable</html>",
        );
        assert!(matches!(&html, SalesforceError::Server { status: 503, .. }));
        assert!(html.is_retriable());

        let redirect = classify("GET /q", status(302), Some("https://elsewhere"), b"");
        assert!(
            redirect
                .to_string()
                .contains("redirect to https://elsewhere"),
            "{redirect}"
        );
        assert!(!redirect.is_retriable());
    }

    #[test]
    fn collection_answers_that_break_the_contract_say_what_is_wrong() {
        let record = |id: &str| RecordUpdate {
            id: id.to_owned(),
            fields: serde_json::Map::new(),
        };
        let sent = [record("001Sb0000000001IAA"), record("001Sb0000000002IAA")];
        let problem = |body: &str| {
            read_results(&sent, body.as_bytes())
                .err()
                .unwrap_or_default()
        };
        assert!(problem("").contains("no body"), "{}", problem(""));
        assert!(problem("<html>").contains("not a list of results"));
        assert_eq!(
            problem(r#"[{"id":"001Sb0000000001IAA","success":true}]"#),
            "1 results for 2 records sent"
        );
        assert_eq!(
            problem(
                r#"[{"id":"001Sb0000000002IAA","success":true},{"id":"001Sb0000000001IAA","success":true}]"#
            ),
            "result 1 is about record 001Sb0000000002IAA, but record 001Sb0000000001IAA was sent there"
        );
        // A failure names no record; a 15-character Id is the same record.
        let fine = r#"[{"id":"001Sb0000000001","success":true},{"success":false,"errors":[]}]"#;
        assert_eq!(
            read_results(&sent, fine.as_bytes()).map(|results| results.len()),
            Ok(2)
        );
    }

    #[test]
    fn sobject_names_are_checked_before_going_into_a_path() {
        assert!(check_sobject_name("Account").is_ok());
        assert!(check_sobject_name("KYC_Case__c").is_ok());
        for bad in ["", "Account/../limits", "Account?x=1", "Acc ount"] {
            assert!(check_sobject_name(bad).is_err(), "{bad}");
        }
    }
}
