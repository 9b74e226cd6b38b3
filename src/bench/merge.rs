//! `ssechan bench merge`: one report from the JSON reports of sharded (or
//! any) runs. Counts are summed; percentiles come from the merged
//! histograms, so they are those of all the samples together, exactly; the
//! gates given to `merge` judge the result.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::report::{Report, StreamRates};
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
    #[error("report {0}: shard {1:?} is not I/N")]
    BadShard(usize, String),
    #[error("some reports are shards of a run and some are not")]
    MixedShards,
    #[error("shards of different runs: /{0} and /{1}")]
    ShardCounts(u64, u64),
    #[error("shard {0} is in more than one report")]
    ShardTwice(String),
    #[error("shard {0} is missing: the merged report would undercount the run")]
    ShardMissing(String),
    #[error("report {0}: {1}")]
    Histogram(usize, String),
}

/// Reads, merges, judges and writes; exit 0 passed, 1 failed, 2 unusable
/// input.
pub async fn run(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for path in &args.reports {
        let before = reports.len();
        read_reports(path, &mut reports)?;
        if reports.len() == before {
            return Err(UsageError(format!("{}: no report in it", name(path))).into());
        }
    }
    let mut merged = merge(&reports).map_err(|e| UsageError(e.to_string()))?;
    merged.judge(&super::gates(&args.gates));
    super::write_report(&args.output, &merged)?;
    Ok(if merged.passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn name(path: &Path) -> String {
    if path.as_os_str() == "-" { "stdin".into() } else { path.display().to_string() }
}

/// Every JSON report in `path` (`-`: stdin), one after another.
fn read_reports(path: &Path, out: &mut Vec<Report>) -> anyhow::Result<()> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read stdin")?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?
    };
    for (i, r) in serde_json::Deserializer::from_str(&text).into_iter::<Report>().enumerate() {
        let r = r.map_err(|e| {
            UsageError(format!("{}: report {} is not a bench JSON report: {e}", name(path), i + 1))
        })?;
        out.push(r);
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
        if let Some(sc) = &r.scenario {
            match &mut m.scenario {
                Some(total) => total.add(sc),
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
        for (total, x) in [
            (&mut m.clients, r.clients),
            (&mut m.connected, r.connected),
            (&mut m.sent, r.sent),
            (&mut m.received, r.received),
            (&mut m.lost, r.lost),
            (&mut m.duplicated, r.duplicated),
            (&mut m.out_of_order, r.out_of_order),
            (&mut m.corrupted, r.corrupted),
            (&mut m.drops, r.drops),
            (&mut m.resumes, r.resumes),
            (&mut m.failed_resumes, r.failed_resumes),
            (&mut m.stream_ends, r.stream_ends),
            (&mut m.post_errors, r.post_errors),
            (&mut m.timeouts, r.timeouts),
            (&mut m.post_connections, r.post_connections),
            (&mut m.errors, r.errors),
            (&mut m.events, r.events),
            (&mut m.id_gaps, r.id_gaps),
            (&mut m.id_restarts, r.id_restarts),
            (&mut m.ids_unordered, r.ids_unordered),
            (&mut m.ids_absent, r.ids_absent),
            (&mut m.requests, r.requests),
            (&mut m.completed, r.completed),
            (&mut m.failed_requests, r.failed_requests),
            (&mut m.bytes, r.bytes),
            (&mut m.idle, r.idle),
            (&mut m.events_short, r.events_short),
        ] {
            *total += x;
        }
        for e in &r.error_samples {
            super::push_sample(&mut m.error_samples, e.clone());
        }
        for w in &r.warnings {
            if !m.warnings.contains(w) {
                m.warnings.push(w.clone());
            }
        }
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
                let e = s + std::time::Duration::from_secs_f64(r.duration_s.max(0.0));
                Some((a.min(s), b.max(e)))
            }
            _ => None,
        };
        m.duration_s = m.duration_s.max(r.duration_s);
    }
    if let Some((a, b)) = span {
        m.started_at = humantime::format_rfc3339_micros(a).to_string();
        m.duration_s = b.duration_since(a).map_or(m.duration_s, |d| d.as_secs_f64());
    }
    m.url = urls.join(" ");
    m.set_histograms(hists);
    m.set_rates();
    if !rates.is_empty() {
        let streams: u64 = rates.iter().map(|r| r.streams).sum();
        m.stream_events_per_s = StreamRates {
            min: rates.iter().map(|r| r.min).fold(f64::MAX, f64::min),
            mean: rates.iter().map(|r| r.mean * r.streams as f64).sum::<f64>() / streams as f64,
            max: rates.iter().map(|r| r.max).fold(0.0, f64::max),
            streams,
        };
    }
    Ok(m)
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
