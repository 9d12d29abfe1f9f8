//! Latency profiles: how long each sandbox endpoint takes to answer.
//!
//! On loopback the sandboxes answer in microseconds, which hides what a real
//! deployment pays. `--latency realistic` (both sandboxes' `latency` option,
//! `demo --latency`, the `sync_pipeline` benchmark) gives each endpoint a
//! log-normal latency, drawn afresh for every request:
//!
//! | endpoint | median | sigma | mean |
//! | --- | --- | --- | --- |
//! | Ondorse `POST /api/portals` | 300 ms | 0.5 | 340 ms |
//! | Ondorse `GET /api/applications/{id}` | 150 ms | 0.4 | 162 ms |
//! | Salesforce token (either host) | 300 ms | 0.3 | 314 ms |
//! | Salesforce query page (`query`, `queryAll`, next page) | 400 ms | 0.3 | 418 ms |
//! | Salesforce single-record update | 250 ms | 0.4 | 271 ms |
//! | Salesforce composite update | 250 ms + 3 ms per record | 0.5 | 963 ms for 200 records |
//!
//! Describe and `GET /limits` keep loopback speed: a run calls them once or
//! twice, and no figure depends on them. The profile's latency is waited
//! before the request is carried out, so a write is visible in the org
//! when its answer leaves. The fixed latency of the `set_latency` fault
//! switches comes on top.
//!
//! A log-normal with median `m` and sigma `s` has mean `m · exp(s² / 2)`,
//! above its median: bounds computed from a profile (how many requests per
//! second a given concurrency allows) use [`EndpointLatency::mean`].

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How fast the sandboxes answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LatencyProfile {
    /// As fast as the machine allows (tests, the loopback benchmark).
    #[default]
    Loopback,
    /// Each endpoint's log-normal latency from the table in the module docs.
    Realistic,
}

/// The endpoints a latency profile knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    OndorsePortalPost,
    OndorseApplicationGet,
    SalesforceToken,
    SalesforceQueryPage,
    SalesforceSingleUpdate,
    SalesforceCompositeUpdate,
}

impl Endpoint {
    /// Every endpoint, in the order of the module docs' table.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::OndorsePortalPost,
        Endpoint::OndorseApplicationGet,
        Endpoint::SalesforceToken,
        Endpoint::SalesforceQueryPage,
        Endpoint::SalesforceSingleUpdate,
        Endpoint::SalesforceCompositeUpdate,
    ];

    /// The endpoint as a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::OndorsePortalPost => "Ondorse POST /api/portals",
            Endpoint::OndorseApplicationGet => "Ondorse GET /api/applications/{id}",
            Endpoint::SalesforceToken => "Salesforce token",
            Endpoint::SalesforceQueryPage => "Salesforce query page",
            Endpoint::SalesforceSingleUpdate => "Salesforce single-record update",
            Endpoint::SalesforceCompositeUpdate => "Salesforce composite update",
        }
    }
}

/// One endpoint's latency: log-normal around a median that may grow with
/// the records a request carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointLatency {
    /// The median of a request carrying no record.
    pub median: Duration,
    /// Added to the median for each record the request carries.
    pub per_record: Duration,
    /// The standard deviation of the latency's logarithm.
    pub sigma: f64,
}

impl EndpointLatency {
    const fn new(median_ms: u64, per_record_ms: u64, sigma: f64) -> EndpointLatency {
        EndpointLatency {
            median: Duration::from_millis(median_ms),
            per_record: Duration::from_millis(per_record_ms),
            sigma,
        }
    }

    /// The median latency of a request carrying `records` records.
    pub fn median(&self, records: usize) -> Duration {
        self.median + self.per_record * u32::try_from(records).unwrap_or(u32::MAX)
    }

    /// The mean latency of a request carrying `records` records: what
    /// throughput bounds are computed from.
    pub fn mean(&self, records: usize) -> Duration {
        self.median(records)
            .mul_f64((self.sigma * self.sigma / 2.0).exp())
    }

    /// One draw: `median · exp(sigma · z)` with `z` standard normal.
    pub fn sample(&self, records: usize, rng: &mut impl Rng) -> Duration {
        self.median(records)
            .mul_f64((self.sigma * standard_normal(rng)).exp())
    }
}

/// Records in a full sObject Collections call: what a composite update's
/// mean is shown for.
const FULL_COLLECTION: usize = 200;

/// `median 300 ms, sigma 0.5, mean 340 ms`; a latency growing with the
/// records also gives its mean for a full sObject Collections call.
impl fmt::Display for EndpointLatency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let milliseconds = |duration: Duration| duration.as_secs_f64() * 1000.0;
        write!(formatter, "median {:.0} ms", milliseconds(self.median))?;
        if self.per_record.is_zero() {
            write!(
                formatter,
                ", sigma {}, mean {:.0} ms",
                self.sigma,
                milliseconds(self.mean(0))
            )
        } else {
            write!(
                formatter,
                " + {:.0} ms per record, sigma {}, mean {:.0} ms for {FULL_COLLECTION} records",
                milliseconds(self.per_record),
                self.sigma,
                milliseconds(self.mean(FULL_COLLECTION))
            )
        }
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    // `random` is in [0, 1); the logarithm needs (0, 1].
    let radius = 1.0 - rng.random::<f64>();
    let angle = rng.random::<f64>();
    (-2.0 * radius.ln()).sqrt() * (std::f64::consts::TAU * angle).cos()
}

impl LatencyProfile {
    /// The names `--latency` accepts.
    pub const NAMES: &'static str = "loopback or realistic";

    /// The endpoint's latency under this profile; `None` answers at once.
    pub fn endpoint(self, endpoint: Endpoint) -> Option<EndpointLatency> {
        match self {
            LatencyProfile::Loopback => None,
            LatencyProfile::Realistic => Some(match endpoint {
                Endpoint::OndorsePortalPost => EndpointLatency::new(300, 0, 0.5),
                Endpoint::OndorseApplicationGet => EndpointLatency::new(150, 0, 0.4),
                Endpoint::SalesforceToken => EndpointLatency::new(300, 0, 0.3),
                Endpoint::SalesforceQueryPage => EndpointLatency::new(400, 0, 0.3),
                Endpoint::SalesforceSingleUpdate => EndpointLatency::new(250, 0, 0.4),
                Endpoint::SalesforceCompositeUpdate => EndpointLatency::new(250, 3, 0.5),
            }),
        }
    }

    /// The mean latency of a request to `endpoint` carrying `records`
    /// records (zero on loopback).
    pub fn mean(self, endpoint: Endpoint, records: usize) -> Duration {
        self.endpoint(endpoint)
            .map_or(Duration::ZERO, |latency| latency.mean(records))
    }
}

impl fmt::Display for LatencyProfile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            LatencyProfile::Loopback => "loopback",
            LatencyProfile::Realistic => "realistic",
        })
    }
}

/// A `--latency` value that names no profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown latency profile {0:?}; expected {names}", names = LatencyProfile::NAMES)]
pub struct UnknownLatencyProfile(String);

impl FromStr for LatencyProfile {
    type Err = UnknownLatencyProfile;

    fn from_str(name: &str) -> Result<LatencyProfile, UnknownLatencyProfile> {
        match name {
            "loopback" => Ok(LatencyProfile::Loopback),
            "realistic" => Ok(LatencyProfile::Realistic),
            other => Err(UnknownLatencyProfile(other.to_owned())),
        }
    }
}

/// A sandbox's profile and its random draws (seeded: runs repeat).
pub(crate) struct Latency {
    profile: LatencyProfile,
    rng: Mutex<StdRng>,
}

impl Latency {
    pub(crate) fn new(profile: LatencyProfile, seed: u64) -> Latency {
        Latency {
            profile,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Waits one draw of the endpoint's latency for a request carrying
    /// `records` records; returns at once on loopback.
    pub(crate) async fn wait(&self, endpoint: Endpoint, records: usize) {
        let Some(latency) = self.profile.endpoint(endpoint) else {
            return;
        };
        let delay = {
            let mut rng = self.rng.lock().unwrap_or_else(|error| error.into_inner());
            latency.sample(records, &mut *rng)
        };
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milliseconds(duration: Duration) -> f64 {
        duration.as_secs_f64() * 1000.0
    }

    #[test]
    fn profiles_are_named_loopback_and_realistic() {
        assert_eq!("realistic".parse(), Ok(LatencyProfile::Realistic));
        assert_eq!("loopback".parse(), Ok(LatencyProfile::Loopback));
        let refused = "bogus".parse::<LatencyProfile>().unwrap_err();
        assert_eq!(
            refused.to_string(),
            "unknown latency profile \"bogus\"; expected loopback or realistic"
        );
        for profile in [LatencyProfile::Loopback, LatencyProfile::Realistic] {
            assert_eq!(profile.to_string().parse(), Ok(profile));
        }
    }

    #[test]
    fn the_realistic_profile_has_the_documented_medians_sigmas_and_means() {
        let expected = [
            (Endpoint::OndorsePortalPost, 300.0, 0.5, 340.0),
            (Endpoint::OndorseApplicationGet, 150.0, 0.4, 162.0),
            (Endpoint::SalesforceToken, 300.0, 0.3, 314.0),
            (Endpoint::SalesforceQueryPage, 400.0, 0.3, 418.0),
            (Endpoint::SalesforceSingleUpdate, 250.0, 0.4, 271.0),
        ];
        for (endpoint, median, sigma, mean) in expected {
            let latency = LatencyProfile::Realistic.endpoint(endpoint).unwrap();
            assert_eq!(milliseconds(latency.median(0)), median, "{endpoint:?}");
            assert_eq!(latency.sigma, sigma, "{endpoint:?}");
            // The module docs round the mean to the millisecond.
            assert!(
                (milliseconds(latency.mean(0)) - mean).abs() < 1.0,
                "{endpoint:?}: mean {:?}",
                latency.mean(0)
            );
        }
        let composite = LatencyProfile::Realistic
            .endpoint(Endpoint::SalesforceCompositeUpdate)
            .unwrap();
        assert_eq!(milliseconds(composite.median(200)), 850.0);
        assert_eq!(milliseconds(composite.median(1)), 253.0);
        assert!((milliseconds(composite.mean(200)) - 963.0).abs() < 1.0);
        for endpoint in Endpoint::ALL {
            assert_eq!(LatencyProfile::Loopback.endpoint(endpoint), None);
            assert_eq!(LatencyProfile::Loopback.mean(endpoint, 200), Duration::ZERO);
        }
    }

    #[test]
    fn each_endpoint_prints_its_parameters_and_mean() {
        let line = |endpoint| {
            LatencyProfile::Realistic
                .endpoint(endpoint)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            line(Endpoint::OndorsePortalPost),
            "median 300 ms, sigma 0.5, mean 340 ms"
        );
        assert_eq!(
            line(Endpoint::SalesforceCompositeUpdate),
            "median 250 ms + 3 ms per record, sigma 0.5, mean 963 ms for 200 records"
        );
    }

    #[test]
    fn draws_follow_the_log_normal_median_and_mean() {
        let latency = LatencyProfile::Realistic
            .endpoint(Endpoint::SalesforceCompositeUpdate)
            .unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut draws: Vec<f64> = (0..20_000)
            .map(|_| milliseconds(latency.sample(200, &mut rng)))
            .collect();
        draws.sort_by(f64::total_cmp);
        let median = draws[draws.len() / 2];
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        // A seeded draw: the same numbers every run, within 3 % of theory.
        assert!((median / 850.0 - 1.0).abs() < 0.03, "median {median}");
        assert!((mean / 963.0 - 1.0).abs() < 0.03, "mean {mean}");
        assert!(draws.iter().all(|draw| *draw > 0.0));
    }
}
