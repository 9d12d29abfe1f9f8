//! # ondorse-bridge
//!
//! Connects Salesforce Accounts to Ondorse KYC/KYB portals and brings the
//! compliance decisions back. Read `ARCHITECTURE.md` first; this is the tour
//! of the modules, in the order data flows through them.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration and the secrets it names.
//! - [`mapping`]: YAML mapping files (what CRM admins edit): parsing with
//!   positions, templates, validation, and the pure planner.
//! - [`salesforce`]: OAuth, SOQL queries, describe, composite updates.
//! - [`ondorse`]: portals, applications, webhook envelopes and signatures.
//! - [`store`]: the sled ledger; the only module that touches sled.
//! - [`sync`]: intake, portal creation, write-back, decisions, reconcile.
//! - [`server`]: the public webhook listener and the admin listener.
//! - `demo` (the default-on `demo` feature): the sandboxes of the
//!   `ondorse-sandbox` crate (`crates/sandbox`) wired to the daemon, for the
//!   `demo` command, tests and benchmarks.
//! - [`daemon`]: the composition `run` starts (store, listeners, engine).
//! - [`shutdown`]: the one stop signal every task watches, with its cut-off.
//! - [`memory`]: how the C allocator keeps freed memory (arenas, trimming).
//! - [`systemd`]: readiness, watchdog and stopping notifications.
//! - [`cli`]: one module per command; `main.rs` only dispatches.
//! - [`telemetry`]: logs and metrics.
//! - [`text`]: what messages about an operator's text share (`line:column`
//!   in characters, did-you-mean suggestions), for configuration and mappings.

pub mod cli;
pub mod config;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod mapping;
pub mod memory;
pub mod ondorse;
pub mod salesforce;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod telemetry;
pub mod text;
