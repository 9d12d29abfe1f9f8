//! What CRM admins run against a real (sandbox) org: `check --online`,
//! `preview`, `mappings schema`, hot reload and schema drift. The CLI runs
//! as a child process where exit codes and stderr matter.

use ondorse_bridge::daemon::Daemon;
use ondorse_bridge::sync::ReloadOutcome;
use ondorse_bridge::sync::operations::{self, RunningDaemon};
use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use ondorse_sandbox::salesforce::{SalesforceSandbox, SalesforceSandboxOptions};
use serde_json::json;

use crate::support::daemon::cli;
use crate::support::position;
use crate::support::world::{E2E_DEADLINE, World, eventually, repository_mappings};

const BUSINESS: &str = "business-onboarding";
const PERSON: &str = "person-onboarding";
/// Poll every second, so end-to-end flows take seconds.
const FAST_POLL: &str = "[schedule]\npoll = \"* * * * * *\"\n";

/// Sandboxes with their defaults, polled every second by a running daemon.
async fn running_world() -> (World, Daemon) {
    let world = World::start_with(
        SalesforceSandboxOptions::default(),
        OndorseSandboxOptions::default(),
        FAST_POLL,
    )
    .await;
    let daemon = world.daemon().await;
    (world, daemon)
}

/// Seeds `count` Accounts of `account_type` and waits until every one has
/// its portal, panicking with `what` otherwise.
async fn seed_with_portals(
    world: &World,
    count: usize,
    account_type: &str,
    seed: u64,
    what: &str,
) -> Vec<String> {
    let ids = world.seed(count, account_type, seed);
    eventually(what, E2E_DEADLINE, || {
        let portals = world.portals_by_account();
        ids.iter().all(|id| portals.contains_key(id))
    })
    .await;
    ids
}

/// `preview --mapping MAPPING --account ACCOUNT`, which must succeed; its stdout.
async fn preview(world: &World, mapping: &str, account: &str) -> String {
    let output = cli(
        &world.config_path,
        &["preview", "--mapping", mapping, "--account", account],
    )
    .await;
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&output.stderr)
    );
    stdout
}

/// Waits until person-onboarding is paused for a reason naming `field`,
/// with business-onboarding still running; returns that reason.
async fn only_person_pauses_over(daemon: &Daemon, field: &str) -> String {
    let health = daemon.engine.mapping_health();
    eventually("person-onboarding pauses", E2E_DEADLINE, || {
        health.paused().contains_key(PERSON)
    })
    .await;
    let reason = health.paused()[PERSON].reason.clone();
    assert!(
        reason.contains(field) && reason.contains(PERSON),
        "{reason}"
    );
    assert!(
        !health.paused().contains_key(BUSINESS),
        "{:?}",
        health.paused()
    );
    reason
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The shipped business mapping with `edits` (from, to) applied, written
/// over the world's copy; returns its path.
fn edit_business(world: &World, edits: &[(&str, &str)]) -> std::path::PathBuf {
    let path = world.config.mappings.dir.join(format!("{BUSINESS}.yaml"));
    let mut content =
        std::fs::read_to_string(repository_mappings().join(format!("{BUSINESS}.yaml"))).unwrap();
    for (from, to) in edits {
        assert!(
            content.contains(from),
            "{from:?} not in the shipped mapping"
        );
        content = content.replacen(from, to, 1);
    }
    std::fs::write(&path, content).expect("write the edited mapping");
    path
}

/// What `ondorse-bridge status` shows for an in-process daemon.
fn status_text(daemon: &Daemon) -> String {
    let running = RunningDaemon {
        engine: &daemon.engine,
        schedules: daemon.schedules(),
    };
    let status = operations::status(daemon.engine.store(), Some(&running)).expect("status");
    ondorse_bridge::cli::status::render(&status, "")
}

/// Like `World::seed`, for an org that no longer has `removed_field`.
fn seed_without(
    world: &World,
    count: usize,
    account_type: &str,
    seed: u64,
    removed_field: &str,
) -> Vec<String> {
    let accounts = SalesforceSandbox::generate_accounts(count, seed)
        .into_iter()
        .map(|mut account| {
            account.insert("Type".to_owned(), json!(account_type));
            account.remove(removed_field);
            account
        })
        .collect();
    world.salesforce.insert_accounts(accounts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_passes_on_the_shipped_examples() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let output = cli(&world.config_path, &["check", "--online"]).await;
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&output.stderr)
    );
    assert!(stdout.contains("2 mapping(s)"), "{stdout}");
    assert!(stdout.contains("checked online"), "{stdout}");
    assert!(
        world.salesforce.stats().describe_requests >= 2,
        "Account and User were described"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_reports_every_org_problem_with_its_position_at_once() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let path = edit_business(
        &world,
        &[
            (
                "{{ BillingCountryCode | upper }}",
                "{{ BillingCountryCod | upper }}",
            ),
            (
                "owner_email: \"{{ Owner.Email }}\"",
                "owner_email: \"{{ Owner.Emial }}\"",
            ),
            ("approved: Approved", "approved: Legacy"),
            (
                "select: \"Type = 'Customer' AND KYC_Status__c = null\"",
                "select: \"Type = 'Customer' AND KYC_Status__c = 5\"",
            ),
            (
                "    KYC_Status__c: Portal sent",
                "    KYC_Status__c: Portal sent\n    KYC_Score_Band__c: High",
            ),
        ],
    );
    // Offline, the file is fine: only the org can tell.
    let offline = cli(&world.config_path, &["check"]).await;
    assert!(offline.status.success(), "{}", text(&offline.stderr));

    let output = cli(&world.config_path, &["check", "--online"]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    let expected = [
        format!(
            "{}: Account has no field `BillingCountryCod` (or the integration user cannot see it); did you mean `BillingCountryCode`?",
            position(&path, "BillingCountryCod ")
        ),
        format!(
            "{}: User has no field `Emial` (in `Owner.Emial`) (or the integration user cannot see it); did you mean `Email`?",
            position(&path, "Owner.Emial }}")
        ),
        format!(
            "{}: `Legacy` is an inactive value of picklist `KYC_Status__c`",
            position(&path, "Legacy")
        ),
        format!(
            "{}: `select` is not valid SOQL; Salesforce answered INVALID_FIELD",
            position(&path, "\"Type = 'Customer' AND KYC_Status__c = 5")
        ),
        format!(
            "{}: `KYC_Score_Band__c` is a formula field (calculated)",
            position(&path, "KYC_Score_Band__c")
        ),
    ];
    for line in &expected {
        assert!(
            stderr.contains(line.as_str()),
            "missing {line:?} in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("5 problem(s) found against the org"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_the_portal_body_and_each_moment_and_writes_nothing() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let customer = world.seed(1, "Customer", 7).remove(0);
    let person = world.seed(1, "Other", 8).remove(0);
    let account = world.salesforce.account(&customer).expect("seeded");
    let before = world.salesforce.stats();

    let stdout = preview(&world, BUSINESS, &customer).await;
    let body_start = stdout
        .find("POST /api/portals\n")
        .expect("the portal body is shown")
        + "POST /api/portals\n".len();
    let body_end = body_start + stdout[body_start..].find("\n}\n").expect("the body ends") + 2;
    let body: serde_json::Value =
        serde_json::from_str(&stdout[body_start..body_end]).expect("the body is JSON");
    assert_eq!(body["type"], json!("business"));
    assert_eq!(
        body["redirect_url"],
        json!(format!(
            "https://app.example.com/kyc/done?account={customer}"
        ))
    );
    assert_eq!(
        body["default_custom_fields"]["salesforce_account_id"],
        json!(customer)
    );
    assert_eq!(
        body["default_custom_fields"]["company_name"],
        account["Name"]
    );
    assert!(
        body["default_custom_fields"]["owner_email"]
            .as_str()
            .is_some_and(|email| email.contains('@')),
        "{body}"
    );
    for line in [
        "matches `select`: the daemon creates its portal at the next poll",
        "on_portal_created (with a sample portal):",
        "  set Ondorse_Portal_Url__c = \"https://collect.ondorse.co/portals/sample\"",
        "  set KYC_Status__c = \"Portal sent\"",
        "on_application (with the sample application app_sample):",
        "  set Ondorse_Application_Id__c = \"app_sample\"",
        "  set KYC_Status__c = \"Approved\"",
        "  set KYC_Risk_Level__c = \"Medium\"",
        "  set KYC_Risk_Score__c = 42.5",
        "on_collect_opened (with the sample application app_sample and a sample collect):",
        "  set KYC_Status__c = \"Documents requested\"",
        "nothing was sent to Ondorse and nothing was written to Salesforce",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }

    let stdout = preview(&world, PERSON, &person).await;
    assert!(stdout.contains("\"type\": \"person\""), "{stdout}");
    assert!(
        stdout.contains("  set KYC_Decision_Date__c = \""),
        "a decided sample stamps the date:\n{stdout}"
    );

    // A customer is not a person: the preview says the daemon would skip it.
    let output = cli(
        &world.config_path,
        &["preview", "--mapping", PERSON, "--account", &customer],
    )
    .await;
    assert!(
        text(&output.stdout).contains("does NOT match `select`"),
        "{}",
        text(&output.stdout)
    );

    let output = cli(
        &world.config_path,
        &[
            "preview",
            "--mapping",
            "busines-onboarding",
            "--account",
            &customer,
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("did you mean `business-onboarding`?"),
        "{}",
        text(&output.stderr)
    );

    let after = world.salesforce.stats();
    assert_eq!(
        after.composite_requests, before.composite_requests,
        "no collection update"
    );
    assert_eq!(
        after.single_updates, before.single_updates,
        "no single update"
    );
    assert_eq!(
        after.records_updated, before.records_updated,
        "no record written"
    );
    assert_eq!(world.ondorse.portals().len(), 0, "no portal created");
    assert_eq!(world.ondorse.stats().portal_posts, 0, "no portal POST");
    assert_eq!(
        world.salesforce.account(&customer),
        Some(account),
        "the Account is untouched"
    );
    assert!(
        !world.config.store.path.exists(),
        "preview creates no store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mappings_schema_prints_the_shipped_schema() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let output = cli(&world.config_path, &["mappings", "schema"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shipped =
        std::fs::read_to_string(repository_mappings().join("mapping.schema.json")).unwrap();
    assert_eq!(
        text(&output.stdout),
        shipped,
        "mappings/mapping.schema.json must be `ondorse-bridge mappings schema` output"
    );
    let schema: serde_json::Value = serde_json::from_str(&shipped).unwrap();
    assert!(
        schema.pointer("/properties/writeback").is_some(),
        "{schema}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_reload_is_refused_and_the_last_good_mappings_keep_running() {
    let (world, daemon) = running_world().await;
    seed_with_portals(&world, 3, "Customer", 11, "the first Accounts have portals").await;

    // A value the org retired: valid YAML, refused online. The watcher
    // notices the edit on its own.
    let path = edit_business(
        &world,
        &[("KYC_Status__c: Portal sent", "KYC_Status__c: Legacy")],
    );
    let health = daemon.engine.mapping_health();
    eventually("the broken reload is refused", E2E_DEADLINE, || {
        !health.reload_status().problems.is_empty()
    })
    .await;
    let problems = health.reload_status().problems;
    assert!(
        problems
            .iter()
            .any(|problem| problem.starts_with(&position(&path, "Legacy"))
                && problem.contains("inactive")),
        "{problems:?}"
    );

    let rendered = status_text(&daemon);
    assert!(rendered.contains("Mapping reload REFUSED"), "{rendered}");
    assert!(rendered.contains(&position(&path, "Legacy")), "{rendered}");

    // Accounts keep flowing with the previous mapping.
    let second = world.seed(3, "Customer", 12);
    eventually(
        "Accounts created after the refusal get portals and the old status",
        E2E_DEADLINE,
        || {
            second
                .iter()
                .all(|id| world.field(id, "KYC_Status__c") == json!("Portal sent"))
        },
    )
    .await;

    // A valid edit goes in force (SIGHUP's path, called directly).
    edit_business(
        &world,
        &[(
            "company_name: \"{{ Name }}\"",
            "company_name: \"{{ Name | upper }}\"",
        )],
    );
    let outcome = daemon.reload_mappings().await;
    assert_eq!(
        outcome,
        ReloadOutcome::Applied {
            mappings: 2,
            checked_online: true
        }
    );
    assert!(health.reload_status().problems.is_empty());
    let third = world.seed(1, "Customer", 13).remove(0);
    let name = world.field(&third, "Name").as_str().unwrap().to_uppercase();
    eventually(
        "the reloaded mapping sends upper-case names",
        E2E_DEADLINE,
        || {
            world.ondorse.portals().iter().any(|portal| {
                portal["default_custom_fields"]["salesforce_account_id"] == json!(third)
                    && portal["default_custom_fields"]["company_name"] == json!(name)
            })
        },
    )
    .await;
    daemon.stop().await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_removed_from_the_org_pauses_only_the_mapping_that_reads_it() {
    let (world, daemon) = running_world().await;
    seed_with_portals(
        &world,
        2,
        "Other",
        21,
        "people get portals before the drift",
    )
    .await;

    // Only person-onboarding reads the date of birth.
    world.salesforce.remove_field("Date_Of_Birth__c");
    let health = daemon.engine.mapping_health();
    let reason = only_person_pauses_over(&daemon, "Date_Of_Birth__c").await;
    let rendered = status_text(&daemon);
    assert!(
        rendered.contains(&format!("last error    {reason}")),
        "{rendered}"
    );
    let cursor = daemon
        .engine
        .store()
        .cursor(PERSON)
        .expect("read the cursor");

    let people = seed_without(&world, 2, "Other", 22, "Date_Of_Birth__c");
    let customers = seed_without(&world, 2, "Customer", 23, "Date_Of_Birth__c");
    eventually("customers keep flowing", E2E_DEADLINE, || {
        let portals = world.portals_by_account();
        customers.iter().all(|id| portals.contains_key(id))
    })
    .await;
    let portals = world.portals_by_account();
    assert!(
        people.iter().all(|id| !portals.contains_key(id)),
        "a paused mapping creates no portal"
    );
    assert_eq!(
        daemon.engine.store().cursor(PERSON).unwrap(),
        cursor,
        "the paused cursor stays"
    );

    // The admin drops the field from the mapping: the reload resumes it.
    let path = world.config.mappings.dir.join(format!("{PERSON}.yaml"));
    let content = std::fs::read_to_string(&path).unwrap();
    let fixed: String = content
        .lines()
        .filter(|line| !line.contains("Date_Of_Birth__c"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&path, fixed).unwrap();
    assert!(matches!(
        daemon.reload_mappings().await,
        ReloadOutcome::Applied { .. }
    ));
    eventually("the people waiting get their portals", E2E_DEADLINE, || {
        let portals = world.portals_by_account();
        people.iter().all(|id| portals.contains_key(id))
    })
    .await;
    assert!(health.paused().is_empty(), "{:?}", health.paused());
    daemon.stop().await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_refused_reload_leaves_the_daemon_running() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let log_path = world.config_path.with_file_name("daemon.log");
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_ondorse-bridge"))
        .arg("run")
        .arg("--config")
        .arg(&world.config_path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("create the log"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the daemon");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    eventually("the daemon listens", E2E_DEADLINE, || {
        log().contains("listening for webhooks")
    })
    .await;

    let path = edit_business(&world, &[("{{ Owner.Email }}\"", "{{ Owner.Emial }}\"")]);
    let pid = daemon.id().expect("the daemon runs").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success());
    eventually("the daemon refuses the reload", E2E_DEADLINE, || {
        let log = log();
        log.contains("SIGHUP: reloading the mappings") && log.contains("mapping reload refused")
    })
    .await;
    let log_text = log();
    assert!(
        log_text.contains(&position(&path, "Owner.Emial }}")),
        "{log_text}"
    );
    assert!(log_text.contains("Emial"), "{log_text}");
    assert!(
        daemon.try_wait().expect("poll the daemon").is_none(),
        "a refused reload does not stop the daemon"
    );

    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let status = tokio::time::timeout(E2E_DEADLINE, daemon.wait())
        .await
        .expect("the daemon stops")
        .expect("wait for the daemon");
    assert!(status.success(), "{status}\n{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_for_a_field_that_lost_permission_pauses_only_its_mapping() {
    let (world, daemon) = running_world().await;
    let person = seed_with_portals(&world, 1, "Other", 31, "the person has a portal")
        .await
        .remove(0);

    // Only person-onboarding writes the decision date.
    world
        .salesforce
        .set_field_updateable("KYC_Decision_Date__c", false);
    world.decide(&person, "approved", 1, Some(12.0));

    let health = daemon.engine.mapping_health();
    only_person_pauses_over(&daemon, "KYC_Decision_Date__c").await;
    let customer = world.seed(1, "Customer", 32).remove(0);
    eventually("customers keep flowing", E2E_DEADLINE, || {
        world.field(&customer, "KYC_Status__c") == json!("Portal sent")
    })
    .await;
    assert!(
        health.paused().contains_key(PERSON),
        "still read-only: still paused"
    );
    daemon.stop().await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_uses_the_linked_application_once_the_daemon_releases_the_store() {
    let (world, daemon) = running_world().await;
    let customer = seed_with_portals(&world, 1, "Customer", 41, "the customer has a portal")
        .await
        .remove(0);
    let portal = world.portal_of(&customer);
    let application = world.decide(&customer, "rejected", 3, Some(91.0));
    eventually("the decision is written back", E2E_DEADLINE, || {
        world.field(&customer, "KYC_Status__c") == json!("Rejected")
    })
    .await;

    // The daemon holds the store: the preview says so and uses the sample.
    let stdout = preview(&world, BUSINESS, &customer).await;
    assert!(
        stdout.contains("note: the daemon holds the store"),
        "{stdout}"
    );
    assert!(
        stdout.contains("on_application (with the sample application app_sample):"),
        "{stdout}"
    );

    daemon.stop().await.expect("the daemon stops");
    let before = world.salesforce.stats();
    let stdout = preview(&world, BUSINESS, &customer).await;
    for line in [
        format!("already has portal {portal}"),
        format!("on_application (with application {application} as Ondorse has it now):"),
        // Salesforce already holds the decision: nothing of it would be sent.
        "unchanged (not sent): Ondorse_Application_Id__c, KYC_Status__c, KYC_Risk_Level__c, KYC_Risk_Score__c".to_owned(),
    ] {
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
    let after = world.salesforce.stats();
    assert_eq!(
        after.records_updated, before.records_updated,
        "preview writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_offline_reports_every_broken_file_at_once_without_an_org() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let dir = &world.config.mappings.dir;
    let shipped =
        std::fs::read_to_string(repository_mappings().join(format!("{BUSINESS}.yaml"))).unwrap();
    // A copy under the same name, and a file with an unclosed template.
    let twin = dir.join("twin.yaml");
    std::fs::write(&twin, &shipped).unwrap();
    let broken = dir.join("broken.yaml");
    let broken_text = shipped
        .replacen("name: business-onboarding", "name: broken", 1)
        .replacen(
            "company_name: \"{{ Name }}\"",
            "company_name: \"{{ Name }\"",
            1,
        );
    std::fs::write(&broken, broken_text).unwrap();
    let before = world.salesforce.stats();

    let output = cli(&world.config_path, &["check"]).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: ",
            position(&broken, "}\"\n    registration_number")
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:", twin.display())) && stderr.contains("already used by"),
        "{stderr}"
    );
    let after = world.salesforce.stats();
    assert_eq!(
        after.token_requests + after.api_requests,
        before.token_requests + before.api_requests,
        "offline"
    );
}
