//! The Ondorse API client, its tolerant models, and webhook envelopes.
pub mod webhook;
