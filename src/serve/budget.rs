//! How many processes may run and how fast they may start: a cap on the
//! processes alive and a token bucket for starts, decided under one lock
//! with the time passed in (no I/O, tested with plain values).
//!
//! A process counts from its reservation, taken before it is spawned,
//! until its [`Reservation`] is dropped after it (and its guard) were
//! reaped: the count is never below the truth, so the cap cannot be
//! overrun by starts racing with ends.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts allowed per period: `count` at once, then one every
/// `period / count`; a `count` of 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnRate {
    pub count: u32,
    pub period: Duration,
}

impl SpawnRate {
    /// Parses `N/s`, `N/m`, `N/h` or `N/DURATION` (`N/10s`); `0` for no limit.
    pub fn parse(s: &str) -> Result<SpawnRate, String> {
        let bad = || format!("{s:?} is not a rate: N/s, N/m, N/h or N/DURATION (e.g. 100/s), or 0");
        if s.trim() == "0" {
            return Ok(SpawnRate { count: 0, period: Duration::from_secs(1) });
        }
        let (n, per) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = per.trim();
        let period = match per {
            "s" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0 || period.is_zero() {
            return Err(bad());
        }
        Ok(SpawnRate { count, period })
    }

    /// `None` for no limit.
    pub fn limit(self) -> Option<SpawnRate> {
        (self.count > 0).then_some(self)
    }
}

impl fmt::Display for SpawnRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {}", self.count, humantime::format_duration(self.period))
    }
}

/// Why a process may not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `max` processes are alive (some may be ending: their grace runs).
    Cap { max: usize },
    /// The start rate is used up; the next start is possible in `wait`.
    Rate { rate: SpawnRate, wait: Duration },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Cap { max } => write!(f, "too many processes running (limit {max})"),
            Refused::Rate { rate, wait } => write!(
                f,
                "processes are starting too fast (limit {rate}); try again in {}",
                humantime::format_duration(Duration::from_millis(wait.as_millis() as u64 + 1))
            ),
        }
    }
}

/// The cap and the rate, shared by every start.
#[derive(Debug)]
pub struct Budget {
    max: usize,
    rate: Option<SpawnRate>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    alive: usize,
    /// Starts left in the bucket, in units of 1/`count` of a period's
    /// worth of nanoseconds: whole starts are `tokens / period`.
    tokens: u128,
    refilled: Instant,
}

/// One process's place under the cap; dropping it frees the place.
#[derive(Debug)]
pub struct Reservation(Arc<Budget>);

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.alive = s.alive.saturating_sub(1);
    }
}

impl Budget {
    pub fn new(max: usize, rate: Option<SpawnRate>, now: Instant) -> Arc<Budget> {
        let tokens = rate.map_or(0, full);
        Arc::new(Budget { max, rate, state: Mutex::new(State { alive: 0, tokens, refilled: now }) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one more process starting at `now`, or why not.
    pub fn reserve(self: &Arc<Self>, now: Instant) -> Result<Reservation, Refused> {
        let mut s = self.lock();
        if s.alive >= self.max {
            return Err(Refused::Cap { max: self.max });
        }
        if let Some(rate) = self.rate {
            // Each nanosecond adds `count` units; a start costs a period.
            let elapsed = now.saturating_duration_since(s.refilled).as_nanos();
            s.tokens = (s.tokens + elapsed * u128::from(rate.count)).min(full(rate));
            s.refilled = now.max(s.refilled);
            let cost = rate.period.as_nanos();
            if s.tokens < cost {
                let missing = (cost - s.tokens).div_ceil(u128::from(rate.count));
                let wait = Duration::from_nanos(u64::try_from(missing).unwrap_or(u64::MAX));
                return Err(Refused::Rate { rate, wait });
            }
            s.tokens -= cost;
        }
        s.alive += 1;
        Ok(Reservation(self.clone()))
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Processes counted now (reserved, running, or not yet reaped).
    pub fn alive(&self) -> usize {
        self.lock().alive
    }
}

/// A full bucket: `count` starts.
fn full(rate: SpawnRate) -> u128 {
    rate.period.as_nanos() * u128::from(rate.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_until_the_reservation_is_dropped() {
        let t = Instant::now();
        let b = Budget::new(2, None, t);
        let r1 = b.reserve(t).unwrap();
        let _r2 = b.reserve(t).unwrap();
        assert_eq!(b.reserve(t).unwrap_err(), Refused::Cap { max: 2 });
        assert_eq!(b.alive(), 2);
        drop(r1);
        assert_eq!(b.alive(), 1);
        assert!(b.reserve(t).is_ok());
    }

    #[test]
    fn the_rate_allows_a_burst_then_one_per_share_of_the_period() {
        let t = Instant::now();
        let rate = SpawnRate { count: 3, period: Duration::from_secs(3) };
        let b = Budget::new(100, Some(rate), t);
        for _ in 0..3 {
            drop(b.reserve(t).unwrap());
        }
        let Err(Refused::Rate { wait, .. }) = b.reserve(t) else { panic!("not limited") };
        assert_eq!(wait, Duration::from_secs(1));
        let Err(Refused::Rate { wait, .. }) = b.reserve(t + Duration::from_millis(400)) else {
            panic!("not limited")
        };
        assert_eq!(wait, Duration::from_millis(600));
        drop(b.reserve(t + Duration::from_secs(1)).unwrap());
        assert!(b.reserve(t + Duration::from_secs(1)).is_err());
        // A long pause refills the burst, no more.
        let later = t + Duration::from_secs(3600);
        for _ in 0..3 {
            drop(b.reserve(later).unwrap());
        }
        assert!(b.reserve(later).is_err());
    }

    #[test]
    fn a_refusal_by_the_cap_costs_no_start() {
        let t = Instant::now();
        let rate = SpawnRate { count: 1, period: Duration::from_secs(60) };
        let b = Budget::new(1, Some(rate), t);
        let r = b.reserve(t).unwrap();
        assert!(matches!(b.reserve(t), Err(Refused::Cap { .. })));
        drop(r);
        assert!(matches!(b.reserve(t), Err(Refused::Rate { .. })));
        assert!(b.reserve(t + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn rates() {
        let r = |s: &str| SpawnRate::parse(s);
        let sec = Duration::from_secs(1);
        assert_eq!(r("100/s"), Ok(SpawnRate { count: 100, period: sec }));
        assert_eq!(r("5/h"), Ok(SpawnRate { count: 5, period: sec * 3600 }));
        assert_eq!(r("3/m"), Ok(SpawnRate { count: 3, period: sec * 60 }));
        assert_eq!(r("10/500ms"), Ok(SpawnRate { count: 10, period: sec / 2 }));
        assert_eq!(r("0").map(SpawnRate::limit), Ok(None));
        assert!(r("1/s").unwrap().limit().is_some());
        for bad in ["", "5", "x/s", "0/s", "5/0s", "5/parsec", "-1/s"] {
            assert!(r(bad).is_err(), "{bad}");
        }
        let text = Refused::Rate { rate: SpawnRate { count: 5, period: sec * 3600 }, wait: sec };
        assert!(text.to_string().contains("5 per 1h"), "{text}");
    }
}
