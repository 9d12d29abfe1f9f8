//! SOQL literals: every value that goes into a query goes through here.
//!
//! Strings are single-quoted with backslash escapes, so a value such as
//! `Acme' OR Name != '` stays one string and cannot widen a query.
//! Datetimes are unquoted literals; the API answers them in a form that is
//! not quite RFC 3339 (`+0000`, no colon), which [`parse_datetime`] reads.

use chrono::{DateTime, SecondsFormat, Utc};

/// `value` as a SOQL string literal, quotes included.
pub fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for character in value.chars() {
        match character {
            '\'' => quoted.push_str("\\'"),
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            control if control.is_control() => {
                quoted.push_str(&format!("\\u{:04x}", u32::from(control)));
            }
            other => quoted.push(other),
        }
    }
    quoted.push('\'');
    quoted
}

/// `at` as an unquoted SOQL datetime literal: `2026-11-25T20:49:32Z`.
///
/// Sub-second precision is dropped (floored), the form every SOQL parser
/// accepts; for the `>=` comparisons a cursor makes this reads a superset.
pub fn datetime_literal(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A datetime as Salesforce writes it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid salesforce datetime {text:?}: expected 2026-11-25T20:49:32.000+0000 or RFC 3339")]
pub struct InvalidDateTime {
    pub text: String,
}

/// Reads `2026-11-25T20:49:32.000+0000` (what the REST API sends) and RFC
/// 3339 (`2026-11-25T20:49:32Z`, `...+01:00`).
pub fn parse_datetime(text: &str) -> Result<DateTime<Utc>, InvalidDateTime> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| InvalidDateTime {
            text: text.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn quote_escapes_everything_that_could_end_the_literal() {
        let cases = [
            ("Acme", "'Acme'"),
            ("Acme' OR Name != '", r"'Acme\' OR Name != \''"),
            (r"back\slash", r"'back\\slash'"),
            (
                "two\nlines\r\tand \"quotes\"",
                r#"'two\nlines\r\tand \"quotes\"'"#,
            ),
            ("bell\u{8}feed\u{c}", r"'bell\bfeed\f'"),
            ("nul\u{0}", r"'nul\u0000'"),
            ("Société Générale", "'Société Générale'"),
            ("", "''"),
        ];
        for (value, expected) in cases {
            assert_eq!(quote(value), expected, "{value:?}");
        }
    }

    #[test]
    fn datetime_literals_are_plain_utc_seconds() {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 20, 49, 32).unwrap()
            + chrono::Duration::milliseconds(789);
        assert_eq!(datetime_literal(at), "2026-11-25T20:49:32Z");
    }

    #[test]
    fn parses_the_salesforce_form_and_rfc_3339() {
        let expected = Utc.with_ymd_and_hms(2026, 11, 25, 20, 49, 32).unwrap();
        for text in [
            "2026-11-25T20:49:32.000+0000",
            "2026-11-25T20:49:32+0000",
            "2026-11-25T21:49:32.000+0100",
            "2026-11-25T20:49:32Z",
            "2026-11-25T20:49:32.000Z",
            "2026-11-25T15:49:32-05:00",
        ] {
            assert_eq!(parse_datetime(text), Ok(expected), "{text}");
        }
        let with_millis = parse_datetime("2026-11-25T20:49:32.250+0000").unwrap();
        assert_eq!(with_millis.timestamp_subsec_millis(), 250);
    }

    #[test]
    fn refuses_what_is_not_a_datetime() {
        for text in [
            "",
            "2026-11-25",
            "2026-11-25 20:49:32",
            "yesterday",
            "2026-13-25T20:49:32Z",
        ] {
            let error = parse_datetime(text).unwrap_err();
            assert_eq!(error.text, text);
            assert!(error.to_string().contains("expected"), "{error}");
        }
    }
}
