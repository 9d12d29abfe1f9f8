//! Shared test helpers: sandboxes, configuration files, waiting on conditions.

pub mod config;
pub mod daemon;
