//! Sharded runs: `--shard I/N` picks the I-th of N equal slices of the
//! workload (as k6's execution segments do), and `--start-at` makes shards
//! started apart begin their load together. Pure values, no I/O but the
//! clock and one environment variable.

use std::ops::Range;
use std::time::{Duration, SystemTime};

/// The environment variable a Kubernetes Indexed Job sets (0-based).
pub const JOB_INDEX_VAR: &str = "JOB_COMPLETION_INDEX";

/// Longest `--start-at` wait: a date further off is a mistake.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The whole workload.
    pub const ALL: Shard = Shard { index: 1, count: 1 };

    /// Parses `I/N` (1-based), or `N` with I taken from `job_index`, the
    /// 0-based value of [`JOB_INDEX_VAR`].
    pub fn parse(spec: &str, job_index: Option<&str>) -> Result<Shard, String> {
        let bad = || format!("--shard takes I/N with 1 <= I <= N, e.g. 2/4 (got {spec:?})");
        let (index, count) = match spec.split_once('/') {
            Some((i, n)) => {
                let i: u64 = i.trim().parse().map_err(|_| bad())?;
                let n: u64 = n.trim().parse().map_err(|_| bad())?;
                (i, n)
            }
            None => {
                let n: u64 = spec.trim().parse().map_err(|_| bad())?;
                let Some(j) = job_index else {
                    return Err(format!(
                        "--shard {n} takes the shard from {JOB_INDEX_VAR}, which is not set \
                         (give --shard I/{n})"
                    ));
                };
                let j: u64 = j.trim().parse().map_err(|_| {
                    format!("{JOB_INDEX_VAR}={j:?} is not a number (0, 1, … as Kubernetes sets it)")
                })?;
                (j.saturating_add(1), n)
            }
        };
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// This shard's clients among `clients`: contiguous, disjoint, sizes
    /// differing by at most one, together exactly `0..clients`.
    pub fn clients(&self, clients: usize) -> Range<usize> {
        let part = |k: u64| (clients as u128 * u128::from(k) / u128::from(self.count)) as usize;
        part(self.index - 1)..part(self.index)
    }
}

/// When the load starts: `--start-at` as RFC 3339 (`Z` or `±HH:MM`) or as
/// `+DURATION` from `now`.
pub fn parse_start_at(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Some(rel) = s.strip_prefix('+') {
        return humantime::parse_duration(rel)
            .map(|d| now + d)
            .map_err(|e| format!("--start-at {s:?}: {e} (e.g. +5s)"));
    }
    let bad = |e: String| {
        format!("--start-at {s:?}: {e} (give RFC 3339 such as 2026-12-02T10:00:00Z, or +5s)")
    };
    // humantime reads UTC only: move an offset into the time.
    let (utc, offset) = split_offset(s).ok_or_else(|| bad("bad time zone offset".into()))?;
    let t = humantime::parse_rfc3339_weak(utc).map_err(|e| bad(e.to_string()))?;
    let t = if offset >= 0 {
        t.checked_sub(Duration::from_secs(offset as u64))
    } else {
        t.checked_add(Duration::from_secs(offset.unsigned_abs()))
    };
    t.ok_or_else(|| bad("out of range".into()))
}

/// `(the time without its offset, the offset in seconds east of UTC)`.
fn split_offset(s: &str) -> Option<(&str, i64)> {
    if let Some(t) = s.strip_suffix(['Z', 'z']) {
        return Some((t, 0));
    }
    // `…T10:00:00+02:00`: a sign after the time part.
    let t_at = s.find(['T', 't', ' '])?;
    let Some(sign_at) = s[t_at..].rfind(['+', '-']).map(|i| i + t_at) else {
        return Some((s, 0));
    };
    let (hh, mm) = s[sign_at + 1..].split_once(':')?;
    let (hh, mm): (i64, i64) = (hh.parse().ok()?, mm.parse().ok()?);
    if hh > 23 || mm > 59 {
        return None;
    }
    let secs = hh * 3600 + mm * 60;
    Some((&s[..sign_at], if &s[sign_at..=sign_at] == "-" { -secs } else { secs }))
}

/// How long to wait from `now` until `at`: zero when it has passed (the
/// caller says how late), an error when it is absurdly far.
pub fn wait_until(at: SystemTime, now: SystemTime) -> Result<Duration, String> {
    match at.duration_since(now) {
        Ok(d) if d > MAX_WAIT => Err(format!(
            "--start-at is {} away; at most {} is allowed",
            humantime::format_duration(Duration::from_secs(d.as_secs())),
            humantime::format_duration(MAX_WAIT)
        )),
        Ok(d) => Ok(d),
        Err(_) => Ok(Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shards() {
        assert_eq!(Shard::parse("2/4", None), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(Shard::parse(" 1 / 1 ", None), Ok(Shard::ALL));
        assert_eq!(Shard::parse("4", Some("0")), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(Shard::parse("4", Some("3")), Ok(Shard { index: 4, count: 4 }));
        for bad in ["0/4", "5/4", "1/0", "a/b", "", "2/"] {
            assert!(Shard::parse(bad, None).is_err(), "{bad}");
        }
        assert!(Shard::parse("4", None).unwrap_err().contains(JOB_INDEX_VAR));
        assert!(Shard::parse("4", Some("4")).is_err(), "index 4 of 0..4 is out of range");
        assert!(Shard::parse("4", Some("x")).is_err());
    }

    #[test]
    fn slices_cover_every_client_once() {
        for clients in [1usize, 3, 4, 10, 50, 40_000, 40_001] {
            for n in 1..=7u64 {
                let mut next = 0;
                for i in 1..=n {
                    let r = Shard { index: i, count: n }.clients(clients);
                    assert_eq!(r.start, next, "{clients} clients, shard {i}/{n}");
                    assert!(r.len() <= clients.div_ceil(n as usize));
                    assert!(r.len() >= clients / n as usize);
                    next = r.end;
                }
                assert_eq!(next, clients);
            }
        }
    }

    #[test]
    fn start_times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_start_at("+5s", now), Ok(now + Duration::from_secs(5)));
        assert_eq!(parse_start_at("+1m 30s", now), Ok(now + Duration::from_secs(90)));
        let t = |s| parse_start_at(s, now).unwrap();
        let utc = t("2026-12-02T10:00:00Z");
        assert_eq!(utc, SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_205_600));
        assert_eq!(t("2026-12-02T12:00:00+02:00"), utc);
        assert_eq!(t("2026-12-02T07:30:00-02:30"), utc);
        assert_eq!(t("2026-12-02T10:00:00.250Z"), utc + Duration::from_millis(250));
        for bad in ["tomorrow", "+soon", "2026-12-02T10:00:00+25:00", "2026-13-02T10:00:00Z"] {
            assert!(parse_start_at(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn waits() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(wait_until(now + Duration::from_secs(3), now), Ok(Duration::from_secs(3)));
        assert_eq!(wait_until(now - Duration::from_secs(3), now), Ok(Duration::ZERO));
        assert!(wait_until(now + Duration::from_secs(90_000), now).is_err());
    }
}
