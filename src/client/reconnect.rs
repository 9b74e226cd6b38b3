//! When to reconnect, and when to stop trying: a pure policy over counts and
//! durations, so the schedule is tested without clocks or sockets.

use std::time::Duration;

/// Reconnect settings: `--retry-initial`, `--retry-max`, `--max-retries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry, doubled per failure in a row.
    pub initial: Duration,
    /// No delay is longer, whatever the server's `retry:` says: the user's
    /// bound wins so that a slow server hint cannot stall a probe.
    pub max: Duration,
    /// Failed attempts in a row before giving up; 0 means no retry at all.
    pub max_failures: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { initial: Duration::from_millis(250), max: Duration::from_secs(5), max_failures: 10 }
    }
}

/// Where the reconnect loop stands: failures in a row and the server's hint.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    /// The last valid `retry:` of the server; replaces `initial` as the base.
    server_retry: Option<Duration>,
    failures: u32,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    RetryIn(Duration),
    /// Too many failures in a row.
    GiveUp,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy, server_retry: None, failures: 0 }
    }

    /// Records the server's `retry:` field (milliseconds).
    pub fn set_server_retry(&mut self, ms: u64) {
        self.server_retry = Some(Duration::from_millis(ms));
    }

    /// Failed attempts in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A stream opened: the next failure starts the schedule over.
    pub fn opened(&mut self) {
        self.failures = 0;
    }

    /// An attempt failed: retry after a doubled delay, or give up.
    pub fn failed(&mut self) -> Next {
        self.failures = self.failures.saturating_add(1);
        if self.failures > self.policy.max_failures.saturating_sub(1) {
            return Next::GiveUp;
        }
        Next::RetryIn(self.delay(self.failures))
    }

    /// An open stream ended: wait the base delay (the WHATWG "reconnection
    /// time") before the first attempt; not a failure in itself.
    pub fn stream_ended(&self) -> Duration {
        self.delay(1)
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

    fn policy(initial: u64, max: u64, failures: u32) -> RetryPolicy {
        RetryPolicy { initial: ms(initial), max: ms(max), max_failures: failures }
    }

    #[test]
    fn doubles_up_to_the_cap_then_gives_up() {
        let mut b = Backoff::new(policy(250, 1500, 5));
        let got: Vec<Next> = (0..5).map(|_| b.failed()).collect();
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
    fn an_open_stream_resets_the_count() {
        let mut b = Backoff::new(policy(10, 1000, 3));
        b.failed();
        b.failed();
        b.opened();
        assert_eq!(b.failed(), Next::RetryIn(ms(10)));
        assert_eq!(b.failed(), Next::RetryIn(ms(20)));
        assert_eq!(b.failed(), Next::GiveUp);
    }

    #[test]
    fn server_retry_replaces_the_base_within_the_cap() {
        let mut b = Backoff::new(policy(250, 5000, 10));
        b.set_server_retry(1000);
        assert_eq!(b.stream_ended(), ms(1000));
        assert_eq!(b.failed(), Next::RetryIn(ms(1000)));
        assert_eq!(b.failed(), Next::RetryIn(ms(2000)));
        b.set_server_retry(60_000);
        assert_eq!(b.stream_ended(), ms(5000));
    }

    #[test]
    fn zero_means_no_retry_and_huge_counts_do_not_overflow() {
        let mut b = Backoff::new(policy(250, 5000, 0));
        assert_eq!(b.failed(), Next::GiveUp);
        let mut b = Backoff::new(policy(u64::MAX / 2, u64::MAX, u32::MAX));
        for _ in 0..100 {
            assert!(matches!(b.failed(), Next::RetryIn(_)));
        }
    }
}
