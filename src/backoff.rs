//! When to try again, and when to stop: one schedule for re-opening event
//! streams and re-sending POSTs (`connect`, `bench`, the MCP client) and
//! for the server's retries against Redis. Pure: the caller passes the
//! time in, so the schedule is tested with values.

use std::time::{Duration, Instant};

/// The least a server's `retry:` can make a client wait. `retry: 0` from a
/// server that ends every stream at once would otherwise be a hot loop; a
/// user's own `max` below it still wins (it is the user's promise).
pub const SERVER_RETRY_FLOOR: Duration = Duration::from_millis(100);

/// How to retry: `--retry-initial`, `--retry-max`, `--max-retries`,
/// `--retry-first` for `connect`; a time budget for `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry, doubled per failure in a row; the
    /// server's `retry:` replaces it (floored at [`SERVER_RETRY_FLOOR`]).
    pub initial: Duration,
    /// No delay is longer, whatever the server's `retry:` says: the user's
    /// bound wins so that a slow server hint cannot stall a probe.
    pub max: Duration,
    /// Retries in a row before giving up; 0 means none. `None`: no count
    /// limit (then `give_up_after` should be set).
    pub max_retries: Option<u32>,
    /// Give up once failures have gone on for this long.
    pub give_up_after: Option<Duration>,
    /// Whether the very first connection of a run is retried. Off by
    /// default, as curl, wscat and websocat do: a typo in the URL, a
    /// refused port or a 404 is said at once.
    pub retry_first: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
            max_retries: Some(10),
            give_up_after: None,
            retry_first: false,
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    RetryIn(Duration),
    /// Out of retries (count or time).
    GiveUp,
    /// The first connection of a run failed and `retry_first` is off.
    Fail,
}

/// Where a retry loop stands: failures in a row, retries used, the
/// server's hint.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    /// The last valid `retry:` of the server, already floored.
    server_retry: Option<Duration>,
    /// Failed attempts in a row.
    failures: u32,
    /// Retries scheduled since the last success.
    retries: u32,
    /// When the current run of failures began.
    failing_since: Option<Instant>,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy, server_retry: None, failures: 0, retries: 0, failing_since: None }
    }

    /// A schedule that never gives up: `initial` doubling up to `max`. For
    /// work that must outlast any outage (the server's calls to its store).
    pub fn forever(initial: Duration, max: Duration) -> Self {
        Self::new(RetryPolicy {
            initial,
            max,
            max_retries: None,
            give_up_after: None,
            retry_first: true,
        })
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Records the server's `retry:` field (milliseconds).
    pub fn set_server_retry(&mut self, ms: u64) {
        self.server_retry = Some(Duration::from_millis(ms).max(SERVER_RETRY_FLOOR));
    }

    /// Failed attempts in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How long the current run of failures has lasted at `now`.
    pub fn failing_for(&self, now: Instant) -> Duration {
        self.failing_since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// Something worked (a stream delivered, a POST was answered): the
    /// next failure starts the schedule and the retry count over.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retries = 0;
        self.failing_since = None;
    }

    /// An attempt failed: retry after a doubled delay, or give up.
    pub fn failed(&mut self, now: Instant) -> Next {
        self.failures = self.failures.saturating_add(1);
        self.failing_since.get_or_insert(now);
        self.retry(now)
    }

    /// The wait after one more failure of a schedule that cannot give up
    /// ([`Backoff::forever`]): no time budget runs, so it needs no clock.
    pub fn wait(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay(self.failures)
    }

    /// Something that worked is gone (a stream that delivered ended): a
    /// retry after the base delay, the WHATWG "reconnection time". It is
    /// not a failure, but it is a retry: `max_retries: Some(0)` gives up.
    pub fn lost(&mut self, now: Instant) -> Next {
        self.succeeded();
        self.retry(now)
    }

    fn retry(&mut self, now: Instant) -> Next {
        if self.policy.max_retries.is_some_and(|max| self.retries >= max) {
            return Next::GiveUp;
        }
        if self.policy.give_up_after.is_some_and(|limit| self.failing_for(now) > limit) {
            return Next::GiveUp;
        }
        self.retries += 1;
        Next::RetryIn(self.delay(self.failures.max(1)))
    }

    /// The delay before retry number `n` (1-based): base × 2^(n−1), capped.
    fn delay(&self, n: u32) -> Duration {
        let base = self.server_retry.unwrap_or(self.policy.initial);
        let factor = 1u32.checked_shl(n.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        base.checked_mul(factor).unwrap_or(Duration::MAX).min(self.policy.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(initial: u64, max: u64, retries: u32) -> RetryPolicy {
        RetryPolicy {
            initial: ms(initial),
            max: ms(max),
            max_retries: Some(retries),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn doubles_up_to_the_cap_then_gives_up() {
        let now = Instant::now();
        let mut b = Backoff::new(policy(250, 1500, 4));
        let got: Vec<Next> = (0..5).map(|_| b.failed(now)).collect();
        assert_eq!(
            got,
            [
                Next::RetryIn(ms(250)),
                Next::RetryIn(ms(500)),
                Next::RetryIn(ms(1000)),
                Next::RetryIn(ms(1500)),
                Next::GiveUp
            ]
        );
        assert_eq!(b.failures(), 5);
    }

    #[test]
    fn after_a_loss_n_retries_may_fail() {
        let now = Instant::now();
        let mut b = Backoff::new(policy(10, 1000, 3));
        assert_eq!(b.lost(now), Next::RetryIn(ms(10)));
        assert_eq!(b.failed(now), Next::RetryIn(ms(10)));
        assert_eq!(b.failed(now), Next::RetryIn(ms(20)));
        assert_eq!(b.failed(now), Next::GiveUp);
        assert_eq!(b.failures(), 3);
    }

    #[test]
    fn zero_retries_means_none_even_after_a_loss() {
        let now = Instant::now();
        let mut b = Backoff::new(policy(250, 5000, 0));
        assert_eq!(b.failed(now), Next::GiveUp);
        let mut b = Backoff::new(policy(250, 5000, 0));
        assert_eq!(b.lost(now), Next::GiveUp);
        // One retry is one: not the same as zero.
        let mut b = Backoff::new(policy(250, 5000, 1));
        assert_eq!(b.lost(now), Next::RetryIn(ms(250)));
        assert_eq!(b.failed(now), Next::GiveUp);
    }

    #[test]
    fn success_starts_over() {
        let now = Instant::now();
        let mut b = Backoff::new(policy(10, 1000, 2));
        b.failed(now);
        b.failed(now);
        b.succeeded();
        assert_eq!(b.failed(now), Next::RetryIn(ms(10)));
        assert_eq!(b.failed(now), Next::RetryIn(ms(20)));
        assert_eq!(b.failed(now), Next::GiveUp);
    }

    #[test]
    fn server_retry_replaces_the_base_within_the_cap_and_above_the_floor() {
        let now = Instant::now();
        let mut b = Backoff::new(policy(250, 5000, 10));
        b.set_server_retry(1000);
        assert_eq!(b.lost(now), Next::RetryIn(ms(1000)));
        assert_eq!(b.failed(now), Next::RetryIn(ms(1000)));
        assert_eq!(b.failed(now), Next::RetryIn(ms(2000)));
        b.set_server_retry(60_000);
        assert_eq!(b.lost(now), Next::RetryIn(ms(5000)));
        b.set_server_retry(0);
        assert_eq!(b.lost(now), Next::RetryIn(SERVER_RETRY_FLOOR));
        // The user's cap wins over the floor.
        let mut b = Backoff::new(policy(5, 10, 10));
        b.set_server_retry(0);
        assert_eq!(b.lost(now), Next::RetryIn(ms(10)));
    }

    #[test]
    fn a_time_budget_gives_up_when_spent() {
        let t0 = Instant::now();
        let p = RetryPolicy {
            initial: ms(300),
            max: ms(1000),
            max_retries: None,
            give_up_after: Some(ms(50)),
            retry_first: true,
        };
        let mut b = Backoff::new(p);
        assert_eq!(b.failed(t0), Next::RetryIn(ms(300)));
        assert_eq!(b.failed(t0 + ms(10)), Next::RetryIn(ms(600)));
        assert_eq!(b.failed(t0 + ms(20)), Next::RetryIn(ms(1000)));
        assert_eq!(b.failing_for(t0 + ms(60)), ms(60));
        assert_eq!(b.failed(t0 + ms(60)), Next::GiveUp);
        b.succeeded();
        assert_eq!(b.failing_for(t0 + ms(70)), Duration::ZERO);
        assert_eq!(b.failed(t0 + ms(70)), Next::RetryIn(ms(300)));
    }

    #[test]
    fn forever_doubles_to_its_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::forever(ms(50), ms(300));
        let waits: Vec<Duration> = (0..6).map(|_| b.wait()).collect();
        assert_eq!(waits, [ms(50), ms(100), ms(200), ms(300), ms(300), ms(300)]);
        b.succeeded();
        assert_eq!(b.wait(), ms(50));
        assert_eq!(b.failed(Instant::now()), Next::RetryIn(ms(100)), "and it never gives up");
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let now = Instant::now();
        let p = RetryPolicy {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::MAX,
            max_retries: Some(u32::MAX),
            ..RetryPolicy::default()
        };
        let mut b = Backoff::new(p);
        for _ in 0..100 {
            assert!(matches!(b.failed(now), Next::RetryIn(_)));
        }
    }
}
