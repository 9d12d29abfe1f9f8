//! One reader per section: each key is declared once, by the typed reader
//! line that takes it (its type, default and range).

use std::time::Duration;

use secrecy::SecretString;

use super::load::Loader;
use super::*;
use crate::store::DEFAULT_PAGE_CACHE_MIB;
use crate::sync::retry::RetrySettings;

/// Above this, concurrency is a mistake rather than a choice.
const MAX_CONCURRENT_REQUESTS: u64 = 1_000;
/// A link waiting longer than this is a mistake: reconcile runs meanwhile.
const MAX_LINK_BATCH_WAIT_SECONDS: u64 = 3_600;
/// The OAuth flows `[salesforce] auth` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    JwtBearer,
    ClientCredentials,
    RefreshToken,
}

impl Loader {
    pub(super) fn salesforce(&mut self) -> SalesforceConfig {
        const SECTION: &str = "salesforce";
        let login_url = self.string_or(SECTION, "login_url", DEFAULT_LOGIN_URL);
        let login_url = self.url(SECTION, "login_url", Some(login_url));
        let api_version = self.string_or(SECTION, "api_version", DEFAULT_API_VERSION);
        let api_version = api_version.trim_start_matches(['v', 'V']).to_owned();
        let version_ok = api_version.split_once('.').is_some_and(|(major, minor)| {
            !major.is_empty()
                && !minor.is_empty()
                && major.chars().all(|c| c.is_ascii_digit())
                && minor.chars().all(|c| c.is_ascii_digit())
        });
        if !version_ok {
            self.problem(
                SECTION,
                "api_version",
                format!("{api_version:?} is not a version like 62.0"),
            );
        }
        let flow = self.string_or(SECTION, "auth", "jwt_bearer");
        let client_id =
            self.required_string(SECTION, "client_id", "the connected app's consumer key");
        let username = self.string(SECTION, "username");
        let audience = self.string(SECTION, "audience");
        let audience = self.url(SECTION, "audience", audience);
        let flow = match flow.as_str() {
            "jwt_bearer" => Some(Flow::JwtBearer),
            "client_credentials" => Some(Flow::ClientCredentials),
            "refresh_token" => Some(Flow::RefreshToken),
            other => {
                self.problem(
                    SECTION,
                    "auth",
                    format!("unknown flow {other:?}; expected jwt_bearer, client_credentials or refresh_token"),
                );
                None
            }
        };
        if flow == Some(Flow::JwtBearer) && username.is_none() {
            self.missing(
                SECTION,
                "username",
                "the integration user, subject of the JWT",
            );
        }
        // Each secret is read when the flow uses it; another flow's key is
        // accepted as text and left unused.
        let private_key = self.flow_secret_file(
            SECTION,
            "private_key_file",
            (flow == Some(Flow::JwtBearer)).then_some("the connected app's RSA key in PEM"),
            |pem| crate::salesforce::rsa_private_key(pem).map(drop),
        );
        let client_secret = self.flow_secret_file(
            SECTION,
            "client_secret_file",
            matches!(flow, Some(Flow::ClientCredentials | Flow::RefreshToken))
                .then_some("the connected app's consumer secret"),
            |_| Ok(()),
        );
        let refresh_token = self.flow_secret_file(
            SECTION,
            "refresh_token_file",
            (flow == Some(Flow::RefreshToken))
                .then_some("the refresh token of the integration user"),
            |_| Ok(()),
        );
        let client_id = client_id.unwrap_or_default();
        let auth = match flow {
            Some(Flow::JwtBearer) => SalesforceAuth::JwtBearer {
                client_id,
                username: username.unwrap_or_default(),
                audience: if audience.is_empty() {
                    login_url.clone()
                } else {
                    audience
                },
                private_key,
            },
            Some(Flow::RefreshToken) => SalesforceAuth::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            },
            Some(Flow::ClientCredentials) | None => SalesforceAuth::ClientCredentials {
                client_id,
                client_secret,
            },
        };
        let api_budget_percent = self.unsigned(
            SECTION,
            "api_budget_percent",
            u64::from(DEFAULT_API_BUDGET_PERCENT),
            100,
        ) as u8;
        let max_concurrent_requests = self.concurrency(
            SECTION,
            "max_concurrent_requests",
            DEFAULT_SALESFORCE_MAX_CONCURRENT_REQUESTS,
        );
        let link_batch_wait = Duration::from_secs(self.unsigned(
            SECTION,
            "link_batch_wait_seconds",
            DEFAULT_LINK_BATCH_WAIT_SECONDS,
            MAX_LINK_BATCH_WAIT_SECONDS,
        ));
        SalesforceConfig {
            login_url,
            api_version,
            auth,
            api_budget_percent,
            max_concurrent_requests,
            link_batch_wait,
        }
    }

    /// `[store] page_cache_mib`: at least 1 MiB.
    pub(super) fn page_cache_mib(&mut self) -> u64 {
        const KEY: &str = "page_cache_mib";
        let mib = self.unsigned("store", KEY, DEFAULT_PAGE_CACHE_MIB, MAX_PAGE_CACHE_MIB);
        if mib == 0 {
            self.problem("store", KEY, "must be at least 1 MiB");
        }
        mib.max(1)
    }

    /// A number of requests in flight at once (`key` of `section`): at
    /// least 1.
    fn concurrency(&mut self, section: &str, key: &str, default: usize) -> usize {
        let requests = self.unsigned(section, key, default as u64, MAX_CONCURRENT_REQUESTS);
        if requests == 0 {
            self.problem(section, key, "must be at least 1 request");
        }
        requests.max(1) as usize
    }

    /// A secret the auth flow needs (`why` says what for), read and
    /// required; a secret of another flow (`why` is `None`) is accepted as
    /// text, unused, and empty.
    fn flow_secret_file(
        &mut self,
        section: &str,
        key: &str,
        why: Option<&str>,
        check: fn(&SecretString) -> Result<(), String>,
    ) -> SecretString {
        let secret = match why {
            Some(why) => self.required_secret_file_checked(section, key, why, check),
            None => {
                self.string(section, key);
                None
            }
        };
        secret.unwrap_or_else(|| SecretString::from(String::new()))
    }

    pub(super) fn ondorse(&mut self) -> OndorseConfig {
        const SECTION: &str = "ondorse";
        let base_url = self.required_string(
            SECTION,
            "base_url",
            "the Ondorse API base URL; it has no default",
        );
        let base_url = self.url(SECTION, "base_url", base_url);
        let api_key = self.required_secret_file(
            SECTION,
            "api_key_file",
            "the file holding the Ondorse API key",
        );
        let auth_header = self.string_or(SECTION, "auth_header", DEFAULT_AUTH_HEADER);
        if http::HeaderName::from_bytes(auth_header.as_bytes()).is_err() {
            self.problem(
                SECTION,
                "auth_header",
                format!("{auth_header:?} is not a valid HTTP header name"),
            );
        }
        let auth_scheme = self.string_or(SECTION, "auth_scheme", DEFAULT_AUTH_SCHEME);
        let portal_base_url = self.string_or(SECTION, "portal_base_url", DEFAULT_PORTAL_BASE_URL);
        let portal_base_url = self.url(SECTION, "portal_base_url", Some(portal_base_url));
        let max_concurrent_requests = self.concurrency(
            SECTION,
            "max_concurrent_requests",
            DEFAULT_ONDORSE_MAX_CONCURRENT_REQUESTS,
        );
        let max_concurrent_reads = self.concurrency(
            SECTION,
            "max_concurrent_reads",
            DEFAULT_ONDORSE_MAX_CONCURRENT_READS,
        );
        OndorseConfig {
            base_url,
            api_key: api_key.unwrap_or_else(|| SecretString::from(String::new())),
            auth_header,
            auth_scheme,
            portal_base_url,
            max_concurrent_requests,
            max_concurrent_reads,
        }
    }

    pub(super) fn webhooks(&mut self) -> WebhooksConfig {
        const SECTION: &str = "webhooks";
        let listen = self.socket_address(SECTION, "listen", DEFAULT_WEBHOOKS_LISTEN);
        let path_secret = self.required_secret_file(
            SECTION,
            "path_secret_file",
            "the secret path segment Ondorse posts to",
        );
        if let Some(secret) = &path_secret {
            use secrecy::ExposeSecret;
            let secret = secret.expose_secret();
            if secret.chars().count() < MIN_PATH_SECRET_LENGTH
                || !secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                self.problem(
                    SECTION,
                    "path_secret_file",
                    format!(
                        "the path secret must be at least {MIN_PATH_SECRET_LENGTH} URL-safe characters (letters, digits, - and _), e.g. the output of `openssl rand -hex 16`"
                    ),
                );
            }
        }
        let allowed_ips = self.networks(SECTION, "allowed_ips");
        let trusted_proxies = self.networks(SECTION, "trusted_proxies");
        let signing_secret = self.secret_file(SECTION, "signing_secret_file");
        let mut timeout = |key: &str, default: u64| {
            let seconds = self.unsigned(SECTION, key, default, MAX_LISTENER_TIMEOUT_SECONDS);
            if seconds == 0 {
                self.problem(SECTION, key, "must be at least 1 second");
            }
            Duration::from_secs(seconds.max(1))
        };
        let header_read_timeout = timeout(
            "header_read_timeout_seconds",
            DEFAULT_HEADER_READ_TIMEOUT_SECONDS,
        );
        let idle_timeout = timeout("idle_timeout_seconds", DEFAULT_IDLE_TIMEOUT_SECONDS);
        let body_timeout = timeout("body_timeout_seconds", DEFAULT_BODY_TIMEOUT_SECONDS);
        let max_connections = self.unsigned(
            SECTION,
            "max_connections",
            DEFAULT_MAX_CONNECTIONS as u64,
            MAX_CONNECTIONS,
        );
        if max_connections == 0 {
            self.problem(SECTION, "max_connections", "must be at least 1");
        }
        WebhooksConfig {
            listen,
            path_secret: path_secret.unwrap_or_else(|| SecretString::from(String::new())),
            allowed_ips,
            trusted_proxies,
            signing_secret,
            limits: ListenerLimits {
                header_read_timeout,
                idle_timeout,
                body_timeout,
                max_connections: max_connections.max(1) as usize,
            },
        }
    }

    pub(super) fn admin(&mut self) -> AdminConfig {
        const SECTION: &str = "admin";
        let listen = self.socket_address(SECTION, "listen", DEFAULT_ADMIN_LISTEN);
        let token =
            self.required_secret_file(SECTION, "token_file", "the bearer token of the admin API");
        // A week: longer means readiness never looks at polls.
        const MAX_FAILURE_GRACE_SECONDS: u64 = 7 * 24 * 60 * 60;
        let failure_grace = self.unsigned(
            SECTION,
            "failure_grace_seconds",
            DEFAULT_FAILURE_GRACE_SECONDS,
            MAX_FAILURE_GRACE_SECONDS,
        );
        AdminConfig {
            listen,
            token: token.unwrap_or_else(|| SecretString::from(String::new())),
            failure_grace: Duration::from_secs(failure_grace),
        }
    }

    pub(super) fn schedule(&mut self) -> ScheduleConfig {
        const SECTION: &str = "schedule";
        let poll = self.string_or(SECTION, "poll", DEFAULT_POLL_SCHEDULE);
        self.check_cron(SECTION, "poll", &poll);
        let reconcile = self.string_or(SECTION, "reconcile", DEFAULT_RECONCILE_SCHEDULE);
        self.check_cron(SECTION, "reconcile", &reconcile);
        // A day is far more than any transaction stays open.
        const MAX_OVERLAP_SECONDS: u64 = 24 * 60 * 60;
        let overlap = self.unsigned(
            SECTION,
            "overlap_seconds",
            DEFAULT_OVERLAP_SECONDS,
            MAX_OVERLAP_SECONDS,
        );
        ScheduleConfig {
            poll,
            reconcile,
            overlap: Duration::from_secs(overlap),
        }
    }

    pub(super) fn retry(&mut self) -> RetrySettings {
        use crate::sync::retry::{
            DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY, DEFAULT_RETRY_AFTER_CAP,
        };
        const SECTION: &str = "retry";
        // A day: a longer wait is an outage nobody would notice.
        const MAX_SECONDS: f64 = 24.0 * 60.0 * 60.0;
        let initial_delay = self.seconds(
            SECTION,
            "initial_delay_seconds",
            DEFAULT_INITIAL_DELAY,
            MAX_SECONDS,
        );
        let max_delay = self.seconds(SECTION, "max_delay_seconds", DEFAULT_MAX_DELAY, MAX_SECONDS);
        let retry_after_cap = self.seconds(
            SECTION,
            "retry_after_cap_seconds",
            DEFAULT_RETRY_AFTER_CAP,
            MAX_SECONDS,
        );
        if max_delay < initial_delay {
            self.problem(
                SECTION,
                "max_delay_seconds",
                format!(
                    "{} is below initial_delay_seconds = {}",
                    max_delay.as_secs_f64(),
                    initial_delay.as_secs_f64()
                ),
            );
        }
        RetrySettings {
            initial_delay,
            max_delay,
            retry_after_cap,
        }
    }
}
