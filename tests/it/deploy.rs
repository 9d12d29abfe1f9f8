//! The shipped systemd unit: `systemd-analyze verify` accepts it, and it
//! names a credential for every secret file of the example configuration.

use std::path::Path;
use std::process::Command;

/// Where the unit expects the binary; the verified copy points at the one
/// this test run built, since verify checks that `ExecStart=` exists.
const INSTALLED_BINARY: &str = "/usr/local/bin/ondorse-bridge";

fn repository(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_unit_file_verifies() {
    let unit = std::fs::read_to_string(repository("deploy/ondorse-bridge.service")).expect("read the unit");
    assert!(unit.contains(&format!("ExecStart={INSTALLED_BINARY} ")), "the unit runs {INSTALLED_BINARY}");
    let available = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|output| output.status.success());
    if !available {
        eprintln!("skipped: systemd-analyze is not installed (`.ci/run` installs it)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("ondorse-bridge.service");
    std::fs::write(&copy, unit.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_ondorse-bridge"))).expect("write the copy");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let messages = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify refused the unit:\n{messages}");
    // verify reports some problems (unknown keys, bad values) as warnings only.
    let ours: Vec<&str> = messages.lines().filter(|line| line.contains("ondorse-bridge.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify complained:\n{messages}");
}

#[test]
fn every_secret_of_the_example_configuration_has_a_credential() {
    let unit = std::fs::read_to_string(repository("deploy/ondorse-bridge.service")).expect("read the unit");
    let example = std::fs::read_to_string(repository("config/example.toml")).expect("read the example");
    let mut secrets = 0;
    for line in example.lines().filter(|line| !line.trim_start().starts_with('#')) {
        let Some((key, value)) = line.split_once('=') else { continue };
        let name = value.trim().trim_matches('"');
        if !key.trim().ends_with("_file") || name.is_empty() {
            continue;
        }
        secrets += 1;
        assert!(
            unit.contains(&format!("\nLoadCredential={name}:")),
            "{} names the secret file {name}, which the unit does not load",
            key.trim()
        );
    }
    assert_eq!(secrets, 6, "the example names six secret files");
    for required in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=ondorse-bridge",
        "ConfigurationDirectory=ondorse-bridge",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(required), "the unit lacks {required:?}");
    }
}
