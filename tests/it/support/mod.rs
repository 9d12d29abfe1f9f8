//! Shared test helpers: sandboxes, configuration files, waiting on conditions.

pub mod config;
pub mod daemon;
//! Shared test helpers: sandboxes, temp stores, waiting on conditions.
pub mod ondorse;
