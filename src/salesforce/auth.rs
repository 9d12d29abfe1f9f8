//! OAuth 2.0 against `{login_url}/services/oauth2/token`: JWT bearer, client
//! credentials and refresh token, with one token request at a time.
//!
//! Salesforce tokens carry no lifetime: a token is used until a call answers
//! `401 INVALID_SESSION_ID`, then renewed. Many calls can fail together on
//! the same dead token; the first to take the renewal lock requests a new
//! token and the others find it already replaced ([`Authenticator::renew`]),
//! so an expiry costs exactly one token request.
//!
//! With refresh-token rotation on, every refresh answers a new refresh token
//! and revokes the old one. When a [`RefreshTokenKeeper`] (the store) is
//! attached, the newest token is kept durably *before* the access token that
//! came with it is used, and preferred at the next start over the file it
//! descends from; a file whose content changed since (an operator issued a
//! new token) wins over the kept one.
//!
//! JWT bearer is a plain form post (the `oauth2` crate has no JWT grant);
//! the two other flows go through `oauth2` with our own reqwest client, so
//! every flow shares the same timeouts and never follows a redirect.

use std::sync::{Arc, Mutex as SyncMutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, ExtraTokenFields, RefreshToken,
    RequestTokenError, StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{SalesforceAuth, SalesforceConfig};
use crate::salesforce::client::Endpoint;
use crate::salesforce::error::{SalesforceError, excerpt, transport_reason};
use crate::telemetry::Metrics;

/// Path of the token endpoint under `login_url`.
const TOKEN_PATH: &str = "/services/oauth2/token";
/// The `grant_type` of the JWT bearer flow (RFC 7523).
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How far ahead the JWT `exp` claim lies. Salesforce refuses more than
/// three minutes; two and a half leave room for our clock running ahead.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(150);

/// A working access token and the org host it is valid on.
pub(crate) struct Session {
    pub(crate) access_token: SecretString,
    /// The org's API host from the token answer, without a trailing slash.
    /// Every REST call goes here, never to `login_url`.
    pub(crate) instance_url: String,
}

/// A refresh token kept across restarts, with the fingerprint of the
/// `refresh_token_file` content it descends from.
pub struct KeptRefreshToken {
    pub token: SecretString,
    pub file_fingerprint: String,
}

/// Where the newest refresh token is kept durably (the store).
pub trait RefreshTokenKeeper: Send + Sync {
    /// The token kept so far, if any.
    fn load(&self) -> Result<Option<KeptRefreshToken>, String>;
    /// Keeps `kept`; it is on disk when the future resolves.
    fn keep<'a>(
        &'a self,
        kept: &'a KeptRefreshToken,
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
}

/// Logins refused in a row: since when, and the last refusal's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRefusal {
    pub since: chrono::DateTime<chrono::Utc>,
    pub message: String,
}

/// The refresh token in use, guarded by the renewal lock.
struct RefreshState {
    /// `None` for flows without one.
    token: Option<SecretString>,
    /// Whether the keeper was asked for a newer token than the file's.
    keeper_consulted: bool,
}

/// Gets and renews access tokens; shared by every clone of the client.
pub(crate) struct Authenticator {
    http: reqwest::Client,
    /// Token requests count in the client's registry.
    metrics: Metrics,
    token_url: String,
    flow: Flow,
    /// Held for the whole token request, so renewals happen one at a time.
    /// It guards the refresh token because rotation replaces it on every
    /// refresh.
    renewal: tokio::sync::Mutex<RefreshState>,
    /// Keeps rotated refresh tokens across restarts, once attached.
    keeper: OnceLock<Arc<dyn RefreshTokenKeeper>>,
    /// Since when logins are refused (bad or revoked credentials), and the
    /// last refusal; `None` once one succeeds. Readiness and `status` show it.
    refused: SyncMutex<Option<LoginRefusal>>,
    /// The session in use. A plain mutex: reads are short, never held across
    /// an await, and [`crate::salesforce::SalesforceClient::instance_url`] is
    /// synchronous.
    current: SyncMutex<Option<Arc<Session>>>,
}

/// The configured flow, with the secrets it needs.
enum Flow {
    JwtBearer(JwtBearer),
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
    },
    RefreshToken {
        client_id: String,
        client_secret: SecretString,
        /// SHA-256 of the configured file's token: which file a kept token
        /// descends from.
        file_fingerprint: String,
    },
}

impl Flow {
    /// The configuration name of the flow, for messages.
    fn name(&self) -> &'static str {
        match self {
            Flow::JwtBearer(_) => "jwt_bearer",
            Flow::ClientCredentials { .. } => "client_credentials",
            Flow::RefreshToken { .. } => "refresh_token",
        }
    }

    fn client_id(&self) -> &str {
        match self {
            Flow::JwtBearer(JwtBearer { client_id, .. })
            | Flow::ClientCredentials { client_id, .. }
            | Flow::RefreshToken { client_id, .. } => client_id,
        }
    }
}

/// What Salesforce adds to a standard token answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SalesforceTokenFields {
    instance_url: String,
    /// The identity URL of the user (`.../id/{org}/{user}`).
    #[serde(default)]
    id: Option<String>,
}

impl ExtraTokenFields for SalesforceTokenFields {}

type TokenAnswer = StandardTokenResponse<SalesforceTokenFields, BasicTokenType>;

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
    /// Reads the flow from the configuration and checks what can be checked
    /// offline: a JWT private key must parse and sign.
    pub(crate) fn new(
        http: reqwest::Client,
        config: &SalesforceConfig,
        metrics: Metrics,
    ) -> Result<Authenticator, SalesforceError> {
        let (flow, refresh_token) = match &config.auth {
            SalesforceAuth::JwtBearer {
                client_id,
                username,
                audience,
                private_key,
            } => {
                let jwt = JwtBearer {
                    client_id: client_id.clone(),
                    username: username.clone(),
                    audience: audience.clone(),
                    private_key: private_key.clone(),
                };
                // Sign once now so a bad key fails at startup and `check`,
                // not at the first poll.
                jwt.assertion()?;
                (Flow::JwtBearer(jwt), None)
            }
            SalesforceAuth::ClientCredentials {
                client_id,
                client_secret,
            } => (
                Flow::ClientCredentials {
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                },
                None,
            ),
            SalesforceAuth::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => (
                Flow::RefreshToken {
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    file_fingerprint: hex::encode(Sha256::digest(
                        refresh_token.expose_secret().as_bytes(),
                    )),
                },
                Some(refresh_token.clone()),
            ),
        };
        Ok(Authenticator {
            http,
            metrics,
            token_url: format!("{}{TOKEN_PATH}", config.login_url.trim_end_matches('/')),
            flow,
            renewal: tokio::sync::Mutex::new(RefreshState {
                token: refresh_token,
                keeper_consulted: false,
            }),
            keeper: OnceLock::new(),
            refused: SyncMutex::new(None),
            current: SyncMutex::new(None),
        })
    }

    /// Keeps rotated refresh tokens in `keeper` from now on, and prefers
    /// the one it holds over the file's when it descends from the same file.
    /// Only the first keeper attached counts.
    pub(crate) fn keep_refresh_tokens_in(&self, keeper: Arc<dyn RefreshTokenKeeper>) {
        let _ = self.keeper.set(keeper);
    }

    pub(crate) fn flow_name(&self) -> &'static str {
        self.flow.name()
    }

    pub(crate) fn client_id(&self) -> &str {
        self.flow.client_id()
    }

    pub(crate) fn token_url(&self) -> &str {
        &self.token_url
    }

    /// The session in use, if a token was obtained.
    pub(crate) fn current(&self) -> Option<Arc<Session>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn instance_url(&self) -> Option<String> {
        self.current().map(|session| session.instance_url.clone())
    }

    /// The session to call with, getting a first token if there is none.
    pub(crate) async fn session(&self) -> Result<Arc<Session>, SalesforceError> {
        match self.current() {
            Some(session) => Ok(session),
            None => self.renew(None).await,
        }
    }

    /// A session other than `failed`: the one another caller already got
    /// while we waited for the lock, or a new token.
    ///
    /// `failed` is the session a call was refused with (`None`: no session
    /// was seen yet). Comparing by identity is what makes concurrent 401s
    /// cost one token request.
    pub(crate) async fn renew(
        &self,
        failed: Option<&Arc<Session>>,
    ) -> Result<Arc<Session>, SalesforceError> {
        let mut refresh = self.renewal.lock().await;
        if let Some(current) = self.current() {
            let still_failing = failed.is_some_and(|failed| Arc::ptr_eq(failed, &current));
            if !still_failing {
                return Ok(current);
            }
        }
        self.consult_keeper(&mut refresh)?;
        let answer = self.request_token(&refresh.token).await;
        if let Err(error @ SalesforceError::Auth { .. }) = &answer {
            let mut refused = self.lock_refused();
            let since = refused
                .as_ref()
                .map_or_else(chrono::Utc::now, |refusal| refusal.since);
            *refused = Some(LoginRefusal {
                since,
                message: error.to_string(),
            });
        }
        let answer = answer?;
        let instance_url = answer.extra_fields().instance_url.trim_end_matches('/');
        if !instance_url.starts_with("https://") && !instance_url.starts_with("http://") {
            return Err(SalesforceError::Decode {
                what: format!("instance_url in the token answer from {}", self.token_url),
                excerpt: excerpt(instance_url.as_bytes()),
            });
        }
        let session = Arc::new(Session {
            access_token: SecretString::from(answer.access_token().secret().to_owned()),
            instance_url: instance_url.to_owned(),
        });
        if let Some(rotated) = answer.refresh_token() {
            // With rotation on, the old refresh token is dead from now on:
            // the new one is kept on disk before its access token is used.
            let rotated = SecretString::from(rotated.secret().to_owned());
            refresh.token = Some(rotated.clone());
            if let (
                Some(keeper),
                Flow::RefreshToken {
                    file_fingerprint, ..
                },
            ) = (self.keeper.get(), &self.flow)
            {
                let kept = KeptRefreshToken {
                    token: rotated,
                    file_fingerprint: file_fingerprint.clone(),
                };
                keeper
                    .keep(&kept)
                    .await
                    .map_err(|reason| SalesforceError::TokenNotKept { reason })?;
            }
            tracing::info!(
                flow = self.flow.name(),
                kept = self.keeper.get().is_some(),
                "salesforce rotated the refresh token"
            );
        }
        tracing::info!(
            flow = self.flow.name(),
            instance_url = %session.instance_url,
            user = answer.extra_fields().id.as_deref().unwrap_or(""),
            "salesforce access token obtained"
        );
        *self.lock_refused() = None;
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(session.clone());
        Ok(session)
    }

    fn lock_refused(&self) -> std::sync::MutexGuard<'_, Option<LoginRefusal>> {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Since when logins are refused, while no login succeeded since.
    pub(crate) fn refusal(&self) -> Option<LoginRefusal> {
        self.lock_refused().clone()
    }

    /// Once, before the first refresh with a keeper: takes the kept token
    /// when it descends from the configured file (the file's own token was
    /// rotated away), else keeps to the file (an operator put a new one).
    fn consult_keeper(&self, refresh: &mut RefreshState) -> Result<(), SalesforceError> {
        let (
            Some(keeper),
            Flow::RefreshToken {
                file_fingerprint, ..
            },
        ) = (self.keeper.get(), &self.flow)
        else {
            return Ok(());
        };
        if refresh.keeper_consulted {
            return Ok(());
        }
        let kept = keeper
            .load()
            .map_err(|reason| SalesforceError::TokenNotKept { reason })?;
        refresh.keeper_consulted = true;
        match kept {
            Some(kept) if kept.file_fingerprint == *file_fingerprint => {
                tracing::info!("using the newest salesforce refresh token, kept in the store");
                refresh.token = Some(kept.token);
            }
            Some(_) => tracing::info!(
                "salesforce.refresh_token_file changed since the kept refresh token was issued: the file's token is used"
            ),
            None => {}
        }
        Ok(())
    }

    /// One token request for the configured flow.
    async fn request_token(
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

/// Parses the JWT bearer flow's key; the error says what was expected.
/// The configuration checks it with this at load, so `check` refuses what
/// `run` would.
pub fn rsa_private_key(pem: &SecretString) -> Result<EncodingKey, String> {
    EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes()).map_err(|error| {
        format!(
            "is not an RSA private key in PEM form ({error}); \
             expected a file starting with -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----"
        )
    })
}

/// The claims of a Salesforce JWT bearer assertion.
#[derive(Serialize)]
struct Claims<'a> {
    /// The connected app's consumer key.
    iss: &'a str,
    /// The user to log in as.
    sub: &'a str,
    aud: &'a str,
    /// Seconds since the epoch.
    exp: u64,
}

/// The JWT bearer flow's identity and key.
struct JwtBearer {
    client_id: String,
    /// The JWT `sub`: the integration user's username.
    username: String,
    audience: String,
    /// PEM-encoded RSA private key.
    private_key: SecretString,
}

impl JwtBearer {
    /// A fresh RS256 assertion. The key is parsed at each use so that it
    /// only ever lives outside its `SecretString` for the time of signing.
    fn assertion(&self) -> Result<String, SalesforceError> {
        let key = rsa_private_key(&self.private_key).map_err(|reason| {
            SalesforceError::Configuration(format!("salesforce.private_key_file {reason}"))
        })?;
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(ASSERTION_LIFETIME);
        let claims = Claims {
            iss: &self.client_id,
            sub: &self.username,
            aud: &self.audience,
            exp: expires.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).map_err(|error| {
            SalesforceError::Configuration(format!(
                "cannot sign the salesforce jwt assertion with salesforce.private_key_file: {error}"
            ))
        })
    }
}
