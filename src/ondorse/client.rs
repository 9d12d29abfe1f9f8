//! The Ondorse API client: portals and applications.
//!
//! One `reqwest` client (connection pool) per [`OndorseClient`]; clones share
//! it. The API key lives in a [`SecretString`] and is sent as a sensitive
//! header, so it never shows in `Debug` output or logs.
//!
//! Retries: none here. Each call is one request; the sync engine owns the
//! one retry layer (a breaker per endpoint and parked items with growing
//! delays), so retries never nest. For `create_portal` the engine owns the
//! durable intent and retries with the same `Idempotency-Key` and the same
//! bytes, so a portal whose answer was lost is returned, not created twice.
//! Every error says whether retrying can help
//! ([`OndorseError::is_retriable`]) and how long the server asked to wait
//! ([`OndorseError::retry_after`]).

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use crate::config::OndorseConfig;
use crate::telemetry::{Api, ApiEndpoint, Metrics};

use super::error::{OndorseError, error_detail, excerpt};
use super::model::{Application, Portal};

/// Time to establish a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole request, answer body included. Ondorse answers in well
/// under a second; 30 s tolerates a slow moment without hanging the engine.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most redirects followed within `ondorse.base_url`'s own host.
pub const MAX_SAME_HOST_REDIRECTS: usize = 5;
/// Header that makes `POST /api/portals` safe to repeat.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// A cheap-to-clone handle on the Ondorse API.
#[derive(Clone)]
pub struct OndorseClient {
    http: reqwest::Client,
    /// `{base_url}/api`, ready for path segments.
    api_base: Url,
    auth_header: HeaderName,
    /// Key with its scheme prefix (`Bearer <key>`), or the bare key.
    auth_value: Arc<SecretString>,
    request_timeout: Duration,
    /// The daemon's registry: requests by endpoint.
    metrics: Metrics,
}

/// An Ondorse endpoint we call, named for the `endpoint` metric label and
/// decode errors (the path holds application Ids, so it never is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/portals`.
    Portal,
    /// `GET /api/applications/{id}`.
    Application,
}

impl ApiEndpoint for Endpoint {
    const API: Api = Api::Ondorse;

    fn label(self) -> &'static str {
        match self {
            Endpoint::Portal => "portal",
            Endpoint::Application => "application",
        }
    }
}

impl std::fmt::Debug for OndorseClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OndorseClient")
            .field("api_base", &self.api_base.as_str())
            .field("auth_header", &self.auth_header)
            .finish_non_exhaustive()
    }
}

impl OndorseClient {
    /// Builds a client from `[ondorse]`, counting its requests in `metrics`;
    /// fails on an unusable base URL or header name, never on network
    /// conditions.
    pub fn new(config: &OndorseConfig, metrics: Metrics) -> Result<OndorseClient, OndorseError> {
        let mut api_base =
            Url::parse(config.base_url.trim()).map_err(|error| OndorseError::InvalidConfig {
                key: "ondorse.base_url",
                reason: format!("{:?} is not a url: {error}", config.base_url),
            })?;
        if !matches!(api_base.scheme(), "http" | "https") || api_base.cannot_be_a_base() {
            return Err(OndorseError::InvalidConfig {
                key: "ondorse.base_url",
                reason: format!("{:?} must be an http(s) url", config.base_url),
            });
        }
        api_base
            .path_segments_mut()
            .map_err(|()| OndorseError::InvalidConfig {
                key: "ondorse.base_url",
                reason: format!("{:?} cannot take a path", config.base_url),
            })?
            .pop_if_empty()
            .push("api");

        let auth_header =
            HeaderName::from_bytes(config.auth_header.trim().as_bytes()).map_err(|error| {
                OndorseError::InvalidConfig {
                    key: "ondorse.auth_header",
                    reason: format!("{:?} is not a header name: {error}", config.auth_header),
                }
            })?;
        let scheme = config.auth_scheme.trim();
        let key = config.api_key.expose_secret().trim();
        let auth_value = if scheme.is_empty() {
            key.to_owned()
        } else {
            format!("{scheme} {key}")
        };
        if HeaderValue::from_str(&auth_value).is_err() {
            return Err(OndorseError::InvalidConfig {
                key: "ondorse.api_key_file",
                reason: "the api key (with its scheme) is not a valid header value".to_owned(),
            });
        }

        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(crate::memory::IDLE_CONNECTION_TIMEOUT)
            // reqwest drops `Authorization` on a cross-host redirect but not
            // a custom `ondorse.auth_header` (`X-API-KEY`): the key must
            // never follow a redirect to another host.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let origin = attempt.previous().first().map(Url::origin);
                if attempt.previous().len() > MAX_SAME_HOST_REDIRECTS
                    || origin != Some(attempt.url().origin())
                {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(concat!("ondorse-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| OndorseError::InvalidConfig {
                key: "ondorse",
                reason: format!("cannot build the http client: {error}"),
            })?;

        Ok(OndorseClient {
            http,
            api_base,
            auth_header,
            auth_value: Arc::new(SecretString::from(auth_value)),
            request_timeout: REQUEST_TIMEOUT,
            metrics,
        })
    }

    /// The same client with another per-request timeout (tests, benchmarks).
    pub fn with_request_timeout(mut self, timeout: Duration) -> OndorseClient {
        self.request_timeout = timeout;
        self
    }

    /// `POST /api/portals` with `Idempotency-Key`, sending `body` (a JSON
    /// object) byte for byte. A repeated key with the same bytes returns the
    /// first portal when the server honours it. Not retried here: retry with
    /// the same key and the same bytes.
    pub async fn create_portal(
        &self,
        body: &[u8],
        idempotency_key: &str,
    ) -> Result<Portal, OndorseError> {
        let url = self.url(&["portals"]);
        let idempotency =
            HeaderValue::from_str(idempotency_key).map_err(|_| OndorseError::Validation {
                detail: format!("idempotency key {idempotency_key:?} is not a valid header value"),
            })?;
        let request = self
            .request(Method::POST, url)
            .header(IDEMPOTENCY_KEY_HEADER, idempotency)
            .header(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(body.to_vec());
        let portal: Portal = self.send_once(Endpoint::Portal, "portal", request).await?;
        tracing::debug!(portal_id = %portal.id, idempotency_key, "ondorse portal created");
        Ok(portal)
    }

    /// `GET /api/applications/{id}`; `id` is encoded as one path segment.
    pub async fn get_application(&self, id: &str) -> Result<Application, OndorseError> {
        let url = self.url(&["applications", id]);
        let request = self.request(Method::GET, url);
        self.send_once(
            Endpoint::Application,
            &format!("application {id:?}"),
            request,
        )
        .await
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.api_base.clone();
        url.path_segments_mut()
            .expect("the base url was checked to take a path in new()")
            .extend(segments);
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let mut auth = HeaderValue::from_str(self.auth_value.expose_secret())
            .expect("the auth header value was checked in new()");
        auth.set_sensitive(true);
        self.http
            .request(method, url)
            .timeout(self.request_timeout)
            .header(self.auth_header.clone(), auth)
    }

    /// Sends one request to `endpoint` and decodes a 2xx body as `T`;
    /// `resource` names the thing a 404 is about.
    async fn send_once<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        resource: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, OndorseError> {
        let (client, request) = request.build_split();
        let request = request.map_err(|source| OndorseError::Transport {
            url: self.api_base.to_string(),
            source,
        })?;
        let url = request.url().to_string();
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                OndorseError::Timeout {
                    url: url.clone(),
                    timeout: self.request_timeout,
                }
            } else {
                OndorseError::Transport {
                    url: url.clone(),
                    source,
                }
            }
        };
        let started = std::time::Instant::now();
        let response = client.execute(request).await.map_err(|error| {
            self.metrics.api_request(endpoint, None, started.elapsed());
            transport(error)
        })?;
        let status = response.status();
        self.metrics
            .api_request(endpoint, Some(status.as_u16()), started.elapsed());
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.bytes().await.map_err(transport)?;
        tracing::debug!(%url, status = status.as_u16(), "ondorse answered");

        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|error| OndorseError::Decode {
                what: endpoint.label(),
                reason: error.to_string(),
                excerpt: excerpt(&body),
            });
        }
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => OndorseError::Unauthorized {
                status: status.as_u16(),
                detail: error_detail(&body),
            },
            StatusCode::NOT_FOUND => OndorseError::NotFound {
                what: resource.to_owned(),
                detail: error_detail(&body),
            },
            // Stripe answers a reused key with 400, 409 or 422 and says so.
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY
                if mentions_idempotency(&body) =>
            {
                OndorseError::IdempotencyConflict {
                    status: status.as_u16(),
                    detail: error_detail(&body),
                }
            }
            StatusCode::UNPROCESSABLE_ENTITY => OndorseError::Validation {
                detail: error_detail(&body),
            },
            StatusCode::TOO_MANY_REQUESTS => OndorseError::RateLimited { retry_after },
            status if status.is_redirection() => OndorseError::Redirected {
                status: status.as_u16(),
                url,
                location: location.unwrap_or_else(|| "(no Location header)".to_owned()),
            },
            status if status.is_server_error() => OndorseError::Server {
                status: status.as_u16(),
                body_excerpt: error_detail(&body),
            },
            status => OndorseError::Client {
                status: status.as_u16(),
                detail: error_detail(&body),
            },
        })
    }
}

/// Whether an error body is about the `Idempotency-Key` (its location, type
/// or message), whatever its shape.
fn mentions_idempotency(body: &[u8]) -> bool {
    String::from_utf8_lossy(body)
        .to_ascii_lowercase()
        .contains("idempotency")
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delay = date.signed_duration_since(chrono::Utc::now());
    Some(delay.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    fn config(base_url: &str, header: &str) -> OndorseConfig {
        OndorseConfig {
            max_concurrent_requests: crate::config::DEFAULT_ONDORSE_MAX_CONCURRENT_REQUESTS,
            max_concurrent_reads: crate::config::DEFAULT_ONDORSE_MAX_CONCURRENT_READS,
            base_url: base_url.to_owned(),
            api_key: SecretString::from("s3cr3t"),
            auth_header: header.to_owned(),
            auth_scheme: "Bearer".to_owned(),
            portal_base_url: "https://collect.ondorse.co".to_owned(),
        }
    }

    #[test]
    fn urls_keep_a_base_path_and_encode_ids() {
        let client = OndorseClient::new(
            &config("https://example.test/prefix/", "Authorization"),
            Metrics::new(),
        )
        .expect("client builds");
        assert_eq!(
            client.url(&["applications", "app 1/2"]).as_str(),
            "https://example.test/prefix/api/applications/app%201%2F2"
        );
    }

    #[test]
    fn bad_configuration_is_named() {
        let error =
            OndorseClient::new(&config("ftp://x", "Authorization"), Metrics::new()).unwrap_err();
        assert!(error.to_string().contains("ondorse.base_url"), "{error}");
        let error =
            OndorseClient::new(&config("https://x", "bad header"), Metrics::new()).unwrap_err();
        assert!(error.to_string().contains("ondorse.auth_header"), "{error}");
        let debug = format!(
            "{:?}",
            OndorseClient::new(&config("https://x", "X-Key"), Metrics::new()).unwrap()
        );
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }
}
