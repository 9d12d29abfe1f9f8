//! The one integration-test binary. Every test talks real HTTP on loopback to
//! the sandboxes and checks what Salesforce and Ondorse end up holding.

mod config;
mod deploy;
mod store;
mod ondorse_client;
mod operations;
mod sandbox_ondorse;
mod sandbox_salesforce;
mod support;
mod sync;
mod webhooks;
