//! Faithful simulators of both APIs, served over real HTTP on loopback.
//!
//! They behave as the real Salesforce REST API and Ondorse API do (formats,
//! errors, pagination, tokens, limits) and carry fault switches, so tests,
//! the demo and benchmarks exercise the real clients against real sockets.
//! Both answer at loopback speed, or with a realistic latency per endpoint
//! ([`latency`]).

pub mod latency;
pub mod ondorse;
pub mod salesforce;
