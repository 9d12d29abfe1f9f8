//! Shared test helpers: sandboxes, temp stores, waiting on conditions.

pub mod salesforce;
pub mod salesforce_client;
