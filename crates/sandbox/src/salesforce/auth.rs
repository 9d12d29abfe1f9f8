//! `POST /services/oauth2/token`: the JWT bearer, client credentials and
//! refresh token flows, with Salesforce's answers and refusals.

use std::collections::HashMap;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use super::faults::Faults;
use super::org::Org;
use crate::latency::Endpoint;

/// The `grant_type` of the JWT bearer flow.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// A JWT may expire at most this far ahead (Salesforce: 3 minutes).
const MAX_JWT_LIFETIME_SECONDS: i64 = 3 * 60;
/// Clock skew tolerated on `exp`, both ways.
const JWT_CLOCK_SKEW_SECONDS: i64 = 5;

/// Which host answered: login.salesforce.com refuses client credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    Login,
    Instance,
}

/// An RSA key pair for the JWT bearer flow, in PEM.
#[derive(Clone)]
pub struct JwtKeyPair {
    /// PKCS#8 `PRIVATE KEY`, as `jsonwebtoken::EncodingKey::from_rsa_pem` reads it.
    pub private_key_pem: String,
    /// SubjectPublicKeyInfo `PUBLIC KEY`: what the connected app's certificate holds.
    pub public_key_pem: String,
}

impl std::fmt::Debug for JwtKeyPair {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JwtKeyPair")
            .field("private_key_pem", &"<redacted>")
            .field("public_key_pem", &self.public_key_pem)
            .finish()
    }
}

/// A fresh RSA 2048 key pair (for tests and the demo).
pub fn generate_jwt_key_pair() -> JwtKeyPair {
    let key_pair = KeyPair::generate(KeySize::Rsa2048).expect("aws-lc-rs generates RSA 2048 keys");
    let private_der = key_pair
        .as_der()
        .expect("a generated key encodes as PKCS#8");
    let public_der = key_pair
        .public_key()
        .as_der()
        .expect("a generated public key encodes as SubjectPublicKeyInfo");
    JwtKeyPair {
        private_key_pem: pem::encode(&pem::Pem::new("PRIVATE KEY", private_der.as_ref().to_vec())),
        public_key_pem: pem::encode(&pem::Pem::new("PUBLIC KEY", public_der.as_ref().to_vec())),
    }
}

/// The connected app's certificate, read once: a sandbox set up with a bad
/// key fails to start instead of refusing every assertion.
pub(crate) fn verification_key(pem: &str) -> std::io::Result<DecodingKey> {
    DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|error| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("jwt_public_key_pem is not an RSA public key in PEM form: {error}"),
        )
    })
}

/// A 400 from the token endpoint: `{"error", "error_description"}`.
#[derive(Debug)]
struct Refusal {
    error: &'static str,
    description: &'static str,
}

fn refusal(error: &'static str, description: &'static str) -> Refusal {
    Refusal { error, description }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response()
    }
}

/// The token endpoint, for either host.
pub(crate) async fn token(
    shared: Shared,
    host: Host,
    headers: HeaderMap,
    form: Result<axum::Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    shared.delay().await;
    shared.latency.wait(Endpoint::SalesforceToken, 0).await;
    let mut org = shared.lock();
    org.stats.token_requests += 1;
    if Faults::take(&mut org.faults.refused_logins) {
        return refusal("invalid_grant", "authentication failure").into_response();
    }
    let Ok(axum::Form(form)) = form else {
        return refusal(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        )
        .into_response();
    };
    match grant(&mut org, host, &headers, &form) {
        Ok(session) => Json(session).into_response(),
        Err(refused) => {
            tracing::debug!(
                error = refused.error,
                description = refused.description,
                "sandbox salesforce refused a token request"
            );
            refused.into_response()
        }
    }
}

/// Runs one grant: the session answer, or why it is refused.
fn grant(
    org: &mut Org,
    host: Host,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Value, Refusal> {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    match field("grant_type") {
        JWT_BEARER_GRANT => {
            let assertion = form
                .get("assertion")
                .ok_or_else(|| refusal("invalid_request", "assertion is missing"))?;
            check_assertion(org, assertion)?;
            Ok(org.issue_session(None))
        }
        "client_credentials" => {
            if host == Host::Login {
                return Err(refusal(
                    "invalid_grant",
                    "request not supported on this domain",
                ));
            }
            let (client_id, client_secret) = basic_credentials(headers).unwrap_or_else(|| {
                (
                    field("client_id").to_owned(),
                    field("client_secret").to_owned(),
                )
            });
            check_client(&org.options, &client_id, &client_secret)?;
            Ok(org.issue_session(None))
        }
        "refresh_token" => {
            check_client(&org.options, field("client_id"), field("client_secret"))?;
            let rotated = org
                .redeem_refresh_token(field("refresh_token"))
                .ok_or_else(|| refusal("invalid_grant", "expired access/refresh token"))?;
            Ok(org.issue_session(rotated))
        }
        _ => Err(refusal(
            "unsupported_grant_type",
            "grant type not supported",
        )),
    }
}

fn check_client(
    options: &super::SalesforceSandboxOptions,
    client_id: &str,
    client_secret: &str,
) -> Result<(), Refusal> {
    if client_id != options.client_id {
        return Err(refusal("invalid_client_id", "client identifier invalid"));
    }
    if client_secret != options.client_secret {
        return Err(refusal("invalid_client", "invalid client credentials"));
    }
    Ok(())
}

/// `Authorization: Basic base64(client_id:client_secret)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Value>,
    exp: Option<i64>,
}

/// Checks a JWT assertion the way Salesforce does, in its order: signature,
/// issuer, audience, expiry, subject.
fn check_assertion(org: &Org, assertion: &str) -> Result<(), Refusal> {
    let options = &org.options;
    let invalid = || refusal("invalid_grant", "invalid assertion");
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| invalid())?;
    if header.alg != Algorithm::RS256 {
        return Err(refusal(
            "invalid_grant",
            "invalid assertion: only RS256 is accepted",
        ));
    }
    let Some(key) = &org.jwt_key else {
        return Err(refusal(
            "invalid_grant",
            "invalid assertion: no certificate is configured for this connected app",
        ));
    };
    let mut validation = Validation::new(Algorithm::RS256);
    // Claims are checked below, one by one, for Salesforce's messages.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(assertion, key, &validation)
        .map_err(|_| invalid())?
        .claims;
    if claims.iss.as_deref() != Some(options.client_id.as_str()) {
        return Err(refusal("invalid_client_id", "client identifier invalid"));
    }
    let audiences = super::audiences(&org.login_url);
    let audience_ok = match &claims.aud {
        Some(Value::String(audience)) => audiences.contains(audience),
        Some(Value::Array(values)) => values
            .iter()
            .filter_map(Value::as_str)
            .any(|audience| audiences.iter().any(|accepted| accepted == audience)),
        _ => false,
    };
    if !audience_ok {
        return Err(refusal("invalid_grant", "audience is invalid"));
    }
    let now = chrono::Utc::now().timestamp();
    match claims.exp {
        Some(exp) if exp < now - JWT_CLOCK_SKEW_SECONDS => {
            return Err(refusal("invalid_grant", "expired authorization code"));
        }
        Some(exp) if exp > now + MAX_JWT_LIFETIME_SECONDS + JWT_CLOCK_SKEW_SECONDS => {
            return Err(refusal(
                "invalid_grant",
                "invalid assertion: exp is more than 3 minutes ahead",
            ));
        }
        Some(_) => {}
        None => {
            return Err(refusal(
                "invalid_grant",
                "invalid assertion: exp is missing",
            ));
        }
    }
    let subject = claims.sub.unwrap_or_default();
    if options
        .unapproved_usernames
        .iter()
        .any(|username| username.eq_ignore_ascii_case(&subject))
    {
        return Err(refusal(
            "invalid_grant",
            "user hasn't approved this consumer",
        ));
    }
    if !subject.eq_ignore_ascii_case(&options.username) {
        return Err(refusal(
            "invalid_grant",
            "invalid user: the subject is not a user of this org",
        ));
    }
    Ok(())
}
