//! `ondorse-bridge explain --account ID`: one Account's story, oldest
//! first, for a compliance officer: what was read from Salesforce, what was
//! sent to Ondorse, each decision, each write-back and Salesforce's answer.

use std::fmt::Write;

use serde_json::Value;

use crate::cli::access::{Access, operation_failure};
use crate::cli::{Failure, print_json};
use crate::config::Config;
use crate::salesforce::Id;
use crate::sync::operations::{self, Explanation};

/// Longest value shown inline; longer ones are cut (the JSON has them whole).
const VALUE_WIDTH: usize = 80;

pub async fn explain(config: &Config, account_id: &str, json: bool) -> Result<(), Failure> {
    let account_id =
        Id::parse_account(account_id).map_err(|error| operation_failure(error.into()))?;
    let account_id = account_id.as_str();
    let explanation = match Access::open(config).await? {
        Access::Daemon(client) => {
            client
                .get::<Explanation>(&format!("explain/{account_id}"))
                .await?
        }
        Access::Store(store) => {
            operations::explain(&store, account_id).map_err(operation_failure)?
        }
    };
    if json {
        print_json(&explanation)?;
    } else {
        print!("{}", render(&explanation));
    }
    Ok(())
}

/// A value as one short piece of text.
fn short(value: &Value) -> String {
    let text = match value {
        Value::Null => "(empty)".to_owned(),
        other => other.to_string(),
    };
    if text.chars().count() > VALUE_WIDTH {
        let cut: String = text.chars().take(VALUE_WIDTH - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// `Name="Acme", KYC_Status__c="Approved"` for a JSON object of fields;
/// nested objects (a portal body's custom fields) are spelt with dots.
fn fields(value: Option<&Value>) -> Option<String> {
    fn flatten(prefix: &str, object: &serde_json::Map<String, Value>, parts: &mut Vec<String>) {
        for (name, value) in object {
            let name = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                Value::Object(inner) => flatten(&name, inner, parts),
                value => parts.push(format!("{name}={}", short(value))),
            }
        }
    }
    let object = value?.as_object()?;
    let mut parts = Vec::new();
    flatten("", object, &mut parts);
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The detail lines worth showing for one journal step.
fn detail_lines(step: &str, detail: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let mut push = |label: &str, text: Option<String>| {
        if let Some(text) = text {
            lines.push(format!("{label}: {text}"));
        }
    };
    match step {
        "intent_recorded" => push("read from Salesforce", fields(detail.get("fields"))),
        "portal_created" => push("sent to Ondorse", fields(detail.get("request"))),
        "application_fetched" => {}
        "write_queued" => push("to write", fields(detail.get("fields"))),
        "written" => push("Salesforce accepted", fields(detail.get("fields"))),
        "write_retry" => push("Salesforce answered", detail.get("code").map(short)),
        "dead_lettered" => push("not written", fields(detail.get("fields"))),
        "resynced" => {
            push("read from Salesforce", fields(detail.get("read")));
            push("to write", fields(detail.get("fields")));
        }
        "dead_letter_retried" => {
            push("refused", fields(detail.get("refused")));
            push("Salesforce kept", fields(detail.get("kept")));
        }
        _ => {}
    }
    // Every failed call records the status it was answered with, if any.
    push(
        "HTTP status",
        detail
            .get("http_status")
            .and_then(Value::as_u64)
            .map(|status| status.to_string()),
    );
    lines
}

pub fn render(explanation: &Explanation) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "Account {}", explanation.account_id);
    for link in &explanation.links {
        let portal = match (&link.portal_id, &link.portal_url) {
            (Some(id), Some(url)) => format!("portal {id} ({url})"),
            (Some(id), None) => format!("portal {id}"),
            (None, _) => format!("no portal yet ({} failed attempt(s))", link.portal_attempts),
        };
        let application = match (&link.application_id, link.decision_final) {
            (Some(id), true) => format!("application {id}, decision final"),
            (Some(id), false) => format!("application {id}, no final decision yet"),
            (None, _) => "no application yet".to_owned(),
        };
        let _ = writeln!(text, "  [{}] {portal}; {application}", link.mapping);
        if let Some(error) = &link.last_error {
            let _ = writeln!(text, "  [{}] last error: {error}", link.mapping);
        }
        if let Some(reason) = &link.closed {
            let _ = writeln!(text, "  [{}] closed: {reason}", link.mapping);
        }
    }
    match &explanation.pending_write {
        Some(pending) => {
            let _ = writeln!(
                text,
                "  waiting to be written: {}{}",
                fields(Some(&Value::Object(pending.fields.clone()))).unwrap_or_default(),
                pending
                    .last_error
                    .as_deref()
                    .map_or(String::new(), |error| format!(" (last attempt: {error})"))
            );
        }
        None => {
            let _ = writeln!(text, "  nothing waiting to be written");
        }
    }
    for letter in &explanation.dead_letters {
        // Salesforce's messages often start with the code already.
        let reason = if letter.message.starts_with(&letter.code) {
            letter.message.clone()
        } else {
            format!("{}: {}", letter.code, letter.message)
        };
        let _ = writeln!(
            text,
            "  dead letter {}: {reason} (retry: `ondorse-bridge dead-letters retry {}`)",
            letter.id, letter.id
        );
    }
    for item in &explanation.parked {
        let _ = writeln!(text, "  parked {}", super::status::parked_line(item));
    }
    let _ = writeln!(text, "\nHistory, oldest first");
    for entry in &explanation.journal {
        let mapping = entry
            .mapping
            .as_deref()
            .map_or(String::new(), |name| format!("[{name}] "));
        // A repeated event is one line with its count and last time.
        let repeated = match (entry.count, entry.last_at) {
            (count, Some(last)) if count > 1 => {
                format!(" (x{count}, last {})", last.format("%Y-%m-%d %H:%M:%S UTC"))
            }
            _ => String::new(),
        };
        let _ = writeln!(
            text,
            "  {}  {mapping}{}{repeated}",
            entry.at.format("%Y-%m-%d %H:%M:%S UTC"),
            entry.summary
        );
        for line in detail_lines(&entry.step, &entry.detail) {
            let _ = writeln!(text, "{:25}{line}", "");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::store::{DeadLetter, JournalEntry};
    use crate::sync::operations::LinkSummary;

    #[test]
    fn the_story_of_a_refused_write_back() {
        let at = |second: u32| Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, second).unwrap();
        let entry = |second, mapping: Option<&str>, step: &str, summary: &str, detail| {
            JournalEntry::new(
                at(second),
                mapping.map(str::to_owned),
                step,
                summary.to_owned(),
                detail,
            )
        };
        let fields = |value: serde_json::Value| value.as_object().cloned().unwrap();
        let explanation = Explanation {
            account_id: "001Sb0000000004IAA".to_owned(),
            links: vec![LinkSummary {
                mapping: "kyb".to_owned(),
                intent_at: at(0),
                portal_id: Some("prt_1".to_owned()),
                portal_url: Some("https://collect.ondorse.co/portals/abc".to_owned()),
                application_id: None,
                decision_final: false,
                portal_attempts: 0,
                last_error: None,
                closed: None,
            }],
            pending_write: None,
            dead_letters: vec![DeadLetter {
                id: 15,
                account_id: "001Sb0000000004IAA".to_owned(),
                mappings: vec!["kyb".to_owned()],
                fields: fields(json!({ "KYC_Status__c": "Portal sent" })),
                kept: fields(json!({ "KYC_Status__c": null })),
                code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".to_owned(),
                message: "FIELD_CUSTOM_VALIDATION_EXCEPTION: needs a review date".to_owned(),
                at: at(3),
            }],
            parked: Vec::new(),
            journal: vec![
                entry(
                    0,
                    Some("kyb"),
                    "intent_recorded",
                    "matched `kyb`; a portal will be created",
                    json!({ "fields": { "Name": "Acme", "KYC_Status__c": null } }),
                ),
                entry(
                    1,
                    Some("kyb"),
                    "portal_created",
                    "portal prt_1 created: https://collect.ondorse.co/portals/abc",
                    json!({ "request": { "type": "business", "default_custom_fields": { "salesforce_account_id": "001Sb0000000004IAA" } } }),
                ),
                entry(
                    2,
                    None,
                    "write_retry",
                    "Salesforce answered SERVER_ERROR; retrying at 2026-11-25T10:00:03Z",
                    json!({ "code": "SERVER_ERROR", "attempt": 1, "http_status": 503 }),
                ),
                entry(
                    3,
                    None,
                    "dead_lettered",
                    "Salesforce refused the write (FIELD_CUSTOM_VALIDATION_EXCEPTION): needs a review date (dead letter 15)",
                    json!({ "code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": { "KYC_Status__c": "Portal sent" } }),
                ),
            ],
        };
        let expected = "\
Account 001Sb0000000004IAA
  [kyb] portal prt_1 (https://collect.ondorse.co/portals/abc); no application yet
  nothing waiting to be written
  dead letter 15: FIELD_CUSTOM_VALIDATION_EXCEPTION: needs a review date (retry: `ondorse-bridge dead-letters retry 15`)

History, oldest first
  2026-11-25 10:00:00 UTC  [kyb] matched `kyb`; a portal will be created
                         read from Salesforce: Name=\"Acme\", KYC_Status__c=(empty)
  2026-11-25 10:00:01 UTC  [kyb] portal prt_1 created: https://collect.ondorse.co/portals/abc
                         sent to Ondorse: type=\"business\", default_custom_fields.salesforce_account_id=\"001Sb0000000004IAA\"
  2026-11-25 10:00:02 UTC  Salesforce answered SERVER_ERROR; retrying at 2026-11-25T10:00:03Z
                         Salesforce answered: \"SERVER_ERROR\"
                         HTTP status: 503
  2026-11-25 10:00:03 UTC  Salesforce refused the write (FIELD_CUSTOM_VALIDATION_EXCEPTION): needs a review date (dead letter 15)
                         not written: KYC_Status__c=\"Portal sent\"
";
        assert_eq!(render(&explanation), expected);
    }
}
