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
//! - [`flows`]: one token request per flow, its answer read and its refusal
//!   explained.
//! - [`renewal`]: single-flight renewal and the kept refresh token.
//! - [`jwt`]: the JWT bearer assertion and its key.

mod flows;
mod jwt;
mod renewal;

pub use jwt::rsa_private_key;

use std::sync::{Arc, Mutex as SyncMutex, OnceLock};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::config::{SalesforceAuth, SalesforceConfig};
use crate::salesforce::error::SalesforceError;
use crate::telemetry::Metrics;
use jwt::JwtBearer;

/// Path of the token endpoint under `login_url`.
const TOKEN_PATH: &str = "/services/oauth2/token";

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
}
