//! The real daemon as a child process.
//!
//! A child daemon listens on `127.0.0.1:0` as configured and says in its
//! log which ports it got; the tests read them there. No port is looked up
//! free and bound again later, which another test could take in between.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use ondorse_bridge::config::{CREDENTIALS_DIRECTORY_ENV, ENV_PREFIX, ENV_SEPARATOR};

use crate::support::config::{ConfigSettings, write_config};
use crate::support::world::eventually;

/// Long enough for a cold daemon start on a loaded 2-core CI machine.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a stopping daemon may take (its own grace period is 10 s).
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// What the daemon logs once it listens for webhooks, then for the admin
/// API, each with an `address` field.
const WEBHOOKS_LISTENING: &str = "listening for webhooks";
const ADMIN_LISTENING: &str = "admin API listening";

/// The `address` field of the first line of `log` that says `message`, in
/// the human format (`address=…`) or JSON (`"address":"…"`).
pub fn logged_address(log: &str, message: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|line| line.contains(message))?;
    let (_, rest) = line
        .split_once("address=")
        .or_else(|| line.split_once("\"address\":\""))?;
    let end = rest
        .find(|character: char| character.is_whitespace() || character == '"')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A loopback address where connections are refused, for as long as the
/// socket returned lives: it is bound but not listening, so no other test
/// can take the port and start answering on it.
pub fn refusing_address() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a loopback port");
    let address = socket.local_addr().expect("the socket's address");
    (socket, address)
}

/// A daemon configuration in `dir`, listening on ports of its choosing,
/// with its store in `dir/store`.
pub fn write_daemon_config(dir: &Path) -> PathBuf {
    let settings = ConfigSettings::in_dir(dir);
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
    operator_command(config, args)
        .output()
        .await
        .expect("run ondorse-bridge")
}

fn operator_command(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ondorse-bridge"));
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove(CREDENTIALS_DIRECTORY_ENV);
    command
}

/// `ondorse-bridge run` as a child process; killed when dropped.
pub struct Daemon {
    child: Child,
    log: PathBuf,
    webhook_address: SocketAddr,
    admin_address: SocketAddr,
}

impl Daemon {
    /// Starts the daemon and returns once it says where it listens (its
    /// webhook port then accepts connections).
    pub async fn start(config: &Path) -> Daemon {
        let log = tempfile::Builder::new()
            .prefix("daemon-")
            .suffix(".log")
            .tempfile_in(
                config
                    .parent()
                    .expect("the configuration is in a directory"),
            )
            .expect("create the daemon log")
            .into_temp_path()
            .keep()
            .expect("keep the daemon log");
        let log_file = std::fs::File::create(&log).expect("open the daemon log");
        let mut child = run_command(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn ondorse-bridge");
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        let mut exited = None;
        eventually("the daemon says where it listens", START_DEADLINE, || {
            exited = child.try_wait().expect("poll the daemon");
            let said = read();
            exited.is_some()
                || (logged_address(&said, WEBHOOKS_LISTENING).is_some()
                    && logged_address(&said, ADMIN_LISTENING).is_some())
        })
        .await;
        let said = read();
        if let Some(status) = exited {
            panic!("the daemon exited with {status} before listening:\n{said}");
        }
        Daemon {
            child,
            webhook_address: logged_address(&said, WEBHOOKS_LISTENING).expect("logged"),
            admin_address: logged_address(&said, ADMIN_LISTENING).expect("logged"),
            log,
        }
    }

    /// Where it listens for webhooks.
    pub fn webhook_address(&self) -> SocketAddr {
        self.webhook_address
    }

    /// Where its admin API listens.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
    }

    /// [`cli`] while this daemon runs: told where its admin API listens
    /// (the configuration says port 0), as the environment can override
    /// `[admin] listen`.
    pub async fn cli(&self, config: &Path, args: &[&str]) -> std::process::Output {
        operator_command(config, args)
            .env(
                format!("{ENV_PREFIX}{ENV_SEPARATOR}ADMIN{ENV_SEPARATOR}LISTEN"),
                self.admin_address.to_string(),
            )
            .output()
            .await
            .expect("run ondorse-bridge")
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
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        let mut exit = None;
        eventually("the daemon exits after SIGTERM", STOP_DEADLINE, || {
            exit = self.child.try_wait().expect("poll the daemon");
            exit.is_some()
        })
        .await;
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
