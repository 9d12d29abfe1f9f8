//! The one integration-test binary. Every test talks real HTTP on loopback to
//! the sandboxes and checks what Salesforce and Ondorse end up holding.

mod salesforce_client;
mod sandbox_salesforce;
mod support;
