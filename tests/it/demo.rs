//! `ondorse-bridge demo` as a new user and a CRM admin run it: `--serve`
//! keeps everything running for the other commands and reloads the admin's
//! own mapping files; `--accounts 0` finishes; a closed stdout ends it (and
//! every other command) quietly.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tokio::sync::mpsc;

use ondorse_bridge::cli::demo::SERVING_LINE;
use ondorse_sandbox::ondorse::OndorseSandboxOptions;

use crate::support::daemon::{STOP_DEADLINE, cli, command};
use crate::support::position;
use crate::support::world::{E2E_DEADLINE, World, copy_mappings, eventually, eventually_some};

/// `ondorse-bridge demo ARGS`, outside any configuration of the caller's.
fn demo(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ondorse-bridge"));
    command
        .arg("demo")
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    command
}

/// Runs a demo `command` to its end; answers its output.
async fn finished_demo(command: Command) -> std::process::Output {
    tokio::process::Command::from(command)
        .output()
        .await
        .expect("run ondorse-bridge demo")
}

/// Runs `ondorse-bridge demo ARGS` to its end; it must succeed. Answers its stdout.
async fn successful_demo(args: &[&str]) -> String {
    let output = finished_demo(demo(args)).await;
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    stdout
}

/// A child process killed when dropped (a failed assertion included).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads `child`'s stdout lines on a thread; the receiver gets each line.
fn lines_of(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let stdout = child.stdout.take().expect("a piped stdout");
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// The value printed after `label` on one of `lines`.
fn labelled<'a>(lines: &'a [String], label: &str) -> &'a str {
    lines
        .iter()
        .find_map(|line| line.trim_start().strip_prefix(label))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{}", lines.join("\n")))
}

/// What `ondorse-bridge status --config CONFIG` prints now.
async fn status_now(config: &Path) -> String {
    let output = tokio::process::Command::from(command(config, &["status"]))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run status");
    text(&output.stdout)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_answers_the_state_commands_and_reloads_the_admins_mappings() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let mappings = scratch.path().join("my-mappings");
    copy_mappings(&mappings);
    let mut child = demo(&["--serve", "--accounts", "5", "--mappings"])
        .arg(&mappings)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ondorse-bridge demo --serve");
    let mut receiver = lines_of(&mut child);
    let child = Running(child);
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + E2E_DEADLINE * 3;
    // The list of commands to try ends with where to edit the mappings.
    let served = |lines: &[String]| {
        lines
            .iter()
            .skip_while(|line| !line.starts_with(SERVING_LINE))
            .any(|line| line.starts_with("Edit a file in"))
    };
    while !served(&lines) {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(line)) => lines.push(line),
            Ok(None) => panic!("demo --serve closed its output:\n{}", lines.join("\n")),
            Err(_) => panic!(
                "demo --serve did not list the commands to try in {:?}:\n{}",
                E2E_DEADLINE * 3,
                lines.join("\n")
            ),
        }
    }
    let printed = lines.join("\n");
    let config = PathBuf::from(labelled(&lines, "configuration"));
    assert!(
        labelled(&lines, "admin URL").starts_with("http://127.0.0.1:"),
        "{printed}"
    );
    assert_eq!(
        labelled(&lines, "admin token"),
        ondorse_bridge::demo::ADMIN_TOKEN
    );
    assert!(
        labelled(&lines, "webhook URL").contains("/webhooks/ondorse/"),
        "{printed}"
    );
    assert_eq!(
        Path::new(labelled(&lines, "mapping files")),
        mappings.canonicalize().unwrap()
    );
    let account = labelled(&lines, "ondorse-bridge explain --account").to_owned();

    let status = cli(&config, &["status"]).await;
    let status_text = text(&status.stdout);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(status_text.contains("business-onboarding"), "{status_text}");

    let explain = cli(&config, &["explain", "--account", &account]).await;
    assert!(explain.status.success(), "{}", text(&explain.stderr));
    assert!(
        text(&explain.stdout).contains("portal"),
        "{}",
        text(&explain.stdout)
    );

    // The admin breaks their mapping: the running daemon refuses the
    // reload, and `status` says where the problem is.
    let file = mappings.join("business-onboarding.yaml");
    let shipped = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, shipped.replacen("writeback:", "writebak:", 1)).unwrap();
    let place = position(&file, "writebak:");
    let shown = eventually_some("status shows the refused reload", E2E_DEADLINE, || async {
        let shown = status_now(&config).await;
        (shown.contains("Mapping reload REFUSED") && shown.contains(&place)).then_some(shown)
    })
    .await;
    assert!(
        shown.contains("unknown key `writebak`; did you mean `writeback`?"),
        "{shown}"
    );
    // Fixed, it is reloaded and the refusal is gone.
    std::fs::write(&file, &shipped).unwrap();
    eventually_some(
        "status shows the fixed mapping in force",
        E2E_DEADLINE,
        || async {
            let shown = status_now(&config).await;
            (shown.contains("business-onboarding") && !shown.contains("REFUSED")).then_some(())
        },
    )
    .await;

    let mut child = child;
    let sent = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let mut exit = None;
    eventually("demo --serve exits after SIGTERM", STOP_DEADLINE, || {
        exit = child.0.try_wait().expect("poll the demo");
        exit.is_some()
    })
    .await;
    assert!(exit.unwrap().success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_no_accounts_finishes_and_says_so() {
    let stdout = successful_demo(&["--accounts", "0"]).await;
    assert!(
        stdout.contains("Accounts in Salesforce          0"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_every_command_quietly() {
    let world = World::start(OndorseSandboxOptions::default()).await;
    let config = world.config_path.display().to_string();
    let commands: [&[&str]; 3] = [
        &["demo", "--accounts", "0"],
        &["mappings", "schema"],
        &["check", "--config", &config],
    ];
    for args in commands {
        // `ondorse-bridge ... | head -n 0`: nobody reads, from the start.
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ondorse-bridge"))
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(writer)
            .output()
            .await
            .expect("run ondorse-bridge");
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_refuses_a_missing_or_broken_mappings_directory_with_the_place() {
    let output = finished_demo(demo(&[
        "--accounts",
        "0",
        "--mappings",
        "/nonexistent/mappings",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("--mappings /nonexistent/mappings: no such directory"),
        "{}",
        text(&output.stderr)
    );

    let scratch = tempfile::tempdir().expect("a scratch directory");
    copy_mappings(scratch.path());
    let file = scratch.path().join("business-onboarding.yaml");
    let shipped = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        shipped.replacen("{{ portal.url }}", "{{ portal.ulr }}", 1),
    )
    .unwrap();
    let mut command = demo(&["--accounts", "0", "--mappings"]);
    command.arg(scratch.path());
    let output = finished_demo(command).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let place = position(&file.canonicalize().unwrap(), "portal.ulr");
    assert!(
        stderr.contains(&format!(
            "{place}: `portal` has no `ulr`; did you mean `url`?"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_with_realistic_latency_and_refuses_an_unknown_profile() {
    let stdout = successful_demo(&["--accounts", "6", "--latency", "realistic"]).await;
    assert!(stdout.contains("(realistic latency)"), "{stdout}");
    assert!(
        stdout
            .contains("Ondorse POST /api/portals           median 300 ms, sigma 0.5, mean 340 ms"),
        "{stdout}"
    );
    // Every portal created under the profile got its decision back.
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    let portals = labelled(&lines, "portals created in Ondorse");
    assert_ne!(portals, "0", "{stdout}");
    assert_eq!(
        labelled(&lines, "decisions in Salesforce"),
        portals,
        "{stdout}"
    );

    let output = finished_demo(demo(&["--accounts", "0", "--latency", "bogus"])).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown latency profile \"bogus\"; expected loopback or realistic"),
        "{stderr}"
    );
}
