//! The mapping mistakes CRM admins make, one row each, fed to `check`,
//! `check --online`, `run` and `preview` (the real binary, against the
//! sandboxes): every one is named at `file:line:column` with what to write
//! instead, and the commands agree on it.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use ondorse_sandbox::ondorse::OndorseSandboxOptions;
use ondorse_sandbox::salesforce::SalesforceSandboxOptions;

use crate::support::daemon::{STOP_DEADLINE, command, run_command};
use crate::support::position;
use crate::support::world::{E2E_DEADLINE, World, copy_mappings, eventually};

/// How a mistake is caught.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caught {
    /// Offline: `check`, `check --online`, `run` and `preview` all refuse
    /// the file (exit 2) with the message.
    Refused,
    /// A probable typo that may be real: `check`, `check --online` and
    /// `preview` pass and print it as a warning; `run` starts and logs it.
    Warned,
    /// Only the org can tell: `check` passes, `check --online` refuses the
    /// file (exit 2); `run` starts and logs `at_run` once the mapping runs.
    Online { at_run: &'static str },
}

/// One mistake: edits to the shipped `business-onboarding.yaml`, where the
/// message points (the first occurrence of `at` in the edited file) and
/// what it says.
struct Mistake {
    edits: &'static [(&'static str, &'static str)],
    at: &'static str,
    message: &'static str,
    caught: Caught,
}

const MISTAKES: &[Mistake] = &[
    // Every template path is checked offline.
    Mistake {
        edits: &[("{{ portal.url }}", "{{ portal.ulr }}")],
        at: "portal.ulr",
        message: "`portal` has no `ulr`; did you mean `url`? (`portal` holds `id`, `link`, `url`, `created_at`)",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[("{{ collect.url }}", "{{ collect.uri }}")],
        at: "collect.uri",
        message: "`collect` has no `uri`",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[(
            "    KYC_Status__c: Portal sent",
            "    KYC_Sent_Date__c: \"{{ now.date }}\"\n    KYC_Status__c: Portal sent",
        )],
        at: "now.date",
        message: "`now` is the current time as text (such as 2026-11-25T20:49:32.000Z) and has no field `date`; write `{{ now }}`",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[("{{ application.id }}", "{{ aplication.id }}")],
        at: "aplication.id",
        message: "unknown name `aplication`; did you mean `application`?",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[("{{ portal.url }}", "{{ portl.url }}")],
        at: "portl.url",
        message: "unknown name `portl`; did you mean `portal`?",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[(
            "{{ application.risk_score }}",
            "{{ application.risk_scor }}",
        )],
        at: "application.risk_scor",
        message: "warning: `application.risk_scor` is not a documented application field; did you mean `risk_score`?",
        caught: Caught::Warned,
    },
    // YAML mistakes, each with what to write instead.
    Mistake {
        edits: &[("company_name: \"{{ Name }}\"", "company_name: {{ Name }}")],
        at: "{{ Name }}\n",
        message: "a value starting with `{{` must be quoted, or YAML reads it as a map; write `company_name: \"{{ Name }}\"`",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[("KYC_Status__c: Portal sent", "KYC_Status__c: Portal: sent")],
        at: ": sent",
        message: "`: ` inside a value that is not quoted reads as a second key; quote the whole value: `KYC_Status__c: \"Portal: sent\"`",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[(
            "    company_name: \"{{ Name }}\"",
            "     company_name: \"{{ Name }}\"",
        )],
        at: "company_name",
        message: "`company_name` is indented by 5 spaces, deeper than line 21 (4 spaces), which holds a value rather than a block; indent it by 4 spaces like the keys beside it",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[(
            "    company_name: \"{{ Name }}\"",
            "   company_name: \"{{ Name }}\"",
        )],
        at: "company_name",
        message: "`company_name` is indented by 3 spaces, which lines up with no key above it; keys of one block line up exactly: indent it by 4 spaces to keep it in the block above, or by 2 to line it up with `type` (line 18)",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[
            (
                "    Ondorse_Portal_Url__c: \"{{ portal.url }}\"",
                "    - Ondorse_Portal_Url__c: \"{{ portal.url }}\"",
            ),
            (
                "    KYC_Status__c: Portal sent",
                "    - KYC_Status__c: Portal sent",
            ),
        ],
        at: "- Ondorse_Portal_Url__c",
        message: "`on_portal_created` cannot be a list; write its entries as `key: value` lines, without `- ` or `[ ]`",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[(
            "    company_name: \"{{ Name }}\"",
            "  company_name: \"{{ Name }}\"",
        )],
        at: "company_name",
        message: "`company_name` is indented by 2 spaces, less than the keys around it (4); indent it by 4 spaces",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[("company_name: \"{{ Name }}\"", "company_name: \"{{ Name }}")],
        at: "\"{{ Name }}\n",
        message: "the `\"` that starts the value of `company_name` is not closed on its line; end the value with `\"`",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[(
            "company_name: \"{{ Name }}\"",
            "company_name:\"{{ Name }}\"",
        )],
        at: ":\"{{ Name",
        message: "put a space after the `:` of `company_name`: write `company_name: \"{{ Name }}\"`",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[(
            "    KYC_Status__c: Portal sent",
            "    KYC_Status__c:\n    Portal sent",
        )],
        at: "Portal sent",
        message: "`Portal sent` is not a `key: value` line; if it is the value of `KYC_Status__c` above, write it on that line: `KYC_Status__c: Portal sent`",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[(
            "map: { approved: Approved, rejected: Rejected }",
            "map: { approved: Approved, rejected: Rejected",
        )],
        at: "{ approved",
        message: "the `{` that starts the value of `map` is not closed on its line; end the value with `}`",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[("  type: business", "\ttype: business")],
        at: "\ttype",
        message: "tab character in indentation; indent with spaces",
        caught: Caught::Refused,
    },
    // What the earlier tests cover, through the three commands.
    Mistake {
        edits: &[(
            "company_name: \"{{ Name }}\"",
            "company_name: \"{{ Name }\"",
        )],
        at: "}\"\n    registration_number",
        message: "template error: unexpected `}`",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[("  redirect_url:", "  redirect_ur:")],
        at: "redirect_ur:",
        message: "unknown key `redirect_ur`; did you mean `redirect_url`?",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[("type: business", "type: buisness")],
        at: "buisness",
        message: "unknown value `buisness` for `type`, expected one of `business` or `person`; did you mean `business`?",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[("BillingCountryCode | upper", "BillingCountryCode | uper")],
        at: "uper",
        message: "unknown filter `uper`; did you mean `upper`?",
        caught: Caught::Refused,
    },
    Mistake {
        edits: &[("{{ portal.url }}", "{{ application.id }}")],
        at: "application.id }}\"\n    KYC_Status__c: Portal sent",
        message: "`application` is not available in on_portal_created; available there: Account fields, `portal` and `now`",
        caught: Caught::Refused,
    },
    // Only the org knows its fields.
    Mistake {
        edits: &[("BillingCountryCode | upper", "BillingCountryCod | upper")],
        at: "BillingCountryCod ",
        message: "Account has no field `BillingCountryCod` (or the integration user cannot see it); did you mean `BillingCountryCode`?",
        caught: Caught::Online {
            at_run: "is paused, its cursor kept",
        },
    },
    Mistake {
        edits: &[(
            "company_name: \"{{ Name }}\"",
            "company_name: \"{{ name }}\"",
        )],
        at: "name }}",
        message: "Account field `name` is spelled `Name` in the org; templates are case-sensitive, write `Name`",
        caught: Caught::Online {
            at_run: "missing=name",
        },
    },
];

const BUSINESS_FILE: &str = "business-onboarding.yaml";
/// Poll every second, so a mapping runs within seconds of the start.
const FAST_POLL: &str = "[schedule]\npoll = \"* * * * * *\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapping_mistake_is_named_where_it_is_by_check_check_online_and_run() {
    let world = World::start_with(
        SalesforceSandboxOptions::default(),
        OndorseSandboxOptions::default(),
        FAST_POLL,
    )
    .await;
    // An Account for the business mapping, so `run` and `preview` render
    // its templates.
    let account = world.seed(1, "Customer", 11).remove(0);
    for (index, mistake) in MISTAKES.iter().enumerate() {
        check(&world, &account, index, mistake).await;
    }
}

/// Runs `check`, `check --online`, `run` and (offline mistakes) `preview`
/// of `account` on the shipped mappings with `mistake` made, and asserts
/// what each says and how it exits.
async fn check(world: &World, account: &str, index: usize, mistake: &Mistake) {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let file = with_mistake(scratch.path(), mistake);
    let expected = format!("{}: {}", position(&file, mistake.at), mistake.message);
    let row = format!("row {index} ({})", mistake.at);

    let offline = bridge(world, scratch.path(), &["check"]).await;
    let online = bridge(world, scratch.path(), &["check", "--online"]).await;
    let preview = [
        "preview",
        "--mapping",
        "business-onboarding",
        "--account",
        account,
    ];
    match mistake.caught {
        Caught::Refused => {
            refused(&offline, &expected, &format!("{row}: check"));
            refused(&online, &expected, &format!("{row}: check --online"));
            let run = run_until(world, scratch.path(), None).await;
            refused(&run, &expected, &format!("{row}: run"));
            let previewed = bridge(world, scratch.path(), &preview).await;
            refused(&previewed, &expected, &format!("{row}: preview"));
        }
        Caught::Warned => {
            let previewed = bridge(world, scratch.path(), &preview).await;
            let commands = [
                (&offline, "check"),
                (&online, "check --online"),
                (&previewed, "preview"),
            ];
            for (output, command) in commands {
                passed(output, &format!("{row}: {command}"));
                assert!(
                    text(&output.stderr).contains(&expected),
                    "{row}: {command} does not warn {expected:?}:\n{}",
                    text(&output.stderr)
                );
            }
            let run = run_until(world, scratch.path(), Some(&expected)).await;
            assert!(run.status.success(), "{row}: run: {}", text(&run.stderr));
        }
        Caught::Online { at_run } => {
            passed(&offline, &format!("{row}: check"));
            refused(&online, &expected, &format!("{row}: check --online"));
            // A new Account the mapping selects (an earlier row's daemon
            // may have written the first one out of `select`).
            world.seed(1, "Customer", 100 + index as u64);
            let log = run_until(world, scratch.path(), Some(at_run)).await;
            let log = text(&log.stderr);
            let place = position(&file, mistake.at);
            assert!(
                log.contains(&place),
                "{row}: run does not name {place}:\n{log}"
            );
        }
    }
}

/// The shipped mappings in `dir/mappings`, with `mistake` made in the
/// business one; returns that file.
fn with_mistake(dir: &Path, mistake: &Mistake) -> PathBuf {
    let mappings = dir.join("mappings");
    copy_mappings(&mappings);
    let file = mappings.join(BUSINESS_FILE);
    let mut content = std::fs::read_to_string(&file).expect("read the shipped mapping");
    for (from, to) in mistake.edits {
        assert!(content.contains(from), "{from:?} is not in {BUSINESS_FILE}");
        content = content.replacen(from, to, 1);
    }
    std::fs::write(&file, content).expect("write the mapping");
    file
}

/// The world's configuration with the mappings and the store of `dir`.
fn overrides(dir: &Path) -> [(String, PathBuf); 2] {
    [
        (
            "ONDORSE_BRIDGE__MAPPINGS__DIR".to_owned(),
            dir.join("mappings"),
        ),
        ("ONDORSE_BRIDGE__STORE__PATH".to_owned(), dir.join("store")),
    ]
}

/// `ondorse-bridge ARGS` with the world's configuration and `dir`'s mappings.
async fn bridge(world: &World, dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::from(command(&world.config_path, args))
        .envs(overrides(dir))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run ondorse-bridge")
}

/// `ondorse-bridge run` with `dir`'s mappings and store: until it exits
/// (`until` = None), or until its log shows `until`, then SIGTERM.
async fn run_until(world: &World, dir: &Path, until: Option<&str>) -> Output {
    let log_path = dir.join("daemon.log");
    let log_file = std::fs::File::create(&log_path).expect("create the daemon log");
    let mut child = run_command(&world.config_path)
        .envs(overrides(dir))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn ondorse-bridge run");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut status = None;
    let what = until.unwrap_or("the daemon exits");
    eventually(what, E2E_DEADLINE, || {
        status = child.try_wait().expect("poll the daemon");
        status.is_some() || until.is_some_and(|needle| log().contains(needle))
    })
    .await;
    if status.is_none() {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        eventually("the daemon exits after SIGTERM", STOP_DEADLINE, || {
            status = child.try_wait().expect("poll the daemon");
            status.is_some()
        })
        .await;
    }
    Output {
        status: status.expect("the daemon exited"),
        stdout: Vec::new(),
        stderr: log().into_bytes(),
    }
}

fn refused(output: &Output, expected: &str, what: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{what}: {stderr}");
    assert!(
        stderr.contains(expected),
        "{what}: missing {expected:?} in:\n{stderr}"
    );
}

fn passed(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
