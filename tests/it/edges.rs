//! The edges a real org and the network bring (issue 10): rotated refresh
//! tokens across restarts, the API version the org serves, readiness that
//! tells the truth, an exposed admin listener, and the stop path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ondorse_sandbox::ondorse::{OndorseSandbox, OndorseSandboxOptions};
use ondorse_sandbox::salesforce::{SalesforceSandbox, SalesforceSandboxOptions};
use serde_json::{Value, json};

use crate::support::config::{ADMIN_TOKEN, ConfigSettings, ONDORSE_API_KEY, write_config};
use crate::support::daemon::{Daemon, cli};
use crate::support::world::{E2E_DEADLINE, World, copy_mappings, eventually};

/// Polls every second, so a test sees new Accounts picked up quickly.
const FAST_POLL: &str = "[schedule]\npoll = \"* * * * * *\"\n";
/// The refresh token the operator put in `sf-refresh-token`.
const FILE_REFRESH_TOKEN: &str = "sandbox-refresh-token";

/// Both sandboxes and a configuration for the real daemon as a child
/// process, logging in with `auth`.
struct Setup {
    salesforce: SalesforceSandbox,
    ondorse: OndorseSandbox,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(salesforce: SalesforceSandboxOptions, auth: &str, extra: &str) -> Setup {
        let keys = ondorse_sandbox::salesforce::generate_jwt_key_pair();
        let salesforce = SalesforceSandbox::start(SalesforceSandboxOptions {
            jwt_public_key_pem: Some(keys.public_key_pem.clone()),
            ..salesforce
        })
        .await
        .expect("sandbox salesforce starts");
        let ondorse = OndorseSandbox::start(OndorseSandboxOptions {
            api_key: ONDORSE_API_KEY.to_owned(),
            ..Default::default()
        })
        .await
        .expect("sandbox ondorse starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = ConfigSettings::in_dir(dir.path());
        settings.salesforce_login_url = salesforce.login_url();
        settings.salesforce_auth = auth.to_owned();
        settings.ondorse_base_url = ondorse.base_url();
        settings.extra = extra.to_owned();
        // Readiness is lost after one second of failures.
        settings.admin_extra = "failure_grace_seconds = 1".to_owned();
        copy_mappings(&settings.mappings_dir);
        let config = write_config(dir.path(), &settings, &keys.private_key_pem).path;
        Setup {
            salesforce,
            ondorse,
            config,
            _dir: dir,
        }
    }

    /// The refresh-token flow against an org that rotates its refresh
    /// tokens and knows `tokens` at start.
    async fn rotating(tokens: &[&str]) -> Setup {
        Setup::start(
            SalesforceSandboxOptions {
                refresh_tokens: tokens.iter().map(|token| (*token).to_owned()).collect(),
                rotate_refresh_tokens: true,
                ..Default::default()
            },
            "refresh_token",
            FAST_POLL,
        )
        .await
    }

    async fn daemon(&self) -> Daemon {
        Daemon::start(&self.config).await
    }

    /// Seeds one Customer Account (the business mapping takes it) and waits
    /// until Ondorse holds its portal: the daemon logged in and worked.
    async fn a_new_account_gets_its_portal(&self, seed: u64, daemon: &Daemon) {
        let mut account = SalesforceSandbox::generate_accounts(1, seed).remove(0);
        account.insert("Type".to_owned(), json!("Customer"));
        let id = self.salesforce.insert_accounts(vec![account]).remove(0);
        let has_portal = || {
            self.ondorse
                .portals()
                .iter()
                .any(|portal| portal["default_custom_fields"]["salesforce_account_id"] == json!(id))
        };
        let deadline = tokio::time::Instant::now() + E2E_DEADLINE;
        while !has_portal() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no portal for {id} (seed {seed}):\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn refresh_token_file(&self) -> PathBuf {
        self.config.with_file_name("sf-refresh-token")
    }
}

/// SIGTERM, and the daemon exits 0.
async fn stop(daemon: Daemon) {
    let (exit, log) = daemon.terminate().await;
    assert!(exit.success(), "exit after SIGTERM: {exit}\n{log}");
}

/// Whether the sandbox org still accepts `token` for a refresh (real
/// HTTP, as a second client would try it).
async fn refresh_token_works(setup: &Setup, token: &str) -> bool {
    let options = setup.salesforce.options();
    reqwest::Client::new()
        .post(format!(
            "{}/services/oauth2/token",
            setup.salesforce.login_url()
        ))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", &options.client_id),
            ("client_secret", &options.client_secret),
        ])
        .send()
        .await
        .expect("the token endpoint answers")
        .status()
        .is_success()
}

/// Waits until `/readyz` answers 503 with a reason containing `wanted`.
async fn not_ready_because(admin: SocketAddr, wanted: &str) -> String {
    not_ready_saying(admin, &[wanted]).await
}

/// Waits until `/readyz` answers 503 with every one of `wanted` in its
/// reason; returns that body.
async fn not_ready_saying(admin: SocketAddr, wanted: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + E2E_DEADLINE;
    loop {
        let (status, body) = admin_get(admin, "/readyz", false).await;
        if status == 503 && wanted.iter().all(|wanted| body.contains(wanted)) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never said {wanted:?}; last answer {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both sandboxes, fast polls, and readiness lost after one second of
/// failures (`[admin] failure_grace_seconds = 1`).
async fn impatient_world() -> World {
    let mut world = World::start_with(
        SalesforceSandboxOptions::default(),
        OndorseSandboxOptions::default(),
        FAST_POLL,
    )
    .await;
    world.config.admin.failure_grace = Duration::from_secs(1);
    world
}

/// Waits until `/readyz` answers 200 again.
async fn ready_again(admin: SocketAddr, what: &str) {
    let deadline = tokio::time::Instant::now() + E2E_DEADLINE;
    while admin_get(admin, "/readyz", false).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /admin/status` as JSON.
async fn status_json(admin: SocketAddr) -> Value {
    let (status, body) = admin_get(admin, "/admin/status", true).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("status is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_refresh_tokens_survive_restarts_kills_and_check_online() {
    let setup = Setup::rotating(&[FILE_REFRESH_TOKEN]).await;

    // First start: the file's token is redeemed and rotated away.
    let daemon = setup.daemon().await;
    setup.a_new_account_gets_its_portal(1, &daemon).await;
    assert!(!refresh_token_works(&setup, FILE_REFRESH_TOKEN).await);
    stop(daemon).await;

    // Stopped: check --online uses the kept token and keeps the next one.
    let checked = cli(&setup.config, &["check", "--online"]).await;
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Second start, ended by SIGKILL: no chance to save anything then.
    let daemon = setup.daemon().await;
    setup.a_new_account_gets_its_portal(2, &daemon).await;
    daemon.kill();

    // Third start: check --online while it runs goes through the daemon.
    let daemon = setup.daemon().await;
    setup.a_new_account_gets_its_portal(3, &daemon).await;
    let checked = daemon.cli(&setup.config, &["check", "--online"]).await;
    let said = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(
        checked.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(said.contains("the daemon runs"), "{said}");
    assert!(said.contains("checked online"), "{said}");
    setup.a_new_account_gets_its_portal(4, &daemon).await;
    stop(daemon).await;

    // Fourth start: still no new token from a human.
    let daemon = setup.daemon().await;
    setup.a_new_account_gets_its_portal(5, &daemon).await;
    let log = daemon.log();
    assert!(log.contains("kept in the store"), "{log}");
    assert!(
        !log.contains(FILE_REFRESH_TOKEN),
        "a refresh token in the log:\n{log}"
    );
    stop(daemon).await;
    assert_eq!(
        std::fs::read_to_string(setup.refresh_token_file()).unwrap(),
        format!("{FILE_REFRESH_TOKEN}\n"),
        "the operator's file was never touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_new_refresh_token_file_wins_over_the_kept_token() {
    const OPERATORS_NEW_TOKEN: &str = "operators-new-refresh-token";
    let setup = Setup::rotating(&[FILE_REFRESH_TOKEN, OPERATORS_NEW_TOKEN]).await;
    let daemon = setup.daemon().await;
    setup.a_new_account_gets_its_portal(11, &daemon).await;
    stop(daemon).await;

    std::fs::write(
        setup.refresh_token_file(),
        format!("{OPERATORS_NEW_TOKEN}\n"),
    )
    .unwrap();
    let daemon = setup.daemon().await;
    setup.a_new_account_gets_its_portal(12, &daemon).await;
    // The daemon redeemed the new file's token, so rotation revoked it.
    assert!(!refresh_token_works(&setup, OPERATORS_NEW_TOKEN).await);
    let log = daemon.log();
    assert!(
        log.contains("salesforce.refresh_token_file changed"),
        "{log}"
    );
    stop(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_makes_readyz_say_what_to_do_and_the_watchdog_keeps_quiet() {
    // The org knows no refresh token at all: the file's was revoked.
    let setup = Setup::rotating(&[]).await;
    let daemon = setup.daemon().await;
    let body = not_ready_because(
        daemon.admin_address(),
        "salesforce has refused the login since",
    )
    .await;
    assert!(body.contains("invalid_grant"), "{body}");
    assert!(
        body.contains("write it to salesforce.refresh_token_file and restart the daemon"),
        "{body}"
    );
    let status = status_json(daemon.admin_address()).await;
    let problem = status["daemon"]["salesforce"]["problem"]
        .as_str()
        .unwrap_or_default();
    assert!(problem.contains("the login is refused"), "{status}");
    // The schedules still fire: the process is healthy, the org refuses.
    assert_eq!(status["daemon"]["schedules_alive"], json!(true), "{status}");
    stop(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_version_the_org_does_not_serve_stops_the_work_and_says_what_it_serves() {
    let setup = Setup::start(
        SalesforceSandboxOptions {
            api_version: "58.0".to_owned(),
            older_api_versions: vec!["57.0".to_owned()],
            ..Default::default()
        },
        "jwt_bearer",
        FAST_POLL,
    )
    .await;
    let expected = "salesforce.api_version 62.0 is not offered; this org serves up to 58.0";
    let checked = cli(&setup.config, &["check", "--online"]).await;
    let said = String::from_utf8_lossy(&checked.stderr).into_owned();
    assert_eq!(checked.status.code(), Some(2), "{said}");
    assert!(said.contains(expected), "{said}");

    // The daemon starts all the same, and says why it does nothing: in
    // /readyz, in status and in its log.
    let mut account = SalesforceSandbox::generate_accounts(1, 21).remove(0);
    account.insert("Type".to_owned(), json!("Customer"));
    setup.salesforce.insert_accounts(vec![account]);
    let daemon = setup.daemon().await;
    not_ready_because(daemon.admin_address(), expected).await;
    let status = status_json(daemon.admin_address()).await;
    assert!(
        status["daemon"]["salesforce"]["problem"]
            .as_str()
            .is_some_and(|problem| problem.contains(expected)),
        "{status}"
    );
    assert_eq!(
        status["daemon"]["schedules_alive"],
        json!(true),
        "the schedules run: the watchdog has nothing to restart"
    );
    let log = daemon.log();
    assert!(log.contains(expected), "{log}");
    assert_eq!(
        setup.salesforce.stats().query_requests,
        0,
        "no query went to an unserved version"
    );
    assert!(setup.ondorse.portals().is_empty());
    stop(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_lists_the_versions_it_serves_and_refuses_the_others() {
    let sandbox = SalesforceSandbox::start(SalesforceSandboxOptions {
        api_version: "58.0".to_owned(),
        older_api_versions: vec!["57.0".to_owned()],
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    let listed: Value = reqwest::get(format!("{}/services/data/", sandbox.instance_url()))
        .await
        .expect("the version list answers without a session")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        listed,
        json!([
            {"label": "Spring '23", "url": "/services/data/v57.0", "version": "57.0"},
            {"label": "Summer '23", "url": "/services/data/v58.0", "version": "58.0"},
        ])
    );
    let options = sandbox.options();
    let session: Value = reqwest::Client::new()
        .post(format!("{}/services/oauth2/token", sandbox.instance_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &options.client_id),
            ("client_secret", &options.client_secret),
        ])
        .send()
        .await
        .expect("the token endpoint answers")
        .json()
        .await
        .expect("a token answer");
    let token = session["access_token"].as_str().expect("an access token");
    for (version, expected) in [("57.0", 200), ("58.0", 200), ("62.0", 404)] {
        let answer = reqwest::Client::new()
            .get(format!(
                "{}/services/data/v{version}/limits",
                sandbox.instance_url()
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("the org answers");
        assert_eq!(answer.status().as_u16(), expected, "v{version}");
        if expected == 404 {
            let body: Value = answer.json().await.expect("an error array");
            assert_eq!(body[0]["errorCode"], json!("NOT_FOUND"), "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappings_whose_polls_keep_failing_make_readyz_503_and_status_shows_each_error() {
    let world = impatient_world().await;
    let daemon = world.daemon().await;
    let admin = daemon.admin_address();
    eventually("the first polls succeed", E2E_DEADLINE, || {
        daemon.schedules().poll.state().last_finished.is_some()
            && daemon.schedules().poll_failures.failing().is_empty()
    })
    .await;
    let (status, _) = admin_get(admin, "/readyz", false).await;
    assert_eq!(status, 200);

    let names: Vec<String> = daemon
        .engine
        .mappings()
        .names()
        .map(|name| format!("mapping {name}"))
        .collect();
    assert!(names.len() >= 2, "{names:?}");
    world.salesforce.fail_next_requests(usize::MAX);
    // A poll under way when the fault starts may still read one mapping:
    // that mapping fails from the next poll on, its grace a moment later.
    let mut wanted = vec!["have failed since"];
    wanted.extend(names.iter().map(String::as_str));
    not_ready_saying(admin, &wanted).await;
    let status = status_json(admin).await;
    for mapping in status["mappings"].as_array().expect("mappings") {
        let error = mapping["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains("503"),
            "every mapping shows its error: {status}"
        );
    }

    world.salesforce.fail_next_requests(0);
    ready_again(admin, "ready again once polls work").await;
    daemon.stop().await.expect("the daemon stops");
}

/// `GET http://{address}{path}`, with the admin token when `token`.
async fn admin_get(address: std::net::SocketAddr, path: &str, token: bool) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("http://{address}{path}"));
    if token {
        request = request.bearer_auth(ADMIN_TOKEN);
    }
    let response = request.send().await.expect("the admin listener answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_admin_listener_and_plain_http_are_warned_about_and_the_token_guards_readyz_and_metrics()
 {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = ConfigSettings::in_dir(dir.path());
    settings.admin_listen = "0.0.0.0:0".to_owned();
    settings.ondorse_base_url = "http://api.ondorse.example".to_owned();
    copy_mappings(&settings.mappings_dir);
    let keys = ondorse_sandbox::salesforce::generate_jwt_key_pair();
    let config = write_config(dir.path(), &settings, &keys.private_key_pem).path;

    let checked = cli(&config, &["check"]).await;
    let said = String::from_utf8_lossy(&checked.stderr).into_owned();
    assert!(
        checked.status.success(),
        "warnings do not fail check: {said}"
    );
    assert!(
        said.contains("warning: ondorse.base_url http://api.ondorse.example is plain http"),
        "{said}"
    );
    assert!(
        said.contains("warning: admin.listen 0.0.0.0:0 is not a loopback address"),
        "{said}"
    );

    let daemon = Daemon::start(&config).await;
    assert!(daemon.admin_address().ip().is_unspecified());
    let admin = SocketAddr::from(([127, 0, 0, 1], daemon.admin_address().port()));
    let log = daemon.log();
    assert!(
        log.contains("is plain http to a host that is not loopback"),
        "{log}"
    );
    assert!(log.contains("is not a loopback address"), "{log}");

    assert_eq!(admin_get(admin, "/healthz", false).await.0, 200);
    for path in ["/readyz", "/metrics"] {
        let (status, body) = admin_get(admin, path, false).await;
        assert_eq!(status, 401, "{path} without the token: {body}");
        assert!(!body.contains("ondorse_bridge_"), "{body}");
        let (status, body) = admin_get(admin, path, true).await;
        assert_ne!(status, 401, "{path} with the token: {body}");
    }
    let (status, body) = admin_get(admin, "/metrics", true).await;
    assert_eq!(status, 200);
    assert!(body.contains("ondorse_bridge_"), "{body}");
    stop(daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_loopback_is_not_warned_about() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = ConfigSettings::in_dir(dir.path());
    settings.ondorse_base_url = "http://127.0.0.1:9/".to_owned();
    copy_mappings(&settings.mappings_dir);
    let keys = ondorse_sandbox::salesforce::generate_jwt_key_pair();
    let config = write_config(dir.path(), &settings, &keys.private_key_pem).path;
    let checked = cli(&config, &["check"]).await;
    let said = String::from_utf8_lossy(&checked.stderr).into_owned();
    assert!(checked.status.success(), "{said}");
    assert!(!said.contains("warning"), "{said}");
}

/// systemd SIGKILLs a unit still running `TimeoutStopSec=` after SIGTERM:
/// the daemon's whole grace period plus the final flush must fit well
/// inside it.
#[test]
fn the_whole_stop_path_fits_inside_the_units_stop_timeout() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ondorse-bridge.service"),
    )
    .expect("read the unit");
    let stop_timeout = unit
        .lines()
        .find_map(|line| line.strip_prefix("TimeoutStopSec="))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .expect("the unit sets TimeoutStopSec= in seconds");
    // The flush of a sled store takes well under a second; keep ten.
    let flush_margin = Duration::from_secs(10);
    assert!(
        ondorse_bridge::daemon::SHUTDOWN_GRACE + flush_margin <= stop_timeout,
        "grace {:?} + flush {flush_margin:?} > TimeoutStopSec {stop_timeout:?}",
        ondorse_bridge::daemon::SHUTDOWN_GRACE
    );
}

#[test]
fn listener_limits_and_the_readiness_grace_are_read_and_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = ConfigSettings::in_dir(dir.path());
    let keys = ondorse_sandbox::salesforce::generate_jwt_key_pair();
    let path = write_config(dir.path(), &settings, &keys.private_key_pem).path;
    let load = |pairs: &[(&str, &str)]| {
        ondorse_bridge::config::Config::load_with_environment(
            &path,
            None,
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        )
    };
    let defaults = load(&[]).expect("the defaults are valid");
    assert_eq!(
        defaults.webhooks.limits,
        ondorse_bridge::config::ListenerLimits::default()
    );
    assert_eq!(defaults.admin.failure_grace, Duration::from_secs(300));
    let set = load(&[
        ("ONDORSE_BRIDGE__WEBHOOKS__MAX_CONNECTIONS", "5"),
        ("ONDORSE_BRIDGE__WEBHOOKS__BODY_TIMEOUT_SECONDS", "3"),
        ("ONDORSE_BRIDGE__ADMIN__FAILURE_GRACE_SECONDS", "60"),
    ])
    .expect("valid overrides");
    assert_eq!(set.webhooks.limits.max_connections, 5);
    assert_eq!(set.webhooks.limits.body_timeout, Duration::from_secs(3));
    assert_eq!(set.admin.failure_grace, Duration::from_secs(60));
    let refused = load(&[
        ("ONDORSE_BRIDGE__WEBHOOKS__IDLE_TIMEOUT_SECONDS", "0"),
        ("ONDORSE_BRIDGE__WEBHOOKS__MAX_CONNECTIONS", "0"),
    ])
    .expect_err("zero is refused")
    .to_string();
    assert!(
        refused.contains("[webhooks] idle_timeout_seconds: must be at least 1 second"),
        "{refused}"
    );
    assert!(
        refused.contains("[webhooks] max_connections: must be at least 1"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_paused_by_failed_calls_makes_readyz_503_until_the_writes_land() {
    let world = impatient_world().await;
    let customers = world.seed(2, "Customer", 41);
    world.salesforce.fail_next_collection_updates(usize::MAX);
    let daemon = world.daemon().await;
    let admin = daemon.admin_address();
    let body = not_ready_because(admin, "the writer is paused by failed calls").await;
    assert!(body.contains("503"), "{body}");
    // Polls work all along: only the writer is the matter.
    assert!(daemon.schedules().poll_failures.failing().is_empty());
    let portals = world.portals_by_account();
    assert!(customers.iter().all(|id| portals.contains_key(id)));
    assert!(
        customers
            .iter()
            .all(|id| world.field(id, "KYC_Status__c") == Value::Null),
        "nothing was written while the calls failed"
    );

    world.salesforce.fail_next_collection_updates(0);
    eventually("the portal links land", E2E_DEADLINE, || {
        customers
            .iter()
            .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
    })
    .await;
    ready_again(admin, "ready again once the writer works").await;
    daemon.stop().await.expect("the daemon stops");
}

/// A store that cannot keep anything (a full disk).
struct FullDisk;

impl ondorse_bridge::salesforce::RefreshTokenKeeper for FullDisk {
    fn load(&self) -> Result<Option<ondorse_bridge::salesforce::KeptRefreshToken>, String> {
        Ok(None)
    }

    fn keep<'a>(
        &'a self,
        _kept: &'a ondorse_bridge::salesforce::KeptRefreshToken,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Err("no space left on device".to_owned()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_that_cannot_be_kept_is_not_used() {
    let setup = Setup::rotating(&[FILE_REFRESH_TOKEN]).await;
    let config = ondorse_bridge::config::Config::load_with(&setup.config, None)
        .expect("the test configuration is valid");
    let client = ondorse_bridge::salesforce::SalesforceClient::new(
        &config.salesforce,
        ondorse_bridge::telemetry::Metrics::new(),
    )
    .expect("the client builds");
    client.keep_refresh_tokens_in(std::sync::Arc::new(FullDisk));
    let error = client
        .limits()
        .await
        .expect_err("the token could not be kept");
    let message = error.to_string();
    assert!(
        message.contains(
            "rotated the refresh token but the store could not keep it (no space left on device)"
        ),
        "{message}"
    );
    assert!(error.is_retriable(), "{message}");
    assert_eq!(
        setup.salesforce.stats().api_requests,
        0,
        "the access token that came with it was never used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_closes_a_connection_that_sends_nothing_too() {
    use tokio::io::AsyncReadExt;
    let world = World::start(OndorseSandboxOptions::default()).await;
    let daemon = world.daemon().await;
    let mut idle = tokio::net::TcpStream::connect(daemon.admin_address())
        .await
        .expect("connect to the admin listener");
    // Its head timeout is the default one: ten seconds, with room for load.
    let deadline = ondorse_bridge::config::ListenerLimits::default().header_read_timeout * 3;
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(deadline, idle.read(&mut buffer))
        .await
        .expect("closed within the head timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let (status, _) = admin_get(daemon.admin_address(), "/healthz", false).await;
    assert_eq!(status, 200);
    daemon.stop().await.expect("the daemon stops");
}
