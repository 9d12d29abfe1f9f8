//! One token request per flow. JWT bearer is a plain form post (the
//! `oauth2` crate has no JWT grant); the two other flows go through `oauth2`
//! with our own reqwest client, so every flow shares the same timeouts and
//! never follows a redirect.

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, ExtraTokenFields, RefreshToken,
    RequestTokenError, StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::jwt::JWT_BEARER_GRANT;
use super::{Authenticator, Flow};
use crate::salesforce::client::Endpoint;
use crate::salesforce::error::{SalesforceError, excerpt, transport_reason};
use crate::telemetry::Metrics;

/// What Salesforce adds to a standard token answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SalesforceTokenFields {
    pub(super) instance_url: String,
    /// The identity URL of the user (`.../id/{org}/{user}`).
    #[serde(default)]
    pub(super) id: Option<String>,
}

impl ExtraTokenFields for SalesforceTokenFields {}

pub(super) type TokenAnswer = StandardTokenResponse<SalesforceTokenFields, BasicTokenType>;

/// An `oauth2` client that only knows the token endpoint.
type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    TokenAnswer,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Why a token request got no OAuth answer to read.
#[derive(Debug, thiserror::Error)]
enum TokenTransportError {
    #[error("{reason}")]
    Transport { reason: String, timed_out: bool },
    /// A redirect, a server error, or a body that is not JSON.
    #[error("unexpected answer {status}")]
    Unexpected {
        status: u16,
        location: String,
        body_excerpt: String,
    },
}

impl Authenticator {
    /// One token request for the configured flow.
    pub(super) async fn request_token(
        &self,
        refresh_token: &Option<SecretString>,
    ) -> Result<TokenAnswer, SalesforceError> {
        let http = &self.http;
        // The closure owns its client handle: a future borrowing from the
        // closure is not provably `Send`, and tokens are fetched from
        // spawned tasks.
        let owned_http = self.http.clone();
        let owned_metrics = self.metrics.clone();
        let send = move |request: oauth2::HttpRequest| {
            let http = owned_http.clone();
            let metrics = owned_metrics.clone();
            async move {
                let request = reqwest::Request::try_from(request).map_err(transport_error)?;
                send_token_request(&http, &metrics, request).await
            }
        };
        let result = match &self.flow {
            Flow::JwtBearer(jwt) => {
                let assertion = jwt.assertion()?;
                let request = http
                    .post(&self.token_url)
                    .header(http::header::ACCEPT, "application/json")
                    .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
                    .build()
                    .map_err(|error| {
                        SalesforceError::Configuration(format!(
                            "invalid salesforce token url {}: {error}",
                            self.token_url
                        ))
                    })?;
                return self
                    .read_jwt_answer(send_token_request(http, &self.metrics, request).await);
            }
            Flow::ClientCredentials {
                client_id,
                client_secret,
            } => {
                self.oauth_client(client_id, client_secret)?
                    .exchange_client_credentials()
                    .request_async(&send)
                    .await
            }
            Flow::RefreshToken {
                client_id,
                client_secret,
                ..
            } => {
                let Some(current) = refresh_token.as_ref() else {
                    return Err(SalesforceError::Configuration(
                        "no salesforce refresh token; set salesforce.refresh_token_file".to_owned(),
                    ));
                };
                let token = RefreshToken::new(current.expose_secret().to_owned());
                self.oauth_client(client_id, client_secret)?
                    .exchange_refresh_token(&token)
                    .request_async(&send)
                    .await
            }
        };
        result.map_err(|error| self.token_error(error))
    }

    /// An `oauth2` client for one request: the secret leaves its
    /// `SecretString` only for the time of the call.
    fn oauth_client(
        &self,
        client_id: &str,
        client_secret: &SecretString,
    ) -> Result<OAuthClient, SalesforceError> {
        let token_url = TokenUrl::new(self.token_url.clone()).map_err(|error| {
            SalesforceError::Configuration(format!(
                "invalid salesforce token url {}: {error}",
                self.token_url
            ))
        })?;
        Ok(oauth2::Client::new(ClientId::new(client_id.to_owned()))
            .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_owned()))
            // The form-body variant is the one every Salesforce doc shows.
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url))
    }

    /// Reads the answer to a JWT bearer request (the same answers as the
    /// other flows, read the way `oauth2` reads them).
    fn read_jwt_answer(
        &self,
        answer: Result<oauth2::HttpResponse, TokenTransportError>,
    ) -> Result<TokenAnswer, SalesforceError> {
        let response =
            answer.map_err(|error| self.token_error(RequestTokenError::Request(error)))?;
        let body = response.body().as_slice();
        if response.status() == http::StatusCode::OK {
            serde_json::from_slice(body).map_err(|error| SalesforceError::Decode {
                what: format!("token answer from {}", self.token_url),
                // The body holds the access token: name the problem only.
                excerpt: error.to_string(),
            })
        } else {
            match serde_json::from_slice::<BasicErrorResponse>(body) {
                Ok(refusal) => Err(self.token_error(RequestTokenError::ServerResponse(refusal))),
                Err(_) => Err(self.token_error(RequestTokenError::Request(
                    TokenTransportError::Unexpected {
                        status: response.status().as_u16(),
                        location: String::new(),
                        body_excerpt: excerpt(body),
                    },
                ))),
            }
        }
    }

    /// The likeliest fix for a refused login, from Salesforce's wording.
    fn hint(&self, description: &str) -> &'static str {
        let description = description.to_ascii_lowercase();
        match &self.flow {
            Flow::ClientCredentials { .. } if description.contains("domain") => {
                "client credentials work only on the org's My Domain: set salesforce.login_url to https://<domain>.my.salesforce.com"
            }
            Flow::JwtBearer(_) if description.contains("approved") => {
                "pre-authorize the integration user for the connected app (admin approved users, with its profile or permission set)"
            }
            Flow::JwtBearer(_) if description.contains("audience") => {
                "set salesforce.audience to https://login.salesforce.com, https://test.salesforce.com or the community URL"
            }
            Flow::RefreshToken { .. }
                if description.contains("expired") || description.contains("revoked") =>
            {
                "the refresh token was revoked or rotated away: authorize the connected app again to issue a new one, write it to salesforce.refresh_token_file and restart the daemon (a new file wins over the token kept in the store)"
            }
            _ => "check the connected app, the user and the credentials",
        }
    }

    fn token_error(
        &self,
        error: RequestTokenError<TokenTransportError, BasicErrorResponse>,
    ) -> SalesforceError {
        let url = self.token_url.clone();
        match error {
            RequestTokenError::ServerResponse(refusal) => {
                let description = refusal.error_description().cloned().unwrap_or_default();
                SalesforceError::Auth {
                    url,
                    flow: self.flow.name(),
                    error: refusal.error().as_ref().to_owned(),
                    hint: self.hint(&description),
                    description,
                }
            }
            RequestTokenError::Request(TokenTransportError::Transport { reason, timed_out }) => {
                SalesforceError::Transport {
                    endpoint: format!("POST {url}"),
                    reason,
                    timed_out,
                }
            }
            RequestTokenError::Request(TokenTransportError::Unexpected {
                status,
                location,
                body_excerpt,
            }) => SalesforceError::TokenEndpoint {
                url,
                status,
                location,
                body_excerpt,
            },
            // The body may hold a token: report the parser's finding only.
            RequestTokenError::Parse(error, _body) => SalesforceError::Decode {
                what: format!("token answer from {url}"),
                excerpt: error.to_string(),
            },
            RequestTokenError::Other(message) => SalesforceError::Decode {
                what: format!("token answer from {url}"),
                excerpt: message,
            },
        }
    }
}

/// Sends one token request with our client and lets through only what an
/// OAuth server answers: `200` or a `4xx` with JSON. A redirect (we never
/// follow one), a `5xx` or an HTML page becomes [`TokenTransportError::Unexpected`].
async fn send_token_request(
    http: &reqwest::Client,
    metrics: &Metrics,
    request: reqwest::Request,
) -> Result<oauth2::HttpResponse, TokenTransportError> {
    let started = std::time::Instant::now();
    let response = http.execute(request).await.map_err(|error| {
        metrics.api_request(Endpoint::Token, None, started.elapsed());
        transport_error(error)
    })?;
    let status = response.status();
    metrics.api_request(Endpoint::Token, Some(status.as_u16()), started.elapsed());
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(transport_error)?;
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().starts_with("application/json"));
    let readable = status == http::StatusCode::OK || status.is_client_error();
    if !(readable && is_json) {
        let location = headers
            .get(http::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(|target| format!(" (redirect to {target})"))
            .unwrap_or_default();
        return Err(TokenTransportError::Unexpected {
            status: status.as_u16(),
            location,
            // A 200 that is not JSON could still hold a token: never echo it.
            body_excerpt: if status.is_success() {
                "(body withheld)".to_owned()
            } else {
                excerpt(&body)
            },
        });
    }
    let mut answer = http::Response::new(body.to_vec());
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    Ok(answer)
}

fn transport_error(error: reqwest::Error) -> TokenTransportError {
    TokenTransportError::Transport {
        timed_out: error.is_timeout(),
        reason: transport_reason(error),
    }
}
