//! Datetimes and dates in the forms Salesforce reads and answers.

use chrono::{DateTime, NaiveDate, Utc};

/// A datetime in the wire form Salesforce answers: `2026-11-25T20:49:32.000+0000`.
pub(crate) fn format_datetime(instant: DateTime<Utc>) -> String {
    instant.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Now, at the second precision Salesforce stores.
pub(crate) fn now_stamp() -> String {
    format_datetime(truncate_to_second(Utc::now()))
}

/// Salesforce stores datetimes to the second: answers always say `.000`.
pub(super) fn truncate_to_second(instant: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(instant.timestamp(), 0).unwrap_or(instant)
}

/// A datetime in RFC 3339 (`Z`, `+01:00`) or Salesforce's `+0000` form.
pub(crate) fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.with_timezone(&Utc));
    }
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .map(|instant| instant.with_timezone(&Utc))
}

/// A date in `YYYY-MM-DD` form.
pub(crate) fn parse_date(text: &str) -> Option<NaiveDate> {
    if text.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_both_forms() {
        let expected = parse_datetime("2026-11-25T20:49:32Z").unwrap();
        assert_eq!(
            parse_datetime("2026-11-25T21:49:32.000+0100"),
            Some(expected)
        );
        assert_eq!(parse_datetime("2026-11-25T21:49:32+01:00"), Some(expected));
        assert_eq!(format_datetime(expected), "2026-11-25T20:49:32.000+0000");
    }
}
