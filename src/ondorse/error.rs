//! What can go wrong talking to Ondorse, and whether trying again can help.

use std::time::Duration;

/// How many characters of an unexpected body an error keeps: enough to
/// recognise an HTML error page or a truncated JSON, short enough for a log line.
pub const BODY_EXCERPT_CHARS: usize = 300;

/// A failed call to the Ondorse API.
#[derive(Debug, thiserror::Error)]
pub enum OndorseError {
    /// The configuration cannot produce a working client.
    #[error("invalid ondorse configuration: {key}: {reason}")]
    InvalidConfig { key: &'static str, reason: String },

    /// 401 or 403: the key is wrong, revoked, or sent in the wrong header.
    #[error(
        "ondorse refused the api key (http {status}: {detail}); check ondorse.api_key_file, ondorse.auth_header and ondorse.auth_scheme"
    )]
    Unauthorized { status: u16, detail: String },

    /// 404 on a named resource.
    #[error("ondorse has no {what} (http 404: {detail})")]
    NotFound { what: String, detail: String },

    /// 422: the request was understood and refused; `detail` is flattened
    /// to `loc.path: msg` items joined by `; `.
    #[error("ondorse refused the request as invalid: {detail}")]
    Validation { detail: String },

    /// An `Idempotency-Key` came back with another body (Stripe-style 422):
    /// the key's first request created something; this one creates nothing.
    #[error("ondorse refused a reused idempotency key: {detail}")]
    IdempotencyConflict { status: u16, detail: String },

    /// 429: the caller waits (`Retry-After` when given) and tries again.
    #[error("ondorse rate limit exceeded (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },

    /// 5xx.
    #[error("ondorse server error (http {status}): {body_excerpt}")]
    Server { status: u16, body_excerpt: String },

    /// A redirect the client did not follow: to another host (the api key
    /// would go with it), or too many of them.
    #[error(
        "ondorse answered {url} with http {status}, a redirect to {location}, which is not followed to another host (the api key would be sent there); if that is the new API address, set ondorse.base_url to it"
    )]
    Redirected {
        status: u16,
        url: String,
        location: String,
    },

    /// Any other 4xx.
    #[error("ondorse refused the request (http {status}): {detail}")]
    Client { status: u16, detail: String },

    /// The connection failed or was dropped before a full answer arrived.
    /// For `POST /api/portals` the portal may exist anyway: retry with the
    /// same `Idempotency-Key`.
    #[error("could not reach ondorse at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// No answer within the client's request timeout.
    #[error("ondorse did not answer {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },

    /// A 2xx answer whose body is not what the contract describes.
    #[error("could not read the ondorse {what} answer: {reason}; body starts with: {excerpt}")]
    Decode {
        what: &'static str,
        reason: String,
        excerpt: String,
    },
}

impl OndorseError {
    /// Whether the same request may succeed later: rate limits, server
    /// errors, timeouts and dropped connections.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            OndorseError::RateLimited { .. }
                | OndorseError::Server { .. }
                | OndorseError::Transport { .. }
                | OndorseError::Timeout { .. }
        )
    }

    /// The HTTP status Ondorse answered, when the call got an answer.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            OndorseError::Unauthorized { status, .. }
            | OndorseError::Server { status, .. }
            | OndorseError::Client { status, .. }
            | OndorseError::IdempotencyConflict { status, .. }
            | OndorseError::Redirected { status, .. } => Some(*status),
            OndorseError::NotFound { .. } => Some(404),
            OndorseError::Validation { .. } => Some(422),
            OndorseError::RateLimited { .. } => Some(429),
            OndorseError::InvalidConfig { .. }
            | OndorseError::Transport { .. }
            | OndorseError::Timeout { .. }
            | OndorseError::Decode { .. } => None,
        }
    }

    /// How long the server asked us to wait, when it said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OndorseError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// A readable summary of an Ondorse error body.
///
/// Understands `{"detail":"..."}` and FastAPI-style
/// `{"detail":[{"loc":[...],"msg":"...","type":"..."}]}` (flattened to
/// `body.default_custom_fields: msg; ...`); anything else becomes an excerpt
/// of the raw body, so nothing the server said is lost.
pub fn error_detail(body: &[u8]) -> String {
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(body) {
        match object.get("detail") {
            Some(serde_json::Value::String(detail)) => return detail.clone(),
            Some(serde_json::Value::Array(items)) if !items.is_empty() => {
                return items
                    .iter()
                    .map(validation_item)
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            Some(other) if !other.is_null() => return other.to_string(),
            _ => {}
        }
    }
    excerpt(body)
}

/// One `{"loc":[...],"msg":"..."}` item as `loc.joined: msg`.
fn validation_item(item: &serde_json::Value) -> String {
    let message = match item.get("msg") {
        Some(serde_json::Value::String(message)) => message.clone(),
        _ => return item.to_string(),
    };
    let location = item
        .get("loc")
        .and_then(serde_json::Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .map(|part| match part {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(".")
        })
        .unwrap_or_default();
    if location.is_empty() {
        message
    } else {
        format!("{location}: {message}")
    }
}

/// The start of a body as text, for error messages; `<empty body>` when empty.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "<empty body>".to_owned();
    }
    match text.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_shapes_are_flattened() {
        assert_eq!(
            error_detail(br#"{"detail":"Invalid API key"}"#),
            "Invalid API key"
        );
        assert_eq!(
            error_detail(
                br#"{"detail":[{"loc":["body","default_custom_fields"],"msg":"value is not a valid dict","type":"type_error.dict"},{"loc":["body","redirect_url",0],"msg":"bad url","type":"x"}]}"#
            ),
            "body.default_custom_fields: value is not a valid dict; body.redirect_url.0: bad url"
        );
        assert_eq!(error_detail(br#"{"detail":{"code":7}}"#), r#"{"code":7}"#);
        assert_eq!(
            error_detail(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(error_detail(b""), "<empty body>");
    }

    #[test]
    fn excerpts_are_bounded() {
        let long = "é".repeat(BODY_EXCERPT_CHARS * 2);
        let cut = excerpt(long.as_bytes());
        assert_eq!(cut.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn retriable_errors() {
        assert!(OndorseError::RateLimited { retry_after: None }.is_retriable());
        assert!(
            OndorseError::Server {
                status: 503,
                body_excerpt: String::new()
            }
            .is_retriable()
        );
        assert!(
            !OndorseError::Validation {
                detail: String::new()
            }
            .is_retriable()
        );
        assert_eq!(
            OndorseError::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
            .retry_after(),
            Some(Duration::from_secs(2))
        );
    }
}
