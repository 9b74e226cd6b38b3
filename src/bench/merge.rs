//! `ssechan bench merge`: one report from the JSON reports of sharded (or
//! any) runs. Counts are summed; percentiles come from the merged
//! histograms, so they are those of all the samples together, exactly; the
//! gates given to `merge` judge the result.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use super::report::{Report, ShardRun, StreamRates, number};
use super::stats::Histograms;
use crate::cli::MergeArgs;
use crate::exit::UsageError;

/// Why reports cannot be merged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    #[error("no reports to merge")]
    Empty,
    #[error("reports of different modes ({0} and {1}) do not add up")]
    Modes(&'static str, &'static str),
    #[error("shard {1:?} is not I/N")]
    BadShard(usize, String),
    #[error("some reports are shards of a run and some are not")]
    MixedShards,
    #[error("shards of different runs: /{0} and /{1}")]
    ShardCounts(u64, u64),
    #[error("shard {0} is in more than one report")]
    ShardTwice(String),
    #[error("shard {0} is missing: the merged report would undercount the run")]
    ShardMissing(String),
    #[error("{1}")]
    Histogram(usize, String),
    #[error("{1}: the sum of the reports is over {max} (the largest count)", max = u64::MAX)]
    Overflow(usize, &'static str),
}

impl MergeError {
    /// The report (from 1) the error is about, if one.
    fn report(&self) -> Option<usize> {
        match self {
            MergeError::BadShard(i, _)
            | MergeError::Histogram(i, _)
            | MergeError::Overflow(i, _) => Some(*i),
            _ => None,
        }
    }
}

/// Largest report read (a 10-minute run's is about 200 KB).
const MAX_REPORT_BYTES: u64 = 64 << 20;
/// Longest run a report may claim: about three years.
const MAX_DURATION_S: f64 = 1e8;
/// Highest rate a report may claim, per second.
const MAX_RATE: f64 = 1e12;

/// Reads, merges, judges and writes; exit 0 passed, 1 failed, 2 unusable
/// input.
pub async fn run(args: MergeArgs) -> anyhow::Result<ExitCode> {
    super::check_outputs(&args.output)?;
    let mut reports = Vec::new();
    let mut labels = Vec::new();
    for path in &args.reports {
        let before = reports.len();
        read_reports(path, &mut reports)?;
        let n = reports.len() - before;
        if n == 0 {
            return Err(UsageError(format!("{}: no report in it", name(path))).into());
        }
        labels.extend((1..=n).map(|k| match n {
            1 => name(path),
            _ => format!("{} (report {k})", name(path)),
        }));
    }
    let mut merged = merge(&reports).map_err(|e| {
        let at = e.report().and_then(|i| labels.get(i - 1));
        UsageError(at.map_or_else(|| e.to_string(), |l| format!("{l}: {e}")))
    })?;
    merged.command = super::report::command_line(std::env::args());
    merged.machine = super::report::Machine::this();
    merged.judge(&super::gates(&args.gates));
    super::write_report(&args.output, &merged)?;
    Ok(if merged.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn name(path: &Path) -> String {
    if path.as_os_str() == "-" { "stdin".into() } else { path.display().to_string() }
}

/// Every JSON report in `path` (`-`: stdin), one after another, each
/// checked: a crafted file is one line naming it, the field and the bound.
fn read_reports(path: &Path, out: &mut Vec<Report>) -> anyhow::Result<()> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().take(MAX_REPORT_BYTES + 1).read_to_string(&mut text)
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_REPORT_BYTES + 1).read_to_string(&mut text))
    };
    read.map_err(|e| UsageError(format!("cannot read {}: {e}", name(path))))?;
    if text.len() as u64 > MAX_REPORT_BYTES {
        return Err(UsageError(format!(
            "{}: larger than {MAX_REPORT_BYTES} bytes (at most that): not a bench report",
            name(path)
        ))
        .into());
    }
    let all: Vec<_> = serde_json::Deserializer::from_str(&text).into_iter::<Report>().collect();
    let many = all.len() > 1;
    for (i, r) in all.into_iter().enumerate() {
        let at = if many { format!("{} (report {})", name(path), i + 1) } else { name(path) };
        let r = r.map_err(|e| UsageError(format!("{at}: not a bench JSON report: {e}")))?;
        check_ranges(&r).map_err(|e| UsageError(format!("{at}: {e}")))?;
        out.push(r);
    }
    Ok(())
}

/// Every number of a report that the merge computes with, in range: a
/// crafted one would otherwise panic (a duration of 1e300 s) or pass (-1).
fn check_ranges(r: &Report) -> Result<(), String> {
    let within = |field: &str, x: f64, max: f64| {
        if x.is_finite() && (0.0..=max).contains(&x) {
            Ok(())
        } else {
            Err(format!("{field}: {} is out of range (0 to {})", number(x), number(max)))
        }
    };
    within("duration_s", r.duration_s, MAX_DURATION_S)?;
    // CPU time of a run of every core of a large machine.
    within("bench_cpu_s", r.bench_cpu_s, MAX_DURATION_S * 1024.0)?;
    let s = &r.stream_events_per_s;
    within("stream_events_per_s.min", s.min, MAX_RATE)?;
    within("stream_events_per_s.mean", s.mean, MAX_RATE)?;
    within("stream_events_per_s.max", s.max, MAX_RATE)?;
    r.timeline.check(MAX_DURATION_S)?;
    if let Some(sc) = &r.scenario {
        within("scenario.speed", sc.speed, MAX_RATE)?;
        for d in &sc.divergences {
            within("scenario.divergences.t_ms", d.t_ms.unwrap_or(0.0), MAX_DURATION_S * 1e3)?;
        }
    }
    Ok(())
}

/// Adds `reports` up into one (not yet judged).
pub fn merge(reports: &[Report]) -> Result<Report, MergeError> {
    let first = reports.first().ok_or(MergeError::Empty)?;
    check_shards(reports)?;
    let mut m = Report { mode: first.mode, ..Report::default() };
    let mut hists = Histograms::default();
    let mut urls: Vec<&str> = Vec::new();
    let mut span: Option<(std::time::SystemTime, std::time::SystemTime)> = Some((
        std::time::SystemTime::now() + std::time::Duration::from_secs(1 << 32),
        std::time::SystemTime::UNIX_EPOCH,
    ));
    let mut rates: Vec<StreamRates> = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        if r.mode != m.mode {
            return Err(MergeError::Modes(m.mode.as_str(), r.mode.as_str()));
        }
        if !urls.contains(&r.url.as_str()) {
            urls.push(&r.url);
        }
        m.embedded |= r.embedded;
        m.interrupted |= r.interrupted;
        if let Some(sc) = &r.scenario {
            match &mut m.scenario {
                Some(total) => total.add(sc).map_err(|f| MergeError::Overflow(i + 1, f))?,
                None => m.scenario = Some(sc.clone()),
            }
        }
        if !r.id_format.is_empty() && m.id_format != r.id_format {
            m.id_format = if m.id_format.is_empty() {
                r.id_format.clone()
            } else {
                super::ids::FORMAT_MIXED.to_string()
            };
        }
        m.shards.extend(r.shards.iter().cloned());
        for (field, total, x) in [
            ("clients", &mut m.clients, r.clients),
            ("connected", &mut m.connected, r.connected),
            ("sent", &mut m.sent, r.sent),
            ("received", &mut m.received, r.received),
            ("lost", &mut m.lost, r.lost),
            ("duplicated", &mut m.duplicated, r.duplicated),
            ("out_of_order", &mut m.out_of_order, r.out_of_order),
            ("corrupted", &mut m.corrupted, r.corrupted),
            ("drops", &mut m.drops, r.drops),
            ("resumes", &mut m.resumes, r.resumes),
            ("failed_resumes", &mut m.failed_resumes, r.failed_resumes),
            ("stream_ends", &mut m.stream_ends, r.stream_ends),
            ("post_errors", &mut m.post_errors, r.post_errors),
            ("posts", &mut m.posts, r.posts),
            ("timeouts", &mut m.timeouts, r.timeouts),
            ("post_connections", &mut m.post_connections, r.post_connections),
            ("errors", &mut m.errors, r.errors),
            ("events", &mut m.events, r.events),
            ("id_gaps", &mut m.id_gaps, r.id_gaps),
            ("id_restarts", &mut m.id_restarts, r.id_restarts),
            ("ids_unordered", &mut m.ids_unordered, r.ids_unordered),
            ("ids_absent", &mut m.ids_absent, r.ids_absent),
            ("requests", &mut m.requests, r.requests),
            ("completed", &mut m.completed, r.completed),
            ("failed_requests", &mut m.failed_requests, r.failed_requests),
            ("bytes", &mut m.bytes, r.bytes),
            ("idle", &mut m.idle, r.idle),
            ("events_short", &mut m.events_short, r.events_short),
        ] {
            *total = total.checked_add(x).ok_or(MergeError::Overflow(i + 1, field))?;
        }
        for (status, n) in &r.refusals {
            let c = m.refusals.entry(*status).or_default();
            *c = c.checked_add(*n).ok_or(MergeError::Overflow(i + 1, "refusals"))?;
        }
        for e in &r.error_samples {
            super::push_sample(&mut m.error_samples, e.clone());
        }
        for w in &r.warnings {
            // Files come from elsewhere, and the report ends up on a terminal.
            let w = crate::text::escape_controls(w).into_owned();
            if !m.warnings.contains(&w) {
                m.warnings.push(w);
            }
        }
        // In range (checked on reading): a sum of finite numbers.
        m.bench_cpu_s += r.bench_cpu_s;
        if r.stream_events_per_s.streams > 0 {
            rates.push(r.stream_events_per_s);
        }
        let h = &r.histograms;
        for (into, from) in [
            (&mut hists.latency, &h.latency),
            (&mut hists.recovery, &h.recovery),
            (&mut hists.resume, &h.resume),
            (&mut hists.connect, &h.connect),
            (&mut hists.first_event, &h.first_event),
            (&mut hists.stream, &h.stream),
        ] {
            into.try_merge(from).map_err(|e| MergeError::Histogram(i + 1, e.to_string()))?;
        }
        // The union of the runs' time spans; without a start time, only the
        // longest duration is known.
        span = match (span, humantime::parse_rfc3339_weak(&r.started_at)) {
            (Some((a, b)), Ok(s)) => {
                let d = std::time::Duration::try_from_secs_f64(r.duration_s).unwrap_or_default();
                s.checked_add(d).map(|e| (a.min(s), b.max(e)))
            }
            _ => None,
        };
        m.duration_s = m.duration_s.max(r.duration_s);
    }
    if let Some((a, b)) = span {
        m.started_at = humantime::format_rfc3339_micros(a).to_string();
        m.duration_s = b.duration_since(a).map_or(m.duration_s, |d| d.as_secs_f64());
    }
    m.url = crate::text::escape_controls(&urls.join(" ")).into_owned();
    if let Some(sc) = &mut m.scenario {
        sc.file = crate::text::escape_controls(&sc.file).into_owned();
    }
    m.set_histograms(hists);
    m.set_rates();
    side_by_side(reports, &mut m);
    if !rates.is_empty() {
        let streams = rates.iter().fold(0u64, |a, r| a.saturating_add(r.streams));
        m.stream_events_per_s = StreamRates {
            min: rates.iter().map(|r| r.min).fold(f64::MAX, f64::min),
            mean: rates.iter().map(|r| r.mean * r.streams as f64).sum::<f64>() / streams as f64,
            max: rates.iter().map(|r| r.max).fold(0.0, f64::max),
            streams,
        };
    }
    Ok(m)
}

/// Most intervals a merged timeline spans: runs further apart than that are
/// not drawn on one clock.
const MAX_MERGED_SAMPLES: usize = 4 * super::timeline::MAX_SAMPLES;

/// Each report's own figures side by side, and one timeline of them all
/// on the clock of the earliest start (counts added up; a percentile is the
/// highest of the runs', an upper bound).
fn side_by_side(reports: &[Report], m: &mut Report) {
    let starts: Vec<Option<std::time::SystemTime>> =
        reports.iter().map(|r| humantime::parse_rfc3339_weak(&r.started_at).ok()).collect();
    let first = starts.iter().flatten().min().copied();
    let offset = |i: usize| match (starts[i], first) {
        (Some(s), Some(f)) => s.duration_since(f).map_or(0.0, |d| d.as_secs_f64()),
        _ => 0.0,
    };
    let interval = reports.iter().map(|r| r.timeline.interval_s).fold(1.0, f64::max);
    let mut merged: Vec<Option<super::timeline::Sample>> = Vec::new();
    let mut too_far = false;
    for (i, r) in reports.iter().enumerate() {
        let off = offset(i);
        let p99 = if r.mode == super::report::Mode::Listen {
            r.histograms.first_event.summary().p99
        } else {
            r.histograms.latency.summary().p99
        };
        m.shard_runs.push(ShardRun {
            shard: if r.shards.is_empty() {
                format!("report {}", i + 1)
            } else {
                r.shards.join(",")
            },
            started_at: r.started_at.clone(),
            skew_ms: off * 1e3,
            duration_s: r.duration_s,
            throughput_msgs_per_s: r.throughput_msgs_per_s,
            p99_ms: p99,
            sent: r.sent,
            received: r.received,
            lost: r.lost,
            errors: r.errors,
            refused: r.refused(),
            rates: r.timeline.samples.iter().map(|s| (s.t + off, s.rate)).collect(),
        });
        for s in &r.timeline.samples {
            // The interval (of the coarsest timeline) this sample ends in:
            // samples end a few ms after each whole interval.
            let k = ((off + s.t) / interval).round().max(1.0) as usize - 1;
            if k >= MAX_MERGED_SAMPLES {
                too_far = true;
                continue;
            }
            if merged.len() <= k {
                merged.resize(k + 1, None);
            }
            match &mut merged[k] {
                Some(into) => into.overlay(s),
                slot => *slot = Some(s.clone()),
            }
        }
    }
    if too_far {
        m.warnings.push(format!(
            "the runs are more than {MAX_MERGED_SAMPLES} intervals apart: the merged timeline \
             leaves the later ones out"
        ));
    }
    m.timeline.interval_s = interval;
    m.timeline.samples = merged
        .into_iter()
        .enumerate()
        .filter_map(|(k, s)| {
            s.map(|mut s| {
                s.t = (k + 1) as f64 * interval;
                s
            })
        })
        .collect();
}

/// Shards must be all or none, of one run (same N), each exactly once.
fn check_shards(reports: &[Report]) -> Result<(), MergeError> {
    let sharded = reports.iter().filter(|r| !r.shards.is_empty()).count();
    if sharded == 0 {
        return Ok(());
    }
    if sharded != reports.len() {
        return Err(MergeError::MixedShards);
    }
    let mut seen: BTreeMap<u64, ()> = BTreeMap::new();
    let mut count = None;
    for (i, r) in reports.iter().enumerate() {
        for s in &r.shards {
            let shard = super::shard::Shard::parse(s, None)
                .map_err(|_| MergeError::BadShard(i + 1, s.clone()))?;
            match count {
                Some(n) if n != shard.count => return Err(MergeError::ShardCounts(n, shard.count)),
                _ => count = Some(shard.count),
            }
            if seen.insert(shard.index, ()).is_some() {
                return Err(MergeError::ShardTwice(shard.to_string()));
            }
        }
    }
    let n = count.unwrap_or(1);
    if let Some(missing) = (1..=n).find(|i| !seen.contains_key(i)) {
        return Err(MergeError::ShardMissing(format!("{missing}/{n}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{Gates, Mode};
    use crate::bench::stats::Hist;

    fn shard(i: u64, n: u64, samples: &[u64]) -> Report {
        let mut h = Histograms::default();
        for &us in samples {
            h.latency.record_us(us);
        }
        let mut r = Report {
            mode: Mode::Echo,
            url: "http://h/sse".into(),
            shards: vec![format!("{i}/{n}")],
            started_at: humantime::format_rfc3339_micros(
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i),
            )
            .to_string(),
            clients: 10,
            connected: 10,
            sent: samples.len() as u64 + 1,
            received: samples.len() as u64,
            lost: 1,
            duration_s: 10.0,
            error_samples: vec!["boom".into()],
            ..Report::default()
        };
        r.set_histograms(h);
        r
    }

    #[test]
    fn percentiles_are_those_of_all_samples_exactly() {
        let mut rng = fastrand::Rng::with_seed(11);
        let parts: Vec<Vec<u64>> =
            (0..4).map(|k| (0..5000).map(|_| rng.u64(1..20_000) * (k + 1)).collect()).collect();
        let reports: Vec<Report> =
            parts.iter().enumerate().map(|(i, p)| shard(i as u64 + 1, 4, p)).collect();
        // Through JSON, as `merge` reads them.
        let reports: Vec<Report> = reports
            .iter()
            .map(|r| serde_json::from_str(&r.to_json()).expect("a report reads back"))
            .collect();
        let m = merge(&reports).unwrap();
        let mut all = Hist::new();
        for us in parts.concat() {
            all.record_us(us);
        }
        assert_eq!(m.latency_ms, all.summary());
        assert_eq!(m.histograms.latency.count(), 20_000);
        assert_eq!((m.clients, m.sent, m.received, m.lost), (40, 20_004, 20_000, 4));
        // Runs 1..4 s apart, 10 s each: the union is 13 s.
        assert!((m.duration_s - 13.0).abs() < 1e-6, "{}", m.duration_s);
        assert!((m.throughput_msgs_per_s - 20_000.0 / 13.0).abs() < 1e-6);
        assert_eq!(m.error_samples, ["boom"], "distinct samples only");
        assert_eq!(m.shards, ["1/4", "2/4", "3/4", "4/4"]);
        let mut judged = m.clone();
        judged.judge(&Gates { max_lost: 4, ..Gates::default() });
        assert!(judged.passed, "{:?}", judged.failures);
        judged.judge(&Gates::default());
        assert_eq!(judged.failures.len(), 1, "{:?}", judged.failures);
    }

    #[test]
    fn shards_must_fit_together() {
        let s = |i, n| shard(i, n, &[100]);
        assert_eq!(merge(&[]).unwrap_err(), MergeError::Empty);
        assert_eq!(merge(&[s(1, 3), s(3, 3)]).unwrap_err(), MergeError::ShardMissing("2/3".into()));
        assert_eq!(merge(&[s(1, 2), s(1, 2)]).unwrap_err(), MergeError::ShardTwice("1/2".into()));
        assert_eq!(merge(&[s(1, 2), s(2, 3)]).unwrap_err(), MergeError::ShardCounts(2, 3));
        let mut plain = s(2, 2);
        plain.shards.clear();
        assert_eq!(merge(&[s(1, 2), plain.clone()]).unwrap_err(), MergeError::MixedShards);
        // Unsharded runs merge as they are.
        assert_eq!(merge(&[plain.clone(), plain.clone()]).unwrap().clients, 20);
        let mut listen = plain.clone();
        listen.mode = Mode::Listen;
        assert_eq!(merge(&[plain, listen]).unwrap_err(), MergeError::Modes("echo", "listen"));
    }
}
