//! Timing and statistics: a monotonic µs clock, latency histograms sharded
//! by thread (no lock shared by all clients on the hot path), their lossless
//! serialized form (so that reports of sharded runs merge exactly), and the
//! percentile summaries of the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

/// Microseconds since the bench started; what payloads carry as send time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    /// The wall-clock time at `base`, for the report's timestamps.
    wall: SystemTime,
}

impl Clock {
    pub fn new() -> Self {
        Self { base: Instant::now(), wall: SystemTime::now() }
    }

    /// The wall-clock time of clock µs `us`.
    pub fn wall_at(&self, us: u64) -> SystemTime {
        self.wall + Duration::from_micros(us)
    }

    pub fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    pub fn instant_at(&self, us: u64) -> Instant {
        self.base + Duration::from_micros(us)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Highest value the histograms hold (1 h in µs); larger values saturate.
const MAX_US: u64 = 3_600_000_000;

/// A histogram of microseconds, 3 significant figures. In JSON it is a
/// string: HdrHistogram's V2 encoding, deflate-compressed, in base64 (the
/// `HISTFAAA…` form HdrHistogram's own log files and tools read), so that
/// reports of sharded runs merge without losing a sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Hist(Histogram<u64>);

/// Why a serialized histogram cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HistError {
    #[error("histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram does not decode: {0:?}")]
    Decode(hdrhistogram::serialization::DeserializeError),
    #[error("histogram values out of range (1 µs to 1 h)")]
    Range,
    /// What the blob declares does not fit what it holds, or what this
    /// program merges: checked before anything is sized from it.
    #[error("histogram {0}")]
    Header(String),
}

/// HdrHistogram V2: cookie, payload length, normalizing offset, significant
/// digits, lowest, highest, int-to-double ratio; then the counts.
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
const V2_HEADER: usize = 40;
/// Most significant digits read: with at most 3 the counts array of any
/// range stays under 60,000 entries (this program records with 3).
const MAX_DIGITS: u32 = 3;
/// Longest V2 payload of such a histogram: every count a 9-byte varint.
const MAX_V2_PAYLOAD: usize = 64 * 1024 * 9;

/// The V2 bytes of a blob (inflated when compressed), checked against
/// what it declares: a blob cannot make the reader allocate more than its
/// own size allows, which hdrhistogram's deserializer would (it sizes its
/// buffer from the declared length).
fn v2_bytes(blob: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, HistError> {
    let bad = |m: String| HistError::Header(m);
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
    };
    let cookie = u32_at(blob, 0).ok_or_else(|| bad("is shorter than its cookie".into()))?;
    let v2 = match cookie {
        V2_COOKIE => std::borrow::Cow::Borrowed(blob),
        V2_COMPRESSED_COOKIE => {
            let len = u32_at(blob, 4).ok_or_else(|| bad("is cut in its header".into()))? as usize;
            let have = blob.len() - 8;
            if len > have {
                return Err(bad(format!(
                    "claims {len} compressed bytes and holds {have} (at most what it holds)"
                )));
            }
            let mut out = Vec::new();
            let limit = (V2_HEADER + MAX_V2_PAYLOAD) as u64;
            std::io::Read::read_to_end(
                &mut std::io::Read::take(
                    flate2::read::ZlibDecoder::new(&blob[8..8 + len]),
                    limit + 1,
                ),
                &mut out,
            )
            .map_err(|e| bad(format!("does not inflate: {e}")))?;
            if out.len() as u64 > limit {
                return Err(bad(format!("inflates past {limit} bytes (at most {limit})")));
            }
            std::borrow::Cow::Owned(out)
        }
        other => return Err(bad(format!("cookie {other:#x} is not HdrHistogram V2"))),
    };
    if v2.len() < V2_HEADER || u32_at(&v2, 0) != Some(V2_COOKIE) {
        return Err(bad("is cut in its header".into()));
    }
    let payload = u32_at(&v2, 4).unwrap_or_default() as usize;
    let have = v2.len() - V2_HEADER;
    if payload != have {
        return Err(bad(format!(
            "claims a payload of {payload} bytes and holds {have} (they must be equal)"
        )));
    }
    let digits = u32_at(&v2, 12).unwrap_or_default();
    if digits > MAX_DIGITS {
        return Err(bad(format!("has {digits} significant digits (at most {MAX_DIGITS})")));
    }
    Ok(v2)
}

impl Hist {
    pub fn new() -> Self {
        // 1..=MAX_US with 3 significant figures is always a valid range.
        Self(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"))
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// V2 + deflate + base64 (see [`Hist`]).
    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        // Writing into a Vec cannot fail, and every count fits the format.
        let _ = V2DeflateSerializer::new().serialize(&self.0, &mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Reads [`Hist::encode`]'s form (compressed or not), into this run's
    /// bounds: a histogram from another version or tool merges as long as
    /// its values fit.
    pub fn decode(s: &str) -> Result<Self, HistError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim())?;
        let v2 = v2_bytes(&bytes)?;
        let h: Histogram<u64> =
            Deserializer::new().deserialize(&mut &v2[..]).map_err(HistError::Decode)?;
        let mut me = Self::new();
        me.0.add(&h).map_err(|_| HistError::Range)?;
        Ok(me)
    }

    /// What this (cumulative) histogram holds beyond `earlier`, a state of
    /// it before.
    pub fn minus(&self, earlier: &Hist) -> Hist {
        let mut d = self.clone();
        if d.0.subtract(&earlier.0).is_err() {
            // Not an earlier state of it: nothing can be told apart.
            d.0.reset();
        }
        d
    }

    /// Percentile and value (ms) at the percentiles HdrHistogram's plots
    /// mark, three to a decade of 1/(1 − q): 0, 50, 75, 90, 95, 97.5, 99 …
    /// up to the last one the samples can tell apart, then the maximum.
    /// Empty when empty.
    pub fn distribution(&self) -> Vec<(f64, f64)> {
        let n = self.0.len();
        if n == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        'decades: for d in 0..8 {
            for m in [1.0, 0.5, 0.25] {
                let tail = 10f64.powi(-d) * m;
                if tail < 1.0 && tail * (n as f64) < 1.0 {
                    break 'decades;
                }
                let q = if tail >= 1.0 { 0.0 } else { 1.0 - tail };
                // Rounded: 99.9, not 99.90000000000001.
                let pct = (q * 1e8).round() / 1e6;
                out.push((pct, self.0.value_at_quantile(q) as f64 / 1000.0));
            }
        }
        out.push((100.0, self.0.max() as f64 / 1000.0));
        out
    }

    /// Adds another histogram's samples (from a report: it may not fit).
    pub fn try_merge(&mut self, other: &Hist) -> Result<(), HistError> {
        self.0.add(&other.0).map_err(|_| HistError::Range)
    }

    /// p50/p90/p99/p99.9/max in milliseconds; zeros when empty.
    pub fn summary(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(self.0.value_at_quantile(0.50)),
            p90: ms(self.0.value_at_quantile(0.90)),
            p99: ms(self.0.value_at_quantile(0.99)),
            p999: ms(self.0.value_at_quantile(0.999)),
            max: ms(self.0.max()),
        }
    }
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Hist> for String {
    fn from(h: Hist) -> String {
        h.encode()
    }
}

impl TryFrom<String> for Hist {
    type Error = HistError;
    fn try_from(s: String) -> Result<Self, HistError> {
        Self::decode(&s)
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The histograms one shard collects (and the report carries, in µs).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawHistograms")]
pub struct Histograms {
    /// Round trip (echo) or, nothing in listen mode.
    pub latency: Hist,
    /// Chaos drop (or unexpected end) to the first event after the resume.
    pub recovery: Hist,
    /// Chaos drop (or unexpected end) to the resumed stream's headers.
    pub resume: Hist,
    /// TCP connect to the stream's response headers.
    pub connect: Hist,
    /// Stream opened (listen) or request sent (POST streams) to its first
    /// event.
    pub first_event: Hist,
    /// Request sent to the end of its stream (listen with -X/--data).
    #[serde(default)]
    pub stream: Hist,
}

/// A report's histograms before decoding, so that a bad one is named.
#[derive(Deserialize)]
#[serde(default)]
#[derive(Default)]
struct RawHistograms {
    latency: Option<String>,
    recovery: Option<String>,
    resume: Option<String>,
    connect: Option<String>,
    first_event: Option<String>,
    stream: Option<String>,
}

impl TryFrom<RawHistograms> for Histograms {
    type Error = String;
    fn try_from(r: RawHistograms) -> Result<Self, String> {
        let decode = |name: &str, s: Option<String>| match s {
            None => Ok(Hist::new()),
            Some(s) => Hist::decode(&s).map_err(|e| format!("histograms.{name}: {e}")),
        };
        Ok(Histograms {
            latency: decode("latency", r.latency)?,
            recovery: decode("recovery", r.recovery)?,
            resume: decode("resume", r.resume)?,
            connect: decode("connect", r.connect)?,
            first_event: decode("first_event", r.first_event)?,
            stream: decode("stream", r.stream)?,
        })
    }
}

impl Histograms {
    pub fn merge(&mut self, o: &Histograms) {
        self.latency.merge(&o.latency);
        self.recovery.merge(&o.recovery);
        self.resume.merge(&o.resume);
        self.connect.merge(&o.connect);
        self.first_event.merge(&o.first_event);
        self.stream.merge(&o.stream);
    }
}

/// Live counters for the progress display and the timeline; relaxed, per
/// shard.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub reconnects: AtomicU64,
    pub drops: AtomicU64,
    /// POST attempts that got no answer.
    pub unanswered: AtomicU64,
}

/// The live counters summed over the shards.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
    pub reconnects: u64,
    pub drops: u64,
    pub unanswered: u64,
}

/// Error statuses and how often each came; a handful of statuses at most,
/// so a list beats a map.
#[derive(Debug, Default, Clone)]
pub struct StatusCounts(Vec<(u16, u64)>);

impl StatusCounts {
    pub fn add(&mut self, status: u16, n: u64) {
        match self.0.iter_mut().find(|(s, _)| *s == status) {
            Some((_, c)) => *c = c.saturating_add(n),
            None => self.0.push((status, n)),
        }
    }

    pub fn into_map(self) -> BTreeMap<u16, u64> {
        let mut m = BTreeMap::new();
        for (s, n) in self.0 {
            let c: &mut u64 = m.entry(s).or_default();
            *c = c.saturating_add(n);
        }
        m
    }
}

/// One thread's share; padded so shards never share a cache line.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard {
    hist: Mutex<Histograms>,
    counters: Counters,
    /// POSTs answered with an error status (off the hot path: only
    /// refusals take this lock).
    refusals: Mutex<StatusCounts>,
}

/// Statistics shared by every client, sharded by thread: a client records
/// into the shard of the thread it runs on, so the locks are uncontended
/// and the counters' cache lines stay on one core.
#[derive(Debug)]
pub struct Stats {
    shards: Box<[Shard]>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static THREAD_INDEX: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub fn new() -> Arc<Self> {
        let n = std::thread::available_parallelism().map_or(4, |n| n.get()).clamp(2, 32) * 2;
        Arc::new(Self { shards: (0..n).map(|_| Shard::default()).collect() })
    }

    fn shard(&self) -> &Shard {
        let i = THREAD_INDEX.with(|i| *i);
        &self.shards[i % self.shards.len()]
    }

    /// The histograms of the calling thread's shard.
    pub fn local(&self) -> MutexGuard<'_, Histograms> {
        self.shard().hist.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters of the calling thread's shard.
    pub fn counters(&self) -> &Counters {
        &self.shard().counters
    }

    /// Counts a POST answered with an error status.
    pub fn refused(&self, status: u16) {
        self.shard().refusals.lock().unwrap_or_else(|e| e.into_inner()).add(status, 1);
    }

    /// The refusals so far, by status.
    pub fn refusals(&self) -> BTreeMap<u16, u64> {
        let mut all = StatusCounts::default();
        for s in self.shards.iter() {
            for &(status, n) in &s.refusals.lock().unwrap_or_else(|e| e.into_inner()).0 {
                all.add(status, n);
            }
        }
        all.into_map()
    }

    /// Sums of the live counters.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for sh in self.shards.iter() {
            let c = &sh.counters;
            t.sent += c.sent.load(Ordering::Relaxed);
            t.received += c.received.load(Ordering::Relaxed);
            t.reconnects += c.reconnects.load(Ordering::Relaxed);
            t.drops += c.drops.load(Ordering::Relaxed);
            t.unanswered += c.unanswered.load(Ordering::Relaxed);
        }
        t
    }

    /// All shards merged.
    pub fn merged(&self) -> Histograms {
        let mut all = Histograms::default();
        for s in self.shards.iter() {
            all.merge(&s.hist.lock().unwrap_or_else(|e| e.into_inner()));
        }
        all
    }
}

/// CPU time (user + system) this process used so far.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Hist::new();
        for us in 1..=10_000 {
            h.record_us(us);
        }
        let p = h.summary();
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p90 - 9.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.p999 - 9.99).abs() < 0.01, "{p:?}");
        assert!((p.max - 10.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn empty_is_zero_and_huge_values_saturate() {
        assert_eq!(Hist::new().summary(), Percentiles::default());
        let mut h = Hist::new();
        h.record_us(u64::MAX);
        h.record_us(0);
        assert_eq!(h.count(), 2);
        assert!(h.summary().max >= 3_600_000.0);
    }

    #[test]
    fn serialized_histograms_are_lossless() {
        let mut h = Hist::new();
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..10_000 {
            h.record_us(rng.u64(1..5_000_000));
        }
        let s = h.encode();
        assert!(s.starts_with("HISTFAAA"), "compressed V2 cookie: {s:.20}");
        let back = Hist::decode(&s).unwrap();
        assert_eq!(back.0, h.0);
        assert_eq!(back.summary(), h.summary());
        // Through JSON, as in a report.
        let json = serde_json::to_string(&h).unwrap();
        let again: Hist = serde_json::from_str(&json).unwrap();
        assert_eq!(again.0, h.0);
        assert!(Hist::decode("not base64!").is_err());
        assert!(Hist::decode("aGVsbG8=").is_err());
    }

    /// A V2 blob (uncompressed) with this header and payload.
    fn v2(payload_len: u32, digits: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(V2_COOKIE.to_be_bytes());
        b.extend(payload_len.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        b.extend(digits.to_be_bytes());
        b.extend(1u64.to_be_bytes());
        b.extend(MAX_US.to_be_bytes());
        b.extend(1f64.to_be_bytes());
        b.extend(payload);
        b
    }

    fn deflated(cookie_len: Option<u32>, v2: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(v2).unwrap();
        let z = z.finish().unwrap();
        let mut b = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        b.extend(cookie_len.unwrap_or(z.len() as u32).to_be_bytes());
        b.extend(z);
        b
    }

    fn decode_bytes(b: &[u8]) -> Result<Hist, HistError> {
        Hist::decode(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    #[test]
    fn crafted_histograms_are_refused_before_anything_is_sized_from_them() {
        let why = |b: &[u8]| decode_bytes(b).map(|_| ()).unwrap_err().to_string();
        // 4 GiB claimed, 2 bytes held: hdrhistogram would allocate the 4 GiB.
        assert_eq!(
            why(&v2(u32::MAX, 3, &[2, 0])),
            "histogram claims a payload of 4294967295 bytes and holds 2 (they must be equal)"
        );
        assert_eq!(
            why(&deflated(None, &v2(u32::MAX, 3, &[2, 0]))),
            "histogram claims a payload of 4294967295 bytes and holds 2 (they must be equal)"
        );
        assert!(
            why(&deflated(Some(u32::MAX), &v2(2, 3, &[2, 0])))
                .starts_with("histogram claims 4294967295 compressed bytes and holds")
        );
        // A deflate bomb: 64 MiB of zeros in a few kilobytes.
        let bomb = deflated(None, &vec![0u8; 64 << 20]);
        assert!(bomb.len() < 100_000);
        assert!(why(&bomb).starts_with("histogram inflates past"), "{}", why(&bomb));
        // 5 digits over 1 µs to 1 h: a counts array of millions.
        assert_eq!(why(&v2(2, 5, &[2, 0])), "histogram has 5 significant digits (at most 3)");
        assert!(why(&[0x1c, 0x84]).contains("shorter than its cookie"));
        assert!(why(&v2(0, 3, &[])[..30]).contains("cut in its header"));
        // A well-formed hand-made one decodes: count 1 at index 0.
        assert_eq!(decode_bytes(&v2(1, 3, &[2])).unwrap().count(), 1);
    }

    #[test]
    fn distribution_marks_the_plotted_percentiles() {
        let mut h = Hist::new();
        for us in 1..=1000 {
            h.record_us(us);
        }
        let d = h.distribution();
        let pcts: Vec<f64> = d.iter().map(|p| p.0).collect();
        assert_eq!(pcts, [0.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 100.0]);
        assert_eq!(d[1].1, 0.5);
        assert_eq!(d.last().unwrap().1, 1.0);
        assert!(Hist::new().distribution().is_empty());
    }

    #[test]
    fn shards_merge() {
        let stats = Stats::new();
        stats.local().latency.record_us(100);
        let s2 = stats.clone();
        std::thread::spawn(move || s2.local().latency.record_us(200)).join().unwrap();
        stats.counters().sent.fetch_add(3, Ordering::Relaxed);
        assert_eq!(stats.merged().latency.count(), 2);
        let t = stats.totals();
        assert_eq!((t.sent, t.received, t.reconnects), (3, 0, 0));
    }

    #[test]
    fn cpu_time_moves() {
        let a = process_cpu();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(process_cpu() >= a);
    }
}
