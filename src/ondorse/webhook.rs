//! Ondorse webhooks: the optional signature and the event envelope.
//!
//! Ondorse documents no signature; we accept an optional one (enabled when
//! `webhooks.signing_secret_file` is set) in the widespread
//! `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` form. Several
//! `v1=` values may be present while a secret is rotated, and several secrets
//! may be configured on our side for the same reason.
//!
//! The envelope is parsed tolerantly: the event id and type are required
//! (without them we can neither deduplicate nor route), everything else is
//! optional, and the whole `data.object` is kept as it came.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The request header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Ondorse-Signature";

/// How far a signature timestamp may be from our clock, either way: old
/// enough to absorb clock skew and a slow proxy, short enough to make a
/// captured request useless soon after.
pub const DEFAULT_SIGNATURE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

type HmacSha256 = Hmac<Sha256>;

/// Why a signature header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {SIGNATURE_HEADER} header is missing")]
    Missing,
    #[error(
        "the {SIGNATURE_HEADER} header is malformed: {0} (expected \"t=<unix seconds>,v1=<hex>\")"
    )]
    Malformed(&'static str),
    #[error(
        "the {SIGNATURE_HEADER} timestamp {timestamp} is {skew_seconds} s away from now (tolerance {tolerance_seconds} s)"
    )]
    OutsideTolerance {
        timestamp: i64,
        skew_seconds: i64,
        tolerance_seconds: u64,
    },
    #[error("no {SIGNATURE_HEADER} v1 value matches a configured signing secret")]
    Mismatch,
}

/// The header value Ondorse would send for `body` signed at `timestamp`.
pub fn signature_header(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(sign(secret, timestamp, body))
    )
}

fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Checks `header` (the raw `Ondorse-Signature` value) against `body`.
///
/// Accepts when any `v1=` value is the signature of the body under any of
/// `secrets`, and the timestamp is within `tolerance` of `now` (Unix
/// seconds) in either direction. Comparisons are constant-time.
pub fn verify_signature(
    secrets: &[&[u8]],
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed("an element has no '='"));
        };
        match key {
            "t" => {
                let parsed = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed("t is not a whole number"))?;
                timestamp = Some(parsed);
            }
            // A value that is not 64 hex digits cannot match; skip it rather
            // than refuse, so a future scheme can sit next to v1.
            "v1" => {
                if let Ok(bytes) = hex::decode(value)
                    && let Ok(signature) = <[u8; 32]>::try_from(bytes.as_slice())
                {
                    candidates.push(signature);
                }
            }
            // Other schemes (v0, v2...) are ignored, as senders expect.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("t is missing"))?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("no valid v1 value"));
    }
    let skew = now.saturating_sub(timestamp);
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::OutsideTolerance {
            timestamp,
            skew_seconds: skew,
            tolerance_seconds: tolerance.as_secs(),
        });
    }
    // Check every pair without stopping early, so timing reveals nothing
    // about which secret or which position matched.
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let expected = sign(secret, timestamp, body);
        for candidate in &candidates {
            matched |= expected.ct_eq(candidate);
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The event types we know of. Ondorse adds types over time; those land in
/// [`EventType::Other`] and are acknowledged and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    ApplicationCreated,
    ApplicationUpdated,
    ApplicationSubmitted,
    ApplicationReviewUpdated,
    ApplicationStatusUpdated,
    CollectOpened,
    CollectClosed,
    WebhooksTest,
    Other(String),
}

impl EventType {
    /// Every type we know of, each spelt once (by [`EventType::known_name`]).
    const KNOWN: [EventType; 8] = [
        EventType::ApplicationCreated,
        EventType::ApplicationUpdated,
        EventType::ApplicationSubmitted,
        EventType::ApplicationReviewUpdated,
        EventType::ApplicationStatusUpdated,
        EventType::CollectOpened,
        EventType::CollectClosed,
        EventType::WebhooksTest,
    ];

    pub fn parse(name: &str) -> EventType {
        EventType::KNOWN
            .into_iter()
            .find(|known| known.known_name() == Some(name))
            .unwrap_or_else(|| EventType::Other(name.to_owned()))
    }

    /// The wire name of a type we know, `None` for [`EventType::Other`].
    fn known_name(&self) -> Option<&'static str> {
        Some(match self {
            EventType::ApplicationCreated => "application.created",
            EventType::ApplicationUpdated => "application.updated",
            EventType::ApplicationSubmitted => "application.submitted",
            EventType::ApplicationReviewUpdated => "application.review_updated",
            EventType::ApplicationStatusUpdated => "application.status_updated",
            EventType::CollectOpened => "collect.opened",
            EventType::CollectClosed => "collect.closed",
            EventType::WebhooksTest => "webhooks.test",
            EventType::Other(_) => return None,
        })
    }

    /// The wire name, as Ondorse sent it.
    pub fn as_str(&self) -> &str {
        match self {
            EventType::Other(name) => name,
            known => known.known_name().unwrap_or_default(),
        }
    }

    /// The `event_type` metric label: the wire name of a known type, and
    /// `other` for the rest, since a name Ondorse invents must not become
    /// a series of its own.
    pub fn label(&self) -> &'static str {
        self.known_name().unwrap_or("other")
    }

    /// True for types the bridge has no use for: stored for the record and
    /// deduplication, then skipped by the sync engine.
    pub fn is_ignorable(&self) -> bool {
        matches!(self, EventType::WebhooksTest | EventType::Other(_))
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One Ondorse webhook event, as much of it as we rely on, plus the raw
/// `data.object` for everything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEnvelope {
    pub event_id: String,
    /// The type exactly as sent; see [`WebhookEnvelope::kind`].
    pub event_type: String,
    pub created_at: Option<String>,
    /// From `data.object.id`, `data.object.application_id` or a top-level
    /// `application_id`, in that order.
    pub application_id: Option<String>,
    /// `data.object` as sent (`null` when absent).
    pub object: serde_json::Value,
}

impl WebhookEnvelope {
    pub fn kind(&self) -> EventType {
        EventType::parse(&self.event_type)
    }
}

/// Why a webhook body is not an envelope we can use.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the body is JSON but not an object")]
    NotAnObject,
    #[error("the envelope has no {0} (a non-empty string is required)")]
    MissingField(&'static str),
}

/// Parses a raw webhook body.
pub fn parse_envelope(body: &[u8]) -> Result<WebhookEnvelope, EnvelopeError> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    let serde_json::Value::Object(mut root) = value else {
        return Err(EnvelopeError::NotAnObject);
    };
    let required = |root: &serde_json::Map<String, serde_json::Value>, key: &'static str| {
        root.get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .ok_or(EnvelopeError::MissingField(key))
    };
    let event_id = required(&root, "event_id")?;
    let event_type = required(&root, "type")?;
    let created_at = root
        .get("created_at")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let object = root
        .get_mut("data")
        .and_then(|data| data.get_mut("object"))
        .map(serde_json::Value::take)
        .unwrap_or(serde_json::Value::Null);
    let as_id = |value: Option<&serde_json::Value>| {
        value
            .and_then(serde_json::Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
    };
    let application_id = as_id(object.get("id"))
        .or_else(|| as_id(object.get("application_id")))
        .or_else(|| as_id(root.get("application_id")));
    Ok(WebhookEnvelope {
        event_id,
        event_type,
        created_at,
        application_id,
        object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";
    const NOW: i64 = 1_764_000_000;
    const TOLERANCE: Duration = DEFAULT_SIGNATURE_TOLERANCE;

    #[test]
    fn a_signature_we_produce_verifies() {
        let header = signature_header(SECRET, NOW, b"{}");
        assert_eq!(
            verify_signature(&[SECRET], Some(&header), b"{}", NOW, TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn a_changed_body_or_secret_is_refused() {
        let header = signature_header(SECRET, NOW, b"{}");
        assert_eq!(
            verify_signature(&[SECRET], Some(&header), b"{ }", NOW, TOLERANCE),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&[b"other"], Some(&header), b"{}", NOW, TOLERANCE),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_v1_under_any_secret_is_accepted_during_rotation() {
        let old = signature_header(b"old", NOW, b"{}");
        let new = signature_header(b"new", NOW, b"{}");
        let old_v1 = old.split_once(",v1=").unwrap().1;
        let header = format!("{new},v1={old_v1}");
        assert_eq!(
            verify_signature(&[b"old"], Some(&header), b"{}", NOW, TOLERANCE),
            Ok(())
        );
        assert_eq!(
            verify_signature(&[b"other", b"new"], Some(&old), b"{}", NOW, TOLERANCE),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let limit = TOLERANCE.as_secs() as i64;
        for timestamp in [NOW - limit - 1, NOW + limit + 1] {
            let header = signature_header(SECRET, timestamp, b"{}");
            assert!(matches!(
                verify_signature(&[SECRET], Some(&header), b"{}", NOW, TOLERANCE),
                Err(SignatureError::OutsideTolerance { .. })
            ));
        }
        for timestamp in [NOW - limit, NOW + limit] {
            let header = signature_header(SECRET, timestamp, b"{}");
            assert_eq!(
                verify_signature(&[SECRET], Some(&header), b"{}", NOW, TOLERANCE),
                Ok(())
            );
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        for header in ["", "v1=00", "t=abc,v1=00", "t=1", "t=1,v1=zz"] {
            assert!(
                matches!(
                    verify_signature(&[SECRET], Some(header), b"{}", NOW, TOLERANCE),
                    Err(SignatureError::Malformed(_))
                ),
                "{header:?}"
            );
        }
        assert_eq!(
            verify_signature(&[SECRET], None, b"{}", NOW, TOLERANCE),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn the_application_id_comes_from_any_of_three_places() {
        for body in [
            r#"{"event_id":"e","type":"t","data":{"object":{"id":"app_1"}}}"#,
            r#"{"event_id":"e","type":"t","data":{"object":{"application_id":"app_1"}}}"#,
            r#"{"event_id":"e","type":"t","application_id":"app_1","data":{}}"#,
        ] {
            let envelope = parse_envelope(body.as_bytes()).unwrap();
            assert_eq!(envelope.application_id.as_deref(), Some("app_1"), "{body}");
        }
    }

    #[test]
    fn the_envelope_keeps_the_object_and_names_its_type() {
        let envelope = parse_envelope(
            br#"{"event_id":"evt_1","type":"collect.opened","created_at":"2026-11-26T09:12:03.104000Z",
                 "data":{"object":{"id":"app_1","portals":{"link":"k3J9"}}}}"#,
        )
        .unwrap();
        assert_eq!(envelope.event_id, "evt_1");
        assert_eq!(envelope.kind(), EventType::CollectOpened);
        assert_eq!(envelope.object["portals"]["link"], "k3J9");
        assert_eq!(
            envelope.created_at.as_deref(),
            Some("2026-11-26T09:12:03.104000Z")
        );
        assert!(!envelope.kind().is_ignorable());
        assert!(EventType::parse("kyc.something_new").is_ignorable());
    }

    #[test]
    fn known_types_are_their_own_label_and_others_share_one() {
        for known in EventType::KNOWN {
            assert_eq!(EventType::parse(known.as_str()), known);
            assert_eq!(known.label(), known.as_str());
        }
        let invented = EventType::parse("x.custom_event_1234");
        assert_eq!(invented.as_str(), "x.custom_event_1234");
        assert_eq!(invented.label(), "other");
    }

    #[test]
    fn missing_ids_and_broken_json_are_explained() {
        let missing = parse_envelope(br#"{"type":"application.created"}"#).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "the envelope has no event_id (a non-empty string is required)"
        );
        assert!(matches!(
            parse_envelope(br#"{"event_id":"e"}"#),
            Err(EnvelopeError::MissingField("type"))
        ));
        assert!(matches!(
            parse_envelope(br#"{"event_id":"e","type""#),
            Err(EnvelopeError::Json(_))
        ));
        assert!(matches!(
            parse_envelope(b"[1]"),
            Err(EnvelopeError::NotAnObject)
        ));
    }
}
