//! The HTTP listeners: public (webhooks) and admin (health, metrics, /admin).
//!
//! The public listener faces the internet (behind a reverse proxy): it only
//! stores what arrives, durably, and wakes the sync engine. Nothing a caller
//! posts is trusted: webhooks are hints that the engine verifies by
//! re-fetching from the API.

pub mod admin;
pub mod public;
