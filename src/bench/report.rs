//! The bench report: one struct, written as JSON (the schema in docs/bench.md),
//! as text for people or as JUnit XML for CI; and the gates that decide pass
//! or fail, each kept as a [`Check`] with its limit and measured value.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::stats::{Histograms, Percentiles};
use super::timeline::Timeline;
use crate::junit;

/// A number as a person reads it: `1e300`, not 301 digits.
pub(crate) fn number(x: f64) -> String {
    if x.is_finite() && x.abs() < 1e15 { format!("{x}") } else { format!("{x:e}") }
}

/// Events per second of single streams (listen mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamRates {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
    /// Streams the rates are of (those with two events or more), so that
    /// merged reports weigh each run's mean rightly.
    #[serde(default)]
    pub streams: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Echo,
    Listen,
    Scenario,
    /// MCP sessions calling a tool (`--mcp`).
    Mcp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Listen => "listen",
            Mode::Scenario => "scenario",
            Mode::Mcp => "mcp",
        }
    }
}

/// Whether a check's limit is a ceiling or a floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Max,
    Min,
}

/// One check of a run: a verification count or a gate, with the limit it
/// was held to and what was measured, passing or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// As in `failures`: `lost`, `p99`, `throughput`…
    pub name: String,
    pub measured: f64,
    pub bound: Bound,
    pub limit: f64,
    /// `messages`, `ms`, `/s`…
    pub unit: String,
    pub passed: bool,
    /// Why the check could not be made (then it neither passes nor fails
    /// the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Check {
    fn new(name: &str, measured: f64, bound: Bound, limit: f64, unit: &str) -> Self {
        let passed = match bound {
            Bound::Max => measured <= limit,
            Bound::Min => measured >= limit,
        };
        Self { name: name.into(), measured, bound, limit, unit: unit.into(), passed, skipped: None }
    }

    /// `3 messages (max 0)`.
    pub fn describe(&self) -> String {
        let n = |x: f64| {
            if self.unit == "ms" {
                format!("{x:.3}")
            } else if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        };
        let bound = match self.bound {
            Bound::Max => "max",
            Bound::Min => "min",
        };
        let unit = if self.unit.is_empty() { String::new() } else { format!(" {}", self.unit) };
        format!("{}{unit} ({bound} {}{unit})", n(self.measured), n(self.limit))
    }
}

/// Everything a run found. Counts are totals over all clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    pub mode: Mode,
    pub url: String,
    /// The target was the embedded echo server (no URL given).
    pub embedded: bool,
    /// Ctrl-C ended the run: the figures are of the run so far (messages
    /// in flight then were given a second to come back).
    pub interrupted: bool,
    /// The dashboard's view of a run still going on (never in a file).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
    /// `I/N` of a sharded run (`--shard`); a merged report lists every
    /// shard it holds.
    pub shards: Vec<String>,
    /// Wall-clock time (RFC 3339, UTC) at which `duration_s` starts.
    pub started_at: String,
    pub clients: u64,
    /// Clients whose stream opened at start.
    pub connected: u64,
    /// Messages POSTed (echo mode).
    pub sent: u64,
    /// Distinct messages whose echo arrived intact (echo mode).
    pub received: u64,
    /// Echo: sent but never echoed. Listen: ids skipped in the streams.
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Echoes that did not decode, failed their checksum, or were not ours.
    pub corrupted: u64,
    /// Streams cut on purpose (`--drop-every`).
    pub drops: u64,
    /// Streams re-opened (after a drop or an unexpected end).
    pub resumes: u64,
    /// Re-open attempts that failed (each retried).
    pub failed_resumes: u64,
    /// Streams the server ended without a control close.
    pub stream_ends: u64,
    /// POST attempts that got no answer (each retried with the same
    /// messageId).
    pub post_errors: u64,
    /// POSTs answered, whatever the status (echo and scenario modes).
    pub posts: u64,
    /// POSTs answered with a status other than 2xx, by status, whether
    /// retried or not: a retry that then succeeds hides nothing.
    pub refusals: BTreeMap<u16, u64>,
    /// Closed-loop messages given up on after `--drain` without an echo.
    pub timeouts: u64,
    /// Connections the POSTs went over: one per client, or fewer shared
    /// ones when the open-file limit is too low.
    pub post_connections: u64,
    /// Clients that could not connect or stopped early.
    pub errors: u64,
    /// The first few error messages.
    pub error_samples: Vec<String>,
    /// From the start of the load to the last delivery.
    pub duration_s: f64,
    /// Verified round trips (echo) or events (listen) per second.
    pub throughput_msgs_per_s: f64,
    pub latency_ms: Percentiles,
    pub recovery_ms: Percentiles,
    /// Drop (or unexpected end) to the resumed stream's response headers.
    pub resume_ms: Percentiles,
    pub connect_ms: Percentiles,
    /// CPU time of this process (user + system) during the load (echo: from
    /// the common start, after connecting); includes the embedded server
    /// when there is one.
    pub bench_cpu_s: f64,
    pub bench_cpu_us_per_msg: f64,
    /// Listen mode: events delivered in total.
    pub events: u64,
    pub events_per_s: f64,
    pub stream_events_per_s: StreamRates,
    pub first_event_ms: Percentiles,
    /// Listen mode: jumps forward in `id:` sequences.
    pub id_gaps: u64,
    /// Listen mode: re-opened streams whose ids began again at or below the
    /// last one seen, i.e. fresh connections (the server closed the old
    /// one, e.g. as a slow consumer): the events sent in between are
    /// unknown, so they are neither in `lost` nor in `out_of_order`.
    pub id_restarts: u64,
    /// Listen mode: the form of the ids (`integer`, `time:seq`,
    /// `prefix+number`, `mixed`; empty when no id could be ordered).
    pub id_format: String,
    /// Listen mode: events whose id could not be ordered (no sequence in
    /// it, or another form than the stream's): gaps are then not checked.
    pub ids_unordered: u64,
    /// Listen mode: events without an id.
    pub ids_absent: u64,
    /// Listen with -X/--data: requests made, their streams that ended
    /// (completed) and those that got an error status, broke, or stayed
    /// silent for --drain (failed); the rest were cut by --duration.
    pub requests: u64,
    pub completed: u64,
    pub failed_requests: u64,
    /// Listen mode: bytes of the streams' bodies.
    pub bytes: u64,
    /// Listen with -X/--data: request to the end of its stream.
    pub stream_ms: Percentiles,
    /// `--scenario`: how the clients' messages compared with the recording.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<super::scenario::ScenarioReport>,
    /// Listen mode without `--duration`: streams ended for having no event
    /// for `--drain`.
    pub idle: u64,
    /// Listen mode: events the idle streams lacked of `--messages` each.
    pub events_short: u64,
    pub passed: bool,
    /// One line per failed check, each starting with the check's name.
    pub failures: Vec<String>,
    /// Every check made, passed or failed, with its limit.
    pub checks: Vec<Check>,
    /// What makes the figures less telling (a run too short to be stable…).
    pub warnings: Vec<String>,
    /// The histograms behind the percentiles, lossless (see
    /// [`super::stats::Hist`]), in µs: what `bench merge` adds up.
    pub histograms: Histograms,
    /// Percentile distributions for plotting (from the histograms).
    pub distributions: Distributions,
    /// The run second by second (see [`super::timeline`]).
    pub timeline: Timeline,
    /// The command line (header values hidden), and where it ran.
    pub command: Vec<String>,
    pub machine: Machine,
    /// A merged report: each shard's own figures, side by side.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shard_runs: Vec<ShardRun>,
}

/// `[percentile, ms]` pairs at quantiles evenly spaced on the 1/(1 − q)
/// scale (HdrHistogram's percentile plot), ending at 100 (the maximum).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Distributions {
    pub latency: Vec<(f64, f64)>,
    pub recovery: Vec<(f64, f64)>,
    pub first_event: Vec<(f64, f64)>,
}

/// Where a run ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    pub host: String,
    /// `linux x86_64`.
    pub os: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    pub cpus: u64,
    /// ssechan's version.
    pub version: String,
}

impl Machine {
    pub fn this() -> Self {
        // SAFETY: uname only writes the struct we pass.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::uname(&mut u) } == 0;
        let field = |f: &[libc::c_char]| {
            let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Self {
            host: if ok { field(&u.nodename) } else { String::new() },
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            kernel: if ok { field(&u.release) } else { String::new() },
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get() as u64),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// One shard of a merged run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardRun {
    /// `I/N`, or the report's place among those merged.
    pub shard: String,
    pub started_at: String,
    /// How much later than the earliest shard it started.
    pub skew_ms: f64,
    pub duration_s: f64,
    pub throughput_msgs_per_s: f64,
    pub p99_ms: f64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub errors: u64,
    pub refused: u64,
    /// Its own throughput second by second: `[t, per second]`, `t` from
    /// the earliest shard's start.
    pub rates: Vec<(f64, f64)>,
}

/// The command line for a report: header values (tokens, cookies) hidden,
/// long arguments cut.
pub fn command_line(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut header_next = false;
    for (i, a) in args.into_iter().enumerate() {
        // The program by its name, not where it was built.
        let a = match (i, std::path::Path::new(&a).file_name()) {
            (0, Some(name)) => name.to_string_lossy().into_owned(),
            _ => a,
        };
        let hide = |h: &str| match h.split_once(':') {
            Some((name, _)) => format!("{name}: …"),
            None => h.to_string(),
        };
        let a = if header_next {
            header_next = false;
            hide(&a)
        } else if a == "-H" || a == "--header" {
            header_next = true;
            a
        } else if let Some(h) = a.strip_prefix("--header=") {
            format!("--header={}", hide(h))
        } else if let Some(h) = a.strip_prefix("-H").filter(|h| !h.is_empty()) {
            format!("-H{}", hide(h))
        } else {
            a
        };
        let a = if a.chars().count() > 200 {
            a.chars().take(200).chain(std::iter::once('…')).collect()
        } else {
            a
        };
        out.push(crate::text::escape_controls(&a).into_owned());
    }
    out
}

/// `--max-refusals`: a count of refused POSTs, or a share of the POSTs
/// answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RefusalLimit {
    Count(u64),
    Percent(f64),
}

impl Default for RefusalLimit {
    fn default() -> Self {
        RefusalLimit::Count(0)
    }
}

impl std::str::FromStr for RefusalLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is neither a count nor a percentage (examples: 10, 0.5%)");
        match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(RefusalLimit::Percent(p)),
                _ => Err(bad()),
            },
            None => s.parse().map(RefusalLimit::Count).map_err(|_| bad()),
        }
    }
}

impl std::fmt::Display for RefusalLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalLimit::Count(n) => write!(f, "{n}"),
            RefusalLimit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The thresholds of a run.
#[derive(Debug, Clone, Default)]
pub struct Gates {
    pub max_lost: u64,
    pub max_duplicated: u64,
    pub max_refusals: RefusalLimit,
    pub max_p99: Option<Duration>,
    pub min_throughput: Option<f64>,
    /// Listen mode: fewest events in total; 1 unless given.
    pub min_events: Option<u64>,
}

impl Report {
    /// POSTs refused, all statuses.
    pub fn refused(&self) -> u64 {
        crate::client::refused(&self.refusals)
    }

    /// `503 ×2, 429 ×1`: the statuses, most frequent first.
    pub fn refusals_by_status(&self) -> String {
        crate::client::refusals_by_status(&self.refusals)
    }

    /// The refusals check: a count, or a share of the POSTs answered.
    fn refusals_check(&self, limit: RefusalLimit) -> (Check, String) {
        let n = self.refused();
        let statuses = match n {
            0 => String::new(),
            _ => format!(" ({})", self.refusals_by_status()),
        };
        match limit {
            RefusalLimit::Count(max) => (
                Check::new("refusals", n as f64, Bound::Max, max as f64, "POSTs"),
                format!(
                    "refusals: {n} of {} POSTs answered with an error status{statuses}, each \
                     retried or given up (allowed {max}; --max-refusals raises it)",
                    self.posts
                ),
            ),
            RefusalLimit::Percent(max) => {
                let share = if self.posts > 0 { n as f64 * 100.0 / self.posts as f64 } else { 0.0 };
                (
                    Check::new("refusals", share, Bound::Max, max, "%"),
                    format!(
                        "refusals: {n} of {} POSTs ({share:.3}%) answered with an error \
                         status{statuses} (allowed {max}%)",
                        self.posts
                    ),
                )
            }
        }
    }

    /// Listen mode: why the id sequences could not be checked at all.
    pub fn ids_unchecked(&self) -> Option<String> {
        if self.mode != Mode::Listen || self.events == 0 || !self.id_format.is_empty() {
            return None;
        }
        Some(if self.ids_unordered > 0 {
            format!("ids: not ordered ({} non-numeric), gaps not checked", self.ids_unordered)
        } else {
            "ids: none (no event had an id:), gaps not checked".to_string()
        })
    }

    /// Applies the gates: fills `checks`, `failures` and `passed`.
    pub fn judge(&mut self, g: &Gates) {
        if self.mode == Mode::Scenario {
            return self.judge_scenario(g.max_refusals);
        }
        let listen = self.mode == Mode::Listen;
        let unchecked = self.ids_unchecked();
        let mut checks = Vec::new();
        let mut failures = Vec::new();
        let mut check = |mut c: Check, failure: String| {
            if matches!(c.name.as_str(), "lost" | "out_of_order")
                && let Some(why) = &unchecked
            {
                c.skipped = Some(why.clone());
            }
            if !c.passed && c.skipped.is_none() {
                failures.push(failure);
            }
            checks.push(c);
        };
        let count =
            |name, n: u64, max: u64, unit| Check::new(name, n as f64, Bound::Max, max as f64, unit);
        let what = if listen { "events missing from id sequences" } else { "messages lost" };
        check(
            count("lost", self.lost, g.max_lost, if listen { "events" } else { "messages" }),
            format!("lost: {} {what} (allowed {})", self.lost, g.max_lost),
        );
        if !listen {
            check(
                count("duplicated", self.duplicated, g.max_duplicated, "messages"),
                format!(
                    "duplicated: {} messages delivered more than once (allowed {})",
                    self.duplicated, g.max_duplicated
                ),
            );
        }
        check(
            count("out_of_order", self.out_of_order, 0, if listen { "events" } else { "messages" }),
            format!("out_of_order: {} delivered out of order (allowed 0)", self.out_of_order),
        );
        if listen {
            check(
                count("id_restarts", self.id_restarts, 0, "streams"),
                format!(
                    "id_restarts: {} streams came back as fresh connections; events sent in \
                     between are unknown (allowed 0)",
                    self.id_restarts
                ),
            );
            check(
                count("idle", self.events_short, 0, "events short"),
                format!(
                    "idle: {} streams had no event for --drain, {} events short of --messages",
                    self.idle, self.events_short
                ),
            );
            if self.requests > 0 {
                let first = self.error_samples.first().map_or("", String::as_str);
                check(
                    count("failed_requests", self.failed_requests, 0, "requests"),
                    format!(
                        "failed_requests: {} of {} requests failed (first: {first})",
                        self.failed_requests, self.requests
                    ),
                );
            }
            let min = g.min_events.unwrap_or(1);
            check(
                Check::new("events", self.events as f64, Bound::Min, min as f64, "events"),
                format!(
                    "events: {} events delivered, fewer than --min-events {min} (a server \
                     that sends nothing passes only with --min-events 0)",
                    self.events
                ),
            );
        } else {
            check(
                count("corrupted", self.corrupted, 0, "messages"),
                format!("corrupted: {} echoes corrupted or not ours (allowed 0)", self.corrupted),
            );
            let (c, failure) = self.refusals_check(g.max_refusals);
            check(c, failure);
        }
        let first = self.error_samples.first().map_or("", String::as_str);
        check(
            count("errors", self.errors, 0, "clients"),
            format!("errors: {} of {} clients failed (first: {first})", self.errors, self.clients),
        );
        if let Some(max) = g.max_p99 {
            let (name, p99) = if listen {
                ("first_event_p99", self.first_event_ms.p99)
            } else {
                ("p99", self.latency_ms.p99)
            };
            let max_ms = max.as_secs_f64() * 1000.0;
            check(
                Check::new(name, p99, Bound::Max, max_ms, "ms"),
                format!("{name}: {p99:.3} ms over the limit of {max_ms:.3} ms"),
            );
        }
        if let Some(min) = g.min_throughput {
            check(
                Check::new("throughput", self.throughput_msgs_per_s, Bound::Min, min, "/s"),
                format!(
                    "throughput: {:.0}/s below the minimum of {min}/s",
                    self.throughput_msgs_per_s
                ),
            );
        }
        self.passed = failures.is_empty();
        self.failures = failures;
        self.checks = checks;
    }

    /// Keeps the histograms and sets the percentiles from them.
    pub fn set_histograms(&mut self, h: Histograms) {
        self.latency_ms = h.latency.summary();
        self.recovery_ms = h.recovery.summary();
        self.resume_ms = h.resume.summary();
        self.connect_ms = h.connect.summary();
        self.first_event_ms = h.first_event.summary();
        self.stream_ms = h.stream.summary();
        self.distributions = Distributions {
            latency: h.latency.distribution(),
            recovery: h.recovery.distribution(),
            first_event: h.first_event.distribution(),
        };
        self.histograms = h;
    }

    /// Rates from the counts and `duration_s`.
    pub fn set_rates(&mut self) {
        let per_second =
            |n: u64| if self.duration_s > 0.0 { n as f64 / self.duration_s } else { 0.0 };
        let units = match self.mode {
            Mode::Echo | Mode::Scenario | Mode::Mcp => {
                self.throughput_msgs_per_s = per_second(self.received);
                self.received
            }
            Mode::Listen => {
                // One event is the start of the span, not a rate.
                self.events_per_s = per_second(self.events.saturating_sub(1));
                self.throughput_msgs_per_s = self.events_per_s;
                self.events
            }
        };
        self.bench_cpu_us_per_msg =
            if units > 0 { self.bench_cpu_s * 1e6 / units as f64 } else { 0.0 };
    }

    /// A replay has three checks: clients that diverged from the recording,
    /// POSTs the server refused (each retried or given up, as in echo mode),
    /// and clients that failed.
    fn judge_scenario(&mut self, max_refusals: RefusalLimit) {
        let sc = self.scenario.clone().unwrap_or_default();
        let mut diverged = Check::new("diverged", sc.diverged as f64, Bound::Max, 0.0, "clients");
        if sc.expect == Some(super::scenario::Expect::None) {
            diverged.skipped = Some("--expect none".into());
        }
        let errors = Check::new("errors", self.errors as f64, Bound::Max, 0.0, "clients");
        let mut failures = Vec::new();
        if !diverged.passed && diverged.skipped.is_none() {
            let at = sc.divergences.first().map_or(String::new(), |d| {
                format!(" (first at step {}: {} clients)", d.step, d.clients)
            });
            failures.push(format!(
                "diverged: {} of {} clients diverged from the recording{at}",
                sc.diverged, self.clients
            ));
        }
        let (refusals, failure) = self.refusals_check(max_refusals);
        if !refusals.passed {
            failures.push(failure);
        }
        if !errors.passed {
            let first = self.error_samples.first().map_or("", String::as_str);
            failures.push(format!(
                "errors: {} of {} clients failed (first: {first})",
                self.errors, self.clients
            ));
        }
        self.passed = failures.is_empty();
        self.failures = failures;
        self.checks = vec![diverged, refusals, errors];
    }

    /// The report as JUnit XML: one test case per check.
    pub fn to_junit(&self) -> String {
        let started =
            humantime::parse_rfc3339_weak(&self.started_at).unwrap_or_else(|_| SystemTime::now());
        let mut suite = junit::Suite::new(format!("ssechan bench {}", self.mode.as_str()), started);
        suite.time = Duration::from_secs_f64(self.duration_s.max(0.0));
        let classname = format!("ssechan.bench.{}", self.mode.as_str());
        for c in &self.checks {
            let measured = format!("{}: {}", c.name, c.describe());
            let outcome = if let Some(why) = &c.skipped {
                junit::Outcome::Skipped { message: why.clone() }
            } else if c.passed {
                junit::Outcome::Passed
            } else {
                let message = self
                    .failures
                    .iter()
                    .find(|f| f.split(':').next() == Some(c.name.as_str()))
                    .cloned()
                    .unwrap_or_else(|| measured.clone());
                let mut detail = measured.clone();
                if c.name == "errors" {
                    for e in &self.error_samples {
                        let _ = write!(detail, "\n{e}");
                    }
                }
                junit::Outcome::Failed { message, detail }
            };
            suite.cases.push(junit::Case {
                name: c.name.clone(),
                classname: classname.clone(),
                time: Duration::ZERO,
                outcome,
                output: measured,
            });
        }
        suite.to_xml()
    }

    pub fn to_json(&self) -> String {
        // Plain numbers, strings and vectors: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The same on one line (the HTML page and the dashboard's events).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The report for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let target = if self.embedded { " (embedded echo server)" } else { "" };
        let shards = match self.shards.len() {
            0 => String::new(),
            1 => format!(", shard {}", self.shards[0]),
            n => format!(", {n} shards merged"),
        };
        let interrupted = if self.interrupted { ", INTERRUPTED" } else { "" };
        let _ = writeln!(
            s,
            "ssechan bench: {} mode, {} clients ({} connected), {}{target}{shards}, {:.2} s{interrupted}",
            self.mode.as_str(),
            self.clients,
            self.connected,
            self.url,
            self.duration_s
        );
        let pct = |p: &Percentiles| {
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3} ms",
                p.p50, p.p90, p.p99, p.p999, p.max
            )
        };
        if let Some(sc) = &self.scenario {
            let expect = match sc.expect {
                Some(super::scenario::Expect::Order) => "in order",
                Some(super::scenario::Expect::Count) => "by count",
                _ => "not compared",
            };
            let _ = writeln!(
                s,
                "  scenario    {} at speed {}: {} sends, {} messages expected ({expect}); {} clients matched, {} diverged",
                sc.file, sc.speed, sc.sends, sc.steps, sc.matched, sc.diverged
            );
            for d in &sc.divergences {
                let at = d
                    .t_ms
                    .map_or("past the end".to_string(), |t| format!("at {:.3} s", t / 1000.0));
                let _ = writeln!(
                    s,
                    "  step {:<6} {} clients diverged ({at}): expected {}, got {}",
                    d.step,
                    d.clients,
                    d.expected.as_deref().map_or("nothing".into(), |e| format!("{e:?}")),
                    d.got.as_deref().map_or("nothing".into(), |g| format!("{g:?}")),
                );
            }
            let _ = writeln!(
                s,
                "  messages    sent {}, received {} in {:.2} s",
                self.sent, self.received, self.duration_s
            );
        } else if self.mode == Mode::Listen {
            let _ = writeln!(
                s,
                "  events      {} in {:.2} s: {:.0}/s in total; per stream min {:.0}, mean {:.0}, max {:.0}/s",
                self.events,
                self.duration_s,
                self.events_per_s,
                self.stream_events_per_s.min,
                self.stream_events_per_s.mean,
                self.stream_events_per_s.max
            );
            match self.ids_unchecked() {
                Some(why) => {
                    let _ = writeln!(s, "  ids         {}", why.trim_start_matches("ids: "));
                }
                None => {
                    let unordered = match self.ids_unordered {
                        0 => String::new(),
                        n => format!(", {n} not in the sequence (not checked)"),
                    };
                    let _ = writeln!(
                        s,
                        "  ids         {}: {} gaps, {} missing, {} out of order, {} restarts{unordered}",
                        if self.id_format.is_empty() { "none" } else { &self.id_format },
                        self.id_gaps,
                        self.lost,
                        self.out_of_order,
                        self.id_restarts
                    );
                }
            }
            if self.stream_ends > 0 {
                let _ = writeln!(
                    s,
                    "  ended       {} streams ended by the server without a close event \
                     (a server disconnects a slow consumer so)",
                    self.stream_ends
                );
            }
            if self.id_restarts > 0 {
                let _ = writeln!(
                    s,
                    "  restarts    {} re-opened streams began their ids again: fresh \
                     connections, not resumes; events sent in between are unknown and \
                     not counted as lost",
                    self.id_restarts
                );
            }
            if self.idle > 0 {
                let _ = writeln!(
                    s,
                    "  idle        {} streams had no event for --drain and were ended, {} \
                     events short of --messages",
                    self.idle, self.events_short
                );
            }
            let _ = writeln!(s, "  first event {}", pct(&self.first_event_ms));
            if self.requests > 0 {
                let cut = self.requests - self.completed.min(self.requests);
                let cut = cut.saturating_sub(self.failed_requests);
                let _ = writeln!(
                    s,
                    "  requests    {}: {} completed, {} failed, {cut} cut by --duration; {} bytes",
                    self.requests, self.completed, self.failed_requests, self.bytes
                );
                let _ = writeln!(s, "  stream      {}", pct(&self.stream_ms));
            }
        } else {
            let _ = writeln!(
                s,
                "  messages    sent {}, received {}, lost {}, duplicated {}, out of order {}, corrupted {}",
                self.sent,
                self.received,
                self.lost,
                self.duplicated,
                self.out_of_order,
                self.corrupted
            );
            let _ = writeln!(
                s,
                "  throughput  {:.0} verified round trips/s over {:.2} s",
                self.throughput_msgs_per_s, self.duration_s
            );
            let _ = writeln!(s, "  latency     {}", pct(&self.latency_ms));
        }
        let _ = writeln!(s, "  connect     {}", pct(&self.connect_ms));
        if self.drops + self.resumes + self.failed_resumes + self.stream_ends > 0 {
            let _ = writeln!(
                s,
                "  streams     drops {}, resumes {}, failed resumes {}, ended by server {}",
                self.drops, self.resumes, self.failed_resumes, self.stream_ends
            );
            let _ = writeln!(s, "  resume      {}", pct(&self.resume_ms));
            let _ = writeln!(s, "  recovery    {}", pct(&self.recovery_ms));
        }
        if self.mode == Mode::Echo && self.post_connections < self.clients {
            let _ = writeln!(
                s,
                "  posts       over {} shared connections (open-file limit)",
                self.post_connections
            );
        }
        if matches!(self.mode, Mode::Echo | Mode::Scenario | Mode::Mcp) {
            let refusals = crate::client::refusals_sentence(&self.refusals, self.posts);
            let _ = writeln!(s, "  refusals    {refusals}");
        }
        if self.post_errors + self.timeouts > 0 {
            let _ = writeln!(
                s,
                "  retries     {} POST attempts unanswered, {} echoes timed out",
                self.post_errors, self.timeouts
            );
        }
        let _ = writeln!(
            s,
            "  bench cpu   {:.2} s ({:.1} µs per {})",
            self.bench_cpu_s,
            self.bench_cpu_us_per_msg,
            if self.mode == Mode::Listen { "event" } else { "message" }
        );
        for e in &self.error_samples {
            let _ = writeln!(s, "  error       {e}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  warning     {w}");
        }
        let _ = writeln!(s, "  checks");
        for c in &self.checks {
            let mark = match (&c.skipped, c.passed) {
                (Some(_), _) => "skip",
                (None, true) => "ok",
                (None, false) => "FAIL",
            };
            let why = c.skipped.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
            let _ = writeln!(s, "    {mark:<5} {:<16}{}{why}", c.name, c.describe());
        }
        if self.interrupted {
            let _ = writeln!(
                s,
                "  verdict     INTERRUPTED (the checks above are of the run so far: {})",
                if self.passed { "passed" } else { "failed" }
            );
            for f in &self.failures {
                let _ = writeln!(s, "    - {f}");
            }
        } else if self.passed {
            let _ = writeln!(s, "  verdict     PASSED");
        } else {
            let _ = writeln!(s, "  verdict     FAILED");
            for f in &self.failures {
                let _ = writeln!(s, "    - {f}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_report() -> Report {
        Report {
            mode: Mode::Echo,
            clients: 2,
            connected: 2,
            sent: 10,
            received: 10,
            ..Report::default()
        }
    }

    #[test]
    fn clean_run_passes() {
        let mut r = ok_report();
        r.judge(&Gates::default());
        assert!(r.passed);
        assert!(r.failures.is_empty());
        assert!(r.human().contains("PASSED"));
    }

    #[test]
    fn each_check_is_named() {
        let mut r = ok_report();
        r.lost = 1;
        r.duplicated = 2;
        r.out_of_order = 3;
        r.corrupted = 4;
        r.errors = 1;
        r.error_samples = vec!["boom".into()];
        r.latency_ms.p99 = 7.0;
        r.throughput_msgs_per_s = 10.0;
        r.refusals = [(503, 1)].into();
        r.judge(&Gates {
            max_lost: 0,
            max_duplicated: 1,
            max_refusals: RefusalLimit::Count(0),
            max_p99: Some(Duration::from_millis(5)),
            min_throughput: Some(100.0),
            min_events: None,
        });
        assert!(!r.passed);
        let names: Vec<&str> =
            r.failures.iter().map(|f| f.split(':').next().unwrap_or("")).collect();
        assert_eq!(
            names,
            [
                "lost",
                "duplicated",
                "out_of_order",
                "corrupted",
                "refusals",
                "errors",
                "p99",
                "throughput"
            ]
        );
        assert!(r.human().contains("FAILED"));
    }

    #[test]
    fn gates_allow_up_to_their_limit() {
        let mut r = ok_report();
        r.lost = 3;
        r.duplicated = 3;
        r.judge(&Gates { max_lost: 3, max_duplicated: 3, ..Gates::default() });
        assert!(r.passed, "{:?}", r.failures);
    }

    #[test]
    fn refusals_are_judged_by_count_or_share() {
        assert_eq!("3".parse(), Ok(RefusalLimit::Count(3)));
        assert_eq!(" 0.5% ".parse(), Ok(RefusalLimit::Percent(0.5)));
        for bad in ["", "-1", "x", "101%", "%", "1e400%", "NaN%"] {
            assert!(bad.parse::<RefusalLimit>().is_err(), "{bad:?}");
        }
        let mut r = ok_report();
        r.posts = 200;
        r.refusals = [(503, 3), (429, 1)].into();
        r.judge(&Gates::default());
        assert!(!r.passed);
        assert_eq!(
            r.failures[0],
            "refusals: 4 of 200 POSTs answered with an error status (503 \u{d7}3, 429 \u{d7}1), \
             each retried or given up (allowed 0; --max-refusals raises it)"
        );
        r.judge(&Gates { max_refusals: RefusalLimit::Count(4), ..Gates::default() });
        assert!(r.passed, "{:?}", r.failures);
        // 4 of 200 is 2%.
        r.judge(&Gates { max_refusals: RefusalLimit::Percent(2.0), ..Gates::default() });
        assert!(r.passed, "{:?}", r.failures);
        r.judge(&Gates { max_refusals: RefusalLimit::Percent(1.9), ..Gates::default() });
        assert!(!r.passed);
        assert!(r.human().contains(
            "refusals    4 of 200 POSTs answered with an error status: 503 \u{d7}3, 429 \u{d7}1"
        ));
    }

    #[test]
    fn command_lines_hide_header_values() {
        let args = [
            "ssechan",
            "bench",
            "-H",
            "Authorization: Bearer s3cret",
            "--header=Cookie: a=b",
            "-HX-Key: k",
            "http://h/sse",
        ];
        let line = command_line(args.iter().map(|s| s.to_string()));
        assert_eq!(
            line,
            [
                "ssechan",
                "bench",
                "-H",
                "Authorization: …",
                "--header=Cookie: …",
                "-HX-Key: …",
                "http://h/sse"
            ]
        );
        assert_eq!(command_line(["x".repeat(500)])[0].chars().count(), 201);
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v: serde_json::Value = serde_json::from_str(&ok_report().to_json()).unwrap();
        for k in [
            "clients",
            "sent",
            "received",
            "lost",
            "duplicated",
            "out_of_order",
            "drops",
            "resumes",
            "throughput_msgs_per_s",
            "latency_ms",
            "recovery_ms",
            "passed",
            "failures",
            "corrupted",
            "failed_resumes",
            "posts",
            "refusals",
            "connect_ms",
            "duration_s",
            "bench_cpu_s",
            "mode",
            "events",
            "events_per_s",
            "first_event_ms",
            "id_gaps",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in ["p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_ms"].get(k).is_some(), "missing latency_ms.{k}");
        }
    }
}
