//! Verdicts and everything that prints them: a line per check, a JSON
//! object per line, JUnit XML. The checks only build [`Verdict`]s.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::catalogue::Check;
use crate::junit;

/// How a check ended. Only `Fail` fails the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// Works, but something a user of the endpoint will trip over.
    Warn,
    /// Broken: lost or duplicated data, clients that fail or hang.
    Fail,
    /// Not applicable here, or not knowable from this side.
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Status::Pass => "\x1b[32m",
            Status::Warn => "\x1b[33m",
            Status::Fail => "\x1b[31m",
            Status::Skip => "\x1b[2m",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    /// What was seen, e.g. "200, text/event-stream, Cache-Control: no-cache".
    pub seen: String,
    /// For WARN and FAIL: why it matters. For SKIP: why it did not run.
    pub reason: Option<String>,
    /// For WARN and FAIL: the usual fix.
    pub fix: Option<String>,
}

impl Verdict {
    pub fn pass(seen: impl Into<String>) -> Self {
        Self { status: Status::Pass, seen: seen.into(), reason: None, fix: None }
    }

    pub fn warn(
        seen: impl Into<String>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::bad(Status::Warn, seen, reason, fix)
    }

    pub fn fail(
        seen: impl Into<String>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::bad(Status::Fail, seen, reason, fix)
    }

    /// A FAIL about the server's answer itself (an unreachable URL, a
    /// request that errors), where no fix can be named.
    pub fn broken(seen: impl Into<String>) -> Self {
        Self { status: Status::Fail, seen: seen.into(), reason: None, fix: None }
    }

    pub fn skip(seen: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { status: Status::Skip, seen: seen.into(), reason: Some(reason.into()), fix: None }
    }

    fn bad(
        status: Status,
        seen: impl Into<String>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self { status, seen: seen.into(), reason: Some(reason.into()), fix: Some(fix.into()) }
    }

    /// The text after the id: what was seen, then why and the fix.
    pub fn explain(&self) -> String {
        let mut s = self.seen.clone();
        if let Some(r) = &self.reason {
            let _ = write!(s, ": {r}");
        }
        if let Some(f) = &self.fix {
            let _ = write!(s, "; fix: {f}");
        }
        s
    }
}

/// A verdict with its check and how long it took.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub check: &'static Check,
    pub verdict: Verdict,
    pub elapsed: Duration,
}

/// Counts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub warned: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Tally {
    pub fn add(&mut self, status: Status) {
        match status {
            Status::Pass => self.passed += 1,
            Status::Warn => self.warned += 1,
            Status::Fail => self.failed += 1,
            Status::Skip => self.skipped += 1,
        }
    }
}

/// How verdicts are printed on stdout.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub json: bool,
    pub colour: bool,
    /// Width of the id column.
    pub id_width: usize,
}

impl Printer {
    /// One line for one outcome.
    pub fn line(&self, o: &Outcome) -> String {
        let v = &o.verdict;
        if self.json {
            return json!({
                "event": "check",
                "id": o.check.id,
                "status": v.status.label().to_ascii_lowercase(),
                "seen": v.seen,
                "reason": v.reason,
                "fix": v.fix,
                "title": o.check.title,
                "duration_ms": millis(o.elapsed),
            })
            .to_string();
        }
        let (on, off) = if self.colour { (v.status.colour(), "\x1b[0m") } else { ("", "") };
        let text = crate::text::escape_controls(&v.explain()).replace('\n', " ");
        format!("{on}{}{off}  {:<w$}  {text}", v.status.label(), o.check.id, w = self.id_width)
    }

    /// The closing line.
    pub fn summary(&self, t: &Tally, url: &str, mode: &str, elapsed: Duration) -> String {
        if self.json {
            return json!({
                "event": "summary",
                "url": url,
                "mode": mode,
                "passed": t.passed,
                "warned": t.warned,
                "failed": t.failed,
                "skipped": t.skipped,
                "duration_s": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            })
            .to_string();
        }
        format!(
            "{} passed, {} warned, {} failed, {} skipped in {:.1}s",
            t.passed,
            t.warned,
            t.failed,
            t.skipped,
            elapsed.as_secs_f64()
        )
    }

    /// One line of `--list`.
    pub fn list_line(&self, c: &Check) -> String {
        if self.json {
            return json!({
                "id": c.id,
                "group": c.group.as_str(),
                "needs_echo": c.needs_echo,
                "title": c.title,
                "proves": c.proves,
            })
            .to_string();
        }
        let echo = if c.needs_echo { "echo" } else { "" };
        format!("{:<w$}  {:<7}  {echo:<4}  {}", c.id, c.group.as_str(), c.proves, w = self.id_width)
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The run as a JUnit document: a WARN passes (with its text beside it), a
/// FAIL fails, a SKIP is skipped.
pub fn junit(outcomes: &[Outcome], started: SystemTime, elapsed: Duration) -> String {
    let mut suite = junit::Suite::new("ssechan check", started);
    suite.time = elapsed;
    for o in outcomes {
        let v = &o.verdict;
        let outcome = match v.status {
            Status::Pass | Status::Warn => junit::Outcome::Passed,
            Status::Fail => junit::Outcome::Failed { message: v.seen.clone(), detail: v.explain() },
            Status::Skip => junit::Outcome::Skipped { message: v.explain() },
        };
        suite.cases.push(junit::Case {
            name: o.check.id.to_owned(),
            classname: format!("ssechan.check.{}", o.check.group.as_str()),
            time: o.elapsed,
            outcome,
            output: format!("{}: {}", v.status.label(), v.explain()),
        });
    }
    suite.to_xml()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::catalogue::CHECKS;

    fn outcome(id: &str, verdict: Verdict) -> Outcome {
        let check = CHECKS.iter().find(|c| c.id == id).expect("known id");
        Outcome { check, verdict, elapsed: Duration::from_millis(12) }
    }

    #[test]
    fn text_lines_carry_reason_and_fix() {
        let p = Printer { json: false, colour: false, id_width: 16 };
        let o = outcome(
            "path.buffering",
            Verdict::fail(
                "bursts of 4 KiB",
                "a proxy buffers the stream",
                "nginx: `proxy_buffering off`",
            ),
        );
        assert_eq!(
            p.line(&o),
            "FAIL  path.buffering    bursts of 4 KiB: a proxy buffers the stream; fix: nginx: `proxy_buffering off`"
        );
        let o = outcome("stream.headers", Verdict::pass("200\x1b[2J"));
        assert_eq!(p.line(&o), "PASS  stream.headers    200^[[2J");
        let coloured = Printer { colour: true, ..p };
        assert!(coloured.line(&o).starts_with("\x1b[32mPASS\x1b[0m"));
    }

    #[test]
    fn json_lines_and_summary() {
        let p = Printer { json: true, colour: false, id_width: 0 };
        let o = outcome("stream.retry", Verdict::warn("no retry", "why", "fix it"));
        let v: serde_json::Value = serde_json::from_str(&p.line(&o)).unwrap();
        assert_eq!(v["event"], "check");
        assert_eq!(v["id"], "stream.retry");
        assert_eq!(v["status"], "warn");
        assert_eq!(v["fix"], "fix it");
        assert_eq!(v["duration_ms"], 12.0);
        let t = Tally { passed: 1, warned: 2, failed: 0, skipped: 3 };
        let s: serde_json::Value = serde_json::from_str(&p.summary(
            &t,
            "http://h/sse",
            "channel",
            Duration::from_millis(1500),
        ))
        .unwrap();
        assert_eq!((s["passed"].as_u64(), s["skipped"].as_u64()), (Some(1), Some(3)));
        assert_eq!(s["duration_s"], 1.5);
    }

    #[test]
    fn junit_maps_statuses() {
        let outcomes = [
            outcome("stream.headers", Verdict::pass("ok")),
            outcome("stream.retry", Verdict::warn("slow", "why", "fix")),
            outcome("order.duplicate-posts", Verdict::fail("twice", "why", "fix")),
            outcome("close.control", Verdict::skip("none", "no control event")),
        ];
        let x = junit(&outcomes, SystemTime::UNIX_EPOCH, Duration::from_secs(1));
        assert!(x.contains(r#"tests="4" failures="1" errors="0""#), "{x}");
        assert!(
            x.contains(r#"<failure message="twice" type="failure">twice: why; fix: fix</failure>"#),
            "{x}"
        );
        assert!(x.contains(r#"<skipped message="none: no control event"/>"#), "{x}");
        assert!(x.contains("<system-out>WARN: slow: why; fix: fix</system-out>"), "{x}");
    }
}
