//! Loading: the TOML file through the `config` crate, then the
//! `ONDORSE_BRIDGE__SECTION__KEY` environment overrides, read by typed
//! readers that record every problem with its position.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::positions::{Origins, Positions};
use super::{
    CREDENTIALS_DIRECTORY_ENV, Config, ConfigErrors, DEFAULT_MAPPINGS_DIR, DEFAULT_STORE_PATH,
    ENV_PREFIX, ENV_SEPARATOR, MAX_RETENTION_DAYS, MappingsConfig, StoreConfig, parse_schedule,
};
use crate::store::{DEFAULT_RETENTION_DAYS, Retention};
use crate::text::did_you_mean;

/// What `config` writes as the origin of values that came from the environment.
const ENVIRONMENT_ORIGIN: &str = "the environment";

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
        let mut loader = Loader::new(path, positions, secrets_base);
        loader.credentials_directory = credentials_directory.is_some();
        loader.split_sections(merged);
        let config = loader.read(path);
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

/// A key a configuration may hold, as the reader that takes it declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownKey {
    pub section: String,
    pub key: String,
    /// The value taken when the key is absent, as TOML would write it
    /// (`"62.0"`, `50`); `None` when it has none or depends on other keys.
    pub default: Option<String>,
}

/// Every key the readers take (sections in the order they are read, keys
/// alphabetically), with its default: derived from the readers themselves,
/// run over an empty configuration, so that documentation and tests are
/// checked against the code rather than against a list kept beside it.
pub fn known_keys() -> Vec<KnownKey> {
    let mut loader = Loader::new(Path::new(""), Positions::default(), PathBuf::new());
    loader.read(Path::new(""));
    loader
        .order
        .iter()
        .flat_map(|section| {
            loader.known[section].iter().map(|(key, default)| KnownKey {
                section: section.clone(),
                key: key.clone(),
                default: default.clone(),
            })
        })
        .collect()
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
pub(super) struct Loader {
    pub(super) origins: Origins,
    pub(super) sections: BTreeMap<String, config::Map<String, config::Value>>,
    /// Every key a reader asked for, per section: the known keys, each with
    /// its default as TOML writes it.
    pub(super) known: BTreeMap<String, BTreeMap<String, Option<String>>>,
    /// The sections in the order the readers take them.
    order: Vec<String>,
    /// Keys whose value had the wrong type (already reported).
    pub(super) refused: HashSet<(String, String)>,
    pub(super) secrets_base: PathBuf,
    pub(super) credentials_directory: bool,
    pub(super) problems: Vec<String>,
}

impl Loader {
    fn new(file: &Path, positions: Positions, secrets_base: PathBuf) -> Loader {
        Loader {
            origins: Origins {
                file: file.to_path_buf(),
                positions,
                from_environment: HashSet::new(),
            },
            sections: BTreeMap::new(),
            known: BTreeMap::new(),
            order: Vec::new(),
            refused: HashSet::new(),
            secrets_base,
            credentials_directory: false,
            problems: Vec::new(),
        }
    }

    /// Runs every section's reader: the one place that names the sections.
    fn read(&mut self, source: &Path) -> Config {
        let config = Config {
            source: source.to_path_buf(),
            origins: self.origins.clone(),
            salesforce: self.salesforce(),
            ondorse: self.ondorse(),
            webhooks: self.webhooks(),
            admin: self.admin(),
            store: StoreConfig {
                path: PathBuf::from(self.string_or("store", "path", DEFAULT_STORE_PATH)),
                retention: Retention::from_days(self.unsigned(
                    "store",
                    "retention_days",
                    DEFAULT_RETENTION_DAYS,
                    MAX_RETENTION_DAYS,
                )),
                page_cache_mib: self.page_cache_mib(),
            },
            mappings: MappingsConfig {
                dir: PathBuf::from(self.string_or("mappings", "dir", DEFAULT_MAPPINGS_DIR)),
            },
            schedule: self.schedule(),
            retry: self.retry(),
        };
        self.check_listeners(config.webhooks.listen, config.admin.listen);
        config
    }

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

    pub(super) fn problem(&mut self, section: &str, key: &str, message: impl std::fmt::Display) {
        let location = self.location(section, key);
        self.problems
            .push(format!("{location}: [{section}] {key}: {message}"));
    }

    pub(super) fn missing(&mut self, section: &str, key: &str, why: &str) {
        if self.refused.contains(&(section.to_owned(), key.to_owned())) {
            return;
        }
        let location = self.location(section, key);
        self.problems
            .push(format!("{location}: [{section}] {key} is required ({why})"));
    }

    /// Marks a key known and takes its value, untyped.
    fn take(&mut self, section: &str, key: &str) -> Option<config::Value> {
        if !self.known.contains_key(section) {
            self.order.push(section.to_owned());
        }
        self.known
            .entry(section.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_default();
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
    pub(super) fn string(&mut self, section: &str, key: &str) -> Option<String> {
        match self.typed(section, key, Expected::Text)? {
            Typed::Text(text) => Some(text),
            Typed::WholeNumber(_) | Typed::TextList(_) | Typed::Number(_) => None,
        }
    }

    pub(super) fn string_or(&mut self, section: &str, key: &str, default: &str) -> String {
        let text = self.string(section, key);
        self.default_is(section, key, format!("{default:?}"));
        text.unwrap_or_else(|| default.to_owned())
    }

    /// Records the default of a key a reader took, for [`known_keys`].
    fn default_is(&mut self, section: &str, key: &str, shown: String) {
        if let Some(default) = self
            .known
            .get_mut(section)
            .and_then(|keys| keys.get_mut(key))
        {
            *default = Some(shown);
        }
    }

    pub(super) fn required_string(
        &mut self,
        section: &str,
        key: &str,
        why: &str,
    ) -> Option<String> {
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
    pub(super) fn unsigned(&mut self, section: &str, key: &str, default: u64, maximum: u64) -> u64 {
        let typed = self.typed(section, key, Expected::WholeNumber);
        self.default_is(section, key, default.to_string());
        let Some(Typed::WholeNumber(number)) = typed else {
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

    pub(super) fn url(&mut self, section: &str, key: &str, text: Option<String>) -> String {
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

    pub(super) fn socket_address(&mut self, section: &str, key: &str, default: &str) -> SocketAddr {
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

    pub(super) fn networks(&mut self, section: &str, key: &str) -> Vec<IpNet> {
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

    /// A duration in seconds (fractions allowed), above 0 and at most
    /// `maximum`, or `default` when absent or wrong (recorded).
    pub(super) fn seconds(
        &mut self,
        section: &str,
        key: &str,
        default: Duration,
        maximum: f64,
    ) -> Duration {
        let typed = self.typed(section, key, Expected::Number);
        self.default_is(section, key, default.as_secs_f64().to_string());
        let Some(Typed::Number(seconds)) = typed else {
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

    pub(super) fn check_cron(&mut self, section: &str, key: &str, expression: &str) {
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
                    did_you_mean(section, section_names.iter().copied())
                ));
                continue;
            };
            let key_names: Vec<&str> = known.keys().map(String::as_str).collect();
            for key in table.keys() {
                problems.push(format!(
                    "{}: unknown key [{section}] {key}{}",
                    self.location(section, key),
                    did_you_mean(key, key_names.iter().copied())
                ));
            }
        }
        self.problems.extend(problems);
    }
}
