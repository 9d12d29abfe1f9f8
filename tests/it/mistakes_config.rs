//! The configuration mistakes an operator makes, each fed to `check`,
//! `check --online` and `run`: the exit status and the message, with its
//! position, must agree. `check` refuses first whatever `run` would refuse
//! as configuration (exit 2, which systemd does not restart); a transient
//! failure (the address in use, the store held by another process) is exit 1
//! for `run` and no concern of `check`.
//!
//! Then the state commands with the daemon stopped: they never invent a
//! store, and with `--json` they answer JSON, failures included.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::Duration;

use ondorse_bridge::cli::EXIT_INVALID;
use ondorse_bridge::config::{CREDENTIALS_DIRECTORY_ENV, ENV_PREFIX};
use ondorse_bridge::store::Store;
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::Value;

use crate::support::config::{ConfigSettings, write_config};
use crate::support::daemon::{START_DEADLINE, refusing_address};
use crate::support::position;
use crate::support::world::{World, copy_mappings};

const BUSINESS: &str = "business-onboarding";
const PERSON: &str = "person-onboarding";

/// A working setup (pointed at the world's sandboxes) that a row breaks.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    /// Environment overrides the commands run with.
    env: Mutex<Vec<(String, String)>>,
    /// Run the commands as an unprivileged user (`nobody`).
    unprivileged: Mutex<bool>,
    /// What a row holds while the commands run (a bound port, a port that
    /// refuses connections, an open store).
    held_ports: Mutex<Vec<TcpListener>>,
    held_sockets: Mutex<Vec<tokio::net::TcpSocket>>,
    held_stores: Mutex<Vec<Store>>,
    /// Customer Accounts to seed in the org before the commands run.
    customers: Mutex<usize>,
}

impl Setup {
    fn new(world: &World) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = ConfigSettings::in_dir(dir.path());
        settings.salesforce_login_url = world.config.salesforce.login_url.clone();
        settings.ondorse_base_url = world.config.ondorse.base_url.clone();
        copy_mappings(&settings.mappings_dir);
        let key = std::fs::read_to_string(world.config_path.with_file_name("sf-jwt-key.pem"))
            .expect("the world's private key");
        let config = write_config(dir.path(), &settings, &key).path;
        Setup {
            dir,
            config,
            env: Mutex::new(Vec::new()),
            unprivileged: Mutex::new(false),
            held_ports: Mutex::new(Vec::new()),
            held_sockets: Mutex::new(Vec::new()),
            held_stores: Mutex::new(Vec::new()),
            customers: Mutex::new(0),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the first `from` in `file` (relative to the setup's dir).
    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.path(file);
        let text = std::fs::read_to_string(&path).expect("read the file to edit");
        assert!(text.contains(from), "{from:?} not in {}", path.display());
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write the edited file");
    }

    /// Adds `line` at the top of `[section]` in config.toml.
    fn insert(&self, section: &str, line: &str) {
        let header = format!("[{section}]\n");
        self.edit("config.toml", &header, &format!("{header}{line}\n"));
    }

    /// Replaces the line of config.toml that starts with `start`.
    fn replace_line(&self, start: &str, line: &str) {
        let text = std::fs::read_to_string(&self.config).expect("read config.toml");
        let old = text
            .lines()
            .find(|candidate| candidate.starts_with(start))
            .unwrap_or_else(|| panic!("no line starts with {start:?}"))
            .to_owned();
        self.edit("config.toml", &old, line);
    }

    fn append(&self, text: &str) {
        let path = self.config.clone();
        let mut content = std::fs::read_to_string(&path).expect("read config.toml");
        content.push_str(text);
        std::fs::write(&path, content).expect("write config.toml");
    }

    /// Runs the commands as a user who may read the setup but not `guarded`
    /// as a whole: it gets `mode` when this user is not root; root becomes
    /// `nobody` instead, and `guarded` is its owner's alone.
    fn run_unprivileged(&self, guarded: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let readable = |path: &Path| {
            let mode = if path.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("share the setup");
        };
        readable(self.dir.path());
        for entry in walk(self.dir.path()) {
            if !entry.starts_with(guarded) || entry == guarded {
                readable(&entry);
            }
        }
        let mode = if is_root() {
            *self.unprivileged.lock().unwrap() = true;
            0o700
        } else {
            mode
        };
        std::fs::set_permissions(guarded, std::fs::Permissions::from_mode(mode))
            .expect("guard the directory");
    }

    fn set_env(&self, name: &str, value: &str) {
        self.env
            .lock()
            .unwrap()
            .push((name.to_owned(), value.to_owned()));
    }

    fn mapping(&self, name: &str) -> String {
        format!("mappings/{name}.yaml")
    }

    /// `ondorse-bridge ARGS --config <config>` with this setup's
    /// environment; killed if it runs longer than `deadline`.
    async fn run(&self, args: &[&str], deadline: Duration) -> Option<Output> {
        let binary = env!("CARGO_BIN_EXE_ondorse-bridge");
        let unprivileged = *self.unprivileged.lock().unwrap();
        let mut command = if unprivileged && is_root() {
            // Root writes anywhere: become `nobody` to meet a permission.
            // `nobody` may not search the directories the build lives in (a
            // clone in a private temp dir): it runs a copy from the setup.
            let copy = self.dir.path().join("ondorse-bridge");
            if !copy.exists() {
                std::fs::copy(binary, &copy).expect("copy the binary for nobody");
            }
            let mut command = tokio::process::Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&copy)
                .args(args);
            command
        } else {
            let mut command = tokio::process::Command::new(binary);
            command.args(args);
            command
        };
        command
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env_remove(CREDENTIALS_DIRECTORY_ENV)
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with(ENV_PREFIX) {
                command.env_remove(name);
            }
        }
        for (name, value) in self.env.lock().unwrap().iter() {
            command.env(name, value);
        }
        let output = command.output();
        tokio::time::timeout(deadline, output)
            .await
            .ok()
            .map(|output| output.expect("run ondorse-bridge"))
    }

    /// Expands `{config:NEEDLE}` and `{FILE:NEEDLE}` to the
    /// `file:line:column` of NEEDLE, and `{dir}` to the setup's directory.
    fn expand(&self, template: &str) -> String {
        let mut text = template.replace("{dir}", &self.dir.path().display().to_string());
        while let Some(start) = text.find("{config:").or_else(|| text.find("{mappings/")) {
            let end = start + text[start..].find('}').expect("a closing brace");
            let (file, needle) = text[start + 1..end].split_once(':').expect("FILE:NEEDLE");
            let file = if file == "config" {
                "config.toml"
            } else {
                file
            };
            let at = position(&self.path(file), needle);
            text.replace_range(start..=end, &at);
        }
        text
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    })
}

/// What a command does with a mistake: ends with this exit status, or is
/// not run (`run` of a configuration it would start with).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Exits(i32),
    NotRun,
}

use Outcome::{Exits, NotRun};

/// One row: a mistake, what each command does with it, and what it says.
struct Mistake {
    what: &'static str,
    make: fn(&Setup),
    /// `check`, `check --online`, `run`.
    outcomes: [Outcome; 3],
    /// Lines (templates, see [`Setup::expand`]) every failing command prints.
    says: &'static [&'static str],
    /// Printed by `check --online` on success (warnings).
    warns: &'static [&'static str],
}

/// Runs every row through the three commands; all failures reported at once.
async fn check(rows: &[Mistake]) {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let mut failures = Vec::new();
    for row in rows {
        let setup = Setup::new(&world);
        (row.make)(&setup);
        let customers = *setup.customers.lock().unwrap();
        if customers > 0 {
            world.seed(customers, "Customer", 7);
        }
        let commands: [&[&str]; 3] = [&["check"], &["check", "--online"], &["run"]];
        for (args, outcome) in commands.iter().zip(row.outcomes) {
            let Exits(expected) = outcome else {
                continue;
            };
            let Some(output) = setup.run(args, START_DEADLINE).await else {
                failures.push(format!(
                    "{} / {args:?}: still running after {START_DEADLINE:?}, expected exit {expected}",
                    row.what
                ));
                continue;
            };
            let stderr = String::from_utf8_lossy(&output.stderr);
            let code = output.status.code();
            if code != Some(expected) {
                failures.push(format!(
                    "{} / {args:?}: exit {code:?}, expected {expected}\n{stderr}",
                    row.what
                ));
                continue;
            }
            let lines = match (expected, args.contains(&"--online")) {
                (0, true) => row.warns,
                (0, false) => &[],
                _ => row.says,
            };
            for line in lines {
                let line = setup.expand(line);
                if !stderr.contains(&line) {
                    failures.push(format!(
                        "{} / {args:?}: missing {line:?} in:\n{stderr}",
                        row.what
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

const REFUSED: [Outcome; 3] = [Exits(2), Exits(2), Exits(2)];

#[test]
fn a_refused_configuration_is_the_exit_status_systemd_does_not_restart() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ondorse-bridge.service"),
    )
    .expect("read the unit");
    assert!(
        unit.contains(&format!("\nRestartPreventExitStatus={EXIT_INVALID}\n")),
        "the unit must not restart a daemon that refused its configuration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_the_wrong_type_are_refused_with_the_key_the_type_and_the_position() {
    check(&[
        Mistake {
            what: "a boolean budget",
            make: |setup| setup.insert("salesforce", "api_budget_percent = true"),
            outcomes: REFUSED,
            says: &[
                "{config:api_budget_percent}: [salesforce] api_budget_percent: expected a whole number, found the boolean true",
            ],
            warns: &[],
        },
        Mistake {
            what: "a quoted budget",
            make: |setup| setup.insert("salesforce", "api_budget_percent = \"50\""),
            outcomes: REFUSED,
            says: &[
                "{config:api_budget_percent}: [salesforce] api_budget_percent: expected a whole number, found the text \"50\"",
            ],
            warns: &[],
        },
        Mistake {
            what: "a fractional budget",
            make: |setup| setup.insert("salesforce", "api_budget_percent = 50.5"),
            outcomes: REFUSED,
            says: &[
                "{config:api_budget_percent}: [salesforce] api_budget_percent: expected a whole number, found the number 50.5",
            ],
            warns: &[],
        },
        Mistake {
            what: "a quoted overlap",
            make: |setup| setup.append("\n[schedule]\noverlap_seconds = \"900\"\n"),
            outcomes: REFUSED,
            says: &[
                "{config:overlap_seconds}: [schedule] overlap_seconds: expected a whole number, found the text \"900\"",
            ],
            warns: &[],
        },
        Mistake {
            what: "a quoted retry delay",
            make: |setup| setup.append("\n[retry]\ninitial_delay_seconds = \"2\"\n"),
            outcomes: REFUSED,
            says: &[
                "{config:initial_delay_seconds}: [retry] initial_delay_seconds: expected a number, found the text \"2\"",
            ],
            warns: &[],
        },
        Mistake {
            what: "a retry cap as a boolean",
            make: |setup| setup.append("\n[retry]\nretry_after_cap_seconds = true\n"),
            outcomes: REFUSED,
            says: &[
                "{config:retry_after_cap_seconds}: [retry] retry_after_cap_seconds: expected a number, found the boolean true",
            ],
            warns: &[],
        },
        Mistake {
            what: "an api version as a number",
            make: |setup| setup.insert("salesforce", "api_version = 62.0"),
            outcomes: REFUSED,
            says: &[
                "{config:api_version}: [salesforce] api_version: expected text in quotes, found the number 62.0",
            ],
            warns: &[],
        },
        Mistake {
            what: "a listen address as a number",
            make: |setup| setup.edit("config.toml", "listen = \"127.0.0.1:0\"", "listen = 8700"),
            outcomes: REFUSED,
            says: &[
                "{config:listen = 8700}: [webhooks] listen: expected text in quotes, found the number 8700",
            ],
            warns: &[],
        },
        Mistake {
            what: "allowed_ips as text",
            make: |setup| setup.insert("webhooks", "allowed_ips = \"10.0.0.0/8\""),
            outcomes: REFUSED,
            says: &[
                "{config:allowed_ips}: [webhooks] allowed_ips: expected a list of text like [\"a\", \"b\"], found the text \"10.0.0.0/8\"",
            ],
            warns: &[],
        },
        Mistake {
            what: "trusted_proxies holding a number",
            make: |setup| setup.insert("webhooks", "trusted_proxies = [10]"),
            outcomes: REFUSED,
            says: &[
                "{config:trusted_proxies}: [webhooks] trusted_proxies: expected a list of text like [\"a\", \"b\"], found a list holding the number 10",
            ],
            warns: &[],
        },
        Mistake {
            what: "a key of another auth flow as a number",
            make: |setup| {
                setup.edit("config.toml", "auth = \"jwt_bearer\"", "auth = \"client_credentials\"");
                setup.edit(
                    "config.toml",
                    "refresh_token_file = \"sf-refresh-token\"",
                    "refresh_token_file = 5",
                );
            },
            outcomes: REFUSED,
            says: &[
                "{config:refresh_token_file}: [salesforce] refresh_token_file: expected text in quotes, found the number 5",
            ],
            warns: &[],
        },
        Mistake {
            what: "a budget override that is not a number",
            make: |setup| setup.set_env("ONDORSE_BRIDGE__SALESFORCE__API_BUDGET_PERCENT", "abc"),
            outcomes: REFUSED,
            says: &[
                "environment ONDORSE_BRIDGE__SALESFORCE__API_BUDGET_PERCENT: [salesforce] api_budget_percent: expected a whole number, found \"abc\"",
            ],
            warns: &[],
        },
        Mistake {
            what: "a budget override that is a boolean",
            make: |setup| setup.set_env("ONDORSE_BRIDGE__SALESFORCE__API_BUDGET_PERCENT", "true"),
            outcomes: REFUSED,
            says: &[
                "environment ONDORSE_BRIDGE__SALESFORCE__API_BUDGET_PERCENT: [salesforce] api_budget_percent: expected a whole number, found \"true\"",
            ],
            warns: &[],
        },
        Mistake {
            what: "a budget override out of range",
            make: |setup| setup.set_env("ONDORSE_BRIDGE__SALESFORCE__API_BUDGET_PERCENT", "250"),
            outcomes: REFUSED,
            says: &[
                "environment ONDORSE_BRIDGE__SALESFORCE__API_BUDGET_PERCENT: [salesforce] api_budget_percent: 250 is out of range 0..=100",
            ],
            warns: &[],
        },
        Mistake {
            what: "no application reads at all",
            make: |setup| setup.insert("ondorse", "max_concurrent_reads = 0"),
            outcomes: REFUSED,
            says: &[
                "{config:max_concurrent_reads}: [ondorse] max_concurrent_reads: must be at least 1 request",
            ],
            warns: &[],
        },
        Mistake {
            what: "application reads as text",
            make: |setup| setup.insert("ondorse", "max_concurrent_reads = \"many\""),
            outcomes: REFUSED,
            says: &[
                "{config:max_concurrent_reads}: [ondorse] max_concurrent_reads: expected a whole number, found the text \"many\"",
            ],
            warns: &[],
        },
        Mistake {
            what: "an application reads override out of range",
            make: |setup| setup.set_env("ONDORSE_BRIDGE__ONDORSE__MAX_CONCURRENT_READS", "5000"),
            outcomes: REFUSED,
            says: &[
                "environment ONDORSE_BRIDGE__ONDORSE__MAX_CONCURRENT_READS: [ondorse] max_concurrent_reads: 5000 is out of range 0..=1000",
            ],
            warns: &[],
        },
        Mistake {
            what: "a page cache of nothing",
            make: |setup| setup.insert("store", "page_cache_mib = 0"),
            outcomes: REFUSED,
            says: &["{config:page_cache_mib}: [store] page_cache_mib: must be at least 1 MiB"],
            warns: &[],
        },
        Mistake {
            what: "a retry delay override that is not a number",
            make: |setup| setup.set_env("ONDORSE_BRIDGE__RETRY__MAX_DELAY_SECONDS", "5min"),
            outcomes: REFUSED,
            says: &[
                "environment ONDORSE_BRIDGE__RETRY__MAX_DELAY_SECONDS: [retry] max_delay_seconds: expected a number, found \"5min\"",
            ],
            warns: &[],
        },
        Mistake {
            what: "an overlap override with a unit",
            make: |setup| setup.set_env("ONDORSE_BRIDGE__SCHEDULE__OVERLAP_SECONDS", "15m"),
            outcomes: REFUSED,
            says: &[
                "environment ONDORSE_BRIDGE__SCHEDULE__OVERLAP_SECONDS: [schedule] overlap_seconds: expected a whole number, found \"15m\"",
            ],
            warns: &[],
        },
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_first_whatever_run_would_refuse() {
    check(&[
        Mistake {
            what: "a private key that is not PEM",
            make: |setup| {
                std::fs::write(setup.path("sf-jwt-key.pem"), "ssh-rsa AAAAB3Nza not a pem\n")
                    .unwrap()
            },
            outcomes: REFUSED,
            says: &[
                "{config:private_key_file}: [salesforce] private_key_file: the secret file {dir}/sf-jwt-key.pem is not an RSA private key in PEM form",
            ],
            warns: &[],
        },
        Mistake {
            what: "a private key file that is not there",
            make: |setup| std::fs::remove_file(setup.path("sf-jwt-key.pem")).unwrap(),
            outcomes: REFUSED,
            says: &[
                "{config:private_key_file}: [salesforce] private_key_file: cannot read the secret file {dir}/sf-jwt-key.pem",
            ],
            warns: &[],
        },
        Mistake {
            what: "an api key that cannot travel in a header",
            make: |setup| {
                std::fs::write(setup.path("ondorse-api-key"), "first-line\nsecond-line\n").unwrap()
            },
            outcomes: REFUSED,
            says: &[
                "{config:api_key_file}: invalid ondorse configuration: ondorse.api_key_file: the api key (with its scheme) is not a valid header value",
            ],
            warns: &[],
        },
        Mistake {
            what: "a store path under a file",
            make: |setup| {
                std::fs::write(setup.path("occupied"), "").unwrap();
                let store = setup.path("store").display().to_string();
                let occupied = setup.path("occupied/store").display().to_string();
                setup.edit("config.toml", &store, &occupied);
            },
            outcomes: REFUSED,
            says: &[
                "{config:path = }: [store] path: {dir}/occupied/store cannot be created: {dir}/occupied is not a directory",
            ],
            warns: &[],
        },
        Mistake {
            what: "a store path the user cannot create",
            make: |setup| {
                // The store's parent is the owner's to write, not the user's.
                std::fs::create_dir(setup.path("private")).unwrap();
                let store = setup.path("store").display().to_string();
                let private = setup.path("private/store").display().to_string();
                setup.edit("config.toml", &store, &private);
                setup.run_unprivileged(&setup.path("private"), 0o555);
            },
            outcomes: REFUSED,
            says: &[
                "{config:path = }: [store] path: {dir}/private/store cannot be created by the user running this command ({dir}/private: Permission denied",
                "under systemd it is the service's user that needs it",
            ],
            warns: &[],
        },
        Mistake {
            what: "both listeners on one fixed address",
            make: |setup| {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let port = listener.local_addr().unwrap().port();
                setup.held_ports.lock().unwrap().push(listener);
                setup.edit(
                    "config.toml",
                    "listen = \"127.0.0.1:0\"",
                    &format!("listen = \"127.0.0.1:{port}\""),
                );
                setup.edit(
                    "config.toml",
                    "listen = \"127.0.0.1:0\"",
                    &format!("listen = \"0.0.0.0:{port}\""),
                );
            },
            outcomes: REFUSED,
            says: &[
                "{config:listen = \"0.0.0.0}: [admin] listen: 0.0.0.0:",
                " takes the port of [webhooks] listen 127.0.0.1:",
                " ({config:listen = \"127.0.0.1}); give the two listeners different ports",
            ],
            warns: &[],
        },
        Mistake {
            what: "a select with AND AND",
            make: |setup| {
                setup.edit(
                    &setup.mapping(BUSINESS),
                    "'Customer' AND KYC",
                    "'Customer' AND AND KYC",
                )
            },
            outcomes: REFUSED,
            says: &[
                "{mappings/business-onboarding.yaml:AND KYC}: `select` is not valid SOQL: expected a field name, found `AND`",
            ],
            warns: &[],
        },
        Mistake {
            what: "a select with an unclosed quote",
            make: |setup| setup.edit(&setup.mapping(BUSINESS), "'Customer'", "'Customer"),
            outcomes: REFUSED,
            says: &[
                "{mappings/business-onboarding.yaml:'Customer}: `select` is not valid SOQL: this quote is never closed",
            ],
            warns: &[],
        },
        Mistake {
            what: "a select with an unclosed parenthesis",
            make: |setup| setup.edit(&setup.mapping(BUSINESS), "\"Type = ", "\"(Type = "),
            outcomes: REFUSED,
            says: &[
                "{mappings/business-onboarding.yaml:(Type}: `select` is not valid SOQL: this `(` is never closed",
            ],
            warns: &[],
        },
        Mistake {
            what: "a select with an unknown operator",
            make: |setup| setup.edit(&setup.mapping(PERSON), "Type = 'Other'", "Type == 'Other'"),
            outcomes: REFUSED,
            says: &[
                "{mappings/person-onboarding.yaml:== 'Other'}: `select` is not valid SOQL: unknown operator `==`",
            ],
            warns: &[],
        },
        Mistake {
            what: "a select testing for null with IS",
            make: |setup| {
                setup.edit(
                    &setup.mapping(BUSINESS),
                    "KYC_Status__c = null",
                    "KYC_Status__c IS NULL",
                )
            },
            outcomes: REFUSED,
            says: &[
                "{mappings/business-onboarding.yaml:IS NULL}: `select` is not valid SOQL: unknown operator `IS`",
                "(for an empty field: `= null`, or `!= null`)",
            ],
            warns: &[],
        },
        Mistake {
            what: "a select mixing AND and OR",
            make: |setup| {
                setup.edit(
                    &setup.mapping(BUSINESS),
                    "AND KYC_Status__c = null",
                    "AND KYC_Status__c = null OR Name = 'x'",
                )
            },
            outcomes: REFUSED,
            says: &[
                "{mappings/business-onboarding.yaml:OR Name}: `select` is not valid SOQL: `OR` after `AND` needs parentheses",
            ],
            warns: &[],
        },
        Mistake {
            what: "a client id the org does not know",
            make: |setup| {
                setup.edit(
                    "config.toml",
                    "client_id = \"sandbox-client-id\"",
                    "client_id = \"someone-else\"",
                )
            },
            outcomes: [Exits(0), Exits(2), NotRun],
            says: &["{config:auth =}: salesforce refused the login of the online checks: "],
            warns: &[],
        },
        Mistake {
            what: "two flows whose select overlap",
            make: |setup| {
                setup.edit(
                    &setup.mapping(PERSON),
                    "Type = 'Other' AND Contact_Email__c != null AND KYC_Status__c = null",
                    "KYC_Status__c = null",
                );
                // Customers without a KYC status: both `select` match them.
                *setup.customers.lock().unwrap() = 3;
            },
            outcomes: [Exits(0), Exits(0), NotRun],
            says: &[],
            warns: &[
                "{mappings/business-onboarding.yaml:\"Type}: warning: the `select` of `business-onboarding` and of `person-onboarding` ({mappings/person-onboarding.yaml:\"KYC}) both match 3 Account record(s) today",
            ],
        },
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mistakes_caught_before_are_caught_by_every_command() {
    check(&[
        Mistake {
            what: "a misspelt key",
            make: |setup| setup.append("\n[schedule]\npolll = \"*/30 * * * * *\"\n"),
            outcomes: REFUSED,
            says: &["{config:polll}: unknown key [schedule] polll; did you mean `poll`?"],
            warns: &[],
        },
        Mistake {
            what: "an unknown section",
            make: |setup| setup.append("\n[colour]\nred = 1\n"),
            outcomes: REFUSED,
            says: &["{config:[colour]}: unknown section [colour]"],
            warns: &[],
        },
        Mistake {
            what: "a cron expression without seconds",
            make: |setup| setup.append("\n[schedule]\npoll = \"*/5 * * * *\"\n"),
            outcomes: REFUSED,
            says: &[
                "{config:poll =}: [schedule] poll: \"*/5 * * * *\" is not a cron expression with seconds",
            ],
            warns: &[],
        },
        Mistake {
            what: "an unknown auth flow",
            make: |setup| setup.edit("config.toml", "auth = \"jwt_bearer\"", "auth = \"jwt\""),
            outcomes: REFUSED,
            says: &[
                "{config:auth =}: [salesforce] auth: unknown flow \"jwt\"; expected jwt_bearer, client_credentials or refresh_token",
            ],
            warns: &[],
        },
        Mistake {
            what: "a listen address without a port",
            make: |setup| {
                setup.edit("config.toml", "listen = \"127.0.0.1:0\"", "listen = \"localhost\"")
            },
            outcomes: REFUSED,
            says: &[
                "{config:listen = \"localhost}: [webhooks] listen: \"localhost\" is not an address with a port",
            ],
            warns: &[],
        },
        Mistake {
            what: "a base URL without a scheme",
            make: |setup| setup.replace_line("base_url", "base_url = \"api.ondorse.example\""),
            outcomes: REFUSED,
            says: &[
                "{config:base_url}: [ondorse] base_url: \"api.ondorse.example\" is not a URL",
            ],
            warns: &[],
        },
        Mistake {
            what: "a required key left out",
            make: |setup| setup.edit("config.toml", "api_key_file = \"ondorse-api-key\"\n", ""),
            outcomes: REFUSED,
            says: &[
                "{config:[ondorse]}: [ondorse] api_key_file is required (the file holding the Ondorse API key)",
            ],
            warns: &[],
        },
        Mistake {
            what: "a TOML syntax error",
            make: |setup| setup.append("\n[schedule\npoll = 1\n"),
            outcomes: REFUSED,
            // The position is where the `]` is missing: the end of the line.
            says: &["{config:\npoll = 1}: unclosed table"],
            warns: &[],
        },
        Mistake {
            what: "a guessable webhook path secret",
            make: |setup| std::fs::write(setup.path("webhook-path-secret"), "secret\n").unwrap(),
            outcomes: REFUSED,
            says: &[
                "{config:path_secret_file}: [webhooks] path_secret_file: the path secret must be at least 16 URL-safe characters",
            ],
            warns: &[],
        },
        Mistake {
            what: "a mapping directory that is not there",
            make: |setup| std::fs::remove_dir_all(setup.path("mappings")).unwrap(),
            outcomes: REFUSED,
            says: &["{dir}/mappings"],
            warns: &[],
        },
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_exit_1_and_no_concern_of_check() {
    check(&[
        Mistake {
            what: "the webhook address in use",
            make: |setup| {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let address = listener.local_addr().unwrap();
                setup.held_ports.lock().unwrap().push(listener);
                setup.edit(
                    "config.toml",
                    "listen = \"127.0.0.1:0\"",
                    &format!("listen = \"{address}\""),
                );
            },
            outcomes: [Exits(0), Exits(0), Exits(1)],
            says: &["cannot listen for webhooks on 127.0.0.1:"],
            warns: &[],
        },
        Mistake {
            what: "an org that does not answer",
            make: |setup| {
                let (socket, closed) = refusing_address();
                setup.held_sockets.lock().unwrap().push(socket);
                setup.replace_line("login_url", &format!("login_url = \"http://{closed}\""));
            },
            outcomes: [Exits(0), Exits(1), NotRun],
            says: &["cannot authenticate to Salesforce for the online checks"],
            warns: &[],
        },
        Mistake {
            what: "the store held by another process",
            make: |setup| {
                let store = Store::open_blocking(&setup.path("store")).expect("open the store");
                setup.held_stores.lock().unwrap().push(store);
            },
            outcomes: [Exits(0), Exits(0), Exits(1)],
            says: &["is in use by another process"],
            warns: &[],
        },
    ])
    .await;
}

/// Every file and directory under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read a dir") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

// ------------------------------------------------------- state commands

/// The state commands, as an operator runs them with the daemon stopped.
const STATE_COMMANDS: &[&[&str]] = &[
    &["status"],
    &["explain", "--account", "001000000000001AAA"],
    &["dead-letters", "list"],
    &["dead-letters", "retry", "--all"],
    &["resync", "--account", "001000000000001AAA", "--dry-run"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_commands_never_invent_a_store() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let setup = Setup::new(&world);
    let store = setup.path("store");
    // Not there at all, then there but empty (systemd's StateDirectory=).
    for create in [false, true] {
        if create {
            std::fs::create_dir(&store).unwrap();
        }
        for args in STATE_COMMANDS {
            let output = setup.run(args, START_DEADLINE).await.expect("it ends");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
            let expected = setup.expand(&format!(
                "error: {{config:path = }}: [store] path: there is no store at {} (a store holds sled's files `conf` and `db`); nothing was created; is this the configuration the daemon runs with?\n",
                store.display()
            ));
            assert_eq!(stderr, expected, "{args:?}: printed once, nothing else");
            let created = if create {
                std::fs::read_dir(&store).unwrap().count() > 0
            } else {
                store.exists()
            };
            assert!(!created, "{args:?} created a store at {}", store.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_the_user_cannot_look_into_is_said_as_such() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let setup = Setup::new(&world);
    let store = setup.path("store");
    drop(Store::open(&store).await.expect("create the store"));
    setup.run_unprivileged(&store, 0o000);
    let output = setup
        .run(&["status"], START_DEADLINE)
        .await
        .expect("it ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot look into the store at {}: Permission denied",
            store.display()
        )) && stderr.contains("it belongs to the daemon's user"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_every_state_command_answers_json_even_when_it_fails() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let setup = Setup::new(&world);
    for args in STATE_COMMANDS {
        let args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
        let output = setup.run(&args, START_DEADLINE).await.expect("it ends");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            output.stderr.is_empty(),
            "{args:?}: the error is told once, as JSON: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{args:?}: not JSON ({error}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        assert_eq!(answer["exit_status"], 2, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|error| error.contains("[store] path: there is no store at")),
            "{args:?}: {answer}"
        );
    }

    // A store that exists: the answers themselves are JSON.
    drop(
        Store::open(&setup.path("store"))
            .await
            .expect("create the store"),
    );
    for (args, check) in [
        (
            &["status", "--json"][..],
            (|answer: &Value| answer["mappings"].is_array()) as fn(&Value) -> bool,
        ),
        (&["dead-letters", "list", "--json"], |answer| {
            answer.as_array().is_some_and(Vec::is_empty)
        }),
        (&["dead-letters", "retry", "--all", "--json"], |answer| {
            answer["retried"].as_array().is_some_and(Vec::is_empty)
        }),
        (
            &["explain", "--account", "001000000000001AAA", "--json"],
            |answer| {
                answer["exit_status"] == 2
                    && answer["error"]
                        .as_str()
                        .is_some_and(|error| error.contains("nothing is recorded"))
            },
        ),
        (&["explain", "--account", "not-an-id", "--json"], |answer| {
            answer["error"]
                .as_str()
                .is_some_and(|error| error.contains("is not a Salesforce Id"))
        }),
        (&["explain", "--json"], |answer| {
            answer["exit_status"] == 2
                && answer["error"].as_str().is_some_and(|error| {
                    error.contains("required arguments were not provided")
                        && error.contains("--account")
                })
        }),
    ] {
        let output = setup.run(args, START_DEADLINE).await.expect("it ends");
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{args:?}: not JSON ({error}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        assert!(check(&answer), "{args:?}: {answer:#}");
        assert!(
            output.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_or_lead_id_where_an_account_id_belongs_is_refused_with_the_reason() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let setup = Setup::new(&world);
    drop(
        Store::open(&setup.path("store"))
            .await
            .expect("create the store"),
    );
    let contact = "003A0000006Vm9rIAC";
    let lead = "00QA0000006Vm9rMAC";
    for (args, says) in [
        (
            vec!["explain", "--account", contact],
            "003A0000006Vm9rIAC is not an Account Id: it starts with 003, so it is a Contact Id; give the Id of the Account (it starts with 001)",
        ),
        (
            vec!["resync", "--account", lead, "--dry-run"],
            "00QA0000006Vm9rMAC is not an Account Id: it starts with 00Q, so it is a Lead Id",
        ),
        (
            vec!["preview", "--mapping", BUSINESS, "--account", contact],
            "is not an Account Id: it starts with 003, so it is a Contact Id",
        ),
        // An 18-character Id whose checksum does not match (a typo).
        (
            vec!["explain", "--account", "001A0000006Vm9rAAC"],
            "001A0000006Vm9rAAC is not a Salesforce Id: its last three characters AAC do not match its first fifteen, which give IAC",
        ),
    ] {
        let output = setup.run(&args, START_DEADLINE).await.expect("it ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(
        world.salesforce.stats().api_requests,
        0,
        "refused before asking Salesforce"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_http_status_of_every_failed_call() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 31).remove(0);
    {
        let engine = world.engine();
        // Ondorse fails the portal once; then Salesforce fails the write-back call.
        world.ondorse.fail_next_requests(1, 500);
        engine.poll(BUSINESS).await.expect("poll");
        // The failed intent waits its (test-sized) backoff, then reconcile
        // creates the portal.
        let until = tokio::time::Instant::now() + crate::support::world::E2E_DEADLINE;
        while engine
            .store()
            .link(BUSINESS, &id)
            .unwrap()
            .and_then(|link| link.portal)
            .is_none()
        {
            assert!(
                tokio::time::Instant::now() < until,
                "reconcile never created the portal"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            engine.reconcile().await.expect("reconcile");
        }
        world.salesforce.fail_next_requests(1);
        engine.flush_writes().await.expect("a write pass");
    }
    let explained = explain_text(&world, &id).await;
    assert_eq!(
        status_under(&explained, "portal creation failed").as_deref(),
        Some("500"),
        "{explained}"
    );
    assert_eq!(
        status_under(&explained, "the write-back call failed").as_deref(),
        Some("503"),
        "{explained}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_http_status_of_a_failed_application_fetch() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 41).remove(0);
    {
        let engine = world.engine();
        engine
            .poll(BUSINESS)
            .await
            .expect("poll creates the portal");
        world
            .ondorse
            .submit_portal(&world.portal_of(&id))
            .expect("the applicant submits");
        world.store_raised_events(&engine).await;
        engine
            .process_inbox()
            .await
            .expect("the application is fetched");
        let link = engine.store().link(BUSINESS, &id).unwrap().expect("a link");
        assert!(link.application_id.is_some(), "{link:?}");

        world.ondorse.fail_next_requests(1, 503);
        let report = engine.reconcile().await.expect("reconcile");
        assert_eq!(report.applications_failed, 1, "{report:?}");
    }
    let explained = explain_text(&world, &id).await;
    assert_eq!(
        status_under(&explained, "fetching application").as_deref(),
        Some("503"),
        "{explained}"
    );
}

/// `explain --account ID`, which must succeed: what it prints.
async fn explain_text(world: &World, id: &str) -> String {
    let output =
        crate::support::daemon::cli(&world.config_path, &["explain", "--account", id]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The HTTP status `explain` shows under the first history entry whose
/// line holds `summary` (its detail lines are indented further).
fn status_under(explained: &str, summary: &str) -> Option<String> {
    let mut lines = explained.lines().skip_while(|line| !line.contains(summary));
    lines.next()?;
    lines
        .take_while(|line| line.starts_with("                         "))
        .find_map(|line| line.trim().strip_prefix("HTTP status: "))
        .map(str::to_owned)
}
