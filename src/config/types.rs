//! The validated configuration: one type per section, and the defaults of
//! every key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;

use super::Origins;
use crate::store::Retention;
use crate::sync::retry::RetrySettings;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, so messages can name it.
    pub source: PathBuf,
    /// Where each key was set, so checks after loading can point at it.
    pub origins: Origins,
    pub salesforce: SalesforceConfig,
    pub ondorse: OndorseConfig,
    pub webhooks: WebhooksConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub mappings: MappingsConfig,
    pub schedule: ScheduleConfig,
    /// `[retry]`: the one retry policy of both APIs (keys
    /// `initial_delay_seconds`, `max_delay_seconds`, `retry_after_cap_seconds`).
    pub retry: RetrySettings,
}

/// `[salesforce]`: where the org is and how we prove who we are.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// Token host, without a trailing slash (`https://login.salesforce.com`,
    /// or the org's My Domain for client credentials).
    pub login_url: String,
    /// REST API version without the `v`, e.g. `62.0`.
    pub api_version: String,
    pub auth: SalesforceAuth,
    /// Share (0..=100) of the org's daily API allowance above which
    /// non-urgent work (polling, reconcile) pauses.
    pub api_budget_percent: u8,
    /// REST calls in flight at once (queries and writes together).
    pub max_concurrent_requests: usize,
    /// How long portal-link write-backs may wait to fill a batch while no
    /// decision is waiting (decisions are written at once).
    pub link_batch_wait: Duration,
}

/// The OAuth 2.0 flow used against `{login_url}/services/oauth2/token`.
#[derive(Debug, Clone)]
pub enum SalesforceAuth {
    JwtBearer {
        client_id: String,
        /// The JWT `sub`: the integration user's username.
        username: String,
        /// The JWT `aud` (defaults to `login_url`).
        audience: String,
        /// PEM-encoded RSA private key.
        private_key: SecretString,
    },
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
    },
    RefreshToken {
        client_id: String,
        client_secret: SecretString,
        refresh_token: SecretString,
    },
}

/// `[ondorse]`: the Ondorse API and how the key travels.
#[derive(Debug, Clone)]
pub struct OndorseConfig {
    /// API base, without a trailing slash; paths under `/api/` are appended.
    pub base_url: String,
    pub api_key: SecretString,
    /// Header that carries the key (default `Authorization`).
    pub auth_header: String,
    /// Prefix before the key (default `Bearer`); empty sends the bare key.
    pub auth_scheme: String,
    /// Host used to build a portal URL from its `link` when `url` is absent.
    pub portal_base_url: String,
    /// Portal POSTs in flight at once.
    pub max_concurrent_requests: usize,
    /// Application reads (`GET /api/applications/{id}`) in flight at once,
    /// in slots of their own.
    pub max_concurrent_reads: usize,
}

/// `[webhooks]`: the public listener that Ondorse and Salesforce Flows post to.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    pub listen: SocketAddr,
    /// The unguessable path segment: `/webhooks/ondorse/<secret>`.
    pub path_secret: SecretString,
    /// Source networks allowed to post; empty allows any.
    pub allowed_ips: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Optional HMAC key for `Ondorse-Signature`.
    pub signing_secret: Option<SecretString>,
    /// How long slow and idle clients may hold a connection, and how many
    /// connections are served at once.
    pub limits: ListenerLimits,
}

/// What a listener grants one connection (`[webhooks]` `*_timeout_seconds`
/// and `max_connections`); the admin listener uses the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// From connecting, or from a request's first byte, to its whole head.
    pub header_read_timeout: Duration,
    /// Between an answer and the next request on a keep-alive connection.
    pub idle_timeout: Duration,
    /// From a request's head to the end of its body.
    pub body_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECONDS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECONDS),
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_SECONDS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `[admin]`: the loopback listener for health, metrics and `/admin/*`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: SecretString,
    /// How long logins, a mapping's polls or the writer may keep failing
    /// before `/readyz` answers 503 (key `failure_grace_seconds`).
    pub failure_grace: Duration,
}

/// `[store]`: where the sled ledger lives, and how long it keeps evidence.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// `retention_days`: how long journal entries that record what was
    /// sent, decided and written are kept (default five years).
    pub retention: Retention,
    /// `page_cache_mib`: the bound on sled's page cache, in MiB.
    pub page_cache_mib: u64,
}

/// `[mappings]`: the directory of YAML mapping files.
#[derive(Debug, Clone)]
pub struct MappingsConfig {
    pub dir: PathBuf,
}

/// `[schedule]`: cron expressions (with seconds) and the intake overlap.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub poll: String,
    pub reconcile: String,
    /// How far behind the cursor each poll re-reads, because Salesforce rows
    /// can commit after their `SystemModstamp` (key `overlap_seconds`).
    pub overlap: Duration,
}

// The defaults README's "Configuration" and `config/example.toml` document.
// Operators' files rely on them: change none lightly.
pub const DEFAULT_LOGIN_URL: &str = "https://login.salesforce.com";
pub const DEFAULT_API_VERSION: &str = "62.0";
pub const DEFAULT_API_BUDGET_PERCENT: u8 = 50;
pub const DEFAULT_AUTH_HEADER: &str = "Authorization";
pub const DEFAULT_AUTH_SCHEME: &str = "Bearer";
pub const DEFAULT_PORTAL_BASE_URL: &str = "https://collect.ondorse.co";
/// Ondorse publishes no rate limit: 32 requests in flight give a portal
/// backfill about 94 portals/s at its 340 ms mean POST latency, and a 429
/// still backs portal creation off as a whole.
pub const DEFAULT_ONDORSE_MAX_CONCURRENT_REQUESTS: usize = 32;
/// Application reads are how decisions arrive, one per webhook: at 200
/// decisions/s and a 162 ms mean read, 32 are in flight on average
/// (Little's law), and the count swings around that mean. 64 keep a read
/// from waiting for a slot at that rate (about 390 reads/s before they
/// queue); a read is a light GET, and a 429 still backs reads off.
pub const DEFAULT_ONDORSE_MAX_CONCURRENT_READS: usize = 64;
/// Salesforce limits concurrency only for long-running requests (25 per
/// org running 20 s or more); short calls are limited by the daily API
/// allowance, which the budget governor watches. A decision is written at
/// once in its own call (about 270 ms): at 200 decisions/s that is 54 calls
/// in flight on average, so 100 leave room for the swings around that mean
/// instead of piling decisions into slower batched calls. An org whose
/// calls run long (heavy triggers) lowers it to 25; the engine falls back
/// to 25 on its own once the org refuses a call for too many long-running
/// requests ([`crate::salesforce::ORG_LONG_REQUESTS`]).
pub const DEFAULT_SALESFORCE_MAX_CONCURRENT_REQUESTS: usize = 100;
/// A link write-back waits at most this long for company (2 s fill a
/// 200-record call at the realistic backfill's pace).
pub const DEFAULT_LINK_BATCH_WAIT_SECONDS: u64 = 2;
pub const DEFAULT_WEBHOOKS_LISTEN: &str = "127.0.0.1:8700";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8701";
pub const DEFAULT_STORE_PATH: &str = "/var/lib/ondorse-bridge";
/// The longest `[store] retention_days` short of forever (`0`): a century.
pub const MAX_RETENTION_DAYS: u64 = 100 * 366;
/// The largest `[store] page_cache_mib`: 64 GiB, more than any org's store.
pub const MAX_PAGE_CACHE_MIB: u64 = 64 * 1024;
pub const DEFAULT_MAPPINGS_DIR: &str = "/etc/ondorse-bridge/mappings";
pub const DEFAULT_POLL_SCHEDULE: &str = "*/30 * * * * *";
pub const DEFAULT_RECONCILE_SCHEDULE: &str = "0 */10 * * * *";
/// Salesforce stamps a row when its transaction starts and commits it up to
/// minutes later; 15 minutes of overlap covers long transactions.
pub const DEFAULT_OVERLAP_SECONDS: u64 = 15 * 60;
/// One failed poll is a blip; five minutes of them is an outage someone
/// should look at.
pub const DEFAULT_FAILURE_GRACE_SECONDS: u64 = 5 * 60;
/// A webhook head is a few hundred bytes: ten seconds is generous even on a
/// poor link, and short enough that a trickling client ties nothing up.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
/// Ondorse and reverse proxies reuse connections within seconds; an idle
/// connection kept longer only holds a descriptor.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 30;
/// A body is at most 1 MiB; ten seconds is 100 KiB/s.
pub const DEFAULT_BODY_TIMEOUT_SECONDS: u64 = 10;
/// Far above what Ondorse and a Flow send at once, far below the unit's
/// `LimitNOFILE=65536`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Longest accepted listener timeout: beyond it a client is surely gone.
pub(super) const MAX_LISTENER_TIMEOUT_SECONDS: u64 = 600;
/// Most connections served at once (the unit's `LimitNOFILE`).
pub(super) const MAX_CONNECTIONS: u64 = 65536;
/// Shortest accepted webhook path secret: it is the first defence of the
/// public listener, so it must not be guessable.
pub const MIN_PATH_SECRET_LENGTH: usize = 16;
