//! The run second by second, for the HTML report and the dashboard: once a
//! second a sampler reads the live counters and the histograms (off the
//! hot path: the clients record as they always do) and keeps what changed.
//! Bounded: past [`MAX_SAMPLES`] neighbours are merged two by two and the
//! interval doubles, so a run of any length stays a few hundred kilobytes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use super::stats::{Clock, Hist, Percentiles, Stats, Totals};

/// Most samples kept: 20 minutes at one a second.
pub const MAX_SAMPLES: usize = 1200;
/// How often the sampler looks.
pub const TICK: Duration = Duration::from_secs(1);

/// One interval of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sample {
    /// End of the interval, seconds from the start of the load.
    pub t: f64,
    /// Its length in seconds.
    pub secs: f64,
    pub sent: u64,
    /// Verified echoes (listen: events) that arrived in it.
    pub received: u64,
    /// `received` per second.
    pub rate: f64,
    /// Round trips that ended in it (echo mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Percentiles>,
    /// Streams cut on purpose, and re-opened.
    pub drops: u64,
    pub resumes: u64,
    /// Recoveries (drop to the first event after the resume) that ended in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_ms: Option<Percentiles>,
    /// POSTs answered with an error status, by status.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub refusals: BTreeMap<u16, u64>,
    /// POST attempts that got no answer.
    pub unanswered: u64,
}

impl Sample {
    /// Two neighbours as one (for a long run): counts add up; a percentile
    /// of the two is the higher one, an upper bound.
    fn absorb(&mut self, next: &Sample) {
        self.add(next);
        self.t = next.t;
        self.secs += next.secs;
        self.rate = if self.secs > 0.0 { self.received as f64 / self.secs } else { 0.0 };
    }

    /// The same interval of another run (merged shards): counts and rates
    /// add up, percentiles are the higher one.
    pub fn overlay(&mut self, other: &Sample) {
        self.add(other);
        self.secs = self.secs.max(other.secs);
        self.rate += other.rate;
    }

    fn add(&mut self, o: &Sample) {
        let worse = |a: &mut Option<Percentiles>, b: &Option<Percentiles>| {
            *a = match (*a, *b) {
                (Some(x), Some(y)) => Some(Percentiles {
                    p50: x.p50.max(y.p50),
                    p90: x.p90.max(y.p90),
                    p99: x.p99.max(y.p99),
                    p999: x.p999.max(y.p999),
                    max: x.max.max(y.max),
                }),
                (x, y) => x.or(y),
            }
        };
        self.sent = self.sent.saturating_add(o.sent);
        self.received = self.received.saturating_add(o.received);
        worse(&mut self.latency_ms, &o.latency_ms);
        worse(&mut self.recovery_ms, &o.recovery_ms);
        self.drops = self.drops.saturating_add(o.drops);
        self.resumes = self.resumes.saturating_add(o.resumes);
        for (s, n) in &o.refusals {
            let c = self.refusals.entry(*s).or_default();
            *c = c.saturating_add(*n);
        }
        self.unanswered = self.unanswered.saturating_add(o.unanswered);
    }

    /// Every number in range (a report read from a file): `Err` names the
    /// field and the bound.
    pub fn check(&self, max_s: f64) -> Result<(), String> {
        let within = |field: &str, x: f64, max: f64| {
            if x.is_finite() && (0.0..=max).contains(&x) {
                Ok(())
            } else {
                Err(format!("timeline.samples.{field}: {x:e} is out of range (0 to {max:e})"))
            }
        };
        within("t", self.t, max_s)?;
        within("secs", self.secs, max_s)?;
        within("rate", self.rate, 1e12)?;
        for p in [self.latency_ms, self.recovery_ms].iter().flatten() {
            for x in [p.p50, p.p90, p.p99, p.p999, p.max] {
                within("latency_ms", x, 1e9)?;
            }
        }
        Ok(())
    }
}

/// The samples of a run, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timeline {
    /// Seconds each sample covers (1, or 2, 4… once a long run was folded).
    pub interval_s: f64,
    pub samples: Vec<Sample>,
    /// Samples still to be merged with the next one (folded runs).
    #[serde(skip)]
    pending: Option<Sample>,
    #[serde(skip)]
    fold: u32,
}

impl Timeline {
    pub fn new() -> Self {
        Self { interval_s: TICK.as_secs_f64(), ..Self::default() }
    }

    /// Adds one tick's sample, folding when full.
    pub fn push(&mut self, s: Sample) {
        let per = 1u32 << self.fold;
        let merged = match self.pending.take() {
            None => s,
            Some(mut p) => {
                p.absorb(&s);
                p
            }
        };
        // Ticks merged into it so far.
        let ticks = (merged.secs / TICK.as_secs_f64()).round() as u32;
        if ticks < per {
            self.pending = Some(merged);
            return;
        }
        self.samples.push(merged);
        if self.samples.len() >= MAX_SAMPLES {
            self.samples = self
                .samples
                .chunks(2)
                .map(|pair| {
                    let mut a = pair[0].clone();
                    if let Some(b) = pair.get(1) {
                        a.absorb(b);
                    }
                    a
                })
                .collect();
            self.fold += 1;
            self.interval_s *= 2.0;
        }
    }

    /// A last, short interval told with the one before, exactly (while
    /// nothing was folded): `false` when it cannot be.
    fn extend_last(&mut self, s: Sample) -> bool {
        if self.fold > 0 || self.pending.is_some() || self.samples.is_empty() {
            return false;
        }
        self.samples.pop();
        self.samples.push(s);
        true
    }

    /// Every number in range, and no more samples than a run keeps.
    pub fn check(&self, max_s: f64) -> Result<(), String> {
        if self.samples.len() > 2 * MAX_SAMPLES {
            return Err(format!(
                "timeline.samples: {} samples (at most {})",
                self.samples.len(),
                2 * MAX_SAMPLES
            ));
        }
        if !(self.interval_s.is_finite() && (0.0..=max_s).contains(&self.interval_s)) {
            return Err(format!(
                "timeline.interval_s: {:e} is out of range (0 to {max_s:e})",
                self.interval_s
            ));
        }
        self.samples.iter().try_for_each(|s| s.check(max_s))
    }

    /// The last, partial interval counts too: on its own, or (under half
    /// an interval, whose rate would mean little) with the one before.
    pub fn finish(&mut self) {
        let Some(p) = self.pending.take() else { return };
        match self.samples.last_mut() {
            Some(last) if p.secs < self.interval_s / 2.0 => last.absorb(&p),
            _ => self.samples.push(p),
        }
    }
}

/// The run so far, for the dashboard: the timeline and the cumulative
/// figures the sampler read with its last sample.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub timeline: Timeline,
    pub totals: Totals,
    pub latency_ms: Percentiles,
    pub recovery_ms: Percentiles,
    pub refusals: BTreeMap<u16, u64>,
}

/// What the sampler saw last: cumulative figures.
struct Seen {
    at_us: u64,
    totals: Totals,
    latency: Hist,
    recovery: Hist,
    refusals: BTreeMap<u16, u64>,
}

impl Seen {
    fn now(stats: &Stats, at_us: u64) -> Self {
        let h = stats.merged();
        Seen {
            at_us,
            totals: stats.totals(),
            latency: h.latency,
            recovery: h.recovery,
            refusals: stats.refusals(),
        }
    }

    /// What changed since `before`.
    fn since(&self, before: &Seen, start_us: u64) -> Sample {
        let secs = self.at_us.saturating_sub(before.at_us) as f64 / 1e6;
        let received = self.totals.received.saturating_sub(before.totals.received);
        let pct = |now: &Hist, then: &Hist| {
            let d = now.minus(then);
            (d.count() > 0).then(|| d.summary())
        };
        let refusals = self
            .refusals
            .iter()
            .filter_map(|(s, n)| {
                let d = n.saturating_sub(before.refusals.get(s).copied().unwrap_or(0));
                (d > 0).then_some((*s, d))
            })
            .collect();
        Sample {
            t: self.at_us.saturating_sub(start_us) as f64 / 1e6,
            secs,
            sent: self.totals.sent.saturating_sub(before.totals.sent),
            received,
            rate: if secs > 0.0 { (received as f64 / secs * 1000.0).round() / 1000.0 } else { 0.0 },
            latency_ms: pct(&self.latency, &before.latency),
            drops: self.totals.drops.saturating_sub(before.totals.drops),
            resumes: self.totals.reconnects.saturating_sub(before.totals.reconnects),
            recovery_ms: pct(&self.recovery, &before.recovery),
            refusals,
            unanswered: self.totals.unanswered.saturating_sub(before.totals.unanswered),
        }
    }
}

/// The sampler of a run: started at the load's start, stopped at its end.
pub struct Sampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Timeline>,
}

impl Sampler {
    /// Samples `stats` every [`TICK`] from clock µs `start_us`; each new
    /// state goes to `live` (latest only: the dashboard's viewers never
    /// hold the run back).
    pub fn start(
        stats: Arc<Stats>,
        clock: Clock,
        start_us: u64,
        live: Option<watch::Sender<Live>>,
    ) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        // Read here, not in the task: the load starts as this returns, and
        // the task may first run after some echoes, which no sample would
        // then count.
        let mut seen = Seen::now(&stats, start_us);
        let task = tokio::spawn(async move {
            let mut timeline = Timeline::new();
            // Where the last sample began.
            let mut before: Option<Seen> = None;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let last = tokio::select! {
                    _ = tick.tick() => false,
                    _ = &mut stopped => true,
                };
                let now = Seen::now(&stats, clock.now_us());
                let short = now.at_us.saturating_sub(seen.at_us) < TICK.as_micros() as u64 / 2;
                if last && short {
                    // The end came just after a tick: the last sample spans
                    // both, its percentiles exact.
                    let joined = before
                        .as_ref()
                        .is_some_and(|b| timeline.extend_last(now.since(b, start_us)));
                    if !joined && now.at_us > seen.at_us {
                        timeline.push(now.since(&seen, start_us));
                    }
                    timeline.finish();
                    return timeline;
                }
                if now.at_us > seen.at_us {
                    timeline.push(now.since(&seen, start_us));
                }
                if last {
                    timeline.finish();
                    return timeline;
                }
                before = Some(std::mem::replace(&mut seen, now));
                if let Some(tx) = &live {
                    let mut shown = timeline.clone();
                    shown.finish();
                    tx.send_replace(Live {
                        timeline: shown,
                        totals: seen.totals,
                        latency_ms: seen.latency.summary(),
                        recovery_ms: seen.recovery.summary(),
                        refusals: seen.refusals.clone(),
                    });
                }
            }
        });
        Self { stop, task }
    }

    /// The timeline, with the last partial interval.
    pub async fn finish(self) -> Timeline {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(t: f64, received: u64) -> Sample {
        Sample { t, secs: 1.0, received, rate: received as f64, ..Sample::default() }
    }

    #[test]
    fn a_long_run_folds_and_stays_bounded() {
        let mut tl = Timeline::new();
        // Three hours, one sample a second.
        for i in 1..=10_800u64 {
            let mut s = tick(i as f64, 10);
            s.latency_ms = Some(Percentiles { p99: (i % 7) as f64, ..Percentiles::default() });
            tl.push(s);
        }
        tl.finish();
        assert!(tl.samples.len() <= MAX_SAMPLES, "{}", tl.samples.len());
        assert!(tl.samples.len() >= MAX_SAMPLES / 2, "{}", tl.samples.len());
        assert_eq!(tl.interval_s, 16.0);
        // Nothing lost in the folding.
        let total: u64 = tl.samples.iter().map(|s| s.received).sum();
        assert_eq!(total, 108_000);
        assert_eq!(tl.samples.last().unwrap().t, 10_800.0);
        // The worst p99 of the seconds a sample covers.
        assert!(tl.samples.iter().all(|s| s.latency_ms.unwrap().p99 == 6.0));
        assert!(tl.samples.iter().all(|s| (s.rate - 10.0).abs() < 1e-9));
    }

    #[tokio::test]
    async fn what_comes_after_the_start_is_in_the_timeline() {
        // Current-thread runtime: the sampler's task has not run yet when
        // the first echo is counted, as on a busy machine.
        let stats = Stats::new();
        let clock = Clock::new();
        let sampler = Sampler::start(stats.clone(), clock, clock.now_us(), None);
        stats.counters().received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tl = sampler.finish().await;
        let total: u64 = tl.samples.iter().map(|s| s.received).sum();
        assert_eq!(total, 1, "{tl:?}");
    }

    #[test]
    fn a_short_run_keeps_every_second_and_the_last_part() {
        let mut tl = Timeline::new();
        tl.push(tick(1.0, 5));
        tl.push(tick(2.0, 7));
        tl.push(Sample { secs: 0.6, ..tick(2.6, 3) });
        let mut short = tl.clone();
        short.push(Sample { secs: 0.2, ..tick(2.8, 2) });
        short.finish();
        let got: Vec<u64> = short.samples.iter().map(|s| s.received).collect();
        assert_eq!(got, [5, 7, 5], "a fifth of a second joins the one before");
        tl.finish();
        let got: Vec<u64> = tl.samples.iter().map(|s| s.received).collect();
        assert_eq!(got, [5, 7, 3]);
    }
}
