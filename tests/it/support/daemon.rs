//! The real daemon as a child process, and waiting on conditions.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ondorse_bridge::config::{CREDENTIALS_DIRECTORY_ENV, ENV_PREFIX};

use crate::support::config::{ConfigSettings, write_config};

/// Long enough for a cold daemon start on a loaded 2-core CI machine.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a stopping daemon may take (its own grace period is 10 s).
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Between two looks at a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` until it holds, or panics with `what` after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
}

/// A daemon configuration in `dir`, listening for webhooks on `address`,
/// with its store in `dir/store`.
pub fn write_daemon_config(dir: &Path, address: SocketAddr) -> PathBuf {
    let mut settings = ConfigSettings::in_dir(dir);
    settings.webhooks_listen = address.to_string();
    // The daemon refuses to start without valid mappings: give it the shipped ones.
    crate::support::world::copy_mappings(&settings.mappings_dir);
    // A real key: the daemon checks it at start (Salesforce itself is not
    // reachable in these tests, which only exercise the webhook listener).
    let keys = ondorse_sandbox::salesforce::generate_jwt_key_pair();
    write_config(dir, &settings, &keys.private_key_pem).path
}

/// `ondorse-bridge run --config <config>`, with an environment of its own.
pub fn run_command(config: &Path) -> Command {
    command(config, &["run"])
}

/// `ondorse-bridge ARGS --config <config>`, with an environment of its own.
pub fn command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ondorse-bridge"));
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    // Configuration overrides set by a concurrent test in this process
    // (see tests/it/config.rs) must not reach the daemon.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with(ENV_PREFIX) {
            command.env_remove(name);
        }
    }
    command.env_remove(CREDENTIALS_DIRECTORY_ENV);
    command
}

/// `ondorse-bridge ARGS --config <config>`, as an operator runs it; its
/// output once it exits.
pub async fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ondorse-bridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove(CREDENTIALS_DIRECTORY_ENV)
        .output()
        .await
        .expect("run ondorse-bridge")
}

/// `ondorse-bridge run` as a child process; killed when dropped.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon and returns once its webhook port accepts connections.
    pub fn start(config: &Path, address: SocketAddr) -> Daemon {
        let log = config.with_file_name(format!("daemon-{}.log", address.port()));
        let log_file = std::fs::File::create(&log).expect("create the daemon log");
        let child = run_command(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn ondorse-bridge");
        let mut daemon = Daemon { child, log };
        let start = Instant::now();
        while TcpStream::connect_timeout(&address, POLL_INTERVAL).is_err() {
            if let Some(status) = daemon.child.try_wait().expect("poll the daemon") {
                panic!(
                    "the daemon exited with {status} before listening:\n{}",
                    daemon.log()
                );
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "the daemon did not listen on {address} within {START_DEADLINE:?}:\n{}",
                daemon.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
        daemon
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush or clean up, like a power cut for the process.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the daemon");
        self.child.wait().expect("reap the daemon");
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        let mut exit = None;
        wait_until("the daemon exits after SIGTERM", STOP_DEADLINE, || {
            exit = self.child.try_wait().expect("poll the daemon");
            exit.is_some()
        });
        (exit.expect("the daemon exited"), self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
