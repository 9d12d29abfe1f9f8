//! The Salesforce REST client: OAuth flows, SOQL queries streamed page by
//! page, describe, and sObject Collections updates.

pub mod model;
