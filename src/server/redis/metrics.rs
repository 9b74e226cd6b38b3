//! What the instance's calls to Redis cost: a latency histogram and the
//! failures, shown with the server's metrics (`serve --metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Round trips to Redis: how many, how long, how many failed.
#[derive(Debug, Default)]
pub struct RedisMetrics {
    /// Counts of round trips at or under each bound of [`LATENCY_BOUNDS`],
    /// and above the last.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    errors: AtomicU64,
}

/// Bounds of the latency histogram, in seconds.
pub const LATENCY_BOUNDS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

impl RedisMetrics {
    pub(crate) fn observe(&self, took: Duration, ok: bool) {
        let s = took.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|b| s <= *b).unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus exposition of these figures.
    pub(crate) fn render(&self) -> String {
        use std::fmt::Write as _;
        let (cumulative, sum, errors) = self.snapshot();
        let name = "ssechan_redis_round_trip_seconds";
        let mut out = format!(
            "# HELP {name} Round trips to Redis (script calls and reads), failed ones included.\n# TYPE {name} histogram\n"
        );
        for (bound, n) in LATENCY_BOUNDS.iter().zip(&cumulative) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let total = cumulative.last().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum}\n{name}_count {total}"
        );
        let errors_name = "ssechan_redis_errors_total";
        let _ = writeln!(
            out,
            "# HELP {errors_name} Round trips to Redis that failed or timed out.\n# TYPE {errors_name} counter\n{errors_name} {errors}"
        );
        out
    }

    /// Cumulative counts per bound of [`LATENCY_BOUNDS`] (then the total),
    /// the sum of the latencies in seconds, and the failures.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum, self.errors.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_histogram_is_cumulative() {
        let m = RedisMetrics::default();
        m.observe(Duration::from_micros(80), true);
        m.observe(Duration::from_millis(3), false);
        m.observe(Duration::from_secs(5), true);
        let (buckets, sum, errors) = m.snapshot();
        assert_eq!(buckets.len(), LATENCY_BOUNDS.len() + 1);
        assert_eq!((buckets[0], buckets[5], buckets[11], buckets[12]), (1, 2, 2, 3));
        assert_eq!(errors, 1);
        assert!((sum - 5.00308).abs() < 1e-6, "{sum}");
        let text = m.render();
        assert!(
            text.contains("ssechan_redis_round_trip_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ssechan_redis_round_trip_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("ssechan_redis_round_trip_seconds_count 3\n"), "{text}");
        assert!(text.contains("\nssechan_redis_errors_total 1\n"), "{text}");
    }
}
