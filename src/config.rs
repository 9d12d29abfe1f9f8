//! The TOML configuration (SPEC §5): raw keys in, validated settings out.
//!
//! Loading goes through the `config` crate (TOML file, then
//! `ONDORSE_BRIDGE__SECTION__KEY` environment overrides). Every problem is
//! collected before failing, so an operator fixes a file in one pass. Secrets
//! are read from `*_file` keys into [`SecretString`] at once and never printed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;

use crate::sync::retry::RetrySettings;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ondorse-bridge/config.toml";
/// Environment variable naming the configuration file (beaten by `--config`).
pub const CONFIG_PATH_ENV: &str = "ONDORSE_BRIDGE_CONFIG";
/// Prefix of the environment overrides: `ONDORSE_BRIDGE__SALESFORCE__API_VERSION`.
pub const ENV_PREFIX: &str = "ONDORSE_BRIDGE";
/// Separator between prefix, section and key in environment overrides.
pub const ENV_SEPARATOR: &str = "__";
/// systemd's `LoadCredential=` directory: relative secret file names live here.
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";

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

/// `[store]`: where the sled ledger lives.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
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

// Defaults of SPEC §5. Operators' files rely on them: change none lightly.
pub const DEFAULT_LOGIN_URL: &str = "https://login.salesforce.com";
pub const DEFAULT_API_VERSION: &str = "62.0";
pub const DEFAULT_API_BUDGET_PERCENT: u8 = 50;
pub const DEFAULT_AUTH_HEADER: &str = "Authorization";
pub const DEFAULT_AUTH_SCHEME: &str = "Bearer";
pub const DEFAULT_PORTAL_BASE_URL: &str = "https://collect.ondorse.co";
pub const DEFAULT_WEBHOOKS_LISTEN: &str = "127.0.0.1:8700";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8701";
pub const DEFAULT_STORE_PATH: &str = "/var/lib/ondorse-bridge";
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
const MAX_LISTENER_TIMEOUT_SECONDS: u64 = 600;
/// Most connections served at once (the unit's `LimitNOFILE`).
const MAX_CONNECTIONS: u64 = 65536;
/// Shortest accepted webhook path secret: it is the first defence of the
/// public listener, so it must not be guessable.
pub const MIN_PATH_SECRET_LENGTH: usize = 16;

/// What `config` writes as the origin of values that came from the environment.
const ENVIRONMENT_ORIGIN: &str = "the environment";

/// Every problem found in a configuration, reported together.
#[derive(Debug, Clone, Default)]
pub struct ConfigErrors {
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(formatter)?;
            }
            write!(formatter, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads the file at `path`, applies environment overrides, reads the
    /// secret files, and validates everything. Relative secret file names
    /// are looked up in `$CREDENTIALS_DIRECTORY`, else next to the file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let credentials_directory = std::env::var_os(CREDENTIALS_DIRECTORY_ENV).map(PathBuf::from);
        Self::load_with(path, credentials_directory.as_deref())
    }

    /// [`Config::load`] with the credentials directory given explicitly.
    pub fn load_with(
        path: &Path,
        credentials_directory: Option<&Path>,
    ) -> Result<Config, ConfigErrors> {
        Self::load_with_environment(path, credentials_directory, std::env::vars().collect())
    }

    /// [`Config::load_with`] reading overrides from `environment` instead of
    /// the process environment (tests, embedding).
    pub fn load_with_environment(
        path: &Path,
        credentials_directory: Option<&Path>,
        environment: HashMap<String, String>,
    ) -> Result<Config, ConfigErrors> {
        let single = |message: String| ConfigErrors {
            problems: vec![message],
        };
        let text = std::fs::read_to_string(path).map_err(|error| {
            single(format!(
                "{}: cannot read the configuration file: {error}",
                path.display()
            ))
        })?;
        let positions = Positions::of(path, &text)?;
        let merged = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    // Values stay text (`63.0` must not become the number 63);
                    // lists are comma-separated text, split where they are read.
                    .try_parsing(false)
                    .source(Some(environment.into_iter().collect())),
            )
            .build()
            .map_err(|error| single(format!("{}: {error}", path.display())))?;
        let secrets_base = credentials_directory
            .map(Path::to_path_buf)
            .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
        let mut loader = Loader {
            origins: Origins {
                file: path.to_path_buf(),
                positions,
                from_environment: HashSet::new(),
            },
            sections: BTreeMap::new(),
            known: BTreeMap::new(),
            refused: HashSet::new(),
            secrets_base,
            credentials_directory: credentials_directory.is_some(),
            problems: Vec::new(),
        };
        loader.split_sections(merged);
        let config = Config {
            source: path.to_path_buf(),
            origins: loader.origins.clone(),
            salesforce: loader.salesforce(),
            ondorse: loader.ondorse(),
            webhooks: loader.webhooks(),
            admin: loader.admin(),
            store: StoreConfig {
                path: PathBuf::from(loader.string_or("store", "path", DEFAULT_STORE_PATH)),
            },
            mappings: MappingsConfig {
                dir: PathBuf::from(loader.string_or("mappings", "dir", DEFAULT_MAPPINGS_DIR)),
            },
            schedule: loader.schedule(),
            retry: loader.retry(),
        };
        loader.check_listeners(config.webhooks.listen, config.admin.listen);
        loader.report_unknown_keys();
        if loader.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors {
                problems: loader.problems,
            })
        }
    }
}

impl Config {
    /// Whether the user running this process can create or write the store
    /// directory. `run` needs to; `check` says so before it is started,
    /// naming the user, since under systemd the service's user differs.
    pub fn check_store_path(&self) -> Result<(), String> {
        let path = &self.store.path;
        let refuse = |reason: String| {
            format!(
                "{}: [store] path: {reason}",
                self.origins.of("store", "path")
            )
        };
        let (probed, verb) = if path.exists() {
            (path.as_path(), "written")
        } else {
            let ancestor = path
                .ancestors()
                .skip(1)
                .map(|ancestor| {
                    if ancestor.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        ancestor
                    }
                })
                .find(|ancestor| ancestor.exists())
                .unwrap_or(Path::new("/"));
            (ancestor, "created")
        };
        if !probed.is_dir() {
            return Err(refuse(format!(
                "{} cannot be {verb}: {} is not a directory",
                path.display(),
                probed.display()
            )));
        }
        // A uniquely named file, created then removed.
        let probe = probed.join(format!(
            ".ondorse-bridge-probe-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe);
        created
            .map(|_| drop(std::fs::remove_file(&probe)))
            .map_err(|error| {
                refuse(format!(
                    "{} cannot be {verb} by the user running this command ({}: {error}); \
                 under systemd it is the service's user that needs it (StateDirectory= makes it)",
                    path.display(),
                    probed.display()
                ))
            })
    }
}

/// Line and column (1-based) of every key in the file, for messages.
#[derive(Debug, Clone)]
struct Positions {
    keys: HashMap<(String, String), (usize, usize)>,
    sections: HashMap<String, (usize, usize)>,
}

impl Positions {
    fn of(path: &Path, text: &str) -> Result<Positions, ConfigErrors> {
        let document = toml::de::DeTable::parse(text).map_err(|error| {
            let (line, column) = error
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            ConfigErrors {
                problems: vec![format!(
                    "{}:{line}:{column}: {}",
                    path.display(),
                    error.message().trim_end()
                )],
            }
        })?;
        let mut positions = Positions {
            keys: HashMap::new(),
            sections: HashMap::new(),
        };
        for (section, value) in document.get_ref() {
            let section_name = section.get_ref().to_string();
            // Point at the `[` of the header rather than at the name inside it.
            let start = section.span().start;
            let start = text[..start]
                .rfind('[')
                .filter(|bracket| text[*bracket + 1..start].trim().is_empty())
                .unwrap_or(start);
            positions
                .sections
                .insert(section_name.clone(), line_column(text, start));
            if let toml::de::DeValue::Table(table) = value.get_ref() {
                for (key, _) in table {
                    positions.keys.insert(
                        (section_name.clone(), key.get_ref().to_string()),
                        line_column(text, key.span().start),
                    );
                }
            }
        }
        Ok(positions)
    }
}

/// Where each key's value came from, so any later check can name it.
#[derive(Debug, Clone)]
pub struct Origins {
    file: PathBuf,
    positions: Positions,
    /// (section, key) pairs whose value came from an environment variable.
    from_environment: HashSet<(String, String)>,
}

impl Origins {
    /// `file:line:column` of a key, or the environment variable that set it;
    /// the section's header, or the file, when the key is not written.
    pub fn of(&self, section: &str, key: &str) -> String {
        if self
            .from_environment
            .contains(&(section.to_owned(), key.to_owned()))
        {
            return format!(
                "environment {ENV_PREFIX}{ENV_SEPARATOR}{}{ENV_SEPARATOR}{}",
                section.to_uppercase(),
                key.to_uppercase()
            );
        }
        let position = self
            .positions
            .keys
            .get(&(section.to_owned(), key.to_owned()))
            .or_else(|| self.positions.sections.get(section));
        match position {
            Some((line, column)) => format!("{}:{line}:{column}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }

    fn section(&self, section: &str) -> String {
        match self.positions.sections.get(section) {
            Some((line, column)) => format!("{}:{line}:{column}", self.file.display()),
            None => format!(
                "environment {ENV_PREFIX}{ENV_SEPARATOR}{}{ENV_SEPARATOR}*",
                section.to_uppercase()
            ),
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |tail| tail.chars().count())
        + 1;
    (line, column)
}

/// The type a key's value must have. In the file the TOML type must match
/// (`50`, not `"50"`, `50.5` or `true`); an environment override is text by
/// nature and is parsed as this type.
#[derive(Debug, Clone, Copy)]
enum Expected {
    /// A TOML string.
    Text,
    /// A TOML integer.
    WholeNumber,
    /// A TOML array of strings; comma-separated in the environment.
    TextList,
    /// A TOML integer or float.
    Number,
}

impl Expected {
    fn describe(self) -> &'static str {
        match self {
            Expected::Text => "text in quotes",
            Expected::WholeNumber => "a whole number",
            Expected::TextList => "a list of text like [\"a\", \"b\"]",
            Expected::Number => "a number",
        }
    }
}

/// A value that has its key's type.
enum Typed {
    Text(String),
    WholeNumber(i64),
    TextList(Vec<String>),
    Number(f64),
}

/// How a value of the wrong type is shown: what the operator wrote.
fn shown(kind: &config::ValueKind) -> String {
    use config::ValueKind;
    match kind {
        ValueKind::Nil => "nothing".to_owned(),
        ValueKind::Boolean(value) => format!("the boolean {value}"),
        ValueKind::I64(value) => format!("the number {value}"),
        ValueKind::I128(value) => format!("the number {value}"),
        ValueKind::U64(value) => format!("the number {value}"),
        ValueKind::U128(value) => format!("the number {value}"),
        ValueKind::Float(value) => format!("the number {value:?}"),
        ValueKind::String(text) => format!("the text {text:?}"),
        ValueKind::Table(_) => "a table".to_owned(),
        ValueKind::Array(_) => "a list".to_owned(),
    }
}

impl Typed {
    /// A value from the file, if its TOML type is the expected one.
    fn from_file(expected: Expected, kind: config::ValueKind) -> Result<Typed, String> {
        use config::ValueKind;
        match (expected, kind) {
            (Expected::Text, ValueKind::String(text)) => Ok(Typed::Text(text)),
            (Expected::WholeNumber, ValueKind::I64(number)) => Ok(Typed::WholeNumber(number)),
            (Expected::WholeNumber, ValueKind::U64(number)) => i64::try_from(number)
                .map(Typed::WholeNumber)
                .map_err(|_| format!("the number {number}")),
            (Expected::TextList, ValueKind::Array(items)) => items
                .into_iter()
                .map(|item| match item.kind {
                    ValueKind::String(text) => Ok(text),
                    other => Err(format!("a list holding {}", shown(&other))),
                })
                .collect::<Result<_, _>>()
                .map(Typed::TextList),
            (Expected::Number, ValueKind::Float(number)) => Ok(Typed::Number(number)),
            // Whole seconds are written without a point.
            #[allow(clippy::cast_precision_loss)]
            (Expected::Number, ValueKind::I64(number)) => Ok(Typed::Number(number as f64)),
            #[allow(clippy::cast_precision_loss)]
            (Expected::Number, ValueKind::U64(number)) => Ok(Typed::Number(number as f64)),
            (_, other) => Err(shown(&other)),
        }
    }

    /// An environment override (text) parsed as the expected type.
    fn from_environment(expected: Expected, text: String) -> Result<Typed, String> {
        match expected {
            Expected::Text => Ok(Typed::Text(text)),
            Expected::WholeNumber => text
                .trim()
                .parse()
                .map(Typed::WholeNumber)
                .map_err(|_| format!("{text:?}")),
            // "10.0.0.0/8,192.0.2.7"
            Expected::TextList => Ok(Typed::TextList(
                text.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            Expected::Number => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|number| number.is_finite())
                .map(Typed::Number)
                .ok_or_else(|| format!("{text:?}")),
        }
    }
}

/// Walks the merged values section by section, recording every problem.
///
/// Each key is declared once, by the reader that takes it (`string`,
/// `unsigned`, `networks`...): that call gives its type and default, and
/// marks it known, so whatever no reader took is reported as unknown.
struct Loader {
    origins: Origins,
    sections: BTreeMap<String, config::Map<String, config::Value>>,
    /// Every key a reader asked for, per section: the known keys.
    known: BTreeMap<String, BTreeSet<String>>,
    /// Keys whose value had the wrong type (already reported).
    refused: HashSet<(String, String)>,
    secrets_base: PathBuf,
    credentials_directory: bool,
    problems: Vec<String>,
}

impl Loader {
    fn split_sections(&mut self, merged: config::Config) {
        let names = match merged
            .clone()
            .try_deserialize::<BTreeMap<String, serde::de::IgnoredAny>>()
        {
            Ok(names) => names,
            Err(error) => {
                self.problems
                    .push(format!("{}: {error}", self.origins.file.display()));
                return;
            }
        };
        for section in names.into_keys() {
            match merged.get_table(&section) {
                Ok(table) => {
                    for (key, value) in &table {
                        if value.origin() == Some(ENVIRONMENT_ORIGIN) {
                            self.origins
                                .from_environment
                                .insert((section.clone(), key.clone()));
                        }
                    }
                    self.sections.insert(section, table);
                }
                Err(error) => {
                    let location = self.section_location(&section);
                    self.problems
                        .push(format!("{location}: [{section}] must be a table: {error}"));
                }
            }
        }
    }

    fn section_location(&self, section: &str) -> String {
        self.origins.section(section)
    }

    fn location(&self, section: &str, key: &str) -> String {
        self.origins.of(section, key)
    }

    fn problem(&mut self, section: &str, key: &str, message: impl std::fmt::Display) {
        let location = self.location(section, key);
        self.problems
            .push(format!("{location}: [{section}] {key}: {message}"));
    }

    fn missing(&mut self, section: &str, key: &str, why: &str) {
        if self.refused.contains(&(section.to_owned(), key.to_owned())) {
            return;
        }
        let location = self.location(section, key);
        self.problems
            .push(format!("{location}: [{section}] {key} is required ({why})"));
    }

    /// Marks a key known and takes its value, untyped.
    fn take(&mut self, section: &str, key: &str) -> Option<config::Value> {
        self.known
            .entry(section.to_owned())
            .or_default()
            .insert(key.to_owned());
        self.sections.get_mut(section)?.remove(key)
    }

    /// Takes a key's value as `expected`; a value of another type is
    /// reported (naming the key, the type and where it came from) and
    /// treated as absent.
    fn typed(&mut self, section: &str, key: &str, expected: Expected) -> Option<Typed> {
        let value = self.take(section, key)?;
        let from_environment = self
            .origins
            .from_environment
            .contains(&(section.to_owned(), key.to_owned()));
        let typed = match value.kind {
            config::ValueKind::String(text) if from_environment => {
                Typed::from_environment(expected, text)
            }
            kind => Typed::from_file(expected, kind),
        };
        typed
            .map_err(|found| {
                self.problem(
                    section,
                    key,
                    format!("expected {}, found {found}", expected.describe()),
                );
                self.refused.insert((section.to_owned(), key.to_owned()));
            })
            .ok()
    }

    /// A text value, or `None` when absent or of the wrong type (recorded).
    fn string(&mut self, section: &str, key: &str) -> Option<String> {
        match self.typed(section, key, Expected::Text)? {
            Typed::Text(text) => Some(text),
            Typed::WholeNumber(_) | Typed::TextList(_) | Typed::Number(_) => None,
        }
    }

    fn string_or(&mut self, section: &str, key: &str, default: &str) -> String {
        self.string(section, key)
            .unwrap_or_else(|| default.to_owned())
    }

    fn required_string(&mut self, section: &str, key: &str, why: &str) -> Option<String> {
        match self.string(section, key) {
            Some(text) if !text.trim().is_empty() => Some(text),
            Some(_) => {
                self.problem(section, key, format!("must not be empty ({why})"));
                None
            }
            None => {
                self.missing(section, key, why);
                None
            }
        }
    }

    /// A whole number in `0..=maximum`, or `default` when absent or wrong
    /// (recorded).
    fn unsigned(&mut self, section: &str, key: &str, default: u64, maximum: u64) -> u64 {
        let Some(Typed::WholeNumber(number)) = self.typed(section, key, Expected::WholeNumber)
        else {
            return default;
        };
        match u64::try_from(number) {
            Ok(number) if number <= maximum => number,
            _ => {
                self.problem(
                    section,
                    key,
                    format!("{number} is out of range 0..={maximum}"),
                );
                default
            }
        }
    }

    fn url(&mut self, section: &str, key: &str, text: Option<String>) -> String {
        let Some(text) = text else {
            return String::new();
        };
        match reqwest::Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                text.trim_end_matches('/').to_owned()
            }
            Ok(_) => {
                self.problem(
                    section,
                    key,
                    format!("{text:?} must be an http or https URL"),
                );
                text
            }
            Err(error) => {
                self.problem(section, key, format!("{text:?} is not a URL: {error}"));
                text
            }
        }
    }

    fn socket_address(&mut self, section: &str, key: &str, default: &str) -> SocketAddr {
        let text = self.string_or(section, key, default);
        text.parse().unwrap_or_else(|error| {
            self.problem(
                section,
                key,
                format!("{text:?} is not an address with a port like 127.0.0.1:8700: {error}"),
            );
            default.parse().expect("default listen addresses are valid")
        })
    }

    fn networks(&mut self, section: &str, key: &str) -> Vec<IpNet> {
        let Some(Typed::TextList(items)) = self.typed(section, key, Expected::TextList) else {
            return Vec::new();
        };
        let mut networks = Vec::new();
        for item in items {
            let text = item.trim();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(network) => networks.push(network),
                Err(_) => self.problem(
                    section,
                    key,
                    format!("{text:?} is neither an IP address nor a network like 203.0.113.0/24"),
                ),
            }
        }
        networks
    }

    /// Reads the secret named by a `*_file` key, if the key is present.
    fn secret_file(&mut self, section: &str, key: &str) -> Option<SecretString> {
        self.secret_file_checked(section, key, |_| Ok(()))
    }

    /// [`Loader::secret_file`], with `check` saying whether the content is
    /// usable (a key that parses): what `run` would refuse, `check` refuses.
    fn secret_file_checked(
        &mut self,
        section: &str,
        key: &str,
        check: fn(&SecretString) -> Result<(), String>,
    ) -> Option<SecretString> {
        let name = self.string(section, key)?;
        if name.trim().is_empty() {
            return None;
        }
        let path = self.secrets_base.join(&name);
        let where_from = if Path::new(&name).is_absolute() {
            String::new()
        } else if self.credentials_directory {
            format!(" (relative names are read from ${CREDENTIALS_DIRECTORY_ENV})")
        } else {
            " (relative names are read next to the configuration file)".to_owned()
        };
        match std::fs::read_to_string(&path) {
            Ok(mut secret) => {
                if secret.ends_with('\n') {
                    secret.pop();
                    if secret.ends_with('\r') {
                        secret.pop();
                    }
                }
                if secret.is_empty() {
                    self.problem(
                        section,
                        key,
                        format!("the secret file {} is empty", path.display()),
                    );
                    return None;
                }
                let secret = SecretString::from(secret);
                if let Err(reason) = check(&secret) {
                    self.problem(
                        section,
                        key,
                        format!("the secret file {} {reason}", path.display()),
                    );
                    return None;
                }
                Some(secret)
            }
            Err(error) => {
                self.problem(
                    section,
                    key,
                    format!(
                        "cannot read the secret file {}{where_from}: {error}",
                        path.display()
                    ),
                );
                None
            }
        }
    }

    fn required_secret_file(
        &mut self,
        section: &str,
        key: &str,
        why: &str,
    ) -> Option<SecretString> {
        self.required_secret_file_checked(section, key, why, |_| Ok(()))
    }

    fn required_secret_file_checked(
        &mut self,
        section: &str,
        key: &str,
        why: &str,
        check: fn(&SecretString) -> Result<(), String>,
    ) -> Option<SecretString> {
        let present = self
            .sections
            .get(section)
            .is_some_and(|table| table.contains_key(key));
        let secret = self.secret_file_checked(section, key, check);
        if !present {
            self.missing(section, key, why);
        }
        secret
    }

    fn salesforce(&mut self) -> SalesforceConfig {
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
        let auth = match flow.as_str() {
            "jwt_bearer" => {
                if username.is_none() {
                    self.missing(
                        SECTION,
                        "username",
                        "the integration user, subject of the JWT",
                    );
                }
                let private_key = self.required_secret_file_checked(
                    SECTION,
                    "private_key_file",
                    "the connected app's RSA key in PEM",
                    |pem| crate::salesforce::rsa_private_key(pem).map(drop),
                );
                self.ignore(SECTION, &["client_secret_file", "refresh_token_file"]);
                SalesforceAuth::JwtBearer {
                    client_id: client_id.unwrap_or_default(),
                    username: username.unwrap_or_default(),
                    audience: if audience.is_empty() {
                        login_url.clone()
                    } else {
                        audience
                    },
                    private_key: private_key.unwrap_or_else(|| SecretString::from(String::new())),
                }
            }
            "client_credentials" => {
                let client_secret = self.required_secret_file(
                    SECTION,
                    "client_secret_file",
                    "the connected app's consumer secret",
                );
                self.ignore(SECTION, &["private_key_file", "refresh_token_file"]);
                SalesforceAuth::ClientCredentials {
                    client_id: client_id.unwrap_or_default(),
                    client_secret: client_secret
                        .unwrap_or_else(|| SecretString::from(String::new())),
                }
            }
            "refresh_token" => {
                let client_secret = self.required_secret_file(
                    SECTION,
                    "client_secret_file",
                    "the connected app's consumer secret",
                );
                let refresh_token = self.required_secret_file(
                    SECTION,
                    "refresh_token_file",
                    "the refresh token of the integration user",
                );
                self.ignore(SECTION, &["private_key_file"]);
                SalesforceAuth::RefreshToken {
                    client_id: client_id.unwrap_or_default(),
                    client_secret: client_secret
                        .unwrap_or_else(|| SecretString::from(String::new())),
                    refresh_token: refresh_token
                        .unwrap_or_else(|| SecretString::from(String::new())),
                }
            }
            other => {
                self.problem(
                    SECTION,
                    "auth",
                    format!("unknown flow {other:?}; expected jwt_bearer, client_credentials or refresh_token"),
                );
                self.ignore(
                    SECTION,
                    &[
                        "private_key_file",
                        "client_secret_file",
                        "refresh_token_file",
                    ],
                );
                SalesforceAuth::ClientCredentials {
                    client_id: client_id.unwrap_or_default(),
                    client_secret: SecretString::from(String::new()),
                }
            }
        };
        let api_budget_percent = self.unsigned(
            SECTION,
            "api_budget_percent",
            u64::from(DEFAULT_API_BUDGET_PERCENT),
            100,
        ) as u8;
        SalesforceConfig {
            login_url,
            api_version,
            auth,
            api_budget_percent,
        }
    }

    /// Keys that belong to another auth flow: accepted if they are text,
    /// unused.
    fn ignore(&mut self, section: &str, keys: &[&str]) {
        for key in keys {
            self.string(section, key);
        }
    }

    fn ondorse(&mut self) -> OndorseConfig {
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
        OndorseConfig {
            base_url,
            api_key: api_key.unwrap_or_else(|| SecretString::from(String::new())),
            auth_header,
            auth_scheme,
            portal_base_url,
        }
    }

    fn webhooks(&mut self) -> WebhooksConfig {
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

    fn admin(&mut self) -> AdminConfig {
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

    fn schedule(&mut self) -> ScheduleConfig {
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

    fn retry(&mut self) -> RetrySettings {
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

    /// A duration in seconds (fractions allowed), above 0 and at most
    /// `maximum`, or `default` when absent or wrong (recorded).
    fn seconds(&mut self, section: &str, key: &str, default: Duration, maximum: f64) -> Duration {
        let Some(Typed::Number(seconds)) = self.typed(section, key, Expected::Number) else {
            return default;
        };
        if seconds > 0.0 && seconds <= maximum {
            Duration::from_secs_f64(seconds)
        } else {
            self.problem(
                section,
                key,
                format!("{seconds} is out of range: more than 0 and at most {maximum} seconds"),
            );
            default
        }
    }

    fn check_cron(&mut self, section: &str, key: &str, expression: &str) {
        if let Err(error) = parse_schedule(expression) {
            self.problem(
                section,
                key,
                format!("{expression:?} is not a cron expression with seconds (e.g. \"*/30 * * * * *\"): {error}"),
            );
        }
    }

    /// Both listeners on one fixed address: `run` could bind only one.
    fn check_listeners(&mut self, webhooks: SocketAddr, admin: SocketAddr) {
        let overlapping = webhooks.ip() == admin.ip()
            || webhooks.ip().is_unspecified()
            || admin.ip().is_unspecified();
        if webhooks.port() == 0 || webhooks.port() != admin.port() || !overlapping {
            return;
        }
        let other = self.location("webhooks", "listen");
        self.problem(
            "admin",
            "listen",
            format!(
                "{admin} takes the port of [webhooks] listen {webhooks} ({other}); give the two listeners different ports"
            ),
        );
    }

    /// Whatever no reader took: unknown sections and keys, with the nearest
    /// known name.
    fn report_unknown_keys(&mut self) {
        let sections = std::mem::take(&mut self.sections);
        let section_names: Vec<&str> = self.known.keys().map(String::as_str).collect();
        let mut problems = Vec::new();
        for (section, table) in &sections {
            let Some(known) = self.known.get(section) else {
                problems.push(format!(
                    "{}: unknown section [{section}]{}",
                    self.section_location(section),
                    did_you_mean(section, &section_names)
                ));
                continue;
            };
            let key_names: Vec<&str> = known.iter().map(String::as_str).collect();
            for key in table.keys() {
                problems.push(format!(
                    "{}: unknown key [{section}] {key}{}",
                    self.location(section, key),
                    did_you_mean(key, &key_names)
                ));
            }
        }
        self.problems.extend(problems);
    }
}

/// Parses a cron expression with seconds the way the scheduler will.
pub fn parse_schedule(expression: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expression)
}

/// `"; did you mean `x`?"` when a known name is close enough, else nothing.
pub fn did_you_mean(name: &str, candidates: &[&str]) -> String {
    // Beyond this distance a suggestion is more confusing than helpful.
    const MAX_DISTANCE: usize = 3;
    candidates
        .iter()
        .map(|candidate| (strsim::levenshtein(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= MAX_DISTANCE)
        .min()
        .map(|(_, candidate)| format!("; did you mean `{candidate}`?"))
        .unwrap_or_default()
}
