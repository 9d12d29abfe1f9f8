//! Fault switches: what tests flip to make the sandbox misbehave the way a
//! real org does (5xx bursts, row locks, validation rules, slow answers).

use std::collections::HashMap;
use std::time::Duration;

use super::data::RecordError;

/// The faults currently armed.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// REST requests still to answer with a 503 HTML page.
    pub(crate) failing_requests: usize,
    /// Record Id → writes still to refuse with `UNABLE_TO_LOCK_ROW`.
    pub(crate) locked_rows: HashMap<String, u32>,
    /// Record Id → the message of a validation rule that refuses every write.
    pub(crate) validation_rules: HashMap<String, String>,
    /// Added before every answer.
    pub(crate) latency: Duration,
    /// Token requests still to refuse with `invalid_grant`, whatever they carry.
    pub(crate) refused_logins: usize,
    /// sObject Collections updates still to carry out and then answer with
    /// an empty 200 body (the answer lost on the way back).
    pub(crate) blank_collection_answers: usize,
    /// sObject Collections updates still to answer with a 503 HTML page
    /// while every other call works (a write pod in trouble).
    pub(crate) failing_collection_updates: usize,
    /// sObject Collections updates still to carry out and then answer with
    /// one result fewer than records sent.
    pub(crate) short_collection_answers: usize,
    /// REST requests still to refuse with 403 `API_DISABLED_FOR_ORG`.
    pub(crate) api_disabled_requests: usize,
    /// REST requests still to refuse with 403 `REQUEST_LIMIT_EXCEEDED`
    /// `ConcurrentPerOrgLongTxn Limit exceeded.`: the org already runs as
    /// many requests of 20 s or more as it allows at once.
    pub(crate) long_request_refusals: usize,
    /// While set, sObject Collections updates change nothing and answer
    /// `204` with no body (a Salesforce-compatible server that does not
    /// implement them); single-record updates still work.
    pub(crate) ignored_collections: bool,
}

impl Faults {
    /// Takes one failing request from the budget: `true` when this request
    /// must fail.
    pub(crate) fn take_failing_request(&mut self) -> bool {
        Faults::take(&mut self.failing_requests)
    }

    /// Takes one from a countdown: `true` while the fault lasts.
    pub(crate) fn take(countdown: &mut usize) -> bool {
        if *countdown == 0 {
            return false;
        }
        *countdown -= 1;
        true
    }

    /// The error a write to `id` meets from a lock or a validation rule, if
    /// any. A lock is consumed by each attempt.
    pub(crate) fn write_fault(&mut self, id: &str) -> Option<RecordError> {
        if let Some(remaining) = self.locked_rows.get_mut(id)
            && *remaining > 0
        {
            *remaining -= 1;
            return Some(RecordError::new(
                "UNABLE_TO_LOCK_ROW",
                "unable to obtain exclusive access to this record or 1 records",
                &[],
            ));
        }
        self.validation_rules.get(id).map(|message| {
            RecordError::new("FIELD_CUSTOM_VALIDATION_EXCEPTION", message.clone(), &[])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_fails_the_given_number_of_attempts() {
        let mut faults = Faults::default();
        faults.locked_rows.insert("a".into(), 2);
        assert_eq!(faults.write_fault("a").unwrap().code, "UNABLE_TO_LOCK_ROW");
        assert_eq!(faults.write_fault("a").unwrap().code, "UNABLE_TO_LOCK_ROW");
        assert_eq!(faults.write_fault("a"), None);
        assert_eq!(faults.write_fault("b"), None);
    }
}
