//! Configuration loading as an operator meets it: defaults, overrides,
//! secret files, and every mistake reported at once with its position.

use std::path::Path;

use ondorse_bridge::config::{Config, SalesforceAuth};
use secrecy::ExposeSecret;

use crate::support::config::{ConfigSettings, PATH_SECRET, write_config};
use crate::support::position;

/// A real RSA key in PEM (loading parses it), made once for these tests.
fn private_key_pem() -> &'static str {
    static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PEM.get_or_init(|| {
        ondorse_sandbox::salesforce::generate_jwt_key_pair()
            .private_key_pem
            .replace("\r\n", "\n")
    })
}

/// A line from the middle of the key: what must never be shown.
fn key_body() -> &'static str {
    private_key_pem().lines().nth(1).expect("a PEM body")
}

/// `file:line:column` of the first occurrence of `needle` in the written file.
fn position_of(dir: &Path, needle: &str) -> String {
    position(&dir.join("config.toml"), needle)
}

fn load(dir: &Path, extra: &str) -> Result<Config, String> {
    let mut settings = ConfigSettings::in_dir(dir);
    settings.extra = extra.to_owned();
    let files = write_config(dir, &settings, private_key_pem());
    Config::load_with(&files.path, None).map_err(|errors| errors.to_string())
}

#[test]
fn a_complete_file_loads_with_defaults_and_secrets_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(dir.path(), "").expect("valid configuration");
    assert_eq!(config.salesforce.api_version, "62.0");
    assert_eq!(config.salesforce.api_budget_percent, 50);
    assert_eq!(config.ondorse.auth_header, "Authorization");
    assert_eq!(config.ondorse.auth_scheme, "Bearer");
    assert_eq!(config.ondorse.portal_base_url, "https://collect.ondorse.co");
    assert_eq!(config.schedule.poll, "*/30 * * * * *");
    assert_eq!(config.schedule.overlap.as_secs(), 900);
    assert_eq!(config.webhooks.path_secret.expose_secret(), PATH_SECRET);
    match &config.salesforce.auth {
        SalesforceAuth::JwtBearer {
            audience,
            private_key,
            ..
        } => {
            assert_eq!(
                audience, "https://login.salesforce.com",
                "audience defaults to login_url"
            );
            assert_eq!(
                private_key.expose_secret(),
                private_key_pem().trim_end_matches('\n')
            );
        }
        other => panic!("expected the JWT flow, got {other:?}"),
    }
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(dir.path(), "").unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains(PATH_SECRET), "path secret leaked: {shown}");
    assert!(!shown.contains(key_body()), "private key leaked");
}

#[test]
fn every_problem_is_reported_at_once_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[schedule]\npoll = \"every minute\"\npolll = \"x\"\n\n[colour]\nred = 1\n";
    let message = load(dir.path(), extra).unwrap_err();
    let poll = position_of(dir.path(), "poll =");
    let polll = position_of(dir.path(), "polll");
    let colour = position_of(dir.path(), "[colour]");
    assert!(
        message.contains(&format!(
            "{poll}: [schedule] poll: \"every minute\" is not a cron expression"
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "{polll}: unknown key [schedule] polll; did you mean `poll`?"
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("{colour}: unknown section [colour]")),
        "{message}"
    );
    assert_eq!(message.lines().count(), 3, "{message}");
}

#[test]
fn a_missing_secret_file_names_the_key_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ConfigSettings::in_dir(dir.path());
    settings.salesforce_auth = "refresh_token".to_owned();
    let files = write_config(dir.path(), &settings, private_key_pem());
    std::fs::remove_file(dir.path().join("sf-refresh-token")).unwrap();
    std::fs::remove_file(dir.path().join("ondorse-api-key")).unwrap();
    let message = Config::load_with(&files.path, None)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("[salesforce] refresh_token_file: cannot read the secret file"),
        "{message}"
    );
    assert!(message.contains("sf-refresh-token"), "{message}");
    assert!(
        message.contains("[ondorse] api_key_file: cannot read the secret file"),
        "{message}"
    );
}

#[test]
fn relative_secret_names_are_read_from_the_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = tempfile::tempdir().unwrap();
    let settings = ConfigSettings::in_dir(dir.path());
    let files = write_config(dir.path(), &settings, private_key_pem());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "config.toml" && entry.path().is_file() {
            std::fs::rename(entry.path(), credentials.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(credentials.path().join("admin-token"), "from-credentials\n").unwrap();
    let config =
        Config::load_with(&files.path, Some(credentials.path())).expect("loads from credentials");
    assert_eq!(config.admin.token.expose_secret(), "from-credentials");
}

#[test]
fn a_toml_syntax_error_points_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let message = load(dir.path(), "[schedule\npoll = 1\n").unwrap_err();
    let header = position_of(dir.path(), "[schedule");
    let line = header.rsplit(':').nth(1).unwrap();
    assert!(
        message.contains(&format!("config.toml:{line}:")),
        "{message}"
    );
    assert!(message.contains("unclosed table"), "{message}");
}

#[test]
fn wrong_values_say_what_would_fit() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ConfigSettings::in_dir(dir.path());
    settings.salesforce_auth = "jwt".to_owned();
    settings.webhooks_listen = "localhost".to_owned();
    settings.ondorse_base_url = "api.ondorse.example".to_owned();
    let files = write_config(dir.path(), &settings, private_key_pem());
    let message = Config::load_with(&files.path, None)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("[salesforce] auth: unknown flow \"jwt\"; expected jwt_bearer, client_credentials or refresh_token"),
        "{message}"
    );
    assert!(
        message.contains("[webhooks] listen: \"localhost\" is not an address with a port"),
        "{message}"
    );
    assert!(
        message.contains("[ondorse] base_url: \"api.ondorse.example\" is not a URL"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 3, "{message}");
}

/// A complete configuration loaded with these environment variables.
fn load_with_variables(variables: &[(&str, &str)]) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let settings = ConfigSettings::in_dir(dir.path());
    let files = write_config(dir.path(), &settings, private_key_pem());
    let environment = variables
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    Config::load_with_environment(&files.path, None, environment)
        .map_err(|errors| errors.to_string())
}

#[test]
fn environment_overrides_win_and_are_named_in_errors() {
    let message = load_with_variables(&[
        ("ONDORSE_BRIDGE__SALESFORCE__API_VERSION", "63.0"),
        ("ONDORSE_BRIDGE__SALESFORCE__API_BUDGET_PERCENT", "250"),
        ("UNRELATED_VARIABLE", "ignored"),
    ])
    .unwrap_err();
    assert_eq!(
        message,
        "environment ONDORSE_BRIDGE__SALESFORCE__API_BUDGET_PERCENT: [salesforce] api_budget_percent: 250 is out of range 0..=100"
    );
}

#[test]
fn environment_overrides_are_parsed_as_the_key_type() {
    let config = load_with_variables(&[
        ("ONDORSE_BRIDGE__SALESFORCE__API_BUDGET_PERCENT", " 40 "),
        ("ONDORSE_BRIDGE__SALESFORCE__API_VERSION", "63.0"),
        ("ONDORSE_BRIDGE__SCHEDULE__OVERLAP_SECONDS", "60"),
        ("ONDORSE_BRIDGE__RETRY__INITIAL_DELAY_SECONDS", "0.5"),
        (
            "ONDORSE_BRIDGE__WEBHOOKS__ALLOWED_IPS",
            "10.0.0.0/8, 192.0.2.7",
        ),
    ])
    .expect("overrides of the right type load");
    assert_eq!(config.salesforce.api_budget_percent, 40);
    assert_eq!(config.salesforce.api_version, "63.0");
    assert_eq!(config.schedule.overlap.as_secs(), 60);
    assert_eq!(
        config.retry.initial_delay,
        std::time::Duration::from_millis(500)
    );
    let allowed: Vec<String> = config
        .webhooks
        .allowed_ips
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(allowed, ["10.0.0.0/8", "192.0.2.7/32"]);
}

#[test]
fn the_shipped_example_loads_with_every_key_known_and_of_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml"))
            .unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &example).unwrap();
    let credentials = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("sf-jwt-key.pem", private_key_pem()),
        ("sf-client-secret", "client-secret\n"),
        ("sf-refresh-token", "refresh-token\n"),
        ("ondorse-api-key", "ondorse-key\n"),
        ("webhook-path-secret", PATH_SECRET),
        ("admin-token", "admin-token\n"),
    ] {
        std::fs::write(credentials.path().join(name), content).unwrap();
    }
    let config = Config::load_with_environment(
        &path,
        Some(credentials.path()),
        std::collections::HashMap::new(),
    )
    .unwrap_or_else(|errors| panic!("config/example.toml does not load:\n{errors}"));
    assert_eq!(config.salesforce.api_budget_percent, 50);
    assert_eq!(config.schedule.overlap.as_secs(), 900);
}

#[test]
fn the_shipped_example_shows_every_key_the_readers_take_with_its_default() {
    let example: toml::Table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml"))
            .unwrap()
            .parse()
            .expect("the example is TOML");
    let known = ondorse_bridge::config::known_keys();
    let described: Vec<String> = known
        .iter()
        .map(|known| format!("[{}] {} = {:?}", known.section, known.key, known.default))
        .collect();
    for expected in [
        r#"[salesforce] api_budget_percent = Some("50")"#,
        r#"[salesforce] refresh_token_file = None"#,
        r#"[webhooks] listen = Some("\"127.0.0.1:8700\"")"#,
        r#"[retry] initial_delay_seconds = Some("1")"#,
    ] {
        assert!(
            described.iter().any(|line| line == expected),
            "the readers declare {expected}; they declare:\n{}",
            described.join("\n")
        );
    }
    let mut absent = Vec::new();
    let mut other_values = Vec::new();
    for key in &known {
        let Some(value) = example
            .get(&key.section)
            .and_then(|section| section.get(&key.key))
        else {
            absent.push(format!("[{}] {}", key.section, key.key));
            continue;
        };
        if let Some(default) = &key.default
            && value.to_string() != *default
        {
            other_values.push(format!(
                "[{}] {} = {value} (the default is {default})",
                key.section, key.key
            ));
        }
    }
    assert!(
        absent.is_empty() && other_values.is_empty(),
        "config/example.toml is to show every key with its default; absent: {absent:?}; not the default: {other_values:?}"
    );
}

#[test]
fn the_retry_policy_has_defaults_takes_fractions_and_names_bad_values() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let retry = load(dir.path(), "").expect("valid configuration").retry;
    assert_eq!(retry.initial_delay, Duration::from_secs(1));
    assert_eq!(retry.max_delay, Duration::from_secs(300));
    assert_eq!(
        retry.retry_after_cap,
        Duration::from_secs(60),
        "the documented cap"
    );

    let retry = load(
        dir.path(),
        "[retry]\ninitial_delay_seconds = 0.25\nmax_delay_seconds = 30\nretry_after_cap_seconds = 5\n",
    )
    .expect("valid configuration")
    .retry;
    assert_eq!(retry.initial_delay, Duration::from_millis(250));
    assert_eq!(retry.max_delay, Duration::from_secs(30));
    assert_eq!(retry.retry_after_cap, Duration::from_secs(5));

    let message = load(
        dir.path(),
        "[retry]\ninitial_delay_seconds = 10\nmax_delay_seconds = 2\nretry_after_cap_seconds = -1\ninitial_delay_second = 3\n",
    )
    .unwrap_err();
    let at = |needle: &str| position_of(dir.path(), needle);
    for expected in [
        format!(
            "{}: [retry] max_delay_seconds: 2 is below initial_delay_seconds = 10",
            at("max_delay_seconds")
        ),
        format!(
            "{}: [retry] retry_after_cap_seconds: -1 is out of range: more than 0 and at most 86400 seconds",
            at("retry_after_cap_seconds")
        ),
        format!(
            "{}: unknown key [retry] initial_delay_second; did you mean `initial_delay_seconds`?",
            at("initial_delay_second =")
        ),
    ] {
        assert!(
            message.contains(&expected),
            "{expected:?} missing from:\n{message}"
        );
    }
}

#[test]
fn the_store_path_check_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(dir.path(), "").unwrap();
    let entries = |path: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    // Not created yet: its parent is probed.
    let parent = config.store.path.parent().unwrap().to_owned();
    let before = entries(&parent);
    config
        .check_store_path()
        .expect("a store the user can create");
    assert_eq!(entries(&parent), before, "the probe is removed");
    // Existing: the store directory itself is probed.
    std::fs::create_dir_all(&config.store.path).unwrap();
    config
        .check_store_path()
        .expect("a store the user can write");
    assert_eq!(
        entries(&config.store.path),
        Vec::<String>::new(),
        "the probe is removed"
    );
}
