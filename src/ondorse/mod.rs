//! The Ondorse API client, its tolerant models, and webhook envelopes.
//!
//! - [`client`]: `POST /api/portals` (with `Idempotency-Key`) and
//!   `GET /api/applications/{id}`.
//! - [`model`]: portals and applications, read tolerantly.
//! - [`error`]: [`OndorseError`], which knows whether a retry can help.
//! - [`webhook`]: webhook envelopes and `Ondorse-Signature`.

pub mod client;
pub mod error;
pub mod model;
pub mod webhook;

pub use client::OndorseClient;
pub use error::OndorseError;
pub use model::{Application, Decision, Portal, RiskLevel};
