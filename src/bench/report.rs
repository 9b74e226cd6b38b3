//! The bench report: one struct, written as JSON (the schema in docs/bench.md),
//! as text for people or as JUnit XML for CI; and the gates that decide pass
//! or fail, each kept as a [`Check`] with its limit and measured value.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::stats::{Histograms, Percentiles};
use crate::junit;

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
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Listen => "listen",
            Mode::Scenario => "scenario",
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
    /// POST attempts that failed (each retried with the same messageId).
    pub post_errors: u64,
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
}

/// The thresholds of a run.
#[derive(Debug, Clone, Default)]
pub struct Gates {
    pub max_lost: u64,
    pub max_duplicated: u64,
    pub max_p99: Option<Duration>,
    pub min_throughput: Option<f64>,
    /// Listen mode: fewest events in total; 1 unless given.
    pub min_events: Option<u64>,
}

impl Report {
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
            return self.judge_scenario();
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
        self.histograms = h;
    }

    /// Rates from the counts and `duration_s`.
    pub fn set_rates(&mut self) {
        let per_second =
            |n: u64| if self.duration_s > 0.0 { n as f64 / self.duration_s } else { 0.0 };
        let units = match self.mode {
            Mode::Echo | Mode::Scenario => {
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

    /// A replay has two checks: clients that diverged from the recording,
    /// and clients that failed.
    fn judge_scenario(&mut self) {
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
        if !errors.passed {
            let first = self.error_samples.first().map_or("", String::as_str);
            failures.push(format!(
                "errors: {} of {} clients failed (first: {first})",
                self.errors, self.clients
            ));
        }
        self.passed = failures.is_empty();
        self.failures = failures;
        self.checks = vec![diverged, errors];
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

    /// The report for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let target = if self.embedded { " (embedded echo server)" } else { "" };
        let shards = match self.shards.len() {
            0 => String::new(),
            1 => format!(", shard {}", self.shards[0]),
            n => format!(", {n} shards merged"),
        };
        let _ = writeln!(
            s,
            "ssechan bench: {} mode, {} clients ({} connected), {}{target}{shards}, {:.2} s",
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
        if self.post_errors + self.timeouts > 0 {
            let _ = writeln!(
                s,
                "  retries     {} failed POST attempts, {} echoes timed out",
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
        if self.passed {
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
        r.judge(&Gates {
            max_lost: 0,
            max_duplicated: 1,
            max_p99: Some(Duration::from_millis(5)),
            min_throughput: Some(100.0),
            min_events: None,
        });
        assert!(!r.passed);
        let names: Vec<&str> =
            r.failures.iter().map(|f| f.split(':').next().unwrap_or("")).collect();
        assert_eq!(
            names,
            ["lost", "duplicated", "out_of_order", "corrupted", "errors", "p99", "throughput"]
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
