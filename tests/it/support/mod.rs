//! Shared test helpers: sandboxes, configuration files, the daemon, waiting on conditions.

pub mod config;
pub mod daemon;
pub mod files;
pub mod ondorse;
pub mod salesforce;
pub mod salesforce_client;
pub mod world;
