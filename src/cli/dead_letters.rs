//! `ondorse-bridge dead-letters (list | retry ID... | retry --all)`:
//! write-backs Salesforce refused for good, and sending them again once
//! the cause (a validation rule, a picklist value) is fixed.

use std::fmt::Write;

use serde_json::Value;

use crate::cli::access::{Access, operation_failure};
use crate::cli::{Failure, print_json};
use crate::config::Config;
use crate::store::DeadLetter;
use crate::sync::operations::{self, RetryReport, RetrySelection};

pub async fn list(config: &Config, json: bool) -> Result<(), Failure> {
    let letters = match Access::open(config).await? {
        Access::Daemon(client) => client.get::<Vec<DeadLetter>>("dead-letters").await?,
        Access::Store(store) => store.dead_letters().map_err(anyhow::Error::from)?,
    };
    if json {
        return print_json(&letters);
    }
    print!("{}", render(&letters));
    Ok(())
}

pub async fn retry(config: &Config, selection: RetrySelection, json: bool) -> Result<(), Failure> {
    let (report, daemon) = match Access::open(config).await? {
        Access::Daemon(client) => (
            client
                .post::<_, RetryReport>(
                    "dead-letters/retry",
                    &selection,
                    Some(std::time::Duration::from_secs(60)),
                )
                .await?,
            true,
        ),
        Access::Store(store) => (
            operations::retry_dead_letters(&store, &selection)
                .await
                .map_err(operation_failure)?,
            false,
        ),
    };
    if json {
        return print_json(&report);
    }
    for letter in &report.retried {
        println!(
            "dead letter {} (Account {}) retried: planned again from its current state",
            letter.id, letter.account_id
        );
    }
    match (report.retried.is_empty(), daemon) {
        (true, _) => println!("no dead letters to retry"),
        (false, true) => println!(
            "the daemon sends what they need now; `ondorse-bridge explain --account ID` shows the outcome"
        ),
        (false, false) => println!(
            "the daemon is not running: it plans them again at its first reconcile after it starts"
        ),
    }
    Ok(())
}

pub fn render(letters: &[DeadLetter]) -> String {
    let mut text = String::new();
    if letters.is_empty() {
        let _ = writeln!(text, "no dead letters");
        return text;
    }
    let _ = writeln!(text, "{} dead letter(s), oldest first", letters.len());
    for letter in letters {
        let _ = writeln!(
            text,
            "  #{:<6} {}  Account {}  [{}]",
            letter.id,
            letter.at.format("%Y-%m-%d %H:%M:%S UTC"),
            letter.account_id,
            letter.mappings.join(", ")
        );
        if letter.message.starts_with(&letter.code) {
            let _ = writeln!(text, "          {}", letter.message);
        } else {
            let _ = writeln!(text, "          {}: {}", letter.code, letter.message);
        }
        let fields: Vec<String> = letter
            .fields
            .iter()
            .map(|(name, value)| match value {
                Value::Null => format!("{name}=(empty)"),
                value => format!("{name}={value}"),
            })
            .collect();
        let _ = writeln!(text, "          fields: {}", fields.join(", "));
    }
    let _ = writeln!(
        text,
        "Once the cause is fixed: `ondorse-bridge dead-letters retry ID...` or `retry --all`."
    );
    text
}
