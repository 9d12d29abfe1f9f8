//! Operating the bridge: resync, status, explain, dead letters and the admin
//! API, over real HTTP against both sandboxes. The state commands run as the
//! real binary, against the store when the daemon is down and through the
//! admin API when it runs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ondorse_bridge::config::Config;
use ondorse_bridge::daemon::{Daemon, Listeners};
use ondorse_bridge::store::Store;
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use serde_json::{Value, json};

use crate::support::config::ADMIN_TOKEN;
use crate::support::daemon::cli;
use crate::support::salesforce::fields;
use crate::support::world::{E2E_DEADLINE, World, eventually, quick_settings};

const BUSINESS: &str = "business-onboarding";
/// A well-formed Account Id that no sandbox record has.
const ABSENT_ID: &str = "001000000000000AAA";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the CLI and insists it succeeded; answers its standard output.
async fn cli_ok(config: &Path, args: &[&str]) -> String {
    let output = cli(config, args).await;
    assert!(
        output.status.success(),
        "ondorse-bridge {args:?} failed ({}):\n{}{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Runs the CLI and insists it refused the input (exit 2); answers stderr.
async fn cli_refused(config: &Path, args: &[&str]) -> String {
    let output = cli(config, args).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "ondorse-bridge {args:?} should be refused:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
    stderr(&output)
}

/// Gives the admin listener a real port (the CLI must find it in the
/// configuration), bound here and handed to the daemon, and starts the
/// daemon in-process with Ondorse's webhooks pointed at it.
async fn daemon_with_admin(world: &mut World) -> (Daemon, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let address = listener.local_addr().expect("the listener's address");
    let text = std::fs::read_to_string(&world.config_path).expect("read the test configuration");
    let (head, admin) = text
        .split_once("[admin]")
        .expect("the test configuration has [admin]");
    let admin = admin.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{address}\""),
        1,
    );
    std::fs::write(&world.config_path, format!("{head}[admin]{admin}"))
        .expect("rewrite the configuration");
    world.config =
        Config::load_with(&world.config_path, None).expect("the rewritten configuration is valid");
    let daemon = Daemon::start_on(
        &world.config,
        quick_settings(),
        Listeners {
            admin: Some(listener),
            webhooks: None,
        },
    )
    .await
    .expect("the daemon starts");
    assert_eq!(daemon.admin_address(), address);
    world
        .ondorse
        .set_webhook_url(Some(world.webhook_url(daemon.webhook_address())));
    (daemon, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_of_one_account_rewrites_the_decision_changed_by_hand() {
    let mut world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(3, "Customer", 21);
    let (daemon, _) = daemon_with_admin(&mut world).await;
    let target = ids[0].as_str();
    eventually("portal links are written", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "Ondorse_Portal_Url__c").is_string())
    })
    .await;
    world.decide(target, "approved", 1, Some(42.0));
    eventually("the decision is written back", E2E_DEADLINE, || {
        world.field(target, "KYC_Status__c") == json!("Approved")
            && world.field(target, "KYC_Risk_Level__c") == json!("Medium")
    })
    .await;

    // Someone edits the Account by hand in Salesforce.
    world.salesforce.edit_account(
        target,
        fields(json!({ "KYC_Status__c": "Rejected", "KYC_Risk_Level__c": "High" })),
    );
    // The daemon holds the store: the CLI goes through the admin API.
    let output = cli_ok(&world.config_path, &["resync", "--account", target]).await;
    assert!(output.contains("2 field(s) queued"), "{output}");
    assert!(
        output.contains("KYC_Status__c: \"Rejected\" -> \"Approved\""),
        "{output}"
    );
    assert!(
        output.contains("KYC_Risk_Level__c: \"High\" -> \"Medium\""),
        "{output}"
    );
    eventually("the decision is written again", E2E_DEADLINE, || {
        world.field(target, "KYC_Status__c") == json!("Approved")
            && world.field(target, "KYC_Risk_Level__c") == json!("Medium")
    })
    .await;
    // The other Accounts were left alone.
    for id in &ids[1..] {
        assert_eq!(
            world.field(id, "KYC_Status__c"),
            json!("Portal sent"),
            "{id}"
        );
    }
    let journal = daemon.engine.store().journal_of(target).expect("journal");
    assert!(
        journal.iter().any(|entry| entry.step == "resynced"),
        "{journal:?}"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_since_creates_only_missing_portals_and_never_moves_the_cursor_back() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let first = world.seed(5, "Customer", 22);
    let cursor = {
        let engine = world.engine();
        engine.poll(BUSINESS).await.expect("poll");
        // Not written back: the Accounts still match the mapping's select,
        // so the resync reads them again and must recognise them.
        engine
            .store()
            .cursor(BUSINESS)
            .expect("cursor")
            .expect("a cursor after a poll")
    };
    let late = world.seed(1, "Customer", 23).remove(0);
    assert_eq!(world.ondorse.portals().len(), first.len());

    // The daemon is down: the CLI opens the store itself.
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let output = cli_ok(
        &world.config_path,
        &["resync", "--since", &since, "--mapping", BUSINESS],
    )
    .await;
    assert!(output.contains("1 portal(s) created"), "{output}");
    let portals = world.portals_by_account();
    assert_eq!(
        world.ondorse.portals().len(),
        first.len() + 1,
        "{portals:?}"
    );
    assert!(portals.values().all(|count| *count == 1), "{portals:?}");
    assert_eq!(portals.get(&late), Some(&1));
    let output = cli_ok(&world.config_path, &["resync", "--all"]).await;
    assert!(!output.contains("portal(s) created"), "{output}");
    assert_eq!(world.ondorse.portals().len(), first.len() + 1);

    let store = Store::open(&world.config.store.path)
        .await
        .expect("the store is free again");
    assert_eq!(
        store.cursor(BUSINESS).expect("cursor"),
        Some(cursor),
        "a resync never moves the cursor"
    );
    drop(store);

    // Bad input is refused with a reason, before anything is read.
    let error = cli_refused(&world.config_path, &["resync", "--since", "yesterday"]).await;
    assert!(
        error.contains("\"yesterday\"") && error.contains("RFC 3339"),
        "{error}"
    );
    let error = cli_refused(
        &world.config_path,
        &["resync", "--account", "001-not-an-id"],
    )
    .await;
    assert!(error.contains("not a Salesforce Id"), "{error}");
    let error = cli_refused(&world.config_path, &["resync", "--account", ABSENT_ID]).await;
    assert!(
        error.contains(&format!("no Account with Id {ABSENT_ID}")),
        "{error}"
    );
    let error = cli_refused(
        &world.config_path,
        &["resync", "--all", "--mapping", "no-such-mapping"],
    )
    .await;
    assert!(
        error.contains("no mapping named `no-such-mapping`"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_the_changes_and_writes_nothing() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(3, "Customer", 24);
    {
        let engine = world.engine();
        engine.poll(BUSINESS).await.expect("poll");
        engine.flush_writes().await.expect("write-back");
    }
    let target = ids[0].as_str();
    let link = world.field(target, "Ondorse_Portal_Url__c");
    world.salesforce.edit_account(
        target,
        fields(json!({ "Ondorse_Portal_Url__c": "https://example.com/stale" })),
    );
    let newcomer = world.seed(1, "Customer", 25).remove(0);
    let journal_before = {
        let store = Store::open(&world.config.store.path).await.expect("store");
        store.journal_of(target).expect("journal").len()
    };
    let salesforce_before = world.salesforce.stats();
    let ondorse_before = world.ondorse.stats();

    let output = cli_ok(
        &world.config_path,
        &["resync", "--account", target, "--dry-run"],
    )
    .await;
    assert!(output.contains("dry run: nothing was written"), "{output}");
    assert!(output.contains("1 field(s) would write"), "{output}");
    assert!(
        output.contains(&format!(
            "Ondorse_Portal_Url__c: \"https://example.com/stale\" -> {link}"
        )),
        "{output}"
    );
    let output = cli_ok(&world.config_path, &["resync", "--all", "--dry-run"]).await;
    assert!(
        output.contains("1 Account(s) would get a portal"),
        "{output}"
    );
    assert!(output.contains(&newcomer), "{output}");

    let salesforce_after = world.salesforce.stats();
    assert_eq!(
        salesforce_after.composite_requests,
        salesforce_before.composite_requests
    );
    assert_eq!(
        salesforce_after.single_updates,
        salesforce_before.single_updates
    );
    assert_eq!(
        salesforce_after.records_updated,
        salesforce_before.records_updated
    );
    assert_eq!(
        world.ondorse.stats().portal_posts,
        ondorse_before.portal_posts
    );
    assert_eq!(
        world.field(target, "Ondorse_Portal_Url__c"),
        json!("https://example.com/stale")
    );
    let store = Store::open(&world.config.store.path).await.expect("store");
    assert_eq!(store.pending_write_count(), 0);
    assert_eq!(
        store.journal_of(target).expect("journal").len(),
        journal_before
    );
    assert!(store.links_of_account(&newcomer).expect("links").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_explain_tell_what_happened_from_the_store() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(4, "Customer", 26);
    let refused = ids[3].as_str();
    world
        .salesforce
        .add_validation_rule(&[refused], "Portal links need a review date");
    {
        let engine = world.engine();
        engine.poll(BUSINESS).await.expect("poll");
        engine.flush_writes().await.expect("write-back");
    }

    let status: Value =
        serde_json::from_str(&cli_ok(&world.config_path, &["status", "--json"]).await)
            .expect("status --json is JSON");
    assert_eq!(status["daemon"], Value::Null, "{status:#}");
    assert_eq!(status["dead_letters"], json!(1));
    assert_eq!(
        status["queues"],
        json!({
            "inbox": 0,
            "pending_writes": 0,
            "pending_portals": 0,
            "parked_webhooks": 0,
            "parked_hints": 0
        })
    );
    let business = status["mappings"]
        .as_array()
        .and_then(|mappings| {
            mappings
                .iter()
                .find(|mapping| mapping["name"] == json!(BUSINESS))
        })
        .unwrap_or_else(|| panic!("no {BUSINESS} in {status:#}"));
    assert_eq!(business["accounts"], json!(4));
    assert_eq!(business["portals"], json!(4));
    assert_eq!(business["applications"], json!(0));
    assert_eq!(business["last_error"], Value::Null);
    assert!(business["cursor"]["id"].is_string(), "{business:#}");

    let text = cli_ok(&world.config_path, &["status"]).await;
    for expected in [
        "the daemon is not running",
        "  business-onboarding\n",
        "accounts      4 (portals 4, applications 0, final decisions 0)",
        "dead letters  1 (see `ondorse-bridge dead-letters list`)",
        "known only while the daemon runs",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }

    let story = cli_ok(&world.config_path, &["explain", "--account", refused]).await;
    let steps = [
        format!("Account {refused}"),
        "History, oldest first".to_owned(),
        format!("[{BUSINESS}] matched `{BUSINESS}`; a portal will be created"),
        "read from Salesforce: ".to_owned(),
        format!("[{BUSINESS}] portal "),
        "sent to Ondorse: type=\"business\"".to_owned(),
        format!("default_custom_fields.salesforce_account_id=\"{refused}\""),
        "on_portal_created: 2 field(s) to write".to_owned(),
        "Salesforce refused the write (FIELD_CUSTOM_VALIDATION_EXCEPTION)".to_owned(),
        "Portal links need a review date".to_owned(),
        "not written: Ondorse_Portal_Url__c=".to_owned(),
    ];
    let mut from = 0;
    for step in &steps {
        let at = story[from..]
            .find(step.as_str())
            .unwrap_or_else(|| panic!("{step:?} missing (or out of order) in:\n{story}"));
        from += at + step.len();
    }
    assert!(story.contains("dead letter "), "{story}");
    // The 15-character form people copy from Salesforce Classic URLs works too.
    let accepted = cli_ok(&world.config_path, &["explain", "--account", &ids[0][..15]]).await;
    assert!(
        accepted.starts_with(&format!("Account {}\n", ids[0])),
        "{accepted}"
    );
    assert!(
        accepted.contains("Salesforce accepted 2 field(s)"),
        "{accepted}"
    );
    assert!(
        accepted.contains("nothing waiting to be written"),
        "{accepted}"
    );

    let letters = cli_ok(&world.config_path, &["dead-letters", "list"]).await;
    assert!(letters.contains("1 dead letter(s)"), "{letters}");
    assert!(letters.contains(&format!("Account {refused}")), "{letters}");
    assert!(
        letters.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION: "),
        "{letters}"
    );

    let error = cli_refused(&world.config_path, &["explain", "--account", ABSENT_ID]).await;
    assert!(
        error.contains(&format!("nothing is recorded about Account {ABSENT_ID}")),
        "{error}"
    );
    let error = cli_refused(&world.config_path, &["explain", "--account", "42"]).await;
    assert!(error.contains("not a Salesforce Id"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_retried_after_the_validation_rule_is_lifted_is_written() {
    let mut world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(2, "Customer", 27);
    let refused = ids[1].as_str();
    world
        .salesforce
        .add_validation_rule(&[refused], "Portal links need a review date");
    let (daemon, _) = daemon_with_admin(&mut world).await;
    let store = daemon.engine.store().clone();
    eventually(
        "the refused write-back is a dead letter",
        E2E_DEADLINE,
        || store.dead_letter_count() == 1,
    )
    .await;

    let error = cli_refused(&world.config_path, &["dead-letters", "retry", "987654321"]).await;
    assert!(
        error.contains("no dead letter with id 987654321"),
        "{error}"
    );
    assert_eq!(
        store.dead_letter_count(),
        1,
        "an unknown id changes nothing"
    );

    let status = cli_ok(&world.config_path, &["status"]).await;
    for expected in [
        "(from the running daemon)",
        "Schedules (every schedule fires on time)",
        "dead letters  1 (see `ondorse-bridge dead-letters list`)",
        "token         held for http://127.0.0.1:",
    ] {
        assert!(
            status.contains(expected),
            "{expected:?} missing from:\n{status}"
        );
    }

    world.salesforce.clear_validation_rules();
    let output = cli_ok(&world.config_path, &["dead-letters", "retry", "--all"]).await;
    assert!(
        output.contains(&format!(
            "(Account {refused}) retried: planned again from its current state"
        )),
        "{output}"
    );
    eventually("the retried write-back lands", E2E_DEADLINE, || {
        world.field(refused, "KYC_Status__c") == json!("Portal sent")
            && world.field(refused, "Ondorse_Portal_Url__c").is_string()
    })
    .await;
    assert_eq!(store.dead_letter_count(), 0);
    let output = cli_ok(&world.config_path, &["dead-letters", "list"]).await;
    assert_eq!(output, "no dead letters\n");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_the_token_and_runs_one_resync_at_a_time() {
    let mut world = World::start(OndorseSandboxOptions::default()).await;
    let ids = world.seed(2, "Customer", 28);
    let (daemon, address) = daemon_with_admin(&mut world).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{address}{path}");

    let health = http.get(url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = http.get(url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({ "status": "ready" })
    );
    let metrics = http.get(url("/metrics")).send().await.expect("metrics");
    assert_eq!(metrics.status(), 200);
    let content_type = metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("# HELP ondorse_bridge_")
    );

    for authorization in [None, Some("Bearer wrong-token"), Some(ADMIN_TOKEN)] {
        let mut request = http.get(url("/admin/status"));
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        let answer = request.send().await.expect("admin status");
        assert_eq!(answer.status(), 401, "{authorization:?}");
        let body: Value = answer.json().await.expect("a JSON refusal");
        let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
        assert_eq!(keys, ["error"], "a refusal tells nothing else: {body}");
        assert!(!body.to_string().contains(BUSINESS), "{body}");
    }
    let status: Value = http
        .get(url("/admin/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin status")
        .json()
        .await
        .expect("status JSON");
    assert_eq!(
        status["daemon"]["schedules_alive"],
        json!(true),
        "{status:#}"
    );
    let explain = http
        .get(url(&format!("/admin/explain/{ABSENT_ID}")))
        .bearer_auth(ADMIN_TOKEN);
    assert_eq!(explain.send().await.unwrap().status(), 404);
    let explain = http
        .get(url("/admin/explain/not-an-id"))
        .bearer_auth(ADMIN_TOKEN);
    assert_eq!(explain.send().await.unwrap().status(), 400);
    let bad = http
        .post(url("/admin/resync"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "everything": true }));
    assert_eq!(bad.send().await.unwrap().status(), 400);

    eventually("portal links are written", E2E_DEADLINE, || {
        ids.iter()
            .all(|id| world.field(id, "Ondorse_Portal_Url__c").is_string())
    })
    .await;
    // A slow org keeps the first resync busy while the second arrives.
    world.salesforce.set_latency(Duration::from_millis(400));
    let queries = world.salesforce.stats().query_requests;
    let first = tokio::spawn(
        http.post(url("/admin/resync"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "accounts": [ids[0]] }))
            .send(),
    );
    eventually("the first resync reads Salesforce", E2E_DEADLINE, || {
        world.salesforce.stats().query_requests > queries
    })
    .await;
    let second = http
        .post(url("/admin/resync"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "all": true }))
        .send()
        .await
        .expect("second resync");
    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("already running"),
        "{body}"
    );
    let first = first.await.unwrap().expect("first resync");
    assert_eq!(first.status(), 200);
    let report: Value = first.json().await.unwrap();
    assert_eq!(report["accounts_read"], json!(1), "{report:#}");
    world.salesforce.set_latency(Duration::ZERO);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_of_an_account_whose_portal_failed_creates_it_at_once() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let id = world.seed(1, "Customer", 29).remove(0);
    {
        let engine = world.engine();
        // A failure is not retried within the step: the intent is parked.
        world.ondorse.fail_next_requests(1, 503);
        let report = engine.poll(BUSINESS).await.expect("poll");
        assert_eq!(
            (report.intents, report.portals_failed),
            (1, 1),
            "{report:?}"
        );
    }
    assert!(world.ondorse.portals().is_empty());

    let output = cli_ok(
        &world.config_path,
        &["resync", "--account", &id, "--dry-run"],
    )
    .await;
    assert!(
        output.contains("1 Account(s) would get a portal"),
        "{output}"
    );
    assert!(
        world.ondorse.portals().is_empty(),
        "a dry run creates nothing"
    );

    let output = cli_ok(&world.config_path, &["resync", "--account", &id]).await;
    assert!(output.contains("1 portal(s) created, 0 failed"), "{output}");
    assert_eq!(world.portals_by_account().get(&id), Some(&1));
    assert!(
        world.field(&id, "Ondorse_Portal_Url__c").is_string(),
        "the link is written back"
    );
}
