//! The Salesforce REST client: OAuth flows, SOQL queries streamed page by
//! page, describe, and sObject Collections updates.
//!
//! - `auth`: the three OAuth flows and single-flight token renewal.
//! - [`client`]: [`SalesforceClient`] and [`QueryPages`].
//! - [`id`]: [`Id`], the one reader of record Ids (shape, checksum, key prefix).
//! - [`soql`]: literals (quoting, datetimes).
//! - [`error`]: [`SalesforceError`] per call, [`RecordError`] per record.
//! - [`model`]: what goes over the wire: records, describe, usage.

mod auth;
pub mod client;
pub mod error;
pub mod id;
pub mod model;
pub mod soql;

/// How many requests of 20 s or more a production org runs at once; the
/// engine falls back to this many calls in flight once the org refuses one
/// for having too many ([`SalesforceError::TooManyLongRequests`]).
pub const ORG_LONG_REQUESTS: usize = 25;

pub use auth::{KeptRefreshToken, LoginRefusal, RefreshTokenKeeper, rsa_private_key};
pub use client::{ClientSettings, Endpoint, QueryPages, SalesforceClient};
pub use error::{Disposition, RecordError, SalesforceError};
pub use id::{Id, IdError};
pub use model::{ApiUsage, Record, RecordOutcome, RecordUpdate, SObjectDescribe};
