//! JUnit XML, the test-report format GitLab, Jenkins and GitHub's test-report
//! actions display: one `<testcase>` per check, failed, skipped or passed.
//! `bench --junit` and `check --junit` both write it through here.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// `message` is the one-line reason; `detail` the longer text.
    Failed {
        message: String,
        detail: String,
    },
    Skipped {
        message: String,
    },
}

/// One `<testcase>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The check's id, e.g. `order.shuffled-posts` or `gate.max-p99`.
    pub name: String,
    /// Groups cases in CI views, e.g. `ssechan.check` or `ssechan.bench`.
    pub classname: String,
    pub time: Duration,
    pub outcome: Outcome,
    /// What was measured, shown beside the case (`<system-out>`).
    pub output: String,
}

/// One `<testsuite>` inside a `<testsuites>` document.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub started: SystemTime,
    pub time: Duration,
    pub hostname: String,
    pub cases: Vec<Case>,
}

impl Suite {
    pub fn new(name: impl Into<String>, started: SystemTime) -> Self {
        Self {
            name: name.into(),
            started,
            time: Duration::ZERO,
            hostname: hostname(),
            cases: Vec::new(),
        }
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }

    /// The whole document.
    pub fn to_xml(&self) -> String {
        let failures = self.count(|o| matches!(o, Outcome::Failed { .. }));
        let skipped = self.count(|o| matches!(o, Outcome::Skipped { .. }));
        let tests = self.cases.len();
        let time = self.time.as_secs_f64();
        let name = escape(&self.name);
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        // The schema CI tools validate against (Jenkins xunit's junit-10.xsd,
        // in tests/data/) allows `skipped` on <testsuite> only.
        let _ = writeln!(
            x,
            "<testsuites name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">"
        );
        let _ = writeln!(
            x,
            "  <testsuite name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\" timestamp=\"{}\" hostname=\"{}\">",
            timestamp(self.started),
            escape(&self.hostname)
        );
        for c in &self.cases {
            let _ = write!(
                x,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\">",
                escape(&c.name),
                escape(&c.classname),
                c.time.as_secs_f64()
            );
            match &c.outcome {
                Outcome::Passed => {}
                Outcome::Failed { message, detail } => {
                    let _ = write!(
                        x,
                        "\n      <failure message=\"{}\" type=\"failure\">{}</failure>",
                        escape(message),
                        escape(detail)
                    );
                }
                Outcome::Skipped { message } => {
                    let _ = write!(x, "\n      <skipped message=\"{}\"/>", escape(message));
                }
            }
            if !c.output.is_empty() {
                let _ = write!(x, "\n      <system-out>{}</system-out>", escape(&c.output));
            }
            if !matches!(c.outcome, Outcome::Passed) || !c.output.is_empty() {
                x.push_str("\n    ");
            }
            x.push_str("</testcase>\n");
        }
        x.push_str("  </testsuite>\n</testsuites>\n");
        x
    }
}

/// XML-escapes text for an attribute or element; characters XML 1.0 cannot
/// carry at all (most C0 controls) become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC, as JUnit's `timestamp` wants (no zone).
fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(escape("a<b>&\"c'\u{1b}\n"), "a&lt;b&gt;&amp;&quot;c&apos;\u{fffd}\n");
    }

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_200_695);
        assert_eq!(timestamp(t), "2026-12-02T08:38:15");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00");
    }

    #[test]
    fn counts_and_outcomes() {
        let mut s = Suite::new("ssechan bench", SystemTime::UNIX_EPOCH);
        s.hostname = "h".into();
        s.time = Duration::from_millis(1500);
        let case = |name: &str, outcome| Case {
            name: name.into(),
            classname: "ssechan.bench".into(),
            time: Duration::ZERO,
            outcome,
            output: String::new(),
        };
        s.cases.push(case("lost", Outcome::Passed));
        s.cases.push(case(
            "gate.max-p99",
            Outcome::Failed { message: "p99 7ms > 5ms".into(), detail: "limit 5ms".into() },
        ));
        s.cases.push(case("resume", Outcome::Skipped { message: "no echo".into() }));
        let x = s.to_xml();
        assert!(x.contains(r#"<testsuites name="ssechan bench" tests="3" failures="1" errors="0" time="1.500">"#), "{x}");
        assert!(
            x.contains(r#"tests="3" failures="1" errors="0" skipped="1" time="1.500" timestamp"#),
            "{x}"
        );
        assert!(x.contains(r#"timestamp="1970-01-01T00:00:00" hostname="h""#), "{x}");
        assert!(
            x.contains(
                r#"<testcase name="lost" classname="ssechan.bench" time="0.000"></testcase>"#
            ),
            "{x}"
        );
        assert!(
            x.contains(r#"<failure message="p99 7ms &gt; 5ms" type="failure">limit 5ms</failure>"#),
            "{x}"
        );
        assert!(x.contains(r#"<skipped message="no echo"/>"#), "{x}");
    }
}
