//! How the state commands (`status`, `explain`, `dead-letters`, `resync`)
//! reach the ledger: the running daemon holds the store, so they ask its
//! admin API; with the daemon stopped they open the store themselves. The
//! store's lock decides, so the store is never opened twice; a store that
//! is not there is never created by them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::Failure;
use crate::config::{AdminConfig, Config};
use crate::store::{Store, StoreError};
use crate::sync::operations::OperationError;

/// How long a quick admin call (status, explain, dead letters) may take.
const QUICK_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the admin listener may take: it is local.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a state command gets its answers.
pub enum Access {
    /// The daemon runs: through its admin API.
    Daemon(AdminClient),
    /// The daemon is stopped: the store, opened by this process.
    Store(Store),
}

impl Access {
    /// The daemon's admin API when it holds the store, else the store
    /// itself; a store that does not exist is not created but refused,
    /// naming `[store] path` (the wrong `--config`, most often).
    pub async fn open(config: &Config) -> Result<Access, Failure> {
        match Store::open_existing(&config.store.path).await {
            Ok(store) => Ok(Access::Store(store)),
            Err(StoreError::InUse { .. }) => Ok(Access::Daemon(AdminClient::new(&config.admin)?)),
            Err(error @ StoreError::Missing { .. }) => Err(Failure::Invalid(format!(
                "{}: [store] path: {error}; is this the configuration the daemon runs with?",
                config.origins.of("store", "path")
            ))),
            Err(error) => Err(Failure::Runtime(error.into())),
        }
    }
}

/// Turns an operation's refusal into the command's failure: a wrong
/// request is bad usage (exit 2), anything else a runtime failure.
pub fn operation_failure(error: OperationError) -> Failure {
    if error.is_bad_request() {
        Failure::Invalid(error.to_string())
    } else {
        Failure::Runtime(error.into())
    }
}

/// A client of the daemon's admin API.
pub struct AdminClient {
    http: reqwest::Client,
    base_url: String,
    token: SecretString,
}

impl AdminClient {
    pub fn new(config: &AdminConfig) -> Result<AdminClient, Failure> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|error| {
                Failure::Runtime(anyhow::anyhow!("cannot build the http client: {error}"))
            })?;
        Ok(AdminClient {
            http,
            base_url: format!("http://{}", connectable(config.listen)),
            token: config.token.clone(),
        })
    }

    /// `GET /admin/{path}`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        let request = self.http.get(self.url(path)).timeout(QUICK_CALL_TIMEOUT);
        self.send(path, request).await
    }

    /// `POST /admin/{path}` with a JSON body; `timeout` `None` waits as
    /// long as the daemon works (a resync of everything takes a while).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        timeout: Option<Duration>,
    ) -> Result<T, Failure> {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        self.send(path, request).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}/admin/{path}", self.base_url)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Failure> {
        let response = request
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(|error| {
                Failure::Runtime(anyhow::anyhow!(
                    "the store is in use (the daemon runs?), but its admin API at {} did not answer: {error}; check [admin] listen",
                    self.base_url
                ))
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| {
            Failure::Runtime(anyhow::anyhow!(
                "the admin API's answer to {path} was cut off: {error}"
            ))
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|error| {
                Failure::Runtime(anyhow::anyhow!(
                    "the admin API answered {path} with unreadable JSON: {error}"
                ))
            });
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|answer| {
                answer
                    .get("error")
                    .and_then(|error| error.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        Err(match status {
            StatusCode::UNAUTHORIZED => Failure::Invalid(format!(
                "the daemon refused the admin token: is [admin] token_file the one the daemon uses? ({message})"
            )),
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => Failure::Invalid(message),
            _ => Failure::Runtime(anyhow::anyhow!("the daemon answered {status}: {message}")),
        })
    }
}

/// The address a client connects to for a listener bound on `listen`: a
/// wildcard address is reached through loopback.
fn connectable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}
