//! The clock the engine's timed decisions read: the budget governor's
//! stops and the breakers' waits.
//!
//! Production reads the system's clocks; unit tests use a clock they move by
//! hand (`Clock::manual`, built in tests only), so a backoff of minutes is
//! tested in no time and no test depends on how fast a loaded machine runs it.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// A source of "now", cheap to clone; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    #[cfg(test)]
    manual: Option<std::sync::Arc<std::sync::Mutex<Moment>>>,
}

/// A moment on both clocks: monotonic to decide, wall-clock to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

impl Moment {
    /// This moment moved `delay` later on both clocks.
    fn plus(self, delay: Duration) -> Moment {
        Moment {
            at: self.at + delay,
            wall: self.wall + chrono::Duration::from_std(delay).unwrap_or_default(),
        }
    }
}

impl Clock {
    /// The system's clocks.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Now, on both clocks.
    pub fn now(&self) -> Moment {
        #[cfg(test)]
        if let Some(manual) = &self.manual {
            return *manual.lock().expect("the manual clock");
        }
        Moment {
            at: Instant::now(),
            wall: Utc::now(),
        }
    }

    /// The moment `delay` from now.
    pub fn after(&self, delay: Duration) -> Moment {
        self.now().plus(delay)
    }

    /// Whether `moment` has come.
    pub fn reached(&self, moment: Moment) -> bool {
        self.now().at >= moment.at
    }
}

#[cfg(test)]
impl Clock {
    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Clock {
        Clock {
            manual: Some(std::sync::Arc::new(std::sync::Mutex::new(Moment {
                at: Instant::now(),
                wall: Utc::now(),
            }))),
        }
    }

    /// Moves a manual clock `by` later.
    pub fn advance(&self, by: Duration) {
        let manual = self.manual.as_ref().expect("only a manual clock moves");
        let mut moment = manual.lock().expect("the manual clock");
        *moment = moment.plus(by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_both_clocks_together() {
        let clock = Clock::manual();
        let start = clock.now();
        let later = clock.after(Duration::from_secs(60));
        assert_eq!(clock.clone().now(), start);
        assert!(!clock.reached(later));
        clock.advance(Duration::from_secs(59));
        assert!(!clock.reached(later));
        clock.advance(Duration::from_secs(1));
        assert!(clock.reached(later));
        assert_eq!(clock.now(), later);
        assert_eq!((later.wall - start.wall).num_seconds(), 60);
    }
}
