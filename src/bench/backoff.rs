//! Retry pacing for re-opening streams and re-sending POSTs: exponential
//! waits, and a limit on how long failures may go on in a row before the
//! client gives up (a target that went away must end the run, not hang it).

use std::time::Duration;

use tokio::time::Instant;

/// Longest wait between two attempts: keeps a recovered target from idling
/// while the client sleeps.
const MAX_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    next: Duration,
    give_up: Duration,
    failing_since: Option<Instant>,
}

impl Backoff {
    /// Waits start at `min`; failures lasting longer than `give_up` end it.
    pub fn new(min: Duration, give_up: Duration) -> Self {
        Self { min, next: min, give_up, failing_since: None }
    }

    /// Notes a failure: how long to wait before the next attempt, or `None`
    /// when the failures have gone on for longer than allowed.
    pub fn failed(&mut self) -> Option<Duration> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > self.give_up {
            return None;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_WAIT.max(self.min));
        Some(wait)
    }

    /// Notes a success: the next failure starts over.
    pub fn reset(&mut self) {
        self.next = self.min;
        self.failing_since = None;
    }

    /// How long the current run of failures has lasted.
    pub fn failing_for(&self) -> Duration {
        self.failing_since.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_then_gives_up() {
        let mut b = Backoff::new(Duration::from_millis(300), Duration::from_millis(50));
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis());
        assert_eq!(ms(b.failed()), Some(300));
        assert_eq!(ms(b.failed()), Some(600));
        assert_eq!(ms(b.failed()), Some(1000));
        assert_eq!(ms(b.failed()), Some(1000));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.failed(), None);
        assert!(b.failing_for() > Duration::from_millis(50));
        b.reset();
        assert_eq!(b.failing_for(), Duration::ZERO);
        assert_eq!(ms(b.failed()), Some(300));
    }
}
