//! The JWT bearer flow's assertion (RFC 7523), signed with the
//! configured RSA key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::salesforce::error::SalesforceError;

/// The `grant_type` of the JWT bearer flow (RFC 7523).
pub(super) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How far ahead the JWT `exp` claim lies. Salesforce refuses more than
/// three minutes; two and a half leave room for our clock running ahead.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(150);

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
pub(super) struct JwtBearer {
    pub(super) client_id: String,
    /// The JWT `sub`: the integration user's username.
    pub(super) username: String,
    pub(super) audience: String,
    /// PEM-encoded RSA private key.
    pub(super) private_key: SecretString,
}

impl JwtBearer {
    /// A fresh RS256 assertion. The key is parsed at each use so that it
    /// only ever lives outside its `SecretString` for the time of signing.
    pub(super) fn assertion(&self) -> Result<String, SalesforceError> {
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
