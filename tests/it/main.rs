//! The one integration-test binary. Every test talks real HTTP on loopback to
//! the sandboxes and checks what Salesforce and Ondorse end up holding.

mod accounts_gone;
mod admin_tools;
mod bucketed_indexes;
mod budget;
mod config;
mod demo;
mod deploy;
mod edges;
mod engine_faults;
mod inbox;
mod journal;
mod large_store;
mod mappings;
mod mistakes_config;
mod mistakes_mapping;
mod ondorse_client;
mod operations;
mod pipeline;
mod retention;
mod salesforce_client;
mod sandbox_latency;
mod sandbox_ondorse;
mod sandbox_salesforce;
mod shutdown;
mod store;
mod support;
mod sync;
mod telemetry;
mod webhooks;
mod writer;
